"""Benchmarks, one table per section: ``python -m bench`` (``make bench``).

A section is a module ``bench.<name>`` listed in :data:`SECTIONS`, with a function
``run(params: dict, quick: bool) -> dict`` that measures and returns its table::

    {"title": str, "rows": [{column: value, ...}, ...], "notes": [str, ...]}

Rows share their keys, in order: they are the columns. ``quick`` asks for a run of a few seconds
that only shows the section works (the tests use it); its numbers mean nothing. This module only
picks sections and prints; sections are imported when chosen, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from core.cli import params_or_exit
from core.config import describe

SECTIONS = {
    "grouping": "bench.grouping",
    "registry": "bench.registry",
    "serving": "bench.serving",
    "training": "bench.training",
}


def format_table(table: dict) -> str:
    """A section's table as aligned text: title, header, rows, notes."""
    rows = table["rows"]
    columns = list(rows[0]) if rows else []
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = [table["title"], "=" * len(table["title"])]
    if columns:
        lines.append("  ".join(column.rjust(width) for column, width in zip(columns, widths)))
        lines.extend("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)
    lines.extend(f"- {note}" for note in table.get("notes", []))
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


@click.command()
@click.option("--section", "sections", multiple=True, type=click.Choice(sorted(SECTIONS)),
              help="Run only this section (repeatable). [default: every section]")
@click.option("--quick", is_flag=True, help="A few seconds per section, to check that it runs; the numbers mean nothing.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the tables to this JSON file.")
def main(sections, quick, json_path):
    """Run the benchmarks and print one table per section.

    Settings come from the bench: section of params.yaml (BENCH_* environment variables) and,
    for the serving section, from api: (API_THREADS, API_INTRA_OP_THREADS ...); the registry
    section counts storage calls at the history sizes of bench.registry_versions
    (BENCH_REGISTRY_VERSIONS=10,1000). Timings are only comparable within one run, on an
    otherwise idle machine.

    \b
    Example:
      python -m bench --section serving
      python -m bench --section registry
    """
    params = params_or_exit()
    click.echo(describe(params, "bench", ("bench", "api")))
    tables = {}
    for name in sections or SECTIONS:
        section = importlib.import_module(SECTIONS[name])
        try:
            tables[name] = section.run(params, quick)
        except RuntimeError as exc:
            raise click.ClickException(f"{name} benchmark: {exc}") from exc
        click.echo("\n" + format_table(tables[name]))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(tables, indent=2))


if __name__ == "__main__":
    main(prog_name="python -m bench")

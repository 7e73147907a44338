"""Validate the dataset and write a JSON report: ``python -m scripts.validate_data``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.config import ConfigError, describe, load_params
from model.dataset import DatasetError, scan_dataset
from model.validation import groups_contact_sheet, validate_dataset
from storage import StorageError


def summary_lines(report: dict) -> list[str]:
    """What a person wants to read of a validation report."""
    lines = [
        f"{report['dataset']['files']} files under {report['dataset']['uri']}; "
        f"usable per class: {report['class_counts']}",
        "per split: " + ", ".join(f"{s}={sum(c.values())}" for s, c in report["split_counts"].items()),
        f"image modes: {report['modes']}; sizes: {dict(list(report['sizes'].items())[:3])}",
    ]
    for item in report["corrupt"]:
        lines.append(f"unreadable, excluded: {item['path']} ({item['error']})")
    groups = report["groups"]
    lines.append(f"near-duplicate groups: {groups['groups']} ({groups['images_in_groups']} images, the largest "
                 f"{groups['largest_group']}); moved to their group's split: {groups['moved_images']} images; "
                 f"label conflicts: {groups['conflicts']} groups ({groups['images_in_conflicts']} images)")
    for group in groups["conflict_groups"]:
        lines.append("label conflict: " + " = ".join(f"{m['path']} ({m['label']})" for m in group))
    for dup in report["duplicates_across_splits"]:
        lines.append(f"group straddles {'/'.join(dup['splits'])}: {', '.join(dup['paths'])} "
                     f"(kept in {dup['kept_in']}, left out: {', '.join(dup['left_out'])})")
    if not report["split_record"]["written"] and report["split_record"].get("error"):
        lines.append(f"split assignment not recorded: {report['split_record']['error']}")
    if report["unknown_folders"]:
        lines.append(f"folders that are not a class, ignored: {report['unknown_folders']}")
    return lines


@click.command()
@click.option("--dataset", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=".run/data-validation.json",
              show_default=True, help="Where to write the JSON report.")
def main(dataset_uri, report_path):
    """Check that every image decodes, count images per class, group near-duplicates, find label conflicts.

    Unreadable files are listed and excluded; near-duplicates are grouped and each group split as
    one (the assignment is recorded in the dataset's splits.json). The step fails (exit 1) when a
    class has fewer images than data.min_images_per_class, more than data.max_corrupt_share are
    unreadable, or more than data.max_conflict_share show one picture under two classes. Beside
    the report: a contact sheet (PNG) of the largest groups.

    Example: python -m scripts.validate_data --dataset data/COVID-19_Radiography_Dataset
    """
    try:
        params = load_params({"dataset_uri": dataset_uri})
        click.echo(describe(params, "validate-data", ("dataset_uri", "classes", "data")))
        dataset = scan_dataset(params["dataset_uri"], params["classes"], params["data"]["split"],
                               cache_dir=params["cache_dir"])
    except (ConfigError, DatasetError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    report, usable = validate_dataset(dataset, params)
    path = Path(report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = path.with_name(path.stem + "-groups.png")
    sheet.write_bytes(groups_contact_sheet(usable, report, params))
    report["groups"]["contact_sheet"] = str(sheet)
    path.write_text(json.dumps(report, indent=2))
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"report: {path}; the largest near-duplicate groups: {sheet}")
    if not report["passed"]:
        raise click.ClickException("data validation failed: " + "; ".join(report["problems"]))
    click.echo("data validation passed")


if __name__ == "__main__":
    main(prog_name="python -m scripts.validate_data")

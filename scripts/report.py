"""Print or write the report of a registry version: ``python -m scripts.report``."""

from __future__ import annotations

from pathlib import Path

import click

from core.cli import params_or_exit, registry_option
from core.config import describe
from notify.report import data_uri, render_html, render_text, report_images
from registry.store import Registry, RegistryError
from storage import StorageError


@click.command()
@click.option("--version", "version", help="Registry version (default: the newest in testing).")
@registry_option
@click.option("--format", "output_format", type=click.Choice(["html", "text"]), default="text",
              show_default=True, help="Report format.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of stdout.")
def main(version: str | None, registry_uri: str | None, output_format: str, out_file: Path | None) -> None:
    """Print or write the report of VERSION: metrics, gate, lineage, tests, next step.

    HTML embeds the report images as data: URIs, so the file stands alone.

    \b
    Example:
      python -m scripts.report --version v0001-20261127T143000Z --format html --out report.html
    """
    params = params_or_exit({"registry_uri": registry_uri})
    click.echo(describe(params, "report", ("registry_uri",)), err=True)
    try:
        registry = Registry(params["registry_uri"])
        version, stage = registry.resolve_version(version)
        metadata = registry.metadata(version, stage)
        production = registry.production_version()
        if output_format == "html":
            images = {name: data_uri(png) for name, png in report_images(registry, version, metadata, stage).items()}
            report = render_html(metadata, images, production=production)
        else:
            report = render_text(metadata, production=production)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    if out_file is None:
        click.echo(report, nl=False)
        return
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(report, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {out_file}: {exc}") from exc
    click.echo(f"wrote the {output_format} report of {version} to {out_file}", err=True)


if __name__ == "__main__":
    main(prog_name="python -m scripts.report")

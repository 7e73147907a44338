"""Command line of the registry: ``python -m registry list|show|current|promote|rollback``."""

from __future__ import annotations

import json

import click

from model.config import ConfigError, load_params
from registry.storage import StorageError
from registry.store import STAGES, Registry, RegistryError, last_test_run


def _registry(uri: str | None) -> Registry:
    try:
        return Registry(uri or load_params()["registry_uri"])
    except (ConfigError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def _test_summary(metadata: dict) -> str:
    run = last_test_run(metadata)
    if not run:
        return "not tested"
    verdict = "passed" if run.get("failed", 1) == 0 and run.get("passed", 0) else "FAILED"
    return f"{verdict} ({run.get('passed')} passed, {run.get('failed')} failed)"


def _accuracy(metadata: dict) -> str:
    value = (metadata.get("metrics") or {}).get("accuracy")
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


registry_option = click.option(
    "--registry", "registry_uri", envvar="REGISTRY_URI", help="Registry URI (default: params.yaml)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def cli():
    """Inspect the model registry and move the production pointer.

    Example: python -m registry list --stage testing --json
    """


@cli.command("list")
@registry_option
@click.option("--stage", type=click.Choice(STAGES), help="Only this stage (default: both).")
@json_option
def list_versions(registry_uri, stage, as_json):
    """List versions with accuracy and test result, oldest first."""
    registry = _registry(registry_uri)
    try:
        rows = [
            {"stage": s, **registry.metadata(v, s)}
            for s in ([stage] if stage else STAGES)
            for v in registry.versions(s)
        ]
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    current = (registry.current() or {}).get("version")
    lines = [
        f"{r['stage']:<10} {r['version']:<24} {str(r.get('kind') or '?'):<7} "
        f"accuracy={_accuracy(r)}  tests: {_test_summary(r)}"
        f"{'  <- production' if r['version'] == current and r['stage'] == 'production' else ''}"
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) if lines else "the registry is empty")


@cli.command()
@registry_option
@click.argument("version")
@click.option("--stage", type=click.Choice(STAGES), help="Stage to read (default: where it is).")
@json_option
def show(registry_uri, version, stage, as_json):
    """Show the metadata of VERSION."""
    registry = _registry(registry_uri)
    try:
        metadata = registry.metadata(version, stage)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(metadata, as_json, json.dumps(metadata, indent=2, sort_keys=True))


@cli.command()
@registry_option
@json_option
def current(registry_uri, as_json):
    """Show the production pointer."""
    pointer = _registry(registry_uri).current()
    if pointer is None and not as_json:
        raise click.ClickException("nothing was promoted yet: run `make promote`")
    text = pointer and f"production: {pointer['version']} (previous: {pointer['previous']}, " \
        f"promoted {pointer['promoted_at']} by {pointer['promoted_by']})"
    _emit(pointer, as_json, text or "")


@cli.command()
@registry_option
@click.argument("version", required=False)
@click.option("--by", help="Who promotes (default: PROMOTED_BY, git user.email or login).")
def promote(registry_uri, version, by):
    """Copy VERSION (default: newest tested) from testing to production and point at it.

    Only a version whose last acceptance-test run passed is promoted.
    """
    try:
        pointer = _registry(registry_uri).promote(version or None, by)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"promoted {pointer['version']} to production (previous: {pointer['previous']})")


@cli.command()
@registry_option
@click.option("--by", help="Who rolls back (default: PROMOTED_BY, git user.email or login).")
def rollback(registry_uri, by):
    """Point production back at the version it served before."""
    try:
        pointer = _registry(registry_uri).rollback(by)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"production rolled back to {pointer['version']}")


if __name__ == "__main__":
    cli(prog_name="python -m registry")

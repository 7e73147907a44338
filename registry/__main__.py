"""Command line of the registry: ``python -m registry list|show|current|promote|rollback|migrate|audit|gc``."""

from __future__ import annotations

import contextlib
import json

import click

from core.cli import params_or_exit, registry_option
from registry.policy import last_test_run, readiness, run_passed
from registry.store import STAGES, Registry, RegistryError
from registry.verify import verify_servable
from storage import StorageError

REGISTRY_ERRORS = (RegistryError, StorageError)


@contextlib.contextmanager
def one_line_errors():
    """A registry or storage error becomes one clear line (click's ``Error: ...``), no traceback."""
    try:
        yield
    except REGISTRY_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc


def _registry(uri: str | None) -> Registry:
    try:
        return Registry(uri or params_or_exit()["registry_uri"])
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def _test_summary(metadata: dict) -> str:
    run = last_test_run(metadata)
    if not run:
        return "not tested"
    verdict = "passed" if run_passed(run) else "FAILED"
    return f"{verdict} ({run.get('passed')} passed, {run.get('failed')} failed)"


def _accuracy(metadata: dict) -> str:
    value = (metadata.get("metrics") or {}).get("accuracy")
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def with_promotion(metadata: dict, production: str | None) -> dict:
    """The version's merged metadata plus whether it may be promoted now, and why not (derived);
    ``production`` is the version in production now."""
    verdict = readiness(metadata, production)
    return {**metadata, "promotion": {"promotable": verdict.promotable, "reasons": list(verdict.reasons),
                                      "next_step": verdict.next_step, "in_production": verdict.in_production}}


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
    with one_line_errors():
        current = registry.production_version()
        rows = [
            {"stage": s, **with_promotion(registry.metadata(v, s), current)}
            for s in ([stage] if stage else STAGES)
            for v in registry.versions(s)
        ]
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
    """Show the merged metadata of VERSION: its record, every test run, and whether it is promotable."""
    registry = _registry(registry_uri)
    with one_line_errors():
        metadata = with_promotion(registry.metadata(version, stage), registry.production_version())
    _emit(metadata, as_json, json.dumps(metadata, indent=2, sort_keys=True))


@cli.command()
@registry_option
@json_option
def current(registry_uri, as_json):
    """Show the production pointer."""
    with one_line_errors():
        pointer = _registry(registry_uri).current()
    if pointer is None and not as_json:
        raise click.ClickException("nothing was promoted yet: run `make promote`")
    text = pointer and f"production: {pointer['version']} (previous: {pointer['previous']}, " \
        f"{pointer.get('action', 'promote')}d {pointer['promoted_at']} by {pointer['promoted_by']})"
    _emit(pointer, as_json, text or "")


@cli.command()
@registry_option
@click.argument("version", required=False)
@click.option("--by", help="Who promotes (default: PROMOTED_BY, git user.email, gcloud account or login).")
def promote(registry_uri, version, by):
    """Copy VERSION (default: newest tested) from testing to production and point at it.

    Only a version whose last acceptance-test run passed, and whose model loads and answers, is
    promoted. `make promote` also deploys it, and moves the pointer back if the deploy fails.
    """
    with one_line_errors():
        pointer = _registry(registry_uri).promote(version or None, by, verify=verify_servable)
    click.echo(f"promoted {pointer['version']} to production (previous: {pointer['previous']})")


@cli.command()
@registry_option
@click.option("--by", help="Who rolls back (default: PROMOTED_BY, git user.email, gcloud account or login).")
def rollback(registry_uri, by):
    """Point production back at the version it served before."""
    with one_line_errors():
        pointer = _registry(registry_uri).rollback(by)
    click.echo(f"production rolled back to {pointer['version']}")


@cli.command()
@registry_option
@click.option("--by", help="Who migrates (default: PROMOTED_BY, git user.email, gcloud account or login).")
def migrate(registry_uri, by):
    """Bring a registry written by the first release (pointer history, audit.jsonl) to this layout.

    Done once, audited; running it again changes nothing. `make promote` and `make rollback` do
    it by themselves.
    """
    with one_line_errors():
        pointer = _registry(registry_uri).migrate(by)
    click.echo(f"migrated: production is {pointer['version']} (previous: {pointer['previous']})" if pointer
               else "nothing to migrate: the registry already has this layout")


@cli.command()
@registry_option
@json_option
def audit(registry_uri, as_json):
    """List every promotion, rollback and revert, oldest first."""
    with one_line_errors():
        records = _registry(registry_uri).audit()
    lines = [f"{r['at']}  {r['action']:<8} {r['version'] or '(nothing)'}  replaced {r['replaced'] or '-'}  "
             f"by {r['by']}" + (f"  ({r['reason']})" if r.get("reason") else "") for r in records]
    _emit(records, as_json, "\n".join(lines) if lines else "no promotion yet")


@cli.command()
@registry_option
@click.option("--apply", is_flag=True, help="Delete what is found (default: only list it).")
@click.option("--grace-s", type=float, help="Leave alone what changed more recently than this "
              "(registry.gc_grace_s): it may still be in progress.")
@json_option
def gc(registry_uri, apply, grace_s, as_json):
    """List (or with --apply delete) what crashes left: unfinished registrations, half-done copies.

    Example: python -m registry gc --apply
    """
    try:
        grace = grace_s if grace_s is not None else params_or_exit()["registry"]["gc_grace_s"]
        registry = _registry(registry_uri)
        found = registry.collect_garbage(grace) if apply else registry.garbage(grace)
    except REGISTRY_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "deleted" if apply else "would delete (dry run; --apply deletes)"
    lines = [f"{verb}: {item['prefix']} ({item['reason']}, {item['objects']} objects, "
             f"untouched for {item['age_s']:.0f} s)" for item in found]
    _emit(found, as_json, "\n".join(lines) if lines else "nothing to collect")


if __name__ == "__main__":
    cli(prog_name="python -m registry")

"""Promote or roll back, then deploy: ``python -m scripts.release promote|rollback`` (pipelines/release.py)."""

from __future__ import annotations

import click

from core.config import ConfigError, describe, load_params
from pipelines.release import DEPLOY_TARGETS, deploy_or_revert
from registry.store import Registry, RegistryError
from registry.verify import verify_servable
from scripts.deploy import run_dir_option
from storage import StorageError

deploy_option = click.option("--deploy", "target", type=click.Choice(DEPLOY_TARGETS), default="local",
                             show_default=True, help="Where the API runs: this machine, or the GKE Deployment.")
by_option = click.option("--by", help="Who does it (default: PROMOTED_BY, git user.email, gcloud account or login).")


def _setup(step: str) -> tuple[dict, Registry]:
    try:
        params = load_params()
        click.echo(describe(params, step, ("registry_uri", "api")))
        return params, Registry(params["registry_uri"])
    except (ConfigError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def cli():
    """Promote or roll back, then deploy; a failed deploy moves production back.

    Example: python -m scripts.release promote --version v0007-20261127T133000Z
    """


@cli.command()
@click.option("--version", "version", help="Testing version to promote (default: the newest whose tests passed).")
@deploy_option
@by_option
@run_dir_option
def promote(version, target, by, run_dir):
    """Promote VERSION (checked: tests passed, model loads and answers), then deploy it.

    Example: python -m scripts.release promote --version v0007-20261127T133000Z --deploy local
    """
    params, registry = _setup("promote")
    try:
        pointer = registry.promote(version or None, by, verify=verify_servable)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"promoted {pointer['version']} to production (previous: {pointer['previous']}); deploying")
    deploy_or_revert(registry, pointer, params, target, run_dir)
    click.echo(f"{pointer['version']} is production and serving")


@cli.command()
@deploy_option
@by_option
@run_dir_option
def rollback(target, by, run_dir):
    """Point production back at the version it served before, then deploy it.

    Example: python -m scripts.release rollback
    """
    params, registry = _setup("rollback")
    try:
        pointer = registry.rollback(by)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"production rolled back to {pointer['version']}; deploying")
    deploy_or_revert(registry, pointer, params, target, run_dir)
    click.echo(f"{pointer['version']} is production and serving")


if __name__ == "__main__":
    cli(prog_name="python -m scripts.release")

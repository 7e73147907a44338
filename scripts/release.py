"""Promote or roll back, then deploy: ``python -m scripts.release promote|rollback`` (pipelines/release.py)."""

from __future__ import annotations

import functools

import click

from core.config import ConfigError, describe, load_params
from pipelines.release import DEPLOY_TARGETS, change_and_deploy
from registry.store import Registry, RegistryError, check_version_name
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


def _version_name(_ctx, _param, value: str | None) -> str | None:
    try:
        return check_version_name(value) if value else value
    except RegistryError as exc:
        raise click.BadParameter(str(exc)) from exc


@cli.command()
@click.option("--version", "version", callback=_version_name,
              help="Testing version to promote (default: the newest whose tests passed).")
@deploy_option
@by_option
@run_dir_option
def promote(version, target, by, run_dir):
    """Promote VERSION (checked: tests passed, model loads and answers), then deploy it.

    Example: python -m scripts.release promote --version v0007-20261127T133000Z --deploy local
    """
    params, registry = _setup("promote")
    pointer = change_and_deploy(registry, functools.partial(registry.promote, version or None, by,
                                                            verify=verify_servable), params, target, run_dir)
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
    pointer = change_and_deploy(registry, functools.partial(registry.rollback, by), params, target, run_dir)
    click.echo(f"{pointer['version']} is production and serving")


if __name__ == "__main__":
    cli(prog_name="python -m scripts.release")

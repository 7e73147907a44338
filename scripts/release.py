"""Promote or roll back, then deploy, as one transaction: ``python -m scripts.release promote|rollback``.

``make promote`` and ``make rollback`` run this. The registry checks that the version may be
promoted and that its model loads and answers before the production pointer moves; then the API
is deployed (locally: started, or the running one switches; ``--deploy gke``: the GKE Deployment
is rolled). If the deploy fails, the pointer is moved back to what it was, so the registry never
says production is a version that is not being served, and the command exits non-zero.
"""

from __future__ import annotations

from pathlib import Path

import click

from model.config import ConfigError, describe, load_params
from registry.store import ConcurrentChange, Registry, RegistryError
from registry.verify import verify_servable
from scripts.api_process import ApiProcessError
from scripts.deploy import DeployRefused, run_dir_option, start_api
from storage import StorageError

DEPLOY_TARGETS = ("local", "gke")


class DeployFailed(RuntimeError):
    """The API could not be brought onto the new production version."""


def deploy(params: dict, target: str, run_dir: Path, version: str) -> None:
    """Bring the API onto ``version``: the local background API, or the GKE Deployment."""
    if target == "gke":
        from scripts.deploy_gke import KubectlError, RolloutError, rollout

        try:
            rollout(version, params)
        except (KubectlError, RolloutError) as exc:
            raise DeployFailed(str(exc)) from exc
        return
    try:
        start_api(params, run_dir, version)
    except (ApiProcessError, DeployRefused) as exc:
        raise DeployFailed(str(exc)) from exc


def deploy_or_revert(registry: Registry, pointer: dict, params: dict, target: str, run_dir: Path) -> None:
    """Deploy the version ``pointer`` names; on failure move the pointer back and raise."""
    try:
        deploy(params, target, run_dir, pointer["version"])
    except DeployFailed as exc:
        try:
            restored = registry.revert(pointer, reason=f"deploy failed: {exc}")
        except (ConcurrentChange, RegistryError, StorageError) as revert_exc:
            raise click.ClickException(f"the deploy of {pointer['version']} failed ({exc}), and production could "
                                       f"not be moved back: {revert_exc}") from exc
        back = restored["version"] or "nothing (no production version)"
        raise click.ClickException(f"the deploy of {pointer['version']} failed, so production was moved back to "
                                   f"{back}: {exc}") from exc


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

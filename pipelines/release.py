"""Promote or roll back, then deploy, as one transaction: ``python -m scripts.release promote|rollback``.

``make promote`` and ``make rollback`` run this. The registry checks that the version may be
promoted and that its model loads and answers before the production pointer moves; then the API
is deployed (locally: started, or the running one switches; ``--deploy gke``: the GKE Deployment
is rolled). If the deploy fails, or anything else stops the command once the pointer moved (an
error, Ctrl-C, SIGTERM from a Tekton timeout), the pointer is moved back to what it was, so the
registry never says production is a version that is not being served, and the command exits
non-zero. A storage error after the pointer moved (giving back the lease, writing the audit
record) is only a warning: the change is done and the deploy runs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from api.process import ApiProcessError
from cluster.deploy_gke import KubectlError, RolloutError, rollout
from pipelines.deploy import DeployRefused, start_api
from registry.store import Registry, RegistryError, RevertFailed
from storage import StorageError

DEPLOY_TARGETS = ("local", "gke")


class DeployFailed(RuntimeError):
    """The API could not be brought onto the new production version."""


class Terminated(BaseException):
    """SIGTERM arrived (a Tekton timeout, a deleted pod): like KeyboardInterrupt, not an Exception."""


@contextlib.contextmanager
def terminate_as_exception():
    """Turn SIGTERM into :class:`Terminated` for the block, so a change in progress is undone
    (the default action would end the process between the pointer move and the deploy)."""
    def raise_terminated(signum, _frame):
        raise Terminated(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def deploy(params: dict, target: str, run_dir: Path, version: str) -> None:
    """Bring the API onto ``version``: the local background API, or the GKE Deployment."""
    if target == "gke":
        try:
            done = rollout(version, params)
        except (KubectlError, RolloutError) as exc:
            raise DeployFailed(str(exc)) from exc
        click.echo(done.monitor)
        return
    try:
        start_api(params, run_dir, version)
    except (ApiProcessError, DeployRefused) as exc:
        raise DeployFailed(str(exc)) from exc


def change_and_deploy(registry: Registry, change: Callable[..., dict], params: dict, target: str,
                      run_dir: Path) -> dict:
    """Move the pointer with ``change`` (registry.promote or rollback, given ``then``), then deploy
    the version it names. Whatever fails or stops the process once the pointer moved (a failed
    deploy, any other error, Ctrl-C, SIGTERM) moves the pointer back; the error says where
    production is now."""
    deployed: list[str] = []

    def then(pointer: dict) -> None:
        click.echo(f"{pointer['action']}: production is {pointer['version']} (previous: {pointer['previous']}); "
                   "deploying")
        deployed.append(pointer["version"])
        deploy(params, target, run_dir, pointer["version"])

    try:
        with terminate_as_exception():
            return change(then=then)
    except RevertFailed as exc:
        raise click.ClickException(str(exc)) from exc
    except (RegistryError, StorageError) as exc:
        if not deployed:
            raise click.ClickException(str(exc)) from exc
        failed = exc
    except (Exception, Terminated) as exc:
        if not deployed and not isinstance(exc, Terminated):
            raise
        failed = exc
    try:
        back = registry.production_version() or "nothing (no production version)"
    except StorageError as exc:
        back = f"an unknown version (the pointer cannot be read: {exc})"
    if deployed:
        message = f"the deploy of {deployed[0]} failed, so production was moved back to {back}: {failed}"
    else:
        message = f"{failed} before the deploy; production is {back}, as before"
    if isinstance(failed, Terminated):
        click.echo(f"Error: {message}", err=True)
        sys.exit(128 + signal.SIGTERM)
    raise click.ClickException(message) from failed

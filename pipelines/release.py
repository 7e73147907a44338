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

from api.process import ApiProcessError
from cluster.deploy_gke import KubectlError, RolloutError, rollout
from pipelines.deploy import DeployRefused, start_api
from registry.store import ConcurrentChange, Registry, RegistryError
from storage import StorageError

DEPLOY_TARGETS = ("local", "gke")


class DeployFailed(RuntimeError):
    """The API could not be brought onto the new production version."""


def deploy(params: dict, target: str, run_dir: Path, version: str) -> None:
    """Bring the API onto ``version``: the local background API, or the GKE Deployment."""
    if target == "gke":

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

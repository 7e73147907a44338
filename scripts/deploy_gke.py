"""Roll the API on GKE onto a promoted version: ``python -m scripts.deploy_gke VERSION``."""

from __future__ import annotations

import click

from cluster.deploy_gke import DEFAULT_NAMESPACE, DEPLOYMENT, KubectlError, RolloutError, rollout
from core.config import ConfigError, load_params


@click.command()
@click.argument("version")
@click.option("--namespace", help=f"Namespace of the API (default: GKE_NAMESPACE, else {DEFAULT_NAMESPACE}).")
@click.option("--deployment", default=DEPLOYMENT, show_default=True, help="Name of the API Deployment.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1),
              help="Seconds to wait for the rollout and for the pods to serve VERSION (default: api.start_timeout_s).")
def main(version, namespace, deployment, timeout_s):
    """Roll the API Deployment on GKE onto VERSION and wait until every pod serves it.

    VERSION must already be production (`make promote` moves the pointer first). Uses the
    current kubectl context; the Deployment gets the API image VERSION was accepted with, and the
    monitoring CronJob its trainer image.

    Example: python -m scripts.deploy_gke v0007-20261127T133000Z --namespace xray-mlops
    """
    try:
        done = rollout(version, load_params(), namespace=namespace, deployment=deployment, timeout_s=timeout_s)
    except (ConfigError, KubectlError, RolloutError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{deployment}: {len(done.answers)} pod(s) serve {version}: {', '.join(a.pod for a in done.answers)}")
    click.echo(done.monitor)


if __name__ == "__main__":
    main(prog_name="python -m scripts.deploy_gke")

"""Cancel the runs a newer push supersedes: ``python -m scripts.supersede`` (cluster/supersede.py)."""

from __future__ import annotations

import click

from cluster.deploy_gke import KubectlError
from cluster.supersede import SupersedeError, cancel, list_runs, superseded


@click.command()
@click.option("--pipeline", required=True, help="The Pipeline whose runs are compared (e.g. training).")
@click.option("--run", "run_name", required=True, help="The PipelineRun doing the superseding (this run).")
@click.option("--branch", required=True, help="Only runs with this branch param are cancelled.")
@click.option("--namespace", required=True, help="Namespace of the PipelineRuns.")
@click.option("--dry-run", is_flag=True, help="Print what would be cancelled, cancel nothing.")
def main(pipeline, run_name, branch, namespace, dry_run):
    """Cancel the older, still running runs of PIPELINE on BRANCH that RUN supersedes.

    Example: python -m scripts.supersede --pipeline training --run training-x7k2p --branch main --namespace xray-mlops
    """
    try:
        runs = list_runs(pipeline, namespace)
        names = superseded(runs, run_name, branch)
        for name in names:
            if not dry_run:
                cancel(name, namespace)
            click.echo(f"{'would cancel' if dry_run else 'cancelled'} {name}: superseded by {run_name} on {branch}")
    except (KubectlError, SupersedeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not names:
        click.echo(f"no older {pipeline} run on {branch} is running")


if __name__ == "__main__":
    main(prog_name="python -m scripts.supersede")

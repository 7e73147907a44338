"""Email the product owner that a pipeline run on GKE failed: ``python -m scripts.notify_failure``."""

from __future__ import annotations

import click

from cluster.notify_failure import build_message, parse_task
from core.cli import params_or_exit
from core.config import describe
from notify.mail import DeliveryError, deliver


@click.command()
@click.option("--pipeline", required=True, help="Name of the Pipeline (training, retraining, ...).")
@click.option("--run", "run_name", required=True, help="Name of the PipelineRun that failed.")
@click.option("--namespace", default="xray-mlops", show_default=True, help="Namespace of the run.")
@click.option("--commit", default="", help="The commit the run was building.")
@click.option("--task", "tasks", multiple=True, callback=lambda _c, _p, values: [parse_task(v) for v in values],
              help="TASK=STATUS, once per task of the pipeline, in order.")
def main(pipeline, run_name, namespace, commit, tasks):
    """Email the product owner that RUN of PIPELINE failed, with each task's status.

    Sends by SMTP when SMTP_HOST is set, else writes an .eml file to OUTBOX_DIR.

    Example: python -m scripts.notify_failure --pipeline training --run training-x7k2p --task clone=Succeeded --task validate-data=Failed
    """
    params = params_or_exit()
    click.echo(describe(params, "notify-failure", ("outbox_dir", "smtp", "notify")), err=True)
    message = build_message(pipeline, run_name, namespace, commit, tasks,
                            params["notify"]["from"], params["notify"]["to"])
    try:
        delivered_to = deliver(message, params)
    except DeliveryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"failure of {run_name} emailed: {delivered_to}")


if __name__ == "__main__":
    main(prog_name="python -m scripts.notify_failure")

"""``make monitor``: compare the API's live statistics with the production model's reference
(monitoring/run.py), write the report, email the product owner once per alarm, optionally start
retraining once per alarm."""

from __future__ import annotations

import click

from core.cli import params_or_exit, registry_option
from core.config import REPO_ROOT, describe
from monitoring.run import MonitorError, api_urls, monitor_once, summary_lines
from notify.mail import OUTCOME_HEADER, SUBJECT_PREFIX, DeliveryError, deliver, new_message

OUTCOME = "monitor-drift"


def email_sender(params: dict, failures: list[str]):
    """The ``send`` of monitoring/run.py: the project's email code (SMTP, else the outbox)."""

    def send(subject: str, text: str, attachments: dict[str, bytes]) -> str:
        notify = params["notify"]
        message = new_message(f"{SUBJECT_PREFIX} {subject}", notify["from"], notify["to"])
        message[OUTCOME_HEADER] = OUTCOME
        message.set_content(text, cte="quoted-printable")
        for name, data in attachments.items():
            message.add_attachment(data, maintype="image", subtype="png", filename=name)
        try:
            return deliver(message, params)
        except DeliveryError as exc:
            failures.append(str(exc))
            return f"NOT delivered ({exc})"

    return send


@click.command()
@click.option("--api-url", "urls", multiple=True, envvar="API_URL",
              help="Base URL of an API replica; repeat (or separate by spaces/commas) for several, whose "
                   "statistics are added up. [env API_URL; default: monitor.api_urls, else the local API]")
@registry_option
@click.option("--report-dir", help="Where report.json and report.png go (default: monitor.report_dir).")
@click.option("--trigger-retraining/--no-trigger-retraining", default=None,
              help="Start retraining once per alarm (default: monitor.trigger_retraining).")
def main(urls, registry_uri, report_dir, trigger_retraining):
    """Compare the live statistics of the API with the production model's reference.

    Drift (or too many out-of-distribution or low-confidence answers) opens an alarm: the product
    owner is emailed once, and retraining starts once when monitor.trigger_retraining is true. A
    run with enough images and no drift closes the alarm. Exits 0 whatever the verdict; 1 when the
    statistics cannot be read or the email could not be delivered.

    \b
    Example: API_URL=http://127.0.0.1:8080 python -m scripts.monitor --report-dir .run/monitor
    """
    params = params_or_exit({"registry_uri": registry_uri, "monitor.report_dir": report_dir,
                             "monitor.trigger_retraining": trigger_retraining})
    click.echo(describe(params, "monitor", ("registry_uri", "monitor", "notify")), err=True)
    failures: list[str] = []
    try:
        report = monitor_once(params, api_urls(urls, params), email_sender(params, failures), cwd=REPO_ROOT)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(summary_lines(report)))
    if failures:
        raise click.ClickException("the alarm email was not delivered: " + "; ".join(failures))


if __name__ == "__main__":
    main(prog_name="python -m scripts.monitor")

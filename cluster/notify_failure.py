"""Email the product owner that a pipeline run on GKE failed: ``python -m scripts.notify_failure``.

The report of a version (``make notify``) covers runs that registered one, whether its tests
passed or not. This covers the others: a run that failed before a version existed (invalid data,
the quality gate, an infrastructure error). The notify-failure task of each Tekton pipeline runs it
in its ``finally`` section, with the status of every task. Delivery is the report's: SMTP, else
the outbox, with a copy in the outbox when SMTP fails.
"""

from __future__ import annotations

from email.message import EmailMessage

import click

from notify.mail import SUBJECT_PREFIX, new_message


def parse_task(value: str) -> tuple[str, str]:
    """``TASK=STATUS`` -> (task, status), as the pipelines pass ``$(tasks.NAME.status)``."""
    task, sep, status = value.partition("=")
    if not sep or not task:
        raise click.BadParameter(f"{value!r} is not TASK=STATUS")
    return task, status


def failed_tasks(tasks: list[tuple[str, str]]) -> list[str]:
    """Tasks that failed; None (skipped) does not count, it follows from an earlier failure."""
    return [task for task, status in tasks if status == "Failed"]


def build_message(pipeline: str, run: str, namespace: str, commit: str, tasks: list[tuple[str, str]],
                  sender: str, recipient: str) -> EmailMessage:
    """A plain-text email naming the run, what failed, every task's status and where the logs are."""
    failed = failed_tasks(tasks)
    message = new_message(f"{SUBJECT_PREFIX} {pipeline} run {run} failed" + (f": {', '.join(failed)}" if failed else ""),
                          sender, recipient)
    width = max((len(task) for task, _ in tasks), default=0)
    lines = [
        f"The {pipeline} pipeline run {run} failed; no model version was registered for review.",
        "",
        f"  commit     {commit or 'n/a'}",
        f"  namespace  {namespace}",
        "",
        "Tasks:",
        *(f"  {task.ljust(width)}  {status or 'n/a'}" for task, status in tasks),
        "",
        "Logs:",
        f"  tkn pipelinerun logs {run} -n {namespace}",
        f"  kubectl get pipelinerun {run} -n {namespace} -o yaml",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message

"""The note a step leaves when it has told the product owner how it ended.

A step that ends in a known outcome (the gate refused the candidate, production is still good...)
emails it and writes ``outcome.json`` in the run directory; the pipeline runner (and, on GKE, the
train and retrain Tasks, through ``python -m scripts.outcome FILE``) reads it to tell a reported
outcome from a crash, which is reported separately.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from notify.mail import DeliveryError, notify_outcome
from registry.store import utc_now


class OutcomeNotTold(click.ClickException):
    """The outcome is noted, but its email was not delivered: the step must fail, or nobody hears of it
    (on GKE an outbox copy dies with the pod). A ClickException, so a step's CLI says it in one line."""


def record_outcome(path: str | Path | None, kind: str, email: str, delivered: bool = True) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"outcome": kind, "email": email, "delivered": delivered, "at": utc_now()}))


def tell(params: dict, outcome_file: str | Path | None, kind: str, headline: str, metadata=None, facts=None) -> str:
    """Email the product owner an outcome (notify/mail.py OUTCOMES) and note in ``outcome_file``
    that it was told, so the pipeline does not report a crash too; return where the email went.

    When the email cannot be delivered, the outcome is still noted (``delivered: false``) and
    OutcomeNotTold is raised: the step exits non-zero, whatever its outcome was.
    """
    try:
        where = notify_outcome(params, kind, headline, metadata, facts)
    except DeliveryError as exc:
        record_outcome(outcome_file, kind, f"NOT delivered ({exc})", delivered=False)
        raise OutcomeNotTold(f"{headline.rstrip('.')}; the email telling the product owner so was NOT delivered: "
                             f"{exc}") from exc
    record_outcome(outcome_file, kind, where)
    return where


def read_outcome(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None

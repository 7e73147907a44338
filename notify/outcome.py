"""How a pipeline run ended, told to the product owner: the outcomes, their email, and the note.

A step that ends in a known outcome (:data:`OUTCOMES`: the gate refused the candidate, production
is still good...) emails it and writes ``outcome.json`` in the run directory; the pipeline runner (and, on GKE, the
train and retrain Tasks, through ``python -m scripts.outcome FILE``) reads it to tell a reported
outcome from a crash, which is reported separately.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import click

from notify.mail import OUTCOME_HEADER, SUBJECT_PREFIX, DeliveryError, deliver, new_message
from notify.report import render_html, render_text
from registry.store import utc_now

# Every outcome of a pipeline run that the product owner hears about, with its title (the email's
# subject). Whether the run failed is the step's exit status, decided where the outcome arises.
OUTCOMES = {
    "training-failed-gate": "training failed the quality gate",
    "production-still-good": "production still good on the new data",
    "testing-still-good": "testing model still good on the new data",
    "poor-model": "retraining produced a poor model",
    "no-model": "no model to retrain",
    "incompatible-base": "retraining refused: the base model does not fit the current settings",
    "step-failed": "a pipeline step failed",
}


def outcome_message(kind: str, headline: str, sender: str, recipient: str, metadata: Mapping[str, Any] | None = None,
                    facts: Mapping[str, Any] | None = None) -> EmailMessage:
    """The email of an outcome that registered no version (gate failed, still good, no model...).

    The headline says what happened; ``facts`` are key/value lines (which step, which log...);
    ``metadata`` is the candidate's, when one was trained, shown as its report (no promotion
    status: it was not registered, or is not what this email is about).
    """
    title = OUTCOMES[kind]
    message = new_message(f"{SUBJECT_PREFIX} {title}", sender, recipient)
    message[OUTCOME_HEADER] = kind
    lines = [headline, ""] + [f"  {key}: {value}" for key, value in (facts or {}).items()]
    text = "\n".join(lines) + "\n"
    if metadata:
        text += "\n" + render_text(metadata, status=False)
    message.set_content(text, cte="quoted-printable")
    if metadata:
        message.add_alternative(render_html(metadata, status=False, headline=headline, facts=facts),
                                subtype="html", cte="quoted-printable")
    return message


def notify_outcome(params: Mapping[str, Any], kind: str, headline: str, metadata: Mapping[str, Any] | None = None,
                   facts: Mapping[str, Any] | None = None) -> str:
    """Email the product owner one outcome; return where it went (DeliveryError when it could not)."""
    notify = params["notify"]
    message = outcome_message(kind, headline, notify["from"], notify["to"], metadata, facts)
    return deliver(message, params)


class OutcomeNotTold(click.ClickException):
    """The outcome is noted, but its email was not delivered: the step must fail, or nobody hears of it
    (on GKE an outbox copy dies with the pod). A ClickException, so a step's CLI says it in one line."""


def record_outcome(path: str | Path | None, kind: str, email: str, delivered: bool = True) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"outcome": kind, "email": email, "delivered": delivered, "at": utc_now()}))


def tell(params: dict, outcome_file: str | Path | None, kind: str, headline: str, metadata=None, facts=None) -> str:
    """Email the product owner an outcome (OUTCOMES) and note in ``outcome_file``
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

"""The note a step leaves when it has told the product owner how it ended.

A step that ends in a known outcome (the gate refused the candidate, production is still good...)
emails it and writes ``outcome.json`` in the run directory; the pipeline runner (and, on GKE, the
train and retrain Tasks, through ``python -m scripts.outcome FILE``) reads it to tell a reported
outcome from a crash, which is reported separately.
"""

from __future__ import annotations

import json
from pathlib import Path

from notify.mail import DeliveryError, notify_outcome
from registry.store import utc_now


def record_outcome(path: str | Path | None, kind: str, email: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"outcome": kind, "email": email, "at": utc_now()}))


def tell(params: dict, outcome_file: str | Path | None, kind: str, headline: str, metadata=None, facts=None) -> str:
    """Email the product owner an outcome (notify/mail.py OUTCOMES) and note in ``outcome_file``
    that it was told, so the pipeline does not report a crash too; return where the email went."""
    try:
        where = notify_outcome(params, kind, headline, metadata, facts)
    except DeliveryError as exc:
        where = f"NOT delivered ({exc})"
    record_outcome(outcome_file, kind, where)
    return where


def read_outcome(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None

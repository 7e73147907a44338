"""The note a step leaves when it has told the product owner how it ended.

A step that ends in a known outcome (the gate refused the candidate, production is still good...)
emails it and writes ``outcome.json`` in the run directory; the pipeline runner reads it to tell a
reported outcome from a crash, which it reports itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from registry.store import utc_now


def record_outcome(path: str | Path | None, kind: str, email: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"outcome": kind, "email": email, "at": utc_now()}))


def read_outcome(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None

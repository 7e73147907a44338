"""Request ids and the one structured (JSON) log line written per request.

A client's ``X-Request-ID`` is echoed when it is sane (1-128 characters of letters, digits and
``._:-``), so it can be followed across services; anything else, or none, gets a fresh id, so a
log line never carries what a client injected.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ACCESS_LOG = logging.getLogger("api.access")


def request_id(sent: str | None) -> str:
    """The id of a request: the client's when sane, else a new one."""
    if sent and SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def log_request(request_id: str, method: str, route: str, status: int, seconds: float,
                model_version: str | None) -> None:
    """Write the request's log line: one JSON object."""
    if not ACCESS_LOG.isEnabledFor(logging.INFO):
        return
    ACCESS_LOG.info(json.dumps({
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
        "model_version": model_version,
    }))


def configure_logging(level: int = logging.INFO) -> None:
    """Plain lines for the server's own log; the access lines bare, one JSON object each."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not ACCESS_LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS_LOG.addHandler(handler)
    ACCESS_LOG.propagate = False

"""Alarm episodes of ``make monitor``, kept as create-only objects so every action happens once.

Under the state URI (``monitor.state_uri``, default ``<registry_uri>/monitoring``), per production
version::

    <version>/episode-0001.json            the alarm opened (the first run that found drift)
    <version>/episode-0001-email.json      its email was delivered
    <version>/episode-0001-retrain.json    its retraining was started
    <version>/episode-0001-closed.json     a later run with enough images found no drift

An episode is open from its first object until its ``-closed`` one. Each object is created only
if absent (a local file's exclusive create, a GCS precondition), so two runs at once -- a
CronJob overlapping a manual ``make monitor`` -- cannot both open an episode, email it or start
its retraining: the one whose create fails does nothing. A new production version starts with
no episode: its live statistics start afresh too.
"""

from __future__ import annotations

import json
import re

from registry.store import utc_now
from storage import AlreadyExists, open_storage

EPISODE = re.compile(r"^episode-(\d{4,})\.json$")


class AlarmState:
    """The episodes of one production version."""

    def __init__(self, uri: str, version: str, storage=None):
        self.storage = storage or open_storage(uri)
        self.version = version

    def _path(self, number: int, suffix: str = "") -> str:
        return f"{self.version}/episode-{number:04d}{'-' + suffix if suffix else ''}.json"

    def latest(self) -> int:
        """The number of the newest episode (0: none yet)."""
        names = self.storage.list(self.version)[0]
        return max((int(m.group(1)) for m in map(EPISODE.match, names) if m), default=0)

    def open_episode(self) -> int | None:
        """The open episode's number, or None."""
        number = self.latest()
        if number and not self.storage.exists(self._path(number, "closed")):
            return number
        return None

    def start(self, record: dict) -> int | None:
        """Open the next episode; None when another run opened it first."""
        number = self.latest() + 1
        return number if self._create(self._path(number), record) else None

    def done(self, number: int, action: str) -> bool:
        """Whether ``action`` (``email``, ``retrain``) of episode ``number`` was recorded."""
        return self.storage.exists(self._path(number, action))

    def claim(self, number: int, action: str, record: dict) -> bool:
        """Record ``action`` of episode ``number``; False when it was recorded before (by any run)."""
        return self._create(self._path(number, action), record)

    def close(self, number: int, record: dict) -> bool:
        return self._create(self._path(number, "closed"), record)

    def _create(self, path: str, record: dict) -> bool:
        try:
            self.storage.create(path, json.dumps({"at": utc_now(), **record}, indent=1, sort_keys=True).encode())
        except AlreadyExists:
            return False
        return True

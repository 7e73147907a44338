"""A lease: an exclusive lock built on create-if-absent and compare-and-swap, so it works the same
on a local disk and on GCS, across machines, and frees itself when its holder dies (it expires).

The lease object ``locks/<name>.json`` holds its owner, a random token and an expiry time. It is
taken by creating it, or by replacing (compare-and-swap) one that is released or expired, and given
back by replacing it with a released record, again by compare-and-swap, so a holder whose lease
expired and was taken over can never release the new holder's lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid

from storage.base import AlreadyExists, GenerationMismatch, ObjectNotFound, StorageError

DEFAULT_TTL_S = 120.0
DEFAULT_WAIT_S = 60.0
LOG = logging.getLogger(__name__)


class LeaseBusy(StorageError):
    """Another holder kept the lease for longer than we were willing to wait."""


class LeaseLost(StorageError):
    """Our lease expired before the work it protects was committed."""


class Lease:
    """A held lease; ``check()`` right before a commit point proves it has not expired, and
    ``remaining_s()`` is how long the commit's own retries may take.

    The holder measures its lease on its own monotonic clock from before the lease was written, so
    it never believes it holds longer than others see it held, whatever the wall clocks say.
    """

    def __init__(self, name: str, token: str, expires_at: float, margin_s: float, deadline: float | None = None):
        self.name, self.token, self.expires_at, self._margin_s = name, token, expires_at, margin_s
        self._deadline = deadline if deadline is not None else time.monotonic() + (expires_at - time.time())

    def remaining_s(self) -> float:
        """Seconds left before the safety margin ends the lease for its holder (may be negative)."""
        return self._deadline - self._margin_s - time.monotonic()

    def check(self) -> None:
        if self.remaining_s() <= 0:
            raise LeaseLost(f"the lease {self.name!r} expired before the change was committed; nothing was changed")


def lease_path(name: str) -> str:
    return f"locks/{name}.json"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def lease(storage, name: str, ttl_s: float = DEFAULT_TTL_S, wait_s: float = DEFAULT_WAIT_S):
    """Hold the lease ``name`` for the ``with`` block (at most ``ttl_s`` seconds)."""
    path, token = lease_path(name), uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        started, expires_at = time.monotonic(), time.time() + ttl_s
        record = json.dumps({"owner": _owner(), "token": token, "expires_at": expires_at}).encode()
        try:
            generation = storage.create(path, record)
            break
        except AlreadyExists:
            pass
        try:
            data, seen = storage.read_with_generation(path)
        except ObjectNotFound:
            continue
        held = json.loads(data)
        if held.get("released") or held.get("expires_at", 0) < time.time():
            try:
                generation = storage.replace(path, record, seen)
                break
            except GenerationMismatch:
                continue
        if time.monotonic() > deadline:
            until = time.strftime("%H:%M:%S", time.localtime(held.get("expires_at", 0)))
            raise LeaseBusy(f"{name!r} is locked by {held.get('owner', '?')} (until {until} at most); try again")
        time.sleep(random.uniform(0.02, 0.2))
    try:
        yield Lease(name, token, expires_at, margin_s=min(10.0, ttl_s / 4), deadline=started + ttl_s)
    finally:
        released = json.dumps({"released": True, "token": token, "at": time.time()}).encode()
        try:
            storage.replace(path, released, generation)
        except (GenerationMismatch, ObjectNotFound):
            pass  # it expired and was taken over: it is not ours to release
        except StorageError as exc:
            # What the lease protected is done (or failed on its own); an unreleased lease only
            # expires, so this must not turn a finished change into a failure.
            LOG.warning("warning: the lease %r could not be released (it expires by itself within %.0f s): %s",
                        name, ttl_s, exc)

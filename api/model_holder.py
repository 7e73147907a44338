"""The model the API serves, and its hot reload from the registry.

Requests read ``ModelHolder.predictor`` once and use that object to the end, so a swap (one
attribute assignment, atomic in Python) never changes the model under a request in flight; the old
session is freed when its last request finishes. New models are loaded and warmed up on the poller
thread, off the request path, and swapped in only when both succeed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.predictor import ModelUnusable, Predictor
from registry.store import MODEL_FILE, Registry

LOG = logging.getLogger(__name__)

# A registry that cannot be read now may be readable at the next poll, whatever the error (a storage
# outage, a Workload Identity token that cannot be had, a damaged object): it is retried, reported
# in /readyz and the up-to-date gauge, and logged once on one line; it never stops the poller.
TRANSIENT_ERRORS = (Exception,)


class ModelHolder:
    """Holds the served :class:`Predictor` and replaces it when the registry points elsewhere.

    Follow mode (``version=None``): serve the version of the production pointer, polled every
    ``reload_interval_s`` seconds (0: only at start). Fixed mode: serve ``version`` of ``stage``,
    as the acceptance tests do with a testing version. ``on_load(predictor)`` runs on each new
    model before it serves (the live statistics start a new window there); it must not raise.
    """

    def __init__(
        self,
        registry: Registry,
        stage: str = "production",
        version: str | None = None,
        reload_interval_s: float = 2.0,
        intra_op_threads: int = 0,
        on_load: Callable[[Predictor], None] | None = None,
    ):
        self.registry = registry
        self.stage = stage
        self.fixed_version = version
        self.reload_interval_s = reload_interval_s
        self.intra_op_threads = intra_op_threads
        self.on_load = on_load  # called with a new model after its warm-up, before it serves
        self.load_counts = {"success": 0, "failure": 0}
        self._predictor: Predictor | None = None
        # (wanted version, why it is not served or None), replaced as one tuple so that readers
        # never see the version of one poll with the error of another.
        self._wanted: tuple[str | None, str | None] = (version, None)
        self._rejected: dict[str, str] = {}  # version -> why it can never be served (files never change)
        self._reported: dict[str, str] = {}  # last problem logged per subject, to log it once
        self._load_lock = threading.Lock()
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def predictor(self) -> Predictor | None:
        """The model being served, or None while none could be loaded."""
        return self._predictor

    @property
    def wanted(self) -> tuple[str | None, str | None]:
        """The version the registry asks for, and one line saying why it is not served (or None)."""
        return self._wanted

    def wanted_version(self) -> str | None:
        """The version that should be served: the fixed one, else the production pointer's."""
        if self.fixed_version is not None:
            return self.fixed_version
        pointer = self.registry.current()
        return pointer["version"] if pointer else None

    def refresh(self) -> bool:
        """Load the wanted version if it is not served yet; True when a new model was swapped in."""
        with self._load_lock:
            try:
                version = self.wanted_version()
            except TRANSIENT_ERRORS as exc:
                message = one_line(f"cannot read the production pointer: {exc}")
                self._wanted = (self._wanted[0], message)
                self._report("pointer", message)
                return False
            self._reported.pop("pointer", None)  # a later outage is logged again
            served = self._predictor
            if version is None or (served is not None and served.version == version):
                self._wanted = (version, None)
                return False
            if version in self._rejected:
                self._wanted = (version, self._rejected[version])
                return False
            try:
                predictor = self._load(version)
            except ModelUnusable as exc:
                self._rejected[version] = one_line(f"rejected: {exc}")
                self._wanted = (version, self._rejected[version])
                self.load_counts["failure"] += 1
                LOG.error("model %s rejected, still serving %s: %s", version, _name(served), exc)
                return False
            except TRANSIENT_ERRORS as exc:
                message = one_line(f"cannot read model {version} ({exc}); retrying")
                self._wanted = (version, message)
                self.load_counts["failure"] += 1
                self._report(version, message)
                return False
            self._predictor = predictor
            self._wanted = (version, None)
            self.load_counts["success"] += 1
            LOG.info("model %s loaded and warmed up; it replaces %s", version, _name(served))
            return True

    def _load(self, version: str) -> Predictor:
        metadata = self.registry.metadata(version, self.stage)
        model_bytes = self.registry.read_file(version, MODEL_FILE, self.stage)
        predictor = Predictor(model_bytes, metadata, intra_op_threads=self.intra_op_threads)
        predictor.warm_up()
        if self.on_load is not None:
            self.on_load(predictor)
        return predictor

    def _report(self, subject: str, message: str) -> None:
        """Log a problem once, on one line (no traceback), not at every poll while it lasts."""
        if self._reported.get(subject) != message:
            self._reported[subject] = message
            LOG.error("%s", message)

    def start(self) -> None:
        """Load the model now (so a server is ready when it starts listening), then poll."""
        self.refresh()
        if self.reload_interval_s > 0 and self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="model-reload", daemon=True)
            self._poller.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; the served model stays loaded."""
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None

    def _poll(self) -> None:
        while not self._stopping.wait(self.reload_interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001
                # The poller must outlive any surprise, or the API would silently stop following
                # the registry; the expected failures are handled inside refresh().
                LOG.exception("unexpected error while looking for a new model")


def one_line(message: str) -> str:
    """``message`` on one line: onnxruntime's errors span several."""
    return " ".join(message.split())


def _name(predictor: Predictor | None) -> str:
    return predictor.version if predictor else "no model"

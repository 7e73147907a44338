"""The API's live statistics: every prediction's summaries and answer, counted in fixed bins.

One :class:`LiveMonitor` per app. Each served model version gets a fresh window when it is loaded
(:meth:`LiveMonitor.start`, called by the model holder before the new model serves), so the
statistics always belong to one version and a reload resets them. Memory is fixed: a
:class:`monitoring.stats.Stats` of the current version and one of the version before (requests
still in flight on the old model land there, and are not mixed into the new window). Updates
take one lock for a few counter increments; the summaries and the score are computed outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring.reference import Reference, ReferenceError, read_reference
from monitoring.stats import MergeError, Stats, merge_all
from monitoring.summaries import Source, summarize
from registry.store import Registry, RegistryError
from storage import StorageError

LOG = logging.getLogger(__name__)
UNSCORED = {"score": None, "flagged": None}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Window:
    """The statistics of one served version since it was loaded."""

    def __init__(self, version: str, classes: Sequence[str], reference: Reference | None, started: float):
        self.version, self.reference, self.started = version, reference, started
        self.stats = Stats(classes)
        self.last: float | None = None  # the time of the last request counted


class LiveMonitor:
    """Live statistics of the served version; ``enabled=False`` turns every call into a no-op
    (``monitor.enabled``: the bench measures the API both ways)."""

    def __init__(self, enabled: bool = True, ood_threshold: float = 2.0, clock=time.time):
        self.enabled = enabled
        self.ood_threshold = float(ood_threshold)
        self.clock = clock
        self._lock = threading.Lock()
        self._current: Window | None = None
        self._previous: Window | None = None
        self.cpu_seconds = 0.0  # CPU the request threads spent in observe(), since the process started

    def start(self, version: str, classes: Sequence[str], reference: Reference | None) -> None:
        """A new window for ``version`` (a model was just loaded); the old one is kept for requests
        still answered by the model it replaces."""
        window = Window(version, classes, reference, self.clock())
        with self._lock:
            self._previous, self._current = self._current, window

    def load(self, registry: Registry, stage: str, version: str, classes: Sequence[str]) -> None:
        """:meth:`start` with the version's reference read from the registry. A version without one
        (or with one that cannot be read) is still served: its answers are just not scored."""
        reference = None
        if self.enabled:
            try:
                reference = read_reference(registry, version, stage)
            except (ReferenceError, RegistryError, StorageError, OSError) as exc:
                LOG.warning("model %s: no out-of-distribution scores, its reference cannot be read: %s", version, exc)
            else:
                if reference is None:
                    LOG.warning("model %s has no monitoring reference (registered before monitoring existed): "
                                "its answers carry no out-of-distribution score", version)
        self.start(version, classes, reference)

    def _window(self, version: str) -> Window | None:
        for window in (self._current, self._previous):
            if window is not None and window.version == version:
                return window
        return None

    def observe(self, version: str, pixels, source: Source, probabilities: Sequence[float]) -> dict:
        """Count one answered image; return its ``out_of_distribution`` entry.

        ``pixels``: the network's input; ``source``: the size and mode of the image as sent;
        ``probabilities``: the model's answer in class order. ``score``/``flagged`` are null
        when the version has no reference or monitoring is off.
        """
        if not self.enabled:
            return dict(UNSCORED)
        began = time.thread_time()  # this thread's CPU: what monitoring costs, not the GIL waits
        window = self._window(version)
        summary = summarize(pixels, *source)
        reference = window.reference if window is not None else None
        score = reference.score(summary) if reference is not None else None
        flagged = score > self.ood_threshold if score is not None else None
        with self._lock:
            if window is not None:
                window.stats.add_input(summary)
                window.stats.add_prediction(probabilities, score, bool(flagged))
                window.last = self.clock()
            self.cpu_seconds += time.thread_time() - began
        return {"score": round(score, 4), "flagged": flagged} if score is not None else dict(UNSCORED)

    def snapshot(self) -> dict | None:
        """The current window as JSON (``GET /monitoring``), or None before a model is loaded."""
        with self._lock:
            window = self._current
            if window is None:
                return None
            stats = window.stats.to_json()
            last = window.last
        now = self.clock()
        return {
            "version": window.version,
            "enabled": self.enabled,
            "window": {"started_at": iso(window.started), "until": iso(now),
                       "seconds": round(now - window.started, 3),
                       "last_request_at": iso(last) if last is not None else None},
            "reference": window.reference is not None,
            "ood_threshold": self.ood_threshold,
            "stats": stats,
        }

    def size(self) -> int:
        """Counters held in memory (both windows): constant whatever the number of requests."""
        with self._lock:
            return sum(window.stats.size() for window in (self._current, self._previous) if window is not None)

    def collector(self) -> MonitorCollector:
        return MonitorCollector(self)


class MonitorCollector:
    """The live statistics in Prometheus form, read at each scrape; labelled by version, so a
    reload shows as a counter reset of a new series."""

    def __init__(self, monitor: LiveMonitor):
        self.monitor = monitor

    def collect(self):
        snapshot = self.monitor.snapshot()
        ood = CounterMetricFamily("xray_api_ood_images", "Images answered, by out-of-distribution verdict "
                                  "(flagged, in_distribution, unscored: no reference or monitoring off).",
                                  labels=["version", "result"])
        images = CounterMetricFamily("xray_monitor_images", "Images counted in the live statistics of the "
                                     "served version since it was loaded.", labels=["version"])
        bins = CounterMetricFamily("xray_monitor_bin", "Live histogram counts of the served version "
                                   "(GET /monitoring has the bin edges), by statistic and bin.",
                                   labels=["version", "statistic", "bin"])
        started = GaugeMetricFamily("xray_monitor_window_start_seconds", "When the live statistics of the "
                                    "served version started (Unix time).", labels=["version"])
        cpu = CounterMetricFamily("xray_monitor_cpu_seconds", "CPU time the request threads spent summarising, "
                                  "scoring and counting images (monitoring's own cost; compare with "
                                  "process_cpu_seconds_total).", value=self.monitor.cpu_seconds)
        if snapshot is not None:
            version, stats = snapshot["version"], snapshot["stats"]
            scored, flagged = stats["ood"]["scored"], stats["ood"]["flagged"]
            for result, value in (("flagged", flagged), ("in_distribution", scored - flagged),
                                  ("unscored", stats["predictions"] - scored)):
                ood.add_metric([version, result], value)
            images.add_metric([version], stats["images"])
            for name, histogram in stats["histograms"].items():
                labels = histogram.get("categories") or [str(i) for i in range(len(histogram["counts"]))]
                for label, count in zip(labels, histogram["counts"]):
                    bins.add_metric([version, name, label], count)
            started.add_metric([version], datetime.strptime(snapshot["window"]["started_at"], "%Y-%m-%dT%H:%M:%SZ")
                               .replace(tzinfo=UTC).timestamp())
        yield from (ood, images, bins, started, cpu)


def merge_snapshots(snapshots: Sequence[Mapping]) -> dict:
    """The snapshots of several replicas (or processes) of one version as one: counts added, the
    window from the earliest start to the latest end. MergeError when they do not add up."""
    if not snapshots:
        raise MergeError("no statistics to merge")
    versions = {snapshot["version"] for snapshot in snapshots}
    if len(versions) != 1:
        raise MergeError(f"statistics of several versions ({', '.join(sorted(versions))}) do not add up")
    merged = merge_all(Stats.from_json(snapshot["stats"]) for snapshot in snapshots)
    windows = [snapshot["window"] for snapshot in snapshots]
    lasts = [w["last_request_at"] for w in windows if w.get("last_request_at")]
    started, until = min(w["started_at"] for w in windows), max(w["until"] for w in windows)
    seconds = (datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ") - datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ"))
    return {
        "version": snapshots[0]["version"],
        "enabled": all(snapshot.get("enabled", True) for snapshot in snapshots),
        "window": {"started_at": started, "until": until, "seconds": seconds.total_seconds(),
                   "last_request_at": max(lasts) if lasts else None},
        "reference": all(snapshot.get("reference") for snapshot in snapshots),
        "ood_threshold": snapshots[0].get("ood_threshold"),
        "replicas": len(snapshots),
        "stats": merged.to_json(),
    }

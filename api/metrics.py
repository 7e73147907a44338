"""Prometheus metrics of the API, written by hand in the text exposition format 0.0.4.

Counters live in this process; a scraper (Prometheus, the GKE managed collector) reads
``GET /metrics``. Request counts are labelled by the matched route, not the raw path, so that
scanners probing random URLs cannot grow the label set without bound.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_label_value(str(value))}"' for name, value in labels.items()) + "}"


class Metrics:
    """Request counts and prediction latencies, updated from the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._latency_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self._latency_sum_s = 0.0

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self._requests[(endpoint, status)] += 1

    def observe_prediction(self, seconds: float) -> None:
        """Record the time one successful ``POST /predict`` took, decoding included."""
        index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            self._latency_buckets[index] += 1
            self._latency_sum_s += seconds

    def render(self, served_version: str | None, load_counts: Mapping[str, int]) -> str:
        """The exposition text; the model's state comes from the caller, read at scrape time."""
        with self._lock:
            requests = sorted(self._requests.items())
            buckets = list(self._latency_buckets)
            latency_sum = self._latency_sum_s
        lines = [
            "# HELP xray_api_requests_total HTTP requests answered, by route and status.",
            "# TYPE xray_api_requests_total counter",
        ]
        for (endpoint, status), count in requests:
            lines.append(f"xray_api_requests_total{_labels(endpoint=endpoint, status=status)} {count}")
        lines += [
            "# HELP xray_api_prediction_duration_seconds Time to answer a successful POST /predict.",
            "# TYPE xray_api_prediction_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip([*map(repr, LATENCY_BUCKETS_S), "+Inf"], buckets):
            cumulative += count
            lines.append(f"xray_api_prediction_duration_seconds_bucket{_labels(le=bound)} {cumulative}")
        lines += [
            f"xray_api_prediction_duration_seconds_sum {latency_sum!r}",
            f"xray_api_prediction_duration_seconds_count {cumulative}",
            "# HELP xray_api_model_loaded 1 while a model is served, 0 before one could be loaded.",
            "# TYPE xray_api_model_loaded gauge",
            f"xray_api_model_loaded {int(served_version is not None)}",
            "# HELP xray_api_model_info The model version being served (always 1).",
            "# TYPE xray_api_model_info gauge",
        ]
        if served_version is not None:
            lines.append(f"xray_api_model_info{_labels(version=served_version)} 1")
        lines += [
            "# HELP xray_api_model_reloads_total Model loads from the registry, by result "
            "(a failed one never replaces the served model).",
            "# TYPE xray_api_model_reloads_total counter",
        ]
        for result in ("success", "failure"):
            lines.append(
                f"xray_api_model_reloads_total{_labels(result=result)} {load_counts.get(result, 0)}"
            )
        return "\n".join(lines) + "\n"

"""Prometheus metrics of the API, kept by ``prometheus_client`` in a registry of the app's own.

Each app has its own :class:`CollectorRegistry` (tests run several apps in one process). Request
counts and latencies are labelled by the matched route, not the raw path, so that scanners probing
random URLs cannot grow the label set without bound. The model's state is read from the
:class:`ModelHolder` at scrape time, so it is never stale.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from api.model_holder import ModelHolder

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ModelCollector:
    """The served and wanted model versions and the reload counts, read at each scrape."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder

    def collect(self):
        predictor = self.holder.predictor
        wanted, problem = self.holder.wanted
        info = InfoMetricFamily("xray_api_model", "The model version being served.")
        if predictor is not None:
            info.add_metric([], {"version": predictor.version})
        yield info
        yield GaugeMetricFamily("xray_api_model_loaded", "1 while a model is served, 0 before one could be "
                                "loaded.", value=int(predictor is not None))
        yield GaugeMetricFamily(
            "xray_api_model_up_to_date",
            "1 when the served version is the one the registry asks for, 0 when the wanted one is "
            "rejected or cannot be read yet.",
            value=int(predictor is not None and wanted in (None, predictor.version) and problem is None),
        )
        reloads = CounterMetricFamily(
            "xray_api_model_reloads",
            "Model loads from the registry, by result (a failed one never replaces the served model).",
            labels=["result"],
        )
        for result in ("success", "failure"):
            reloads.add_metric([result], self.holder.load_counts.get(result, 0))
        yield reloads


class Metrics:
    """The API's metrics; the methods are called from the request threads."""

    def __init__(self, holder: ModelHolder):
        self.registry = CollectorRegistry()
        self.requests = Counter("xray_api_requests", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("xray_api_request_duration_seconds",
                                 "Time from a request reaching the app to its answer (service time), by route.",
                                 ["route"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.arrival_latency = Histogram(
            "xray_api_request_latency_seconds",
            "Time from the server having read the whole request to its answer, by route: the service "
            "time plus the wait in the server's queue for a worker, what a client waits.",
            ["route"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.in_flight = Gauge("xray_api_requests_in_flight", "Requests being answered now.",
                               registry=self.registry)
        self.images = Counter("xray_api_images", "Images received by /predict and /predict/batch, by result "
                              "(ok, or the error code).", ["result"], registry=self.registry)
        self.registry.register(ModelCollector(holder))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total: what xray_monitor_cpu_seconds is a share of

    def observe_request(self, route: str, status: int, seconds: float, since_arrival: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        self.arrival_latency.labels(route).observe(since_arrival)

    def count_image(self, result: str) -> None:
        self.images.labels(result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

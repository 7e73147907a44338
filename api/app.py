"""The Flask application factory of the prediction API.

Configuration is layered: ``load_params()`` (params.yaml, then environment variables), then the
``config`` mapping given to :func:`create_app` (tests, the serve command). Keys:

==================  ===============================================================
REGISTRY_URI        registry root (``registry_uri``)
MODEL_STAGE         stage the model is read from: ``production`` (default) or ``testing``
MODEL_VERSION       serve this version only; None follows the production pointer
RELOAD_INTERVAL_S   seconds between looks at the pointer; 0 looks only at start
MAX_CONTENT_LENGTH  larger ``/predict`` bodies answer 413 (``api.max_bytes``)
MAX_BATCH_BYTES     larger ``/predict/batch`` bodies answer 413 (``api.max_batch_bytes``)
MAX_BATCH_IMAGES    more images in one batch answer 413 (``api.max_batch_images``)
MAX_BATCH_PIXELS    more pixels in one batch's images answer 413 (``api.max_batch_pixels``)
MAX_PIXELS          larger images answer 413 (``api.max_pixels``)
MIN_SIDE            images with a smaller side answer 400 (``api.min_side``)
INTRA_OP_THREADS    onnxruntime threads per inference; 0 uses every core
CHANNEL_TIMEOUT_S   the server closes a connection silent this long (``api.channel_timeout_s``)
MONITORING          live input/prediction statistics and OOD scores (``monitor.enabled``)
OOD_THRESHOLD       an OOD score above this is flagged (``monitor.ood_threshold``)
==================  ===============================================================

Every answer carries ``X-Model-Version`` and ``X-Request-ID`` and is counted, timed and logged as
one JSON line (``api.requestlog``), errors included. Two times are kept: from the app seeing the
request (service time), and from the server having read all of it (``ARRIVED_ENVIRON_KEY``, set by
api/serve.py), which includes the wait in waitress's queue for a worker: what a client waits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from api.errors import ApiError, error_code, error_payload, too_large
from api.inputs import batch_uploads, single_image_bytes
from api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from api.metrics import Metrics
from api.model_holder import ModelHolder
from api.openapi import openapi_document
from api.requestlog import REQUEST_ID_HEADER, log_request, request_id
from core import preprocess
from core.config import ConfigError, load_params
from core.predictor import Predictor
from core.preprocess import ImageError, image_dimensions
from monitoring.live import LiveMonitor
from monitoring.summaries import source_of
from registry.store import STAGES, Registry

LOG = logging.getLogger(__name__)
UNMATCHED_ROUTE = "unmatched"  # the route label of requests no endpoint matched
SERVER_ROUTE = "server"  # ... and of those the HTTP server refused before the app saw them
ARRIVED_ENVIRON_KEY = "xray.arrived"  # time.perf_counter() when the server had read the whole request

bp = Blueprint("api", __name__)


def default_config(params: Mapping[str, Any]) -> dict:
    """The Flask configuration derived from the project's params."""
    api = params["api"]
    return {
        "REGISTRY_URI": params["registry_uri"],
        "MODEL_STAGE": "production",
        "MODEL_VERSION": None,
        "RELOAD_INTERVAL_S": api["reload_interval_s"],
        "MAX_CONTENT_LENGTH": api["max_bytes"],
        "MAX_BATCH_BYTES": api["max_batch_bytes"],
        "MAX_BATCH_IMAGES": api["max_batch_images"],
        "MAX_BATCH_PIXELS": api["max_batch_pixels"],
        "MAX_PIXELS": api["max_pixels"],
        "MIN_SIDE": api["min_side"],
        "INTRA_OP_THREADS": api["intra_op_threads"],
        "CHANNEL_TIMEOUT_S": api["channel_timeout_s"],
        "MONITORING": params["monitor"]["enabled"],
        "OOD_THRESHOLD": params["monitor"]["ood_threshold"],
    }


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API and start following the registry (the model is loaded before this returns).

    Stop the reload thread with ``app.extensions["model_holder"].stop()`` when the app is dropped.
    """
    app = Flask(__name__)
    app.json.sort_keys = False  # probabilities keep the model's class order
    app.config.from_mapping(default_config(load_params()))
    app.config.from_mapping(config or {})
    stage, version = app.config["MODEL_STAGE"], app.config["MODEL_VERSION"]
    if stage not in STAGES:
        raise ConfigError(f"MODEL_STAGE must be one of {', '.join(STAGES)}, got {stage!r}")
    if stage != "production" and not version:
        raise ConfigError(f"serving the {stage} stage needs a MODEL_VERSION")
    registry = Registry(app.config["REGISTRY_URI"])
    monitor = LiveMonitor(bool(app.config["MONITORING"]), float(app.config["OOD_THRESHOLD"]))
    holder = ModelHolder(
        registry,
        stage=stage,
        version=version or None,
        reload_interval_s=float(app.config["RELOAD_INTERVAL_S"]),
        intra_op_threads=int(app.config["INTRA_OP_THREADS"]),
        on_load=lambda predictor: monitor.load(registry, stage, predictor.version, predictor.classes),
    )
    app.extensions["model_holder"] = holder
    app.extensions["monitor"] = monitor
    app.extensions["metrics"] = Metrics(holder)
    app.extensions["metrics"].registry.register(monitor.collector())
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ImageError, _image_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_start_request)
    app.after_request(_finish_response)
    app.teardown_request(_end_request)
    holder.start()
    return app


def _holder() -> ModelHolder:
    return current_app.extensions["model_holder"]


def _metrics() -> Metrics:
    return current_app.extensions["metrics"]


def _served_predictor() -> Predictor:
    """The model for this request, pinned in ``g`` so its version is the one in the header."""
    predictor = _holder().predictor
    if predictor is None:
        wanted, problem = _holder().wanted
        why = f" ({wanted}: {problem})" if wanted and problem else f" ({problem})" if problem else ""
        raise ApiError(503, "no_model", f"no model is loaded yet{why}; retry once one is promoted")
    g.predictor = predictor
    return predictor


def _decode(data: bytes, predictor: Predictor):
    """``(network input, its source's size and mode)`` for one image of the request, counted as ok or by its error code."""
    config = current_app.config
    try:
        # Through the module, not names bound at import: the acceptance tests' planted skews
        # (tests/test_acceptance_skews.py) replace core.preprocess's functions in a served app.
        image = preprocess.open_image(data, max_pixels=config["MAX_PIXELS"], min_side=config["MIN_SIDE"])
        pixels = preprocess.to_array(image, predictor.image_size)
    except ImageError as exc:
        _metrics().count_image(exc.code)
        raise
    _metrics().count_image("ok")
    return pixels, source_of(image)


def _prediction(predictor: Predictor, decoded, label: str, probabilities: dict[str, float]) -> dict:
    """The answer for one image; its summaries and the answer go into the live statistics."""
    pixels, source = decoded
    monitor: LiveMonitor = current_app.extensions["monitor"]
    return {"model_version": predictor.version, "label": label, "probabilities": probabilities,
            "out_of_distribution": monitor.observe(predictor.version, pixels, source, list(probabilities.values()))}


@bp.post("/predict")
def predict():
    """Classify one image."""
    data = single_image_bytes(request)
    predictor = _served_predictor()
    decoded = _decode(data, predictor)
    label, probabilities = predictor.classify(decoded[0])
    return jsonify(_prediction(predictor, decoded, label, probabilities))


@bp.post("/predict/batch")
def predict_batch():
    """Classify several images in one ``session.run``; a bad image gets its own error entry."""
    config = current_app.config
    uploads = batch_uploads(request, config["MAX_BATCH_IMAGES"], config["MAX_BATCH_BYTES"])
    _check_batch_pixels(uploads, config["MAX_BATCH_PIXELS"])
    predictor = _served_predictor()
    entries: list[dict | None] = []
    decoded, slots = [], []
    for upload in uploads:
        try:
            decoded.append(_decode(upload.read(), predictor))
        except ImageError as exc:
            entries.append(error_payload(exc.code, str(exc)))
            continue
        slots.append(len(entries))
        entries.append(None)
    answers = predictor.classify_batch([pixels for pixels, _ in decoded])
    for slot, one, (label, probabilities) in zip(slots, decoded, answers):
        entries[slot] = _prediction(predictor, one, label, probabilities)
    return jsonify(entries)


def _check_batch_pixels(uploads, budget: int) -> None:
    """Refuse a batch whose images hold more than ``budget`` pixels in all, from their headers,
    before any is decoded. An unreadable header counts nothing: that image gets its own error."""
    total = 0
    for upload in uploads:
        try:
            width, height = image_dimensions(upload.read())
        except ImageError:
            continue
        finally:
            upload.stream.seek(0)
        total += width * height
    if total > budget:
        raise ApiError(413, "too_many_batch_pixels",
                       f"the batch's images hold {total} pixels in all, more than the batch budget of "
                       f"{budget} (api.max_batch_pixels); send fewer or smaller images per batch")


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers, with or without a model."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: a model is loaded; also which version the registry wants, and why not, if not."""
    predictor = _served_predictor()
    wanted, problem = _holder().wanted
    return jsonify(status="ready", model_version=predictor.version, wanted_version=wanted, wanted_error=problem)


@bp.get("/model")
def model():
    """The registry metadata of the served model."""
    return jsonify(_served_predictor().metadata)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics."""
    return Response(_metrics().render(), content_type=METRICS_CONTENT_TYPE)


@bp.get("/monitoring")
def monitoring():
    """The live statistics of the served version (``make monitor`` reads and merges them)."""
    _served_predictor()
    return jsonify(current_app.extensions["monitor"].snapshot())


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document of this API."""
    return jsonify(openapi_document(current_app.config))


def _error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(error_payload(code, message))
    response.status_code = status
    return response


def _api_error(exc: ApiError) -> Response:
    return _error_response(exc.status, exc.code, exc.message)


def _image_error(exc: ImageError) -> Response:
    return _error_response(exc.status, exc.code, str(exc))


def _http_error(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, 413 ...) as JSON, keeping headers such as ``Allow``."""
    response = exc.get_response()
    status = exc.code or 500
    code, message = error_code(status, exc.name or "error"), exc.description or exc.name or "request failed"
    if status == 413:
        code, message = too_large(exc, request)
    response.set_data(jsonify(error_payload(code, message)).get_data())
    response.content_type = "application/json"
    return response


def _unexpected_error(exc: Exception) -> Response:
    # The details go to the log only: a body never carries a stack trace or internal state.
    LOG.exception("unexpected error answering %s %s", request.method, request.path)
    return _error_response(500, "internal_error", "internal error; the server log has the details")


def _start_request() -> None:
    g.started = time.perf_counter()
    g.arrived = request.environ.get(ARRIVED_ENVIRON_KEY) or g.started
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
    _metrics().in_flight.inc()
    g.in_flight = True


def _account(metrics, rid: str, method: str, route: str, status: int, seconds: float,
             version: str | None, since_arrival: float | None = None) -> list[tuple[str, str]]:
    """Count, time and log one answer; return the headers every answer carries."""
    metrics.observe_request(route, status, seconds, seconds if since_arrival is None else since_arrival)
    log_request(rid, method, route, status, seconds, version)
    return [("X-Model-Version", version or "none"), (REQUEST_ID_HEADER, rid)]


def _finish_response(response: Response) -> Response:
    """Mark the answer with the model version and request id; count, time and log the request."""
    predictor = g.get("predictor") or _holder().predictor
    route = request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE
    now = time.perf_counter()
    seconds = now - g.get("started", now)
    for name, value in _account(_metrics(), g.get("request_id") or request_id(None), request.method, route,
                                response.status_code, seconds, predictor.version if predictor else None,
                                now - g.get("arrived", now)):
        response.headers[name] = value
    return response


def _end_request(_exc: BaseException | None) -> None:
    if g.pop("in_flight", False):
        _metrics().in_flight.dec()


def server_error_answer(app: Flask, status: int, message: str, sent_request_id: str | None,
                        method: str = "") -> tuple[list[tuple[str, str]], bytes]:
    """Headers and JSON body of an error the HTTP server answers before the app sees the request
    (a body over the server's cap, a malformed request); counted and logged like any request."""
    holder: ModelHolder = app.extensions["model_holder"]
    version = holder.predictor.version if holder.predictor else None
    body = json.dumps(error_payload(error_code(status), message)).encode()
    marks = _account(app.extensions["metrics"], request_id(sent_request_id), method, SERVER_ROUTE, status, 0.0,
                     version)
    return [("Content-Type", "application/json"), *marks], body

"""The Flask application factory of the prediction API.

Configuration is layered: ``load_params()`` (params.yaml, then environment variables), then the
``config`` mapping given to :func:`create_app` (tests, the serve command). Keys:

==================  ===============================================================
REGISTRY_URI        registry root (``registry_uri``)
MODEL_STAGE         stage the model is read from: ``production`` (default) or ``testing``
MODEL_VERSION       serve this version only; None follows the production pointer
RELOAD_INTERVAL_S   seconds between looks at the pointer; 0 looks only at start
MAX_CONTENT_LENGTH  larger request bodies answer 413 (``api.max_bytes``)
MAX_PIXELS          larger images answer 413 (``api.max_pixels``)
MIN_SIDE            images with a smaller side answer 400 (``api.min_side``)
INTRA_OP_THREADS    onnxruntime threads per inference; 0 uses every core
==================  ===============================================================
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from api.metrics import Metrics
from api.model_holder import ModelHolder
from api.openapi import openapi_document
from api.predictor import Predictor
from model.config import ConfigError, load_params
from model.preprocess import ImageError, image_bytes_to_array
from registry.store import STAGES, Registry

LOG = logging.getLogger(__name__)

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
MULTIPART_FIELD = "image"
# Error codes of the HTTP errors Flask raises itself; the others come from the exceptions below.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_many_bytes",
    415: "unsupported_media_type",
}

bp = Blueprint("api", __name__)


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def default_config(params: Mapping[str, Any]) -> dict:
    """The Flask configuration derived from the project's params."""
    api = params["api"]
    return {
        "REGISTRY_URI": params["registry_uri"],
        "MODEL_STAGE": "production",
        "MODEL_VERSION": None,
        "RELOAD_INTERVAL_S": api["reload_interval_s"],
        "MAX_CONTENT_LENGTH": api["max_bytes"],
        "MAX_PIXELS": api["max_pixels"],
        "MIN_SIDE": api["min_side"],
        "INTRA_OP_THREADS": api["intra_op_threads"],
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
    holder = ModelHolder(
        Registry(app.config["REGISTRY_URI"]),
        stage=stage,
        version=version or None,
        reload_interval_s=float(app.config["RELOAD_INTERVAL_S"]),
        intra_op_threads=int(app.config["INTRA_OP_THREADS"]),
    )
    app.extensions["model_holder"] = holder
    app.extensions["metrics"] = Metrics()
    app.register_blueprint(bp)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ImageError, _image_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_finish_response)
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
        raise ApiError(503, "no_model", "no model is loaded yet; retry once one is promoted")
    g.predictor = predictor
    return predictor


def _request_image_bytes() -> bytes:
    """The image of a prediction request, raw body or multipart field ``image``."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        upload = request.files.get(MULTIPART_FIELD)
        if upload is None:
            raise ApiError(
                400, "missing_field", f"multipart requests carry the image in the field {MULTIPART_FIELD!r}"
            )
        return upload.read()
    if mimetype in RAW_IMAGE_TYPES:
        return request.get_data(cache=False)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {mimetype or '(none)'} is not accepted; send the image as "
        f"{', '.join(RAW_IMAGE_TYPES)} or as the multipart/form-data field {MULTIPART_FIELD!r}",
    )


@bp.post("/predict")
def predict():
    """Classify one image."""
    started = time.perf_counter()
    image_bytes = _request_image_bytes()
    predictor = _served_predictor()
    image = image_bytes_to_array(
        image_bytes,
        predictor.image_size,
        max_pixels=current_app.config["MAX_PIXELS"],
        min_side=current_app.config["MIN_SIDE"],
    )
    label, probabilities = predictor.classify(image)
    _metrics().observe_prediction(time.perf_counter() - started)
    return jsonify(model_version=predictor.version, label=label, probabilities=probabilities)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers, with or without a model."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: a model is loaded."""
    predictor = _served_predictor()
    return jsonify(status="ready", model_version=predictor.version)


@bp.get("/model")
def model():
    """The registry metadata of the served model."""
    return jsonify(_served_predictor().metadata)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics."""
    holder = _holder()
    predictor = holder.predictor
    text = _metrics().render(predictor.version if predictor else None, holder.load_counts)
    return Response(text, content_type=METRICS_CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document of this API."""
    config = current_app.config
    return jsonify(openapi_document(config["MAX_CONTENT_LENGTH"], config["MAX_PIXELS"], config["MIN_SIDE"]))


def _error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    return response


def _api_error(exc: ApiError) -> Response:
    return _error_response(exc.status, exc.code, exc.message)


def _image_error(exc: ImageError) -> Response:
    return _error_response(exc.status, exc.code, str(exc))


def _http_error(exc: HTTPException) -> Response:
    """Flask's own errors (404, 405, 413 ...) as JSON, keeping headers such as ``Allow``."""
    response = exc.get_response()
    status = exc.code or 500
    code = HTTP_ERROR_CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name or "request failed"
    if status == 413:
        message = f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    response.set_data(jsonify(error={"code": code, "message": message}).get_data())
    response.content_type = "application/json"
    return response


def _unexpected_error(exc: Exception) -> Response:
    # The details go to the log only: a body never carries a stack trace or internal state.
    LOG.exception("unexpected error answering %s %s", request.method, request.path)
    return _error_response(500, "internal_error", "internal error; the server log has the details")


def _finish_response(response: Response) -> Response:
    """Add ``X-Model-Version`` to every answer and count the request."""
    predictor = g.get("predictor") or _holder().predictor
    response.headers["X-Model-Version"] = predictor.version if predictor else "none"
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    _metrics().count_request(endpoint, response.status_code)
    return response

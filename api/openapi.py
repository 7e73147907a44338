"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so clients and tests can validate answers with any
JSON Schema validator. Every operation lists the statuses it answers; ``default`` covers the
errors any request can meet (405, a malformed request, 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.requestlog import REQUEST_ID_RULE, SANE_REQUEST_ID

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "examples": ["not_an_image", "too_many_bytes", "no_model"]},
                "message": {"type": "string"},
            },
        }
    },
}

PREDICTION_SCHEMA = {
    "type": "object",
    "required": ["model_version", "label", "probabilities", "out_of_distribution"],
    "additionalProperties": False,
    "properties": {
        "model_version": {"type": "string", "examples": ["v0007-20261127T133000Z"]},
        "label": {"type": "string", "examples": ["Normal"]},
        "probabilities": {
            "type": "object",
            "description": "Probability of every class, in the model's class order; they sum to 1.",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
            "minProperties": 2,
        },
        "out_of_distribution": {
            "type": "object",
            "required": ["score", "flagged"],
            "additionalProperties": False,
            "description": "How far the image lies outside what the model was trained on (monitoring/reference.py): "
            "robust standard deviations beyond the training range of its appearance features. Both are "
            "null when the model version has no monitoring reference (registered before monitoring) "
            "or monitoring is off (monitor.enabled).",
            "properties": {
                "score": {"type": ["number", "null"], "minimum": 0},
                "flagged": {"type": ["boolean", "null"], "description": "score > monitor.ood_threshold"},
            },
        },
    },
}

HISTOGRAM_SCHEMA = {
    "type": "object",
    "required": ["counts"],
    "properties": {
        "edges": {"type": "array", "items": {"type": ["number", "null"]},
                  "description": "Bin edges (one more than counts); null: an open end."},
        "categories": {"type": "array", "items": {"type": "string"}},
        "counts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    },
}

MONITORING_SCHEMA = {
    "type": "object",
    "required": ["version", "enabled", "window", "reference", "ood_threshold", "stats"],
    "properties": {
        "version": {"type": "string", "description": "The served version; the statistics restart when it changes."},
        "enabled": {"type": "boolean"},
        "window": {
            "type": "object",
            "required": ["started_at", "until", "seconds", "last_request_at"],
            "properties": {
                "started_at": {"type": "string", "description": "When this version was loaded (UTC)."},
                "until": {"type": "string", "description": "Now (UTC)."},
                "seconds": {"type": "number"},
                "last_request_at": {"type": ["string", "null"]},
            },
        },
        "reference": {"type": "boolean", "description": "Whether the version has a monitoring reference."},
        "ood_threshold": {"type": "number"},
        "stats": {
            "type": "object",
            "required": ["schema", "classes", "images", "predictions", "ood", "histograms"],
            "description": "Counts in fixed bins: the statistics of several replicas add up bin by bin.",
            "properties": {
                "schema": {"const": 1},
                "classes": {"type": "array", "items": {"type": "string"}},
                "images": {"type": "integer", "minimum": 0},
                "predictions": {"type": "integer", "minimum": 0},
                "ood": {"type": "object", "required": ["scored", "flagged"],
                        "properties": {"scored": {"type": "integer"}, "flagged": {"type": "integer"}}},
                "histograms": {"type": "object", "additionalProperties": HISTOGRAM_SCHEMA},
            },
        },
    },
}

READY_SCHEMA = {
    "type": "object",
    "required": ["status", "model_version", "wanted_version", "wanted_error"],
    "additionalProperties": False,
    "properties": {
        "status": {"const": "ready"},
        "model_version": {"type": "string", "description": "The version being served."},
        "wanted_version": {
            "type": ["string", "null"],
            "description": "The version the production pointer (or the fixed version) asks for.",
        },
        "wanted_error": {
            "type": ["string", "null"],
            "description": "Why the wanted version is not served (rejected, or cannot be read yet); "
            "null when it is served.",
        },
    },
}

HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"const": "ok"}},
}

ANSWER_HEADERS = {
    "X-Model-Version": {
        "description": "The model version that answered, or `none` while no model is loaded.",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Request-ID": {
        "description": f"The client's X-Request-ID when it is {REQUEST_ID_RULE}, else an id the "
        "server made; it is on the request's log line.",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{SANE_REQUEST_ID.pattern}$"},
    },
}

REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": f"An id to follow this request by; echoed when it is {REQUEST_ID_RULE}.",
    "schema": {"type": "string"},
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: dict, media_type: str = "application/json") -> dict:
    return {"description": description, "headers": ANSWER_HEADERS, "content": {media_type: {"schema": schema}}}


def _error(description: str) -> dict:
    return _answer(description, _ref("Error"))


def _operation(summary: str, responses: dict, description: str = "", body: dict | None = None) -> dict:
    operation = {
        "summary": summary,
        "parameters": [REQUEST_ID_PARAMETER],
        "responses": {
            **responses,
            "default": _error("Any other error: 405 (method), 400 (malformed HTTP), 413 (the server's "
                              "body cap), 431, 500 (unexpected; details in the server log)."),
        },
    }
    if description:
        operation["description"] = description
    if body:
        operation["requestBody"] = body
    return operation


def openapi_document(config: Mapping[str, Any]) -> dict:
    """The OpenAPI document, with the request limits this server enforces (the app's config)."""
    max_bytes, max_pixels = config["MAX_CONTENT_LENGTH"], config["MAX_PIXELS"]
    min_side = config["MIN_SIDE"]
    max_images, max_batch_bytes = config["MAX_BATCH_IMAGES"], config["MAX_BATCH_BYTES"]
    max_batch_pixels = config["MAX_BATCH_PIXELS"]
    binary = {"schema": {"type": "string", "format": "binary"}}
    no_model = _error("No model is loaded yet.")
    image_rules = (f"PNG, JPEG (gray, RGB, 16-bit gray: see the README for the 16-bit rule) or uncompressed "
                   f"single-frame grayscale DICOM (Modality LUT, then the VOI LUT or window of its header, "
                   f"MONOCHROME1 inverted), at most {max_pixels} pixels (read from the header before "
                   f"decoding), each side at least {min_side} pixels. Multipart image parts need a filename.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xray-mlops prediction API",
            "version": "1",
            "description": "Classifies a chest X-ray image into COVID, Lung_Opacity, Normal or "
            "Viral Pneumonia with the production model of the registry. Every error, 404 and 405 "
            "included, answers a JSON body of the Error schema.",
        },
        "paths": {
            "/predict": {"post": _operation(
                "Classify one chest X-ray image.",
                description=f"The image is the raw body or the multipart field `image`; at most "
                f"{max_bytes} bytes. {image_rules}",
                body={
                    "required": True,
                    "content": {
                        "image/png": binary,
                        "image/jpeg": binary,
                        "application/dicom": binary,
                        "application/octet-stream": binary,
                        "multipart/form-data": {"schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {"image": {"type": "string", "format": "binary"}},
                        }},
                    },
                },
                responses={
                    "200": _answer("The prediction.", _ref("Prediction")),
                    "400": _error("Not an image, an empty body, a truncated image, an image smaller "
                                  "than the minimum side, no multipart field `image`, several, one "
                                  "without a filename; a malformed, multi-frame or colour DICOM, or one "
                                  "without pixel data."),
                    "413": _error(f"Too many bytes in the body (over {max_bytes}, `too_many_bytes`), too "
                                  "many pixels in the image (`too_many_pixels`), a multipart text field "
                                  "over werkzeug's limit (`form_field_too_large`) or too many multipart "
                                  "parts (`too_many_parts`); the message names the limit."),
                    "415": _error("Unsupported Content-Type, an image format other than PNG, JPEG and "
                                  "DICOM, or a compressed DICOM transfer syntax (named in the message)."),
                    "503": no_model,
                },
            )},
            "/predict/batch": {"post": _operation(
                "Classify several chest X-ray images in one call.",
                description=f"Multipart with one field `image` per image, at most {max_images} images, "
                f"{max_batch_bytes} bytes and {max_batch_pixels} pixels in all (read from the images' "
                f"headers before any is decoded). {image_rules} The answer lists one entry per "
                "image, in order: its prediction, or its own error (a bad image never fails the batch).",
                body={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }}},
                },
                responses={
                    "200": _answer("One entry per image, in the order sent.", {
                        "type": "array",
                        "items": {"oneOf": [_ref("Prediction"), _ref("Error")]},
                    }),
                    "400": _error("No multipart field `image`, or one without a filename."),
                    "413": _error(f"More than {max_images} images (`too_many_images`), more than "
                                  f"{max_batch_bytes} bytes (`too_many_bytes`), more than {max_batch_pixels} "
                                  "pixels in all (`too_many_batch_pixels`), or a multipart limit of "
                                  "werkzeug (`form_field_too_large`, `too_many_parts`)."),
                    "415": _error("Not multipart/form-data."),
                    "503": no_model,
                },
            )},
            "/healthz": {"get": _operation(
                "Liveness: the process answers.",
                responses={"200": _answer("Alive.", HEALTH_SCHEMA)},
            )},
            "/readyz": {"get": _operation(
                "Readiness: a model is loaded; which version is served and which one is wanted.",
                responses={"200": _answer("Ready.", READY_SCHEMA), "503": no_model},
            )},
            "/model": {"get": _operation(
                "Registry metadata of the served model.",
                responses={
                    "200": _answer("The metadata.json of the served version.",
                                   {"type": "object", "required": ["version"]}),
                    "503": no_model,
                },
            )},
            "/metrics": {"get": _operation(
                "Prometheus metrics (text exposition format).",
                responses={"200": _answer("Metrics.", {"type": "string"}, media_type="text/plain")},
            )},
            "/monitoring": {"get": _operation(
                "Live input and prediction statistics of the served version (bounded, mergeable).",
                description="Per-image summaries (intensity, size, bit depth, mode), predicted classes, "
                "confidence and out-of-distribution scores since the served version was loaded, in fixed "
                "bins. `make monitor` adds up the replicas' answers and compares them with the version's "
                "reference.",
                responses={"200": _answer("The statistics.", MONITORING_SCHEMA), "503": no_model},
            )},
            "/openapi.json": {"get": _operation(
                "This document.",
                responses={"200": _answer("OpenAPI 3.1 document.", {"type": "object", "required": ["openapi"]})},
            )},
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA, "Prediction": PREDICTION_SCHEMA}},
    }

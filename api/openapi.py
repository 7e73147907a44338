"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so clients and tests can validate answers with any
JSON Schema validator. Every operation lists the statuses it answers; ``default`` covers the
errors any request can meet (405, a malformed request, 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.requestlog import SANE_REQUEST_ID

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
    "required": ["model_version", "label", "probabilities"],
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
        "description": "The client's X-Request-ID when it is 1-128 characters of letters, digits "
        "and `._:-`, else an id the server made; it is on the request's log line.",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{SANE_REQUEST_ID.pattern}$"},
    },
}

REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "An id to follow this request by; echoed when sane.",
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
    binary = {"schema": {"type": "string", "format": "binary"}}
    no_model = _error("No model is loaded yet.")
    image_rules = (f"PNG or JPEG only (gray, RGB, 16-bit gray: see the README for the 16-bit rule), at "
                   f"most {max_pixels} pixels, each side at least {min_side} pixels.")
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
                                  "than the minimum side, no multipart field `image`, or several."),
                    "413": _error("Too many bytes in the body, or too many pixels in the image."),
                    "415": _error("Unsupported Content-Type, or an image format other than PNG and JPEG."),
                    "503": no_model,
                },
            )},
            "/predict/batch": {"post": _operation(
                "Classify several chest X-ray images in one call.",
                description=f"Multipart with one field `image` per image, at most {max_images} images "
                f"and {max_batch_bytes} bytes in all. {image_rules} The answer lists one entry per "
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
                    "400": _error("No multipart field `image`."),
                    "413": _error(f"More than {max_images} images, or more than {max_batch_bytes} bytes."),
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
            "/openapi.json": {"get": _operation(
                "This document.",
                responses={"200": _answer("OpenAPI 3.1 document.", {"type": "object", "required": ["openapi"]})},
            )},
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA, "Prediction": PREDICTION_SCHEMA}},
    }

"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so clients and tests can validate answers with any
JSON Schema validator.
"""

from __future__ import annotations

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
    "properties": {
        "model_version": {"type": "string", "examples": ["v0007-20261127T133000Z"]},
        "label": {"type": "string", "examples": ["Normal"]},
        "probabilities": {
            "type": "object",
            "description": "Probability of every class; they sum to 1.",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
            "minProperties": 2,
        },
    },
}

MODEL_VERSION_HEADER = {
    "X-Model-Version": {
        "description": "The model version that answered, or `none` while no model is loaded.",
        "schema": {"type": "string"},
    }
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "headers": MODEL_VERSION_HEADER,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict) -> dict:
    return {
        "description": description,
        "headers": MODEL_VERSION_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def openapi_document(max_bytes: int, max_pixels: int, min_side: int) -> dict:
    """The OpenAPI document, with the request limits this server enforces."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    no_model = _error("No model is loaded yet.")
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
            "/predict": {
                "post": {
                    "summary": "Classify one chest X-ray image.",
                    "description": f"Send one PNG or JPEG image (any mode: gray, RGB, 16-bit) as the "
                    f"raw body or as the multipart field `image`. At most {max_bytes} bytes and "
                    f"{max_pixels} pixels; each side at least {min_side} pixels.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "image/png": binary,
                            "image/jpeg": binary,
                            "application/octet-stream": binary,
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {"image": {"type": "string", "format": "binary"}},
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json("The prediction.", {"$ref": "#/components/schemas/Prediction"}),
                        "400": _error("Not an image, an empty body, a truncated image, an image "
                                      "smaller than the minimum side, or no multipart field `image`."),
                        "413": _error("Too many bytes in the body, or too many pixels in the image."),
                        "415": _error("Unsupported Content-Type."),
                        "500": _error("Unexpected server error; details are in the server log."),
                        "503": no_model,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers.",
                    "responses": {"200": _json("Alive.", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: a model is loaded.",
                    "responses": {"200": _json("Ready.", {"type": "object"}), "503": no_model},
                }
            },
            "/model": {
                "get": {
                    "summary": "Registry metadata of the served model.",
                    "responses": {
                        "200": _json("The metadata.json of the served version.", {"type": "object"}),
                        "503": no_model,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format 0.0.4).",
                    "responses": {
                        "200": {
                            "description": "Metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": _json("OpenAPI 3.1 document.", {"type": "object"})},
                }
            },
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA, "Prediction": PREDICTION_SCHEMA}},
    }

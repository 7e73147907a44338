"""The API's error answers: ``{"error": {"code", "message"}}`` with an HTTP status, never a trace."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# Codes of the HTTP errors that werkzeug or waitress raise themselves.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_many_bytes",
    415: "unsupported_media_type",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def error_code(status: int, name: str = "error") -> str:
    """The code of an HTTP error: the table's, else the reason phrase in snake case."""
    return HTTP_ERROR_CODES.get(status) or name.lower().replace(" ", "_")


def error_payload(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def body_too_large(limit: int) -> str:
    """The message of a 413, from the app (a route's limit) or from the server (its cap)."""
    return f"the request body is larger than {limit} bytes"

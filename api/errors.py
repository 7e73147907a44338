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


def body_too_large(limit: int, setting: str) -> str:
    """The message of a 413 for the body's size, naming the limit and the setting that holds it."""
    return f"the request body is larger than {limit} bytes ({setting})"


# Where werkzeug raises its bare 413 while parsing multipart (werkzeug/sansio/multipart.py and
# werkzeug/formparser.py): the innermost function tells which of its limits was hit.
PARTS_LIMIT_FUNCTIONS = {"next_event"}
FIELD_LIMIT_FUNCTIONS = {"receive_data", "parse"}


def _innermost_function(exc: BaseException) -> str:
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace.tb_frame.f_code.co_name if trace is not None else ""


def too_large(exc: BaseException, request) -> tuple[str, str]:
    """Code and message of a werkzeug 413, naming the limit hit: the route's body size, werkzeug's
    limit on a form field without a filename, or its limit on the number of multipart parts."""
    where = _innermost_function(exc)
    if where in PARTS_LIMIT_FUNCTIONS:
        return "too_many_parts", (f"the multipart body has more than {request.max_form_parts} parts "
                                  "(MAX_FORM_PARTS)")
    if where in FIELD_LIMIT_FUNCTIONS:
        return "form_field_too_large", (
            f"a multipart field without a filename is larger than {request.max_form_memory_size} bytes "
            "(MAX_FORM_MEMORY_SIZE, werkzeug's limit on text fields); send each image as a file part, "
            "with a filename")
    setting = "api.max_batch_bytes" if request.path.rstrip("/").endswith("/batch") else "api.max_bytes"
    return "too_many_bytes", body_too_large(request.max_content_length, setting)

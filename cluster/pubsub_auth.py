"""Let only Pub/Sub's signed pushes through to the EventListener (``python -m scripts.pubsub_auth``).

A Tekton Triggers interceptor, the Interceptor ``pubsub-oidc`` of
tekton/triggers/xray-mlops-pubsub-auth.yaml, which the dataset trigger runs first. The push
subscription signs every request with an OIDC token of its service account (``--push-auth-service-account``,
PUBSUB_PUSH_GSA in tekton/config.env) in the Authorization header; this server checks Google's
signature, the audience, the issuer and that the token is that account's. Nothing secret is in
the push URL, so nothing secret reaches a request log, and the server logs no header.

The protocol is Triggers': the EventListener POSTs an InterceptorRequest (JSON: ``header``,
``body``...) and reads an InterceptorResponse (``continue``, ``status``) from a 200 answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google.auth.transport.requests
from google.auth import exceptions
from google.oauth2 import id_token

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
OK, INVALID_ARGUMENT, UNAUTHENTICATED = 0, 3, 16  # google.rpc.Code, as Triggers reads it


class PushVerifier:
    """Decides whether a request's headers carry a valid token of ``email`` (the push subscription's
    account) or of one of ``also`` (the monitor's account, which starts retraining on an alarm) for
    ``audience``."""

    def __init__(self, audience: str, email: str, certs_url: str = GOOGLE_CERTS_URL, also: tuple[str, ...] = ()):
        self.audience, self.email, self.certs_url = audience, email, certs_url
        self.accounts = (email, *(account for account in also if account))
        self.request = google.auth.transport.requests.Request()

    def check(self, headers: Mapping[str, Any]) -> tuple[bool, str]:
        """(allowed, why): never raises for a bad token, and never puts the token in ``why``."""
        values = next((v for k, v in headers.items() if k.lower() == "authorization"), None) or []
        value = values[0] if isinstance(values, list) and values else values
        if not isinstance(value, str) or not value.startswith("Bearer "):
            return False, "no bearer token in the Authorization header"
        try:
            claims = id_token.verify_token(value[len("Bearer "):], self.request, audience=self.audience,
                                           certs_url=self.certs_url)
        except (ValueError, exceptions.GoogleAuthError) as exc:
            return False, f"token refused: {str(exc).splitlines()[0][:200]}"
        if claims.get("iss") not in GOOGLE_ISSUERS:
            return False, f"token issued by {claims.get('iss')!r}, not Google"
        if claims.get("email") not in self.accounts or claims.get("email_verified") is not True:
            return False, f"token of {claims.get('email')!r}, not of the push account {self.email}"
        return True, f"push signed by {claims['email']}"


def answer(allowed: bool, message: str, code: int | None = None) -> dict:
    """An InterceptorResponse."""
    return {"continue": allowed, "status": {"code": OK if allowed else (code or UNAUTHENTICATED), "message": message}}


def interceptor_response(verifier: PushVerifier, raw: bytes) -> dict:
    """The answer to one InterceptorRequest body."""
    try:
        request = json.loads(raw)
        headers = request.get("header") or {}
    except (ValueError, AttributeError):
        return answer(False, "the interceptor request is not a JSON object", INVALID_ARGUMENT)
    if not isinstance(headers, dict):
        return answer(False, "the interceptor request's header is not an object", INVALID_ARGUMENT)
    return answer(*verifier.check(headers))


def make_handler(verifier: PushVerifier):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict | str) -> None:
            data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(payload, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/live":
                self._send(200, "ok\n")
            else:
                self._send(404, "not found\n")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            response = interceptor_response(verifier, self.rfile.read(length))
            if not response["continue"]:
                sys.stderr.write(f"refused: {response['status']['message']}\n")
            self._send(200, response)

        def log_message(self, format, *args):
            """Only the request line and status: never a header, so never a token."""
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def serve(host: str, port: int, audience: str, email: str, certs_url: str = GOOGLE_CERTS_URL,
          also: tuple[str, ...] = ()) -> None:
    """Answer interceptor requests on ``host:port`` until interrupted."""
    server = ThreadingHTTPServer((host, port), make_handler(PushVerifier(audience, email, certs_url, also)))
    sys.stderr.write(f"checking Pub/Sub pushes of {email} for audience {audience} on {host}:{port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

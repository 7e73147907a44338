"""Hostile and odd inputs: every one answers the JSON error, nothing holds a worker or grows memory.

Raw sockets stand in for clients that no HTTP library would imitate: a huge Content-Length, an
endless chunked body, a body that stalls, a malformed request.
"""

from __future__ import annotations

import io
import json
import select
import socket

import numpy as np
import pytest
from api_helpers import (  # noqa: F401  (fixtures)
    MAX_BATCH_BYTES,
    MAX_BYTES,
    TIMEOUT_S,
    api,
    assert_json_error,
    image_bytes,
    png_header_only,
    production,
    registry,
    serve,
)
from PIL import Image, PngImagePlugin

ENDLESS_LIMIT = 50_000_000  # an "endless" body stops here if the server never answers
SERVER_CAP = max(MAX_BYTES, MAX_BATCH_BYTES)


class RawAnswer:
    """An HTTP answer read off a socket until the server closed it."""

    def __init__(self, data: bytes):
        head, _, self.body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {name.lower(): value.strip() for name, value in
                        (line.split(":", 1) for line in header_lines)}

    def json(self) -> dict:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


def connect(api) -> socket.socket:
    return socket.create_connection((api.server.host, api.server.port), timeout=TIMEOUT_S)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # the server closed with our unread bytes: the answer came first
            return data
        if not chunk:
            return data
        data += chunk


def head(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: test", *headers, "", ""]).encode()


def png_12_bit(value_8_bit: int, size: int = 64) -> bytes:
    """A 16-bit gray PNG holding 12-bit samples (max 4095) and an sBIT chunk saying so."""
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    pixels = np.full((size, size), round(value_8_bit * 4095 / 255), np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "TIFF")
    return buffer.getvalue()


def test_a_tiff_answers_415_whatever_the_content_type_says(api):
    for response in (api.predict_png(tiff_bytes()),
                     api.post(files={"image": ("scan.png", tiff_bytes(), "image/png")})):
        body = assert_json_error(response, 415, "unsupported_image_format")
        assert body["error"]["message"] == "TIFF images are not accepted; send a PNG or JPEG"


def test_a_12_bit_png_with_sbit_gets_the_answer_of_its_8_bit_twin(api):
    eight = api.predict_png(image_bytes(200)).json()["probabilities"]
    twelve = api.predict_png(png_12_bit(200))
    assert twelve.status_code == 200, twelve.text
    assert twelve.json()["probabilities"] == pytest.approx(eight, abs=1e-6)


def test_a_decompression_bomb_header_answers_413_without_decoding(api):
    assert_json_error(api.predict_png(png_header_only(40_000, 40_000)), 413, "too_many_pixels")


def test_several_images_sent_to_predict_answer_400_pointing_to_the_batch_route(api):
    files = [("image", ("a.png", image_bytes(), "image/png")), ("image", ("b.png", image_bytes(), "image/png"))]
    body = assert_json_error(api.post(files=files), 400, "too_many_images")
    assert "/predict/batch" in body["error"]["message"]


def test_a_huge_content_length_answers_the_json_413_at_once_with_the_request_id(api, production):
    with connect(api) as sock:
        sock.sendall(head("/predict", "Content-Type: image/png", "X-Request-ID: huge-1",
                          "Content-Length: 1000000000000"))
        answer = RawAnswer(read_until_closed(sock))
    assert answer.status == 413
    assert answer.json() == {"error": {"code": "too_many_bytes",
                                       "message": f"the request body is larger than {SERVER_CAP} bytes"}}
    assert answer.headers["x-request-id"] == "huge-1"
    assert answer.headers["x-model-version"] == production
    assert api.metric("xray_api_requests_total", route="server", status="413") == 1


def test_an_endless_chunked_body_is_cut_at_the_cap_with_the_json_413(api):
    chunk = b"x" * 65536
    sent = 0
    with connect(api) as sock:
        sock.sendall(head("/predict", "Content-Type: image/png", "Transfer-Encoding: chunked"))
        try:
            while sent < ENDLESS_LIMIT and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = RawAnswer(read_until_closed(sock))
    assert sent < ENDLESS_LIMIT, "the server kept reading"
    assert answer.status == 413 and answer.json()["error"]["code"] == "too_many_bytes"


def test_a_malformed_chunked_body_answers_a_json_400(api):
    with connect(api) as sock:
        sock.sendall(head("/predict", "Content-Type: image/png", "Transfer-Encoding: chunked") + b"zz\r\n")
        answer = RawAnswer(read_until_closed(sock))
    assert answer.status == 400
    assert answer.json()["error"]["code"] == "bad_request"


def test_stalled_bodies_hold_no_worker_and_are_closed_after_the_channel_timeout(serve, production):
    api = serve(CHANNEL_TIMEOUT_S=1)
    stalled = [connect(api) for _ in range(api.server.server.adj.threads + 2)]
    try:
        for sock in stalled:
            sock.sendall(head("/predict", "Content-Type: image/png", "Content-Length: 100000") + b"abc")
        assert api.predict_png(image_bytes()).status_code == 200  # every worker is still free
        for sock in stalled:
            assert read_until_closed(sock) == b""  # closed by the server, well within TIMEOUT_S
    finally:
        for sock in stalled:
            sock.close()

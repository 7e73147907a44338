"""Bad input gets a 4xx JSON error from the served model, never a 500 or a stack trace."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from unittests.conftest import post_image


def png_bytes(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()


BAD_INPUTS = {
    "empty body": (b"", "image/png", 400),
    "text as png": (b"this is not an image", "image/png", 400),
    "truncated png": (png_bytes()[:60], "image/png", 400),
    "tiny image": (png_bytes((2, 2)), "image/png", 400),
    "plain text media type": (b"hello", "text/plain", 415),
    "json media type": (b'{"image": "x"}', "application/json", 415),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_a_json_4xx(http, api_url, name):
    data, content_type, status = BAD_INPUTS[name]
    response = post_image(http, api_url, data, content_type)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert "Traceback" not in response.text

"""The decoding rules shared by training and serving: formats, pixel budget, 16-bit gray."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from api_helpers import png_header_only
from helpers import REPO_ROOT, clean_env
from PIL import Image, PngImagePlugin

from core.config import load_params
from core.preprocess import (
    DEFAULT_MAX_PIXELS,
    NotAnImage,
    TooManyPixels,
    UnsupportedFormat,
    image_bytes_to_array,
    open_image,
    png_significant_bits,
)

SIZE = 32


def picture() -> np.ndarray:
    """An 8-bit gray picture with every level from dark to bright."""
    return np.linspace(0, 255, SIZE * SIZE).reshape(SIZE, SIZE).round().astype(np.uint8)


def png(pixels: np.ndarray, significant_bits: int | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if significant_bits is not None:
        info.add(b"sBIT", bytes([significant_bits]))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (90, 90, 90)).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_a_12_bit_png_with_sbit_reads_like_the_same_picture_in_8_bits():
    eight = image_bytes_to_array(png(picture()), SIZE)
    twelve = np.round(picture().astype(np.float64) * 4095 / 255).astype(np.uint16)
    low_bits = image_bytes_to_array(png(twelve, significant_bits=12), SIZE)
    assert twelve.max() == 4095
    np.testing.assert_allclose(low_bits, eight, atol=1 / 255 + 1e-6)


def test_a_12_bit_png_scaled_to_16_bits_as_the_png_spec_describes_reads_the_same():
    eight = image_bytes_to_array(png(picture()), SIZE)
    twelve = np.round(picture().astype(np.float64) * 4095 / 255).astype(np.uint16)
    shifted = image_bytes_to_array(png(twelve << 4, significant_bits=12), SIZE)
    np.testing.assert_allclose(shifted, eight, atol=1 / 255 + 1e-6)


def test_a_16_bit_png_without_sbit_is_read_by_the_type_range():
    sixteen = picture().astype(np.uint16) * 257
    assert png_significant_bits(png(sixteen)) is None
    np.testing.assert_allclose(image_bytes_to_array(png(sixteen), SIZE),
                               image_bytes_to_array(png(picture()), SIZE), atol=1e-6)
    # The documented limit: unscaled 12-bit samples without sBIT read dark (max 4095 / 65535).
    unscaled = image_bytes_to_array(png(np.full((SIZE, SIZE), 4095, np.uint16)), SIZE)
    assert unscaled.max() == pytest.approx(round(4095 / 65535 * 255) / 255)


def test_the_sbit_reader_finds_the_chunk_and_ignores_what_is_not_one():
    assert png_significant_bits(png(picture().astype(np.uint16), significant_bits=12)) == 12
    assert png_significant_bits(png(picture().astype(np.uint16), significant_bits=0)) is None
    assert png_significant_bits(b"\x89PNG\r\n\x1a\n\x00\x00") is None


@pytest.mark.parametrize(("fmt", "name"), [("TIFF", "TIFF"), ("GIF", "GIF"), ("BMP", "BMP"), ("WEBP", "WEBP")])
def test_other_image_formats_are_refused_by_name(fmt, name):
    with pytest.raises(UnsupportedFormat, match=f"^{name} images are not accepted; send a PNG or JPEG$"):
        open_image(encoded(fmt))


def test_an_eps_file_is_refused_without_running_its_decoder():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"
    with pytest.raises(UnsupportedFormat, match="^EPS images"):
        open_image(eps)


def test_png_and_jpeg_are_accepted_and_text_is_not_an_image():
    assert open_image(encoded("PNG")).format == "PNG"
    assert open_image(encoded("JPEG")).format == "JPEG"
    with pytest.raises(NotAnImage):
        open_image(b"hello, this is text and not an image")


def test_training_reader_applies_the_default_budget_before_decoding():
    side = int(DEFAULT_MAX_PIXELS**0.5) + 1
    with pytest.raises(TooManyPixels, match=f"more than {DEFAULT_MAX_PIXELS}"):
        image_bytes_to_array(png_header_only(side, side), SIZE)


def test_pillows_decompression_bomb_guard_refuses_beyond_any_budget():
    with pytest.raises(TooManyPixels, match="pixels"):
        open_image(png_header_only(30_000, 30_000), max_pixels=10**12)


def test_the_default_budget_is_the_configured_one():
    assert DEFAULT_MAX_PIXELS == load_params(environ={})["api"]["max_pixels"]


def test_importing_the_project_leaves_pillows_guard_on():
    code = ("from PIL import Image; default = Image.MAX_IMAGE_PIXELS; "
            "import api.app, model.validation, core.preprocess; "
            "print(Image.MAX_IMAGE_PIXELS == default and default is not None)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr

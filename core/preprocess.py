"""Image decoding shared by training and serving, so both see exactly the same pixels.

The network takes a batch of shape ``(N, S, S, 1)``, float32 in [0, 1], where ``S`` is
``data.image_size``: one gray channel, resized with Pillow's bilinear filter. Training reads files
through this module and the API reads request bodies through it; keeping one implementation is
what makes the accuracy measured through the API match the accuracy measured in training.

Rules every path follows (API, data validation, training):

- Only PNG and JPEG are decoded. Another image format is refused (:class:`UnsupportedFormat`)
  before any other decoder sees the bytes: Pillow's TIFF, PSD or EPS readers (EPS runs
  Ghostscript) are never run on a client's data.
- The pixel budget (``api.max_pixels``, :data:`DEFAULT_MAX_PIXELS` where a caller gives none) is
  checked from the header, before decoding. Pillow's own decompression-bomb guard stays on as a
  second line: an image over twice ``PIL.Image.MAX_IMAGE_PIXELS`` is refused whatever the budget.
- 16-bit gray PNGs: white is ``2**b - 1``, where ``b`` is the significant bits of the PNG's
  ``sBIT`` chunk when it has one, else 16 (the type's range). A 12-bit radiograph written with
  ``sBIT`` 12 and samples up to 4095 therefore arrives at its real brightness. A sample above
  ``2**b - 1`` shows the encoder scaled the samples to the full 16 bits, as the PNG specification
  describes for ``sBIT``; such an image is read by the type's range, so it is never clipped.
  Without ``sBIT`` a 12-bit image stored unscaled reads dark: the file does not say its range.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

ACCEPTED_FORMATS = ("PNG", "JPEG")
# The budget of callers that pass none (training's reader); the same number as api.max_pixels in
# params.yaml, which a test keeps in step.
DEFAULT_MAX_PIXELS = 25_000_000
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
SIGNIFICANT_BITS = "significant_bits"  # image.info key: the sBIT of a 16-bit gray PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMAT_PREFIX_BYTES = 16  # what Pillow's format detectors look at


class ImageError(ValueError):
    """An image cannot be used. ``code`` is the API's error code, ``status`` its HTTP status."""

    code = "invalid_image"
    status = 400


class NotAnImage(ImageError):
    code = "not_an_image"


class UnsupportedFormat(ImageError):
    code = "unsupported_image_format"
    status = 415


class TruncatedImage(ImageError):
    code = "truncated_image"


class WrongDimensions(ImageError):
    code = "wrong_dimensions"


class TooManyPixels(ImageError):
    code = "too_many_pixels"
    status = 413


def other_image_format(data: bytes) -> str | None:
    """The name of the image format ``data`` starts like, among those Pillow knows by signature.

    Only Pillow's signature checks run (a look at the first bytes); no decoder does. Formats
    without a signature (TGA, for one) cannot be told from random bytes and are not named.
    """
    Image.init()
    prefix = data[:FORMAT_PREFIX_BYTES]
    for name, (_, accept) in Image.OPEN.items():
        if name not in ACCEPTED_FORMATS and accept is not None and accept(prefix):
            return name
    return None


def png_significant_bits(data: bytes) -> int | None:
    """The gray significant bits of a PNG's ``sBIT`` chunk (which precedes the pixel data), if any."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if kind == b"sBIT":
            bits = data[position + 8] if length >= 1 and position + 8 < len(data) else 0
            return bits if 1 <= bits <= 16 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        position += 12 + length  # length, type, data, CRC
    return None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> Image.Image:
    """Decode ``data`` fully into a Pillow image, raising an :class:`ImageError` if it is unusable."""
    if not data:
        raise NotAnImage("the body is empty: send the image bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(
            f"the image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, over the budget "
            f"of {max_pixels}"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        other = other_image_format(data)
        if other:
            raise UnsupportedFormat(f"{other} images are not accepted; send a PNG or JPEG") from exc
        raise NotAnImage("not an image: the data is neither PNG nor JPEG") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"not an image: the PNG or JPEG header is broken ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"the image has {width}x{height} = {width * height} pixels, more than {max_pixels}"
        )
    if min(width, height) < min_side:
        raise WrongDimensions(
            f"the image is {width}x{height}; each side must be at least {min_side} pixels"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage(f"the image data is truncated or corrupt ({exc})") from exc
    if image.mode in SIXTEEN_BIT_MODES and image.format == "PNG":
        image.info[SIGNIFICANT_BITS] = png_significant_bits(data)
    return image


def sixteen_bit_white(image: Image.Image, pixels: np.ndarray) -> float:
    """The sample value that means white in a 16-bit gray image (the rule of the module docstring)."""
    bits = image.info.get(SIGNIFICANT_BITS) or 16
    if bits >= 16:
        return 65535.0  # no pass over the pixels: nothing can exceed it
    white = float(2**bits - 1)
    return white if pixels.size == 0 or pixels.max() <= white else 65535.0


def to_gray8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit gray; 16-bit images are scaled, not clipped."""
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float32)  # exact for 16-bit samples, half the memory of float64
        scaled = pixels / sixteen_bit_white(image, pixels) * 255.0 + 0.5
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas count as black background, as on a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """The network's input for one image: float32 ``(size, size, 1)`` in [0, 1]."""
    gray = to_gray8(image)
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(gray, dtype=np.float32) / 255.0)[..., np.newaxis]


def image_bytes_to_array(
    data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1
) -> np.ndarray:
    """Decode image bytes into the network's input for one image."""
    return to_array(open_image(data, max_pixels=max_pixels, min_side=min_side), size)

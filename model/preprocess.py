"""Image decoding shared by training and serving, so both see exactly the same pixels.

The network takes a batch of shape ``(N, S, S, 1)``, float32 in [0, 1], where ``S`` is
``data.image_size``: one gray channel, resized with Pillow's bilinear filter. Training reads files
through this module and the API reads request bodies through it; keeping one implementation is
what makes the accuracy measured through the API match the accuracy measured in training.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# The pixel budget is enforced here, explicitly, so Pillow's own bomb check is switched off and
# cannot fire with a different message.
Image.MAX_IMAGE_PIXELS = None

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


class ImageError(ValueError):
    """An image cannot be used. ``code`` is the API's error code, ``status`` its HTTP status."""

    code = "invalid_image"
    status = 400


class NotAnImage(ImageError):
    code = "not_an_image"


class TruncatedImage(ImageError):
    code = "truncated_image"


class WrongDimensions(ImageError):
    code = "wrong_dimensions"


class TooManyPixels(ImageError):
    code = "too_many_pixels"
    status = 413


def open_image(data: bytes, max_pixels: int | None = None, min_side: int = 1) -> Image.Image:
    """Decode ``data`` fully into a Pillow image, raising an :class:`ImageError` if it is unusable."""
    if not data:
        raise NotAnImage("the body is empty: send the image bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage("the body is not an image Pillow can read (send a PNG or JPEG)") from exc
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise TooManyPixels(
            f"the image has {width}x{height} = {width * height} pixels, more than {max_pixels}"
        )
    if min(width, height) < min_side:
        raise WrongDimensions(
            f"the image is {width}x{height}; each side must be at least {min_side} pixels"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImage(f"the image data is truncated or corrupt ({exc})") from exc
    return image


def to_gray8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit gray; 16-bit images are scaled, not clipped."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "I" or pixels.max() > 255 else 255.0
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
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
    data: bytes, size: int, max_pixels: int | None = None, min_side: int = 1
) -> np.ndarray:
    """Decode image bytes into the network's input for one image."""
    return to_array(open_image(data, max_pixels=max_pixels, min_side=min_side), size)

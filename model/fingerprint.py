"""Perceptual fingerprints of images, to find the same radiograph saved differently.

A fingerprint is imagehash's DCT hash (pHash) with 256 bits, taken from the 8-bit gray picture the
decoder produced (core/preprocess.py) after dark borders are cropped. The same picture re-encoded
(PNG, JPEG quality 90), resized down and up, 3% brighter or 5% more contrasted, or framed by a black
border lands within a few bits; unrelated synthetic radiographs of the sample dataset lie 12 bits
or more apart (measured on its 1,200 images), while the 64-bit pHash put some of them at 0 bits:
chest radiographs share their low frequencies, so the hash needs the finer ones.

A border is the rows and columns, from each edge inwards, whose median is at most
:data:`BORDER_LEVEL`: a black frame and JPEG's faint ringing inside it. A background darker than
that counts as border too, so a contrast change that turns a dark background black crops it away
(the fingerprint then differs): stronger re-windowing is outside what this finds.
"""

from __future__ import annotations

import hashlib
from importlib import metadata as importlib_metadata
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from core.preprocess import to_gray8

HASH_SIZE = 16  # imagehash's hash_size: HASH_SIZE**2 bits
BITS = HASH_SIZE * HASH_SIZE
BYTES = BITS // 8
BORDER_LEVEL = 3  # a row or column whose median is at most this (of 255) is border
MIN_KEPT_SIDE = 8  # an image that is all border is fingerprinted whole
CROP_PASSES = 4


def fingerprint_version() -> str:
    """What a stored fingerprint depends on: this module's source and imagehash's version."""
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + importlib_metadata.version("ImageHash").encode()).hexdigest()[:16]


def crop_dark_border(gray: Image.Image) -> Image.Image:
    """``gray`` (mode L) without the dark rows and columns along its edges.

    Rows are judged over the columns kept, columns over the rows kept, again until the box holds:
    a frame's black columns darken every row's median, so the first pass cuts a bordered copy
    tighter than its original; the next one, without them, gives those rows back.
    """
    pixels = np.asarray(gray)
    top, bottom, left, right = 0, pixels.shape[0], 0, pixels.shape[1]
    for _ in range(CROP_PASSES):
        rows = np.flatnonzero(np.median(pixels[:, left:right], axis=1) > BORDER_LEVEL)
        columns = np.flatnonzero(np.median(pixels[top:bottom, :], axis=0) > BORDER_LEVEL)
        if len(rows) == 0 or len(columns) == 0:
            return gray
        box = (int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1)
        if box == (top, bottom, left, right):
            break
        top, bottom, left, right = box
    if bottom - top < MIN_KEPT_SIDE or right - left < MIN_KEPT_SIDE:
        return gray
    return gray.crop((left, top, right, bottom))


def fingerprint(image: Image.Image) -> str:
    """The fingerprint of a decoded image (any mode), as hex (:data:`BYTES` bytes)."""
    bits = imagehash.phash(crop_dark_border(to_gray8(image)), hash_size=HASH_SIZE).hash
    return np.packbits(bits.flatten()).tobytes().hex()


def as_array(fingerprints: list[str]) -> np.ndarray:
    """Hex fingerprints as a uint8 array ``(N, BYTES)``."""
    if not fingerprints:
        return np.zeros((0, BYTES), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(fingerprints)), dtype=np.uint8).reshape(len(fingerprints), BYTES)


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint16)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of ``a`` and ``b`` (broadcast), uint8 fingerprints."""
    return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1)

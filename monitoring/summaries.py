"""Per-image summaries: cheap numbers the API computes on every request and training on its splits.

From the pixels the network sees (float32 ``(S, S, 1)`` in [0, 1], core/preprocess.py):

- ``intensity``: pixel counts in :data:`INTENSITY_BINS` equal bins of [0, 1];
- appearance features (:data:`FEATURES`), the input of the out-of-distribution score: the mean
  and standard deviation of intensity, the shares of near-black (< 0.05) and near-white (>= 0.95)
  pixels, and the mean of each cell of a :data:`GRID` x :data:`GRID` grid (the coarse layout of a
  chest radiograph: dark lungs either side of a bright mediastinum);

and from the original image: its width, height, aspect ratio (width / height), bit depth and
Pillow mode. The pixel summaries are taken from a quarter of the pixels (every other one of every
other row) when the side is 64 or more: the shares and means barely change, and the work on the
request path is a quarter (a sum, a dot product, a histogram and two small matrix products on
64 x 64 values for a 128 px input).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

INTENSITY_BINS = 20  # 0.05 wide: the first bin is near-black, the last near-white
SAMPLE_STEP = 2  # inputs of 64 px and more are summarised from every 2nd pixel of every 2nd row
GRID = 4
FEATURES = ("mean", "std", "near_black", "near_white") + tuple(
    f"cell_{row}{column}" for row in range(GRID) for column in range(GRID))
# Bits per sample of a Pillow mode (a 12-bit radiograph in a 16-bit PNG counts as 16: its storage).
MODE_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
             "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 16, "F": 32}


@dataclass(frozen=True)
class Summary:
    """One image's summaries."""

    features: np.ndarray  # float64, one value per name of FEATURES
    intensity: np.ndarray  # int64 pixel counts per intensity bin
    width: int
    height: int
    mode: str

    @property
    def aspect(self) -> float:
        return self.width / self.height if self.height else 0.0

    @property
    def bit_depth(self) -> int:
        return MODE_BITS.get(self.mode, 0)


@functools.lru_cache(maxsize=8)
def _averaging(side: int) -> np.ndarray:
    """``(GRID, side)``: row i averages the pixels of the i-th of GRID equal bands (the remainder of
    a side not divisible by GRID is left out), so ``A @ plane @ B.T`` is the grid of cell means."""
    cell = side // GRID
    matrix = np.zeros((GRID, side), dtype=np.float32)
    for band in range(GRID):
        matrix[band, band * cell:(band + 1) * cell] = 1.0 / cell
    matrix.flags.writeable = False
    return matrix


def summarize(pixels: np.ndarray, width: int, height: int, mode: str) -> Summary:
    """The summaries of one image: ``pixels`` is the network's input ``(S, S)`` or ``(S, S, 1)``;
    ``width``, ``height`` and ``mode`` describe the image as it was sent (Pillow's size and mode)."""
    plane = pixels.reshape(pixels.shape[0], pixels.shape[1])
    step = SAMPLE_STEP if min(plane.shape) >= SAMPLE_STEP * 32 else 1
    sample = np.ascontiguousarray(plane[::step, ::step])
    flat = sample.ravel()
    total = float(flat.size)
    mean = float(flat.sum()) / total
    # E[x^2] - mean^2 by one dot product: faster than ndarray.std, and exact enough for [0, 1] data.
    std = max(float(np.dot(flat, flat)) / total - mean * mean, 0.0) ** 0.5
    bins = np.minimum((flat * INTENSITY_BINS).astype(np.int32), INTENSITY_BINS - 1)
    intensity = np.bincount(bins, minlength=INTENSITY_BINS)
    rows, columns = _averaging(sample.shape[0]), _averaging(sample.shape[1])
    grid = rows @ sample @ columns.T
    features = np.empty(len(FEATURES))
    features[:4] = mean, std, intensity[0] / total, intensity[-1] / total
    features[4:] = grid.ravel()
    return Summary(features, intensity, int(width), int(height), str(mode))


class Source(NamedTuple):
    """What the summaries need of the image as it was sent (kept instead of the decoded image)."""

    width: int
    height: int
    mode: str


def source_of(image) -> Source:
    """The :class:`Source` of a Pillow image as decoded (before its conversion to gray)."""
    return Source(image.size[0], image.size[1], image.mode)

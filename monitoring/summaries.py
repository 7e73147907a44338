"""Per-image summaries: cheap numbers the API computes on every request and training on its splits.

From the pixels the network sees (float32 ``(S, S, 1)`` in [0, 1], core/preprocess.py):

- ``intensity``: pixel counts in :data:`INTENSITY_BINS` equal bins of [0, 1];
- appearance features (:data:`FEATURES`), the input of the out-of-distribution score: the mean
  and standard deviation of intensity, the shares of near-black (< 0.05) and near-white (>= 0.95)
  pixels, and the mean of each cell of a :data:`GRID` x :data:`GRID` grid (the coarse layout of a
  chest radiograph: dark lungs either side of a bright mediastinum);

and from the original image: its width, height, aspect ratio (width / height), bit depth and
Pillow mode.

The pixel summaries are taken from :data:`PER_CELL` x :data:`PER_CELL` pixels spread evenly over
each cell of the grid (every 6th pixel of every 6th row of a 128 px input, centred in the cell):
400 values, so the per-image mean is within ~0.01 of the whole image's, and every numpy call stays
under the 500 elements above which numpy releases the GIL. Inputs under 40 px are summarised whole. That is what monitoring cost under
load: with the API's worker threads all busy, each release hands the GIL to another thread and
the request waits to get it back. Summarising 4,096 pixels took ~10 such hand-offs per request
(a copy, a sum, a dot product, a histogram, two matrix products); py-spy of the API at
concurrency 4 put 7.5% of its threads' samples in monitoring, now 3.2% (docs/measurements.md).
The histogram is counted in Python (``collections.Counter``) for the same reason: ``np.bincount``
releases the GIL whatever the size.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

INTENSITY_BINS = 20  # 0.05 wide: the first bin is near-black, the last near-white
GRID = 4
PER_CELL = 5  # pixels summarised per grid cell and side: 20 x 20 = 400 (< 500, numpy's size for releasing the GIL)
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


@functools.lru_cache(maxsize=16)
def _positions(band: int) -> slice:
    """:data:`PER_CELL` evenly spaced, centred positions in a band of a grid cell (all of a band
    too narrow to leave a pixel between them)."""
    if band < 2 * PER_CELL:
        return slice(None)
    step = band // PER_CELL
    start = (band - step * (PER_CELL - 1) - 1) // 2
    return slice(start, start + step * (PER_CELL - 1) + 1, step)


def summarize(pixels: np.ndarray, width: int, height: int, mode: str) -> Summary:
    """The summaries of one image: ``pixels`` is the network's input ``(S, S)`` or ``(S, S, 1)``;
    ``width``, ``height`` and ``mode`` describe the image as it was sent (Pillow's size and mode)."""
    plane = pixels.reshape(pixels.shape[0], pixels.shape[1])
    rows, columns = plane.shape[0] // GRID, plane.shape[1] // GRID  # a cell's size; a remainder is left out
    cells = plane[:rows * GRID, :columns * GRID].reshape(GRID, rows, GRID, columns)  # a view: no copy yet
    sample = cells[:, _positions(rows), :, _positions(columns)].astype(np.float64)  # 400 values at 128 px
    total = float(sample.size)
    mean = float(sample.sum()) / total
    std = max(float((sample * sample).sum()) / total - mean * mean, 0.0) ** 0.5
    found = collections.Counter((sample * INTENSITY_BINS).astype(np.intp).ravel().tolist())
    counts = [found.get(index, 0) for index in range(INTENSITY_BINS)]
    counts[-1] += found.get(INTENSITY_BINS, 0)  # exactly 1.0: the last bin is closed
    features = np.empty(len(FEATURES))
    features[:4] = mean, std, counts[0] / total, counts[-1] / total
    features[4:] = sample.mean(axis=(1, 3)).ravel()  # the grid's cell means
    return Summary(features, np.array(counts, dtype=np.int64), int(width), int(height), str(mode))


class Source(NamedTuple):
    """What the summaries need of the image as it was sent (kept instead of the decoded image)."""

    width: int
    height: int
    mode: str


def source_of(image) -> Source:
    """The :class:`Source` of a Pillow image as decoded (before its conversion to gray)."""
    return Source(image.size[0], image.size[1], image.mode)

"""Synthetic chest radiographs, so the pipeline runs end to end without the real dataset.

These images are NOT medical data. Each is a dark background with a body outline, two lung
fields, a mediastinum, rib shadows and a diaphragm; the classes differ by patterns a small CNN can
learn, loosely modelled on how the real findings look:

- ``COVID``: hazy ground glass in the lower, outer zones of both lungs;
- ``Lung_Opacity``: one focal, dense consolidation somewhere in one lung;
- ``Viral Pneumonia``: a diffuse reticular (interstitial) texture over both lungs;
- ``Normal``: clear lung fields.

Position, size, contrast, noise, rotation and the strength of each finding vary per image, and
weak findings overlap with normal mottling, so the task is not trivial.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

COVID, LUNG_OPACITY, NORMAL, VIRAL_PNEUMONIA = "COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"
SUBTLE_SHARE = 0.08   # share of abnormal images whose finding is drawn faint
SUBTLE_FACTOR = 0.3   # how faint


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] with features about ``size / cells`` pixels wide."""
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    big = Image.fromarray(grid, "L").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 127.5 - 1.0


def _ellipse(x, y, cx, cy, rx, ry, softness=0.08):
    """1 inside the ellipse, 0 outside, with a soft edge of relative width ``softness``."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 + softness - r) / (2 * softness), 0.0, 1.0)


def _blob(x, y, cx, cy, radius):
    return np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))


def render(label: str, rng: np.random.Generator, size: int = 299) -> Image.Image:
    """One synthetic radiograph of class ``label`` as an 8-bit gray Pillow image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx = 0.5 + rng.uniform(-0.04, 0.04)
    cy = 0.52 + rng.uniform(-0.04, 0.04)
    scale = rng.uniform(0.88, 1.08)

    body = _ellipse(x, y, cx, cy + 0.05, 0.44 * scale, 0.52 * scale, 0.1)
    image = 0.06 + 0.30 * body

    lung_rx, lung_ry = 0.15 * scale * rng.uniform(0.9, 1.1), 0.29 * scale * rng.uniform(0.9, 1.1)
    offset = 0.2 * scale * rng.uniform(0.92, 1.08)
    lungs = []
    for side in (-1, 1):
        lx = cx + side * offset
        lungs.append((side, lx, cy, _ellipse(x, y, lx, cy, lung_rx, lung_ry, 0.12)))
    # Diaphragm domes under each lung; the lung fields end on them.
    dome = np.maximum(*(np.exp(-(((x - lx) / (lung_rx * 1.2)) ** 2)) for _, lx, _, _ in lungs))
    diaphragm = np.clip((y - (cy + lung_ry * 0.95 - 0.08 * dome)) / 0.015, 0, 1)
    lungs = [(side, lx, ly, mask * (1 - diaphragm)) for side, lx, ly, mask in lungs]
    lung_mask = np.maximum(lungs[0][3], lungs[1][3])
    image = image - 0.22 * lung_mask

    # Rib shadows: curved bands across each lung field.
    period = rng.uniform(0.055, 0.075)
    phase = rng.uniform(0, period)
    for side, lx, _ly, mask in lungs:
        curve = y - 0.9 * (x - lx - side * 0.05) ** 2
        ribs = np.clip(np.cos(2 * np.pi * (curve - phase) / period), 0, 1) ** 3
        image = image + rng.uniform(0.05, 0.1) * ribs * mask

    # Mediastinum and spine; the abdomen below the diaphragm.
    image = image + 0.35 * _ellipse(x, y, cx, cy - 0.02, 0.07 * scale, 0.32 * scale, 0.25)
    image = image + 0.2 * body * diaphragm

    # Normal mottling in every class, so findings must be told apart from it.
    image = image + rng.uniform(0.01, 0.04) * _smooth_noise(rng, size, 12) * lung_mask

    # Some findings are subtle, as in real practice: they make a perfect score unlikely.
    subtlety = SUBTLE_FACTOR if rng.uniform() < SUBTLE_SHARE else 1.0
    if label == COVID:
        strength = subtlety * rng.uniform(0.07, 0.2)
        haze = np.zeros_like(image)
        for side, lx, ly, mask in lungs:
            for _ in range(rng.integers(2, 4)):
                bx = lx + side * lung_rx * rng.uniform(0.35, 0.75)
                by = ly + lung_ry * rng.uniform(0.2, 0.7)
                haze += _blob(x, y, bx, by, rng.uniform(0.05, 0.09)) * mask
        texture = 0.75 + 0.25 * _smooth_noise(rng, size, 30)
        image = image + strength * np.clip(haze, 0, 1.3) * texture
    elif label == LUNG_OPACITY:
        side, lx, ly, mask = lungs[rng.integers(0, 2)]
        bx = lx + lung_rx * rng.uniform(-0.6, 0.6)
        by = ly + lung_ry * rng.uniform(-0.6, 0.6)
        radius = rng.uniform(0.035, 0.075)
        dense = np.clip(_blob(x, y, bx, by, radius) * 1.6, 0, 1) ** 1.5
        image = image + subtlety * rng.uniform(0.18, 0.4) * dense * mask
    elif label == VIRAL_PNEUMONIA:
        net = np.abs(_smooth_noise(rng, size, int(rng.integers(35, 50))))
        reticular = np.exp(-((net / 0.12) ** 2))
        image = image + subtlety * rng.uniform(0.05, 0.12) * reticular * lung_mask
    elif label != NORMAL:
        raise ValueError(f"unknown class {label!r}")

    gain, gamma = rng.uniform(0.85, 1.2), rng.uniform(0.8, 1.25)
    image = np.clip(image * gain, 0, 1) ** gamma
    image = image + rng.normal(0, rng.uniform(0.008, 0.03), image.shape)
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    angle = rng.uniform(-7, 7)
    return Image.fromarray(pixels, "L").rotate(angle, Image.Resampling.BILINEAR, fillcolor=int(pixels[0, 0]))


def image_seed(seed: int, label: str, index: int) -> np.random.Generator:
    """A generator for one image: the same (seed, class, index) always draws the same image."""
    label_key = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")
    return np.random.default_rng([seed, label_key, index])

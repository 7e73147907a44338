"""The grouping benchmark: near-duplicate grouping of a dataset the size of the real one (21,165
images), against the time of one training run.

The fingerprints are synthesized: ``SAMPLE_RENDERS`` synthetic radiographs (model/synthetic.py) are
fingerprinted (timed: the cost validation adds to each decode), the share of ones of each bit is
taken from them, and 21,165 fingerprints are drawn with those shares, bit by bit; ``COPY_SHARE`` of
them are then replaced by copies of others with up to ``COPY_FLIPS`` bits flipped, so there are
groups to find. Biased bits are what make chest radiographs share chunks of the index; uniform
random fingerprints would flatter it. The grouping (index, union-find, splits of 21,165 paths) runs
under ``data.duplicate_distance``, timed from the fingerprints to the split of every image.

One training run: the newest version of the registry (``registry_uri``), its fitting time per
image and epoch, scaled to 21,165 images' train split and ``train.epochs``. Quick mode: 2,000
fingerprints, 8 renders; its numbers mean nothing.
"""

from __future__ import annotations

import time

import numpy as np

from model.dataset import Example
from model.fingerprint import as_array, fingerprint
from model.groups import plan_splits
from model.synthetic import image_seed, render
from registry.store import Registry
from storage import StorageError

REAL_DATASET_IMAGES = 21_165
SAMPLE_RENDERS = 120
COPY_SHARE = 0.05
COPY_FLIPS = 4
QUICK = {"images": 2_000, "renders": 8}


def synthesize(renders: int, images: int, size: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``(fingerprints (images, B) uint8, seconds to fingerprint one decoded image)``."""
    classes = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    pictures = [render(classes[i % 4], image_seed(seed, classes[i % 4], i), size) for i in range(renders)]
    fingerprint(pictures[0])  # imports and first-call set-up are not per image
    started = time.perf_counter()
    measured = as_array([fingerprint(picture) for picture in pictures])
    per_image = (time.perf_counter() - started) / renders
    ones = np.unpackbits(measured, axis=1).mean(axis=0)
    rng = np.random.default_rng(seed)
    bits = (rng.random((images, len(ones))) < ones).astype(np.uint8)
    copies = rng.choice(images, int(images * COPY_SHARE), replace=False)
    for index in copies:
        bits[index] = bits[rng.integers(images)]
        bits[index, rng.choice(len(ones), rng.integers(0, COPY_FLIPS + 1), replace=False)] ^= 1
    return np.packbits(bits, axis=1), per_image


def training_seconds(params: dict, images: int) -> tuple[float | None, str]:
    """One training run on ``images`` images, scaled from the registry's newest version; and whence."""
    try:
        registry = Registry(params["registry_uri"])
        versions = registry.versions("testing") + registry.versions("production")
        if not versions:
            return None, f"no version in {params['registry_uri']}: run `make train` for the training share"
        version = max(versions)
        metadata = registry.metadata(version)
    except StorageError as exc:
        return None, f"the registry cannot be read ({exc})"
    training, dataset = metadata.get("training") or {}, metadata.get("dataset") or {}
    trained = (dataset.get("split_counts") or {}).get("train")
    if not trained or not training.get("seconds") or not training.get("epochs_run"):
        return None, f"{version} records no training time"
    per_image_epoch = training["seconds"] / (trained * training["epochs_run"])
    seconds = per_image_epoch * images * params["data"]["split"]["train"] * params["train"]["epochs"]
    return seconds, (f"training: {version}'s {training['seconds']:.0f} s for {training['epochs_run']} epochs of "
                     f"{trained} images ({training.get('device', '?')}), scaled to {images} images and "
                     f"train.epochs {params['train']['epochs']}")


def run(params: dict, quick: bool) -> dict:
    images = QUICK["images"] if quick else REAL_DATASET_IMAGES
    renders = QUICK["renders"] if quick else SAMPLE_RENDERS
    distance = params["data"]["duplicate_distance"]
    prints, per_image = synthesize(renders, images, params["sample_data"]["image_size"])
    classes = params["classes"]
    examples = [Example(f"{classes[i % len(classes)]}/images/{classes[i % len(classes)]}-{i}.png",
                        classes[i % len(classes)], "") for i in range(images)]
    started = time.perf_counter()
    plan = plan_splits(examples, prints, distance, params["data"]["split"], {})
    grouping = time.perf_counter() - started
    training, source = training_seconds(params, images)
    fingerprinting = per_image * images

    def share(seconds: float) -> float | None:
        return 100.0 * seconds / training if training else None

    row = {
        "images": images,
        "distance": distance,
        "pairs compared": plan.compared,
        "groups": len(plan.groups),
        "grouping s": grouping,
        "fingerprints s": fingerprinting,
        "training run s": training,
        "grouping % of training": share(grouping),
        "fingerprints % of training": share(fingerprinting),
    }
    return {
        "title": f"Grouping: near-duplicates of {images:,} images (synthesized fingerprints)",
        "rows": [row],
        "notes": [
            (f"fingerprints: {per_image * 1000:.2f} ms per decoded image ({renders} synthetic radiographs), paid "
             "once per dataset version inside validation's decode (then kept in the decoded cache)"),
            f"pairs compared by the index: {plan.compared:,} of {images * (images - 1) // 2:,} possible",
            source,
        ],
    }

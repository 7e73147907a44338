"""Data validation: every image decodes, enough images per class, no image in two splits.

Unreadable files are listed by path and excluded, so one bad file never crashes training; when
more than ``data.max_corrupt_share`` of the files are unreadable the dataset fails validation.
Images are read by the API's rules (model/preprocess.py): PNG and JPEG only, and the pixel budget
``api.max_pixels``, so a model is never trained on an image the API would refuse.
An image found in two splits (same pixels) would leak training data into evaluation: its copies
outside the earliest split (train, then validation, then test) are excluded and reported.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import click

from model.dataset import SPLITS, Dataset
from model.preprocess import DEFAULT_MAX_PIXELS, ImageError, open_image


class ValidationFailed(RuntimeError):
    """The dataset does not meet the requirements; the message lists every problem."""


def pixel_digest(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str, str]:
    """Decode image bytes; return (sha256 of mode, size and pixels, mode, "WxH")."""
    image = open_image(data, max_pixels=max_pixels)
    size = f"{image.size[0]}x{image.size[1]}"
    digest = hashlib.sha256(f"{image.mode}{size}".encode() + image.tobytes()).hexdigest()
    return digest, image.mode, size


def validate_dataset(dataset: Dataset, params: dict, progress: bool = True) -> tuple[dict, Dataset]:
    """Check ``dataset``; return the JSON report and the dataset of usable examples."""
    data_params = params["data"]
    max_pixels = params["api"]["max_pixels"]
    corrupt, modes, sizes = [], Counter(), Counter()
    by_pixels: dict[str, list] = defaultdict(list)
    readable = []
    with click.progressbar(dataset.examples, label="checking images", show_pos=True,
                           hidden=not progress) as bar:
        for example in bar:
            try:
                digest, mode, size = pixel_digest(dataset.read_bytes(example.path), max_pixels)
            except (ImageError, OSError) as exc:
                corrupt.append({"path": example.path, "error": str(exc)})
                continue
            modes[mode] += 1
            sizes[size] += 1
            by_pixels[digest].append(example)
            readable.append(example)

    leaked, duplicates = set(), []
    for digest, copies in by_pixels.items():
        splits = {e.split for e in copies}
        if len(splits) > 1:
            keep = min(splits, key=SPLITS.index)
            leaked.update(e.path for e in copies if e.split != keep)
            duplicates.append({
                "pixels_sha256": digest,
                "paths": sorted(e.path for e in copies),
                "splits": sorted(splits, key=SPLITS.index),
                "kept_in": keep,
            })
    usable = dataset.with_examples([e for e in readable if e.path not in leaked])

    total = len(dataset.examples)
    corrupt_share = len(corrupt) / total if total else 0.0
    counts = usable.class_counts()
    minimum = data_params["min_images_per_class"]
    below = {name: n for name, n in counts.items() if n < minimum}
    problems = []
    if corrupt_share > data_params["max_corrupt_share"]:
        problems.append(
            f"{len(corrupt)} of {total} files are unreadable ({corrupt_share:.1%}), more than the "
            f"allowed {data_params['max_corrupt_share']:.1%}"
        )
    for name, n in below.items():
        problems.append(f"class {name!r} has {n} usable images, fewer than the minimum {minimum}")
    report = {
        "dataset": {"uri": dataset.uri, "manifest_sha256": usable.manifest_sha256(), "files": total},
        "passed": not problems,
        "problems": problems,
        "class_counts": counts,
        "split_counts": {s: usable.class_counts(usable.split(s)) for s in SPLITS},
        "min_images_per_class": minimum,
        "modes": dict(modes),
        "sizes": dict(sizes.most_common()),
        "corrupt": corrupt,
        "corrupt_share": round(corrupt_share, 6),
        "max_corrupt_share": data_params["max_corrupt_share"],
        "duplicates_across_splits": duplicates,
        "excluded": sorted([c["path"] for c in corrupt] + sorted(leaked)),
        "unknown_folders": dataset.unknown_folders,
    }
    return report, usable

"""Data validation: every image decodes, enough images per class, no image in two splits.

Unreadable files are listed by path and excluded, so one bad file never crashes training; when
more than ``data.max_corrupt_share`` of the files are unreadable the dataset fails validation.
Images are read by the API's rules (core/preprocess.py): PNG and JPEG only, and the pixel budget
``api.max_pixels``, so a model is never trained on an image the API would refuse.
An image found in two splits (same pixels) would leak training data into evaluation: its copies
outside the earliest split (train, then validation, then test) are excluded and reported.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import click
import numpy as np

from core.preprocess import ImageError, open_image, to_array
from model.dataset import SPLITS, Dataset
from model.decoded_cache import DecodedCache, attach, to_stored


class ValidationFailed(RuntimeError):
    """The dataset does not meet the requirements; the message lists every problem."""


def _inspect(image) -> tuple[str, str, str]:
    size = f"{image.size[0]}x{image.size[1]}"
    digest = hashlib.sha256(f"{image.mode}{size}".encode() + image.tobytes()).hexdigest()
    return digest, image.mode, size


def decode_all(dataset: Dataset, max_pixels: int, image_size: int | None, progress: bool):
    """Decode every file once: ``(records by path, uint8 images, whether every file was as scanned)``.

    With ``image_size`` the network's input of each readable file is kept too (model/decoded_cache.py).
    """
    records, images, unchanged = {}, [], True
    with click.progressbar(dataset.examples, label="checking images", show_pos=True,
                           hidden=not progress) as bar:
        for example in bar:
            record = {"sha256": example.sha256}
            try:
                data = dataset.read_bytes(example.path)
                if image_size and hashlib.sha256(data).hexdigest() != example.sha256:
                    unchanged = False  # changed since the scan: the cache entry would lie
                image = open_image(data, max_pixels=max_pixels)
                record["digest"], record["mode"], record["size"] = _inspect(image)
                if image_size:
                    images.append(to_stored(to_array(image, image_size)))
                    record["row"] = len(images) - 1
            except (ImageError, OSError) as exc:
                record = {"sha256": example.sha256, "error": str(exc)}
            records[example.path] = record
    side = image_size or 0
    stacked = np.stack(images) if images else np.zeros((0, side, side), dtype=np.uint8)
    return records, stacked, unchanged


def decoded_records(dataset: Dataset, params: dict, progress: bool):
    """Validation's record of every file, from the decoded cache when it holds this dataset version,
    else decoded now (and stored there when the cache is on); and the cache entry, if any."""
    max_pixels, image_size = params["api"]["max_pixels"], params["data"]["image_size"]
    cache = DecodedCache.from_params(params)
    key = cache.key(dataset, image_size, max_pixels) if cache else None
    entry = cache.read(key) if key else None
    if entry is not None:
        if progress:
            click.echo(f"checking images: {len(dataset.examples)} decoded before, read from {cache.root / key}")
        return entry.records, entry
    records, images, unchanged = decode_all(dataset, max_pixels, image_size if key else None, progress)
    if key and unchanged:
        entry = cache.write(key, image_size, records, images)
    return records, entry


def validate_dataset(dataset: Dataset, params: dict, progress: bool = True) -> tuple[dict, Dataset]:
    """Check ``dataset``; return the JSON report and the dataset of usable examples.

    Each image is decoded once per dataset version and image size (model/decoded_cache.py): the
    usable dataset carries the decoded images when the cache holds them, for model/tfdata.py.
    """
    data_params = params["data"]
    records, entry = decoded_records(dataset, params, progress)
    corrupt, modes, sizes = [], Counter(), Counter()
    by_pixels: dict[str, list] = defaultdict(list)
    readable = []
    for example in dataset.examples:
        record = records[example.path]
        if "error" in record:
            corrupt.append({"path": example.path, "error": record["error"]})
            continue
        modes[record["mode"]] += 1
        sizes[record["size"]] += 1
        by_pixels[record["digest"]].append(example)
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
    usable = attach(dataset.with_examples([e for e in readable if e.path not in leaked]), entry)

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

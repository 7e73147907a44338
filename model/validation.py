"""Data validation: every image decodes, enough images per class, no picture in two splits.

Unreadable files are listed by path and excluded, so one bad file never crashes training; when
more than ``data.max_corrupt_share`` of the files are unreadable the dataset fails validation.
Images are read by the API's rules (core/preprocess.py): PNG and JPEG only, and the pixel budget
``api.max_pixels``, so a model is never trained on an image the API would refuse.
Near-duplicates (the same radiograph re-encoded, resized, re-windowed or bordered) are grouped and
each group is split as one (model/groups.py): the usable dataset carries those splits, which
training, evaluation and the acceptance tests use. The same picture under two classes is a label
conflict: above ``data.max_conflict_share`` of the images the dataset fails validation.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import click
import numpy as np
from PIL import Image

from core.preprocess import ImageError, image_bytes_to_array, open_image, to_array
from model.dataset import SPLITS, Dataset, Example
from model.decoded_cache import DecodedCache, attach, decoded_rows, to_stored
from model.fingerprint import as_array, fingerprint
from model.groups import (
    SPLIT_RECORD_FILE,
    SplitPlan,
    SplitRecordError,
    contact_sheet,
    plan_splits,
    read_split_record,
    record_splits,
    splits_sha256,
)
from storage import StorageError, open_storage

CONFLICTS_IN_MESSAGE = 10  # a failure names this many conflicting groups; the report lists them all


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
                record["fingerprint"] = fingerprint(image)
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


def _conflict_line(group: list[Example]) -> str:
    return " = ".join(f"{e.path} ({e.label})" for e in group)


def group_report(plan: SplitPlan, readable: int, params: dict) -> tuple[dict, list[str]]:
    """The ``groups`` section of the report, and the problems it finds (label conflicts)."""
    data = params["data"]
    in_conflict = sum(len(group) for group in plan.conflicts)
    share = in_conflict / readable if readable else 0.0
    problems = []
    if share > data["max_conflict_share"]:
        listed = "; ".join(_conflict_line(group) for group in plan.conflicts[:CONFLICTS_IN_MESSAGE])
        more = len(plan.conflicts) - CONFLICTS_IN_MESSAGE
        problems.append(
            f"{in_conflict} of {readable} images ({share:.1%}) show the same picture as an image of another "
            f"class, more than the allowed {data['max_conflict_share']:.1%}: {listed}"
            + (f"; and {more} more groups (see the report)" if more > 0 else ""))
    moved = plan.moved(data["split"])
    section = {
        "duplicate_distance": data["duplicate_distance"],
        "groups": len(plan.groups),
        "images_in_groups": sum(len(group) for group in plan.groups),
        "largest_group": len(plan.groups[0]) if plan.groups else 0,
        "moved_images": len(moved),
        "conflicts": len(plan.conflicts),
        "images_in_conflicts": in_conflict,
        "conflict_share": round(share, 6),
        "max_conflict_share": data["max_conflict_share"],
        "pairs_compared": plan.compared,
        "members": [[{"path": e.path, "label": e.label, "split": e.split} for e in group] for group in plan.groups],
        "conflict_groups": [[{"path": e.path, "label": e.label} for e in group] for group in plan.conflicts],
        "moved": moved,
    }
    return section, problems


def validate_dataset(dataset: Dataset, params: dict, progress: bool = True) -> tuple[dict, Dataset]:
    """Check ``dataset``; return the JSON report and the dataset of usable examples, in their
    grouped splits.

    Each image is decoded once per dataset version and image size (model/decoded_cache.py): the
    usable dataset carries the decoded images when the cache holds them, for model/tfdata.py.
    When the dataset passes, its split assignment is recorded with it (model/groups.py).
    """
    data_params = params["data"]
    records, entry = decoded_records(dataset, params, progress)
    corrupt, modes, sizes = [], Counter(), Counter()
    readable = []
    for example in dataset.examples:
        record = records[example.path]
        if "error" in record:
            corrupt.append({"path": example.path, "error": record["error"]})
            continue
        modes[record["mode"]] += 1
        sizes[record["size"]] += 1
        readable.append(example)

    problems = []
    storage = open_storage(dataset.uri)
    try:
        recorded, _ = read_split_record(storage)
    except SplitRecordError as exc:
        problems.append(str(exc))
        recorded = {}
    except StorageError as exc:
        problems.append(f"the recorded split assignment cannot be read: {exc}")
        recorded = {}
    plan = plan_splits(readable, as_array([records[e.path]["fingerprint"] for e in readable]),
                       data_params["duplicate_distance"], data_params["split"], recorded)
    groups, conflict_problems = group_report(plan, len(readable), params)
    usable = attach(dataset.with_examples([e for e in plan.examples if e.path not in plan.excluded]), entry)

    total = len(dataset.examples)
    corrupt_share = len(corrupt) / total if total else 0.0
    counts = usable.class_counts()
    minimum = data_params["min_images_per_class"]
    below = {name: n for name, n in counts.items() if n < minimum}
    if corrupt_share > data_params["max_corrupt_share"]:
        problems.append(
            f"{len(corrupt)} of {total} files are unreadable ({corrupt_share:.1%}), more than the "
            f"allowed {data_params['max_corrupt_share']:.1%}"
        )
    for name, n in below.items():
        problems.append(f"class {name!r} has {n} usable images, fewer than the minimum {minimum}")
    problems += conflict_problems
    record = {"file": storage.describe(SPLIT_RECORD_FILE), "written": False}
    if not problems:
        try:
            record_splits(storage, dataset.manifest_sha256(), {e.path: e.split for e in plan.examples})
            record["written"] = True
        except StorageError as exc:  # a read-only dataset: the splits hold, growth is not pinned
            record["error"] = str(exc)
    report = {
        "dataset": {"uri": dataset.uri, "manifest_sha256": usable.manifest_sha256(), "files": total,
                    "splits_sha256": splits_sha256(usable.examples)},
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
        "groups": groups,
        "split_record": record,
        "duplicates_across_splits": plan.straddling,
        "excluded": sorted([c["path"] for c in corrupt] + sorted(plan.excluded)),
        "unknown_folders": dataset.unknown_folders,
    }
    return report, usable


def groups_contact_sheet(usable: Dataset, report: dict, params: dict) -> bytes:
    """The contact sheet (PNG) of the largest near-duplicate groups of a validation report."""
    by_path = {e.path: e for e in usable.examples}
    groups = [[by_path[m["path"]] for m in group if m["path"] in by_path] for group in report["groups"]["members"]]
    size = params["data"]["image_size"]

    def thumbnail(example: Example, side: int) -> np.ndarray:
        rows = decoded_rows(usable, [example], size)
        if rows is not None:
            pixels = np.asarray(usable.decoded.images[rows[0]])
        else:
            pixels = to_stored(image_bytes_to_array(usable.read_bytes(example.path), size,
                                                    max_pixels=params["api"]["max_pixels"]))
        return np.asarray(Image.fromarray(pixels, "L").resize((side, side)))

    return contact_sheet([group for group in groups if len(group) > 1], thumbnail)

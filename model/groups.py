"""Near-duplicate groups, the split of each group, label conflicts, and the recorded split assignment.

Images whose fingerprints (model/fingerprint.py) lie within ``data.duplicate_distance`` bits are
linked; linked images form a group (union-find), and a group is split as one, so no radiograph
is in training and in the test split at once. Pairs are found by multi-index hashing: the bits,
in a fixed shuffled order, are cut into ``distance + 1`` chunks, and two fingerprints within
``distance`` bits agree on at least one whole chunk (pigeonhole), so only images that share a
chunk are compared. Unrelated fingerprints rarely share a chunk: the work grows with the number of
images, not with its square.

A group's split is decided once. The assignment of every image is recorded with the dataset, in
``splits.json`` at its root, when validation passes; the next version reads it back and the
recorded split wins: an image keeps its split whatever arrives later, and a new image joins the
split of the recorded members of its group. A group with no recorded member takes the split of
the path hash (model/dataset.py) of its smallest path; an image alone in its group keeps the
split of its own path. A group whose recorded members are in several splits (a new image linking
two old groups) straddles: it is reported, its members stay in their splits, and those outside
the group's earliest split (train, then validation, then test) are left out, so nothing leaks.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from model.dataset import SPLITS, Example, split_of
from model.fingerprint import distances
from storage import AlreadyExists, GenerationMismatch, ObjectNotFound, StorageError

SPLIT_RECORD_FILE = "splits.json"
SPLIT_RECORD_FORMAT = 1
RECORD_ATTEMPTS = 5
BIT_ORDER_SEED = 18  # the fixed shuffle of the bits before they are cut into chunks


class SplitRecordError(ValueError):
    """The recorded split assignment cannot be read; the message says which file and why."""


class UnionFind:
    """Disjoint sets of ``0 .. n-1``."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def near_pairs(prints: np.ndarray, max_distance: int) -> tuple[np.ndarray, int]:
    """``(pairs, compared)``: the index pairs ``(i, j)``, ``i < j``, of the uint8 fingerprints
    ``prints`` (``(N, B)``) within ``max_distance`` bits, and how many pairs were compared."""
    n = len(prints)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), 0
    bits = np.unpackbits(prints, axis=1)
    bits = bits[:, np.random.default_rng(BIT_ORDER_SEED).permutation(bits.shape[1])]
    chunks = min(max_distance + 1, bits.shape[1])
    bounds = np.linspace(0, bits.shape[1], chunks + 1).astype(int)
    candidates = []
    for start, stop in itertools.pairwise(bounds):
        packed = np.ascontiguousarray(np.packbits(bits[:, start:stop], axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, bucket = np.unique(keys, return_inverse=True)
        order = np.argsort(bucket, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(bucket[order]) != 0])
        lengths = np.diff(np.r_[starts, n])
        for start_at, length in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
            members = order[start_at:start_at + length]
            first, second = np.triu_indices(length, 1)
            candidates.append(members[first] * n + members[second])
    if not candidates:
        return np.zeros((0, 2), dtype=np.int64), 0
    flat = np.unique(np.concatenate(candidates))
    left, right = flat // n, flat % n
    close = distances(prints[left], prints[right]) <= max_distance
    return np.stack([left[close], right[close]], axis=1), len(flat)


def group_indices(prints: np.ndarray, max_distance: int) -> tuple[list[list[int]], int]:
    """The groups of two or more linked fingerprints (index lists, ascending), largest first;
    and how many pairs were compared."""
    pairs, compared = near_pairs(prints, max_distance)
    sets = UnionFind(len(prints))
    for a, b in pairs.tolist():
        sets.union(a, b)
    members: dict[int, list[int]] = {}
    for index in np.unique(pairs).tolist():
        members.setdefault(sets.find(index), []).append(index)
    groups = sorted((sorted(group) for group in members.values()), key=lambda group: (-len(group), group[0]))
    return groups, compared


@dataclass
class SplitPlan:
    """The grouped split of a dataset's readable images and what the grouping found."""

    examples: list[Example]  # every readable example, with its grouped split
    groups: list[list[Example]]  # groups of two or more, largest first
    straddling: list[dict] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)  # members of straddling groups outside its split
    conflicts: list[list[Example]] = field(default_factory=list)  # groups with more than one class
    compared: int = 0

    def moved(self, shares: dict[str, float]) -> list[dict]:
        """The images whose split is not the one of their own path hash."""
        return [{"path": e.path, "path_split": split_of(e.path, shares), "split": e.split}
                for e in self.examples if e.split != split_of(e.path, shares)]


def plan_splits(examples: list[Example], prints: np.ndarray, max_distance: int, shares: dict[str, float],
                recorded: dict[str, str]) -> SplitPlan:
    """Group ``examples`` by their fingerprints ``prints`` and give every group one split, the
    ``recorded`` assignment winning (see the module docstring)."""
    groups, compared = group_indices(prints, max_distance)
    split = [recorded.get(e.path) or split_of(e.path, shares) for e in examples]
    straddling, excluded = [], set()
    for group in groups:
        paths = [examples[i].path for i in group]
        old = {recorded[p] for p in paths if p in recorded}
        home = min(old, key=SPLITS.index) if old else split_of(min(paths), shares)
        for i in group:
            split[i] = recorded.get(examples[i].path, home)
        if len(old) > 1:
            outside = sorted(examples[i].path for i in group if split[i] != home)
            excluded.update(outside)
            straddling.append({"paths": sorted(paths), "splits": sorted(old, key=SPLITS.index),
                               "kept_in": home, "left_out": outside})
    planned = [replace(e, split=s) if e.split != s else e for e, s in zip(examples, split)]
    grouped = [[planned[i] for i in group] for group in groups]
    conflicts = [group for group in grouped if len({e.label for e in group}) > 1]
    return SplitPlan(planned, grouped, straddling, excluded, conflicts, compared)


def splits_sha256(examples: list[Example]) -> str:
    """A digest of the split assignment of ``examples`` (sorted ``path<TAB>split`` lines)."""
    lines = "".join(f"{e.path}\t{e.split}\n" for e in sorted(examples, key=lambda e: e.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_split_record(storage) -> tuple[dict[str, str], str | None]:
    """The recorded assignment ``{path: split}`` and the record's generation (None: no record)."""
    try:
        data, generation = storage.read_with_generation(SPLIT_RECORD_FILE)
    except ObjectNotFound:
        return {}, None
    try:
        document = json.loads(data)
        splits = document["splits"]
        if document.get("format") != SPLIT_RECORD_FORMAT or not isinstance(splits, dict) \
                or any(value not in SPLITS for value in splits.values()):
            raise ValueError("not a split record of this format")
    except (ValueError, KeyError, TypeError) as exc:
        raise SplitRecordError(
            f"{storage.describe(SPLIT_RECORD_FILE)} cannot be read ({exc}); restore it, or delete it to "
            "derive every split from the paths again (old images may then change split)") from exc
    return splits, generation


def record_splits(storage, manifest_sha256: str, splits: dict[str, str]) -> dict[str, str]:
    """Add ``splits`` to the dataset's recorded assignment (compare-and-swap, retried when another
    run wrote meanwhile; what it recorded first wins). Returns the record written."""
    for _ in range(RECORD_ATTEMPTS):
        current, generation = read_split_record(storage)
        merged = {**splits, **current}
        if merged == current:
            return current
        document = {"format": SPLIT_RECORD_FORMAT, "manifest_sha256": manifest_sha256,
                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "splits": dict(sorted(merged.items()))}
        data = json.dumps(document, indent=0).encode()
        try:
            if generation is None:
                storage.create(SPLIT_RECORD_FILE, data)
            else:
                storage.replace(SPLIT_RECORD_FILE, data, generation)
            return merged
        except (AlreadyExists, GenerationMismatch):
            continue
    raise StorageError(f"{storage.describe(SPLIT_RECORD_FILE)} kept changing: the split assignment was not recorded")


def contact_sheet(groups: list[list[Example]], thumbnail: Callable[[Example, int], np.ndarray],
                  max_groups: int = 6, per_group: int = 6, side: int = 72) -> bytes:
    """A PNG with one row per group (the largest first): up to ``per_group`` thumbnails, each
    captioned with its class and split; ``thumbnail(example, side)`` gives its uint8 pixels."""
    caption, gap = 14, 4
    shown = groups[:max_groups]
    row = caption + side + caption + gap
    sheet = Image.new("L", (gap + per_group * (side + gap), gap + max(1, len(shown)) * row), 255)
    draw = ImageDraw.Draw(sheet)
    if not shown:
        draw.text((gap, gap), "no near-duplicate groups", fill=0)
    for number, group in enumerate(shown):
        top = gap + number * row
        more = f" (+{len(group) - per_group} more)" if len(group) > per_group else ""
        draw.text((gap, top), f"group {number + 1}: {len(group)} images{more}", fill=0)
        for column, example in enumerate(group[:per_group]):
            left = gap + column * (side + gap)
            sheet.paste(Image.fromarray(thumbnail(example, side), "L"), (left, top + caption))
            draw.text((left, top + caption + side + 1), f"{example.label[:9]} {example.split[:5]}", fill=0)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()

"""The decoded cache: each image decoded once per dataset version and image size, kept on disk.

Data validation decodes every image (to check it and to find copies across splits); training,
evaluation and the acceptance tests need the same images decoded again. Validation therefore
writes what it decoded to ``<cache_dir>/decoded/<key>/``:

- ``index.json``: the key, the format, the image size, and per file its sha256 and what validation
  found (the pixels' digest, mode and size, its fingerprint (model/fingerprint.py) and the file's
  row in ``images.npy``, or why it is unreadable);
- ``images.npy``: uint8 ``(N, S, S)``, the network's input of each readable file before its
  scaling to [0, 1] (``model.preprocess.to_array`` times 255, exact), one row per readable file.

The key is a sha256 of the dataset version (the manifest: every file's path, content sha256 and
label), the image size, the pixel budget (``api.max_pixels``), this format's version, the
source of core/preprocess.py (the decoder) and the fingerprint's version. Any change to one of them is another key, so a stale
entry is never read. A dataset scanned without hashes has no version: it is neither read from nor
written to the cache. A file whose bytes no longer match its scanned sha256 while it is decoded
leaves the entry unwritten. An entry is written to a temporary folder and renamed into place, so a
reader never sees half of one; the ``speed.decoded_cache_keep`` most recently used entries stay.

Settings (params.yaml ``speed:``): ``decoded_cache`` (on/off), ``decoded_cache_min_images`` (a
smaller dataset decodes in about a second: it is not worth a cache entry), ``decoded_cache_keep``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

import core.preprocess
from model.dataset import Dataset, Example
from model.fingerprint import fingerprint_version

FORMAT_VERSION = 2  # 2: records carry a fingerprint
INDEX_FILE = "index.json"
IMAGES_FILE = "images.npy"
ABANDONED_WRITE_S = 3600  # a write folder this old belongs to a process that died
PREPROCESS_SOURCE = Path(core.preprocess.__file__).resolve()


def decoder_version() -> str:
    """A hash of the decoding code: a change to core/preprocess.py invalidates every entry."""
    return hashlib.sha256(PREPROCESS_SOURCE.read_bytes()).hexdigest()[:16]


def to_stored(array: np.ndarray) -> np.ndarray:
    """The network's float32 input of one image, ``(S, S, 1)`` in [0, 1], as the uint8 it came from."""
    return np.rint(array[..., 0] * 255.0).astype(np.uint8)


@dataclass
class Entry:
    """One cache entry: validation's record of each file, and the decoded images of the readable ones."""

    image_size: int
    records: dict[str, dict]  # path -> {"sha256", and "digest", "mode", "size", "fingerprint", "row" or "error"}
    images: np.ndarray  # uint8 (N, S, S), memory-mapped when read from disk

    def rows(self, examples: list[Example]) -> np.ndarray | None:
        """The rows of ``examples`` in ``images``; None when one is missing or has other content."""
        rows = []
        for example in examples:
            record = self.records.get(example.path)
            if record is None or "row" not in record or record["sha256"] != example.sha256:
                return None
            rows.append(record["row"])
        return np.asarray(rows, dtype=np.int64)


@dataclass
class DecodedDataset(Dataset):
    """A :class:`Dataset` whose images were decoded at ``decoded.image_size`` (see model/tfdata.py)."""

    decoded: Entry | None = field(default=None, repr=False)


def attach(dataset: Dataset, entry: Entry | None) -> Dataset:
    """``dataset`` carrying ``entry``'s decoded images, or ``dataset`` itself without an entry."""
    if entry is None:
        return dataset
    return DecodedDataset(**{f.name: getattr(dataset, f.name) for f in fields(Dataset)}, decoded=entry)


def decoded_rows(dataset: Dataset, examples: list[Example], image_size: int) -> np.ndarray | None:
    """The rows of ``examples`` among the decoded images ``dataset`` carries; None when it carries
    none at ``image_size`` or lacks one of them."""
    if not isinstance(dataset, DecodedDataset) or dataset.decoded is None:
        return None
    if dataset.decoded.image_size != image_size:
        return None
    return dataset.decoded.rows(examples)


class DecodedCache:
    """The entries under ``<cache_dir>/decoded``; :meth:`key` names the one a dataset uses."""

    def __init__(self, root: str | os.PathLike, keep: int = 4, min_images: int = 0):
        self.root = Path(root)
        self.keep = max(1, keep)
        self.min_images = min_images

    @classmethod
    def from_params(cls, params: dict) -> DecodedCache | None:
        """The cache that params.yaml asks for; None when ``speed.decoded_cache`` is off (or absent,
        as in params recorded before it existed)."""
        speed = params.get("speed") or {}
        if not speed.get("decoded_cache"):
            return None
        return cls(Path(params["cache_dir"]) / "decoded", keep=speed["decoded_cache_keep"],
                   min_images=speed["decoded_cache_min_images"])

    def key(self, dataset: Dataset, image_size: int, max_pixels: int) -> str | None:
        """The entry's name for ``dataset`` at ``image_size``; None when the dataset has no version
        (scanned without hashes) or fewer than ``min_images`` files."""
        if len(dataset.examples) < max(1, self.min_images) or any(not e.sha256 for e in dataset.examples):
            return None
        inputs = {"format": FORMAT_VERSION, "decoder": decoder_version(), "manifest": dataset.manifest_sha256(),
                  "image_size": int(image_size), "max_pixels": int(max_pixels), "fingerprint": fingerprint_version()}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]

    def read(self, key: str) -> Entry | None:
        """The entry ``key``, memory-mapped; None when there is none, it was removed meanwhile, or it is damaged."""
        folder = self.root / key
        if not folder.is_dir():
            return None
        try:
            index = json.loads((folder / INDEX_FILE).read_text())
            images = np.load(folder / IMAGES_FILE, mmap_mode="r")
            valid = (index.get("key") == key and index.get("format") == FORMAT_VERSION
                     and images.dtype == np.uint8 and images.shape[1:] == (index["image_size"],) * 2)
        except (OSError, ValueError, KeyError):
            valid = False
        if not valid:  # damaged (entries are renamed into place whole): drop it, so a good one can replace it
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            os.utime(folder)  # most recently used: kept longest
        except OSError:
            pass
        return Entry(index["image_size"], index["records"], images)

    def write(self, key: str, image_size: int, records: dict[str, dict], images: np.ndarray) -> Entry:
        """Store an entry (atomically: a reader sees all of it or none), then drop the least recent.

        Returns the entry in memory; a cache that cannot be written (a full disk, say) only costs
        the next run its decoding.
        """
        entry = Entry(image_size, records, images)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))
        except OSError:
            return entry
        try:
            np.save(work / IMAGES_FILE, images)
            index = {"key": key, "format": FORMAT_VERSION, "image_size": int(image_size),
                     "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "records": records}
            (work / INDEX_FILE).write_text(json.dumps(index))
            work.rename(self.root / key)
        except OSError:  # not writable, or another process renamed the same entry into place first
            return entry
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.prune()
        return entry

    def prune(self) -> None:
        """Keep the ``keep`` most recently used entries, and others' writes of the last hour."""
        entries, abandoned = [], []
        for path in self.root.iterdir():
            try:
                modified = path.stat().st_mtime
            except OSError:  # removed meanwhile
                continue
            if not path.name.startswith("."):
                entries.append((modified, path))
            elif time.time() - modified > ABANDONED_WRITE_S:
                abandoned.append(path)
        entries.sort(reverse=True)
        for path in [p for _, p in entries[self.keep:]] + abandoned:
            shutil.rmtree(path, ignore_errors=True)

"""The dataset: which files exist, their labels, their split, and the dataset's version.

Layout (Kaggle COVID-19 Radiography Database, version 4): ``<root>/<CLASS>/images/<CLASS>-<n>.png``;
older versions put the images directly in ``<root>/<CLASS>/``. Both are read; ``masks/`` folders
are ignored. The split comes from a stable hash of each file's relative path, so an image never
changes split when the dataset grows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from registry.storage import open_storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """The dataset cannot be read as the expected layout."""


@dataclass(frozen=True)
class Example:
    """One image of the dataset. ``path`` is relative to the dataset root."""

    path: str
    label: str
    split: str
    sha256: str = ""


@dataclass
class Dataset:
    """The examples found under a dataset URI."""

    uri: str
    classes: list[str]
    examples: list[Example]
    unknown_folders: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def class_counts(self, examples: list[Example] | None = None) -> dict[str, int]:
        counts = Counter(e.label for e in (self.examples if examples is None else examples))
        return {name: counts.get(name, 0) for name in self.classes}

    def manifest(self) -> str:
        """Sorted ``path<TAB>sha256<TAB>label`` lines: what a dataset version is made of."""
        return "".join(f"{e.path}\t{e.sha256}\t{e.label}\n" for e in sorted(self.examples, key=lambda e: e.path))

    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest().encode()).hexdigest()

    @cached_property
    def storage(self):
        return open_storage(self.uri)

    def read_bytes(self, relative_path: str) -> bytes:
        """The bytes of one file, by its path relative to the dataset root."""
        return self.storage.read_bytes(relative_path)

    def with_examples(self, examples: list[Example]) -> "Dataset":
        return Dataset(self.uri, self.classes, examples, self.unknown_folders)


def split_of(relative_path: str, shares: dict[str, float]) -> str:
    """The split of a file, from the first 8 bytes of the sha256 of its relative path."""
    point = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2**64
    if point < shares["train"]:
        return "train"
    if point < shares["train"] + shares["validation"]:
        return "validation"
    return "test"


def label_of(relative_path: str, classes: list[str]) -> str | None:
    """The class of ``<CLASS>/images/<file>`` or ``<CLASS>/<file>``; None for anything else."""
    parts = relative_path.split("/")
    if parts[0] not in classes or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    if len(parts) == 2 or (len(parts) == 3 and parts[1] == "images"):
        return parts[0]
    return None


def scan_dataset(uri: str, classes: list[str], shares: dict[str, float], with_hashes: bool = True) -> Dataset:
    """List the dataset's images; with ``with_hashes`` each file is read once to hash it."""
    storage = open_storage(uri)
    files = storage.list_files()
    if not files:
        raise DatasetError(
            f"no files under {uri}: run `make data` for the sample dataset, or set DATASET_URI "
            "to the Kaggle COVID-19 Radiography Database"
        )
    examples, unknown = [], set()
    for relative in files:
        label = label_of(relative, classes)
        if label is None:
            top = relative.split("/")[0]
            if top not in classes and "/" in relative:
                unknown.add(top)
            continue
        digest = hashlib.sha256(storage.read_bytes(relative)).hexdigest() if with_hashes else ""
        examples.append(Example(relative, label, split_of(relative, shares), digest))
    if not examples:
        raise DatasetError(
            f"no images of the classes {classes} under {uri}; expected <CLASS>/images/*.png"
        )
    return Dataset(uri, list(classes), examples, sorted(unknown))

"""The dataset: which files exist, their labels, their split, and the dataset's version.

Layout (Kaggle COVID-19 Radiography Database, version 4): ``<root>/<CLASS>/images/<CLASS>-<n>.png``;
older versions put the images directly in ``<root>/<CLASS>/``. Both are read, PNG, JPEG and DICOM
(``.dcm``) alike; ``masks/`` folders are ignored. The split comes from a stable hash of each file's relative path, so an image never
changes split when the dataset grows. A ``gs://`` dataset is read through a local mirror
(storage/cache.py), so the input pipeline reads local files and a second run downloads nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from storage import ObjectNotFound, is_gcs, open_storage
from storage.cache import mirror

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
MANIFEST_FILE = "manifest.json"  # written last by `make data-push`: on gs://, the images that are the dataset
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
    storage: object = None  # where the files are read from: the dataset itself, or its local mirror

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

    def read_bytes(self, relative_path: str) -> bytes:
        """The bytes of one file, by its path relative to the dataset root."""
        return self.storage.read(relative_path)

    def with_examples(self, examples: list[Example]) -> Dataset:
        """The same dataset (of the same class, with what it carries) holding only ``examples``."""
        return dataclasses.replace(self, examples=examples)


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


def read_manifest(storage, uri: str) -> dict[str, str] | None:
    """The images ``manifest.json`` lists (path -> sha256), or None when the dataset has none."""
    import json

    try:
        document = json.loads(storage.read(MANIFEST_FILE))
        return {path: digest for path, digest, _label in document["images"]}
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{uri}/{MANIFEST_FILE} cannot be read as a manifest ({exc}); push the dataset again "
                           "with `make data-push`") from exc


def only_listed(objects: list, listed: dict[str, str], uri: str, classes: list[str]) -> list:
    """``objects`` without the images the manifest does not list (uploaded by a push still running,
    or removed by one); DatasetError when a listed one is missing."""
    present = {info.path for info in objects}
    missing = sorted(set(listed) - present)
    if missing:
        raise DatasetError(f"{uri}/{MANIFEST_FILE} lists {len(missing)} image(s) that are not there (such as "
                           f"{missing[0]}): a push is in progress or was interrupted; run `make data-push` again")
    return [info for info in objects if info.path in listed or not label_of(info.path, classes)]


def scan_dataset(uri: str, classes: list[str], shares: dict[str, float], with_hashes: bool = True,
                 cache_dir: str = ".cache", progress: bool = True) -> Dataset:
    """List the dataset's images; with ``with_hashes`` each file is read once to hash it.

    A ``gs://`` dataset is first mirrored under ``cache_dir`` (only changed objects download). When
    it has a ``manifest.json`` (``make data-push`` writes one, last), only the images it lists are
    the dataset, and each must still have the sha256 it lists: a push still running is never half
    read, and the dataset version is the manifest's.
    """
    storage = open_storage(uri)
    objects = [info for info in storage.walk() if label_of(info.path, classes) or "/" in info.path]
    listed = read_manifest(storage, uri) if is_gcs(uri) else None
    if listed is not None:
        objects = only_listed(objects, listed, uri, classes)
    if is_gcs(uri):
        storage, _ = mirror(storage, [info for info in objects if label_of(info.path, classes)], cache_dir,
                            progress=progress)
    files = [info.path for info in objects]
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
        digest = hashlib.sha256(storage.read(relative)).hexdigest() if with_hashes else ""
        if listed is not None and digest and digest != listed[relative]:
            raise DatasetError(f"{uri}/{relative} is not the file {MANIFEST_FILE} lists (its sha256 differs): a "
                               "push is in progress or was interrupted; run `make data-push` again")
        examples.append(Example(relative, label, split_of(relative, shares), digest))
    if not examples:
        raise DatasetError(
            f"no images of the classes {classes} under {uri}; expected <CLASS>/images/*.png"
        )
    return Dataset(uri, list(classes), examples, sorted(unknown), storage)

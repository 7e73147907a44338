"""Write the synthetic sample dataset in the Kaggle layout: ``python -m scripts.sample_data``."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from model.groups import SPLIT_RECORD_FILE
from model.synthetic import image_seed, render
from storage import is_gcs

MARKER_FILE = ".sample-dataset.json"


def dataset_settings(params: dict) -> dict:
    """What determines the sample dataset's content; the marker file records it."""
    sample = params["sample_data"]
    return {
        "classes": params["classes"],
        "images_per_class": sample["images_per_class"],
        "image_size": sample["image_size"],
        "seed": sample["seed"],
    }


def sample_file_names(settings: dict) -> set[str]:
    """Relative paths of the images a sample dataset with ``settings`` consists of, extras included."""
    return {
        f"{label}/images/{label}-{index}.png"
        for label in settings["classes"]
        for index in range(1, settings["images_per_class"] + 1)
    } | {path for extra in settings.get("extras", []) for path in extra["paths"]}


def foreign_files(root: Path, settings: dict) -> list[str]:
    """Files under ``root`` that a sample dataset with ``settings`` did not write, nor validation
    (its recorded splits and the storage's hidden lock files)."""
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}
    return sorted(present - sample_file_names(settings) - {MARKER_FILE, SPLIT_RECORD_FILE})


def _write_image(root: Path, label: str, index: int, seed: int, size: int) -> str:
    relative = f"{label}/images/{label}-{index}.png"
    (root / label / "images").mkdir(parents=True, exist_ok=True)
    render(label, image_seed(seed, label, index), size).save(root / relative, optimize=False)
    return relative


def add_extra_images(root: Path, marker: dict, count: int, seed: int) -> int:
    """Add ``count`` new images per class drawn with ``seed`` (new data arriving), never touching an
    existing file: each class continues after its highest index. Returns how many were written;
    0 when images with this seed and count were added before (the same command twice is a no-op)."""
    if any(extra["seed"] == seed and extra["count"] == count for extra in marker.get("extras", [])):
        return 0
    paths = []
    with click.progressbar(marker["classes"], label=f"adding {count} images per class (seed {seed})") as bar:
        for label in bar:
            existing = [int(p.stem.rsplit("-", 1)[1]) for p in (root / label / "images").glob(f"{label}-*.png")
                        if p.stem.rsplit("-", 1)[1].isdigit()]
            first = max(existing, default=0) + 1
            for index in range(first, first + count):
                paths.append(_write_image(root, label, index, seed, marker["image_size"]))
    marker = {**marker, "extras": marker.get("extras", []) + [{"seed": seed, "count": count, "paths": paths}]}
    tmp = root / f"{MARKER_FILE}.tmp"
    tmp.write_text(json.dumps(marker, indent=2))
    tmp.replace(root / MARKER_FILE)
    return len(paths)


def write_sample_dataset(root: Path, settings: dict) -> int:
    """Generate the dataset into a temporary folder, then move it to ``root`` in one step."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    jobs = [(label, index) for label in settings["classes"] for index in range(1, settings["images_per_class"] + 1)]
    try:
        with click.progressbar(jobs, label="writing sample images", show_pos=True) as bar:
            for label, index in bar:
                _write_image(staging, label, index, settings["seed"], settings["image_size"])
        (staging / MARKER_FILE).write_text(json.dumps(settings, indent=2))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(jobs)


def local_folder(params: dict) -> Path:
    """Where the sample dataset is written: DATASET_URI itself, or for a ``gs://`` dataset a local
    folder under cache_dir that is then pushed (only new images upload)."""
    uri = params["dataset_uri"]
    if is_gcs(uri):
        return Path(params["cache_dir"]) / "sample" / uri.split("://", 1)[1].strip("/")
    return Path(uri)


def ensure_sample_dataset(root: Path, settings: dict, if_missing: bool) -> None:
    """Write the sample dataset at ``root`` unless it is there already; never overwrite other data."""
    if settings["images_per_class"] < 1 or settings["image_size"] < 16:
        raise click.ClickException("images_per_class must be >= 1 and image_size >= 16")
    if root.exists() and not root.is_dir():
        raise click.ClickException(f"{root} is a file, not a folder: choose another --out")
    has_files = root.is_dir() and any(root.iterdir())
    marker = root / MARKER_FILE
    if has_files and if_missing:
        click.echo(f"dataset already present at {root}: kept as it is")
        return
    if has_files and not marker.exists():
        raise click.ClickException(
            f"{root} holds files that are not a sample dataset; refusing to overwrite them "
            "(choose another --out)"
        )
    if marker.exists():
        previous = json.loads(marker.read_text())
        if {key: value for key, value in previous.items() if key != "extras"} == settings:
            click.echo(f"sample dataset at {root} is up to date")
            return
        extra = foreign_files(root, previous)
        if extra:
            raise click.ClickException(
                f"{root} holds {len(extra)} files the sample generator did not write (e.g. {extra[0]}); "
                "refusing to replace it (choose another --out)"
            )
    count = write_sample_dataset(root, settings)
    click.echo(f"wrote {count} synthetic images to {root}")

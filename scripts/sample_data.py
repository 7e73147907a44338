"""Write the synthetic sample dataset in the Kaggle layout: ``python -m scripts.sample_data``."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from model.config import ConfigError, describe, load_params
from model.synthetic import image_seed, render

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
    """Relative paths of the images a sample dataset with ``settings`` consists of."""
    return {
        f"{label}/images/{label}-{index}.png"
        for label in settings["classes"]
        for index in range(1, settings["images_per_class"] + 1)
    }


def foreign_files(root: Path, settings: dict) -> list[str]:
    """Files under ``root`` that a sample dataset with ``settings`` did not write."""
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return sorted(present - sample_file_names(settings) - {MARKER_FILE})


def write_sample_dataset(root: Path, settings: dict) -> int:
    """Generate the dataset into a temporary folder, then move it to ``root`` in one step."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    jobs = [(label, index) for label in settings["classes"] for index in range(1, settings["images_per_class"] + 1)]
    try:
        with click.progressbar(jobs, label="writing sample images", show_pos=True) as bar:
            for label, index in bar:
                folder = staging / label / "images"
                folder.mkdir(parents=True, exist_ok=True)
                image = render(label, image_seed(settings["seed"], label, index), settings["image_size"])
                image.save(folder / f"{label}-{index}.png", optimize=False)
        (staging / MARKER_FILE).write_text(json.dumps(settings, indent=2))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(jobs)


@click.command()
@click.option("--out", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@click.option("--images-per-class", type=int, help="Images per class (sample_data.images_per_class).")
@click.option("--image-size", type=int, help="Side of the square images (sample_data.image_size).")
@click.option("--seed", type=int, help="Seed; the same seed always writes the same images.")
@click.option("--if-missing", is_flag=True, help="Do nothing when the dataset folder already has files.")
def main(dataset_uri, images_per_class, image_size, seed, if_missing):
    """Write synthetic radiograph-like PNGs in the Kaggle layout (<CLASS>/images/<CLASS>-<n>.png).

    The images are synthetic, not medical data: they let the pipeline run without the real
    dataset. A folder that holds anything else (the real dataset, say) is never overwritten.

    Example: python -m scripts.sample_data --images-per-class 50 --out /tmp/xray
    """
    try:
        params = load_params({
            "dataset_uri": dataset_uri,
            "sample_data.images_per_class": images_per_class,
            "sample_data.image_size": image_size,
            "sample_data.seed": seed,
        })
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(describe(params, "data", ("dataset_uri", "classes", "sample_data")))
    uri, settings = params["dataset_uri"], dataset_settings(params)
    if "://" in uri:
        raise click.ClickException(f"{uri}: the sample dataset is written to a local folder only")
    if settings["images_per_class"] < 1 or settings["image_size"] < 16:
        raise click.ClickException("images_per_class must be >= 1 and image_size >= 16")
    root = Path(uri)
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
        if previous == settings:
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


if __name__ == "__main__":
    main(prog_name="python -m scripts.sample_data")

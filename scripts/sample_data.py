"""Write the synthetic sample dataset in the Kaggle layout: ``python -m scripts.sample_data``."""

from __future__ import annotations

import json

import click

from core.cli import params_or_exit
from core.config import describe
from model.data_push import push_dataset
from model.dataset import DatasetError
from model.sample_data import (
    MARKER_FILE,
    add_extra_images,
    dataset_settings,
    ensure_sample_dataset,
    local_folder,
)
from storage import StorageError, is_gcs, open_storage


@click.command()
@click.option("--out", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@click.option("--images-per-class", type=int, help="Images per class (sample_data.images_per_class).")
@click.option("--image-size", type=int, help="Side of the square images (sample_data.image_size).")
@click.option("--seed", type=int, help="Seed; the same seed always writes the same images. With --extra: "
              "the seed of the new images.")
@click.option("--extra", type=click.IntRange(min=1), help="Add this many new images per class to the "
              "existing sample dataset (new data arriving); existing files are never touched.")
@click.option("--if-missing", is_flag=True, help="Do nothing when the dataset already has files.")
def main(dataset_uri, images_per_class, image_size, seed, extra, if_missing):
    """Write synthetic radiograph-like PNGs in the Kaggle layout (<CLASS>/images/<CLASS>-<n>.png).

    The images are synthetic, not medical data: they let the pipeline run without the real
    dataset. A folder that holds anything else (the real dataset, say) is never overwritten. For a
    gs:// DATASET_URI the images are written under cache_dir and pushed (`make data-push`).

    \b
    Examples: python -m scripts.sample_data --images-per-class 50 --out /tmp/xray
              python -m scripts.sample_data --extra 40 --seed 777   (make data EXTRA=40 SEED=777)
    """
    if extra and seed is None:
        raise click.ClickException("--extra needs --seed (make data EXTRA=N SEED=S): the seed of the new images")
    params = params_or_exit({
        "dataset_uri": dataset_uri,
        "sample_data.images_per_class": images_per_class,
        "sample_data.image_size": image_size,
        "sample_data.seed": None if extra else seed,
    })
    click.echo(describe(params, "data", ("dataset_uri", "classes", "sample_data")))
    uri, settings, root = params["dataset_uri"], dataset_settings(params), local_folder(params)
    try:
        if is_gcs(uri) and if_missing and any(open_storage(uri).list("")):
            click.echo(f"dataset already present at {uri}: kept as it is")
            return
        if extra:
            if not (root / MARKER_FILE).exists():
                raise click.ClickException(f"no sample dataset at {root} to add images to: run `make data` first")
            added = add_extra_images(root, json.loads((root / MARKER_FILE).read_text()), extra, seed)
            click.echo(f"added {added} new images to {root}" if added else
                       f"{extra} images per class with seed {seed} were added before: nothing to do")
        else:
            ensure_sample_dataset(root, settings, if_missing)
        if is_gcs(uri):
            result = push_dataset(str(root), uri, params)
            click.echo(f"pushed to {uri}: {result['uploaded']} images uploaded, {result['unchanged']} unchanged")
    except (DatasetError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main(prog_name="python -m scripts.sample_data")

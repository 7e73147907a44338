"""Upload a local dataset to DATASET_URI: ``python -m scripts.data_push --src DIR``."""

from __future__ import annotations

from pathlib import Path

import click

from core.config import ConfigError, describe, load_params
from model.data_push import push_dataset
from model.dataset import DatasetError
from storage import StorageError


@click.command()
@click.option("--src", "source", type=click.Path(exists=True, file_okay=False),
              help="Local dataset folder (default: data_push.source in params.yaml).")
@click.option("--to", "target_uri", help="Where to (default: DATASET_URI / params.yaml).")
def main(source, target_uri):
    """Upload a local dataset to DATASET_URI, skipping unchanged images; manifest.json goes last.

    Example: DATASET_URI=gs://my-bucket/datasets/covid make data-push SRC=data/COVID-19_Radiography_Dataset
    """
    try:
        params = load_params({"dataset_uri": target_uri, "data_push.source": source})
        click.echo(describe(params, "data-push", ("dataset_uri", "data_push")))
        source, target_uri = params["data_push"]["source"], params["dataset_uri"]
        if Path(source).resolve() == Path(target_uri).resolve():
            raise click.ClickException(f"{source} is DATASET_URI itself: set DATASET_URI to where the data goes")
        result = push_dataset(source, target_uri, params)
    except (ConfigError, DatasetError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    written = "written" if result["manifest_written"] else "unchanged"
    click.echo(f"pushed {source} to {target_uri}: {result['uploaded']} images uploaded, {result['unchanged']} "
               f"unchanged, {result['deleted']} deleted; manifest.json {written} "
               f"(dataset version {result['manifest_sha256'][:12]})")


if __name__ == "__main__":
    main(prog_name="python -m scripts.data_push")

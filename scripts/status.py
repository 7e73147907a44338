"""Whether the pipelines have seen the current data: ``python -m scripts.status`` (``make status``).

Prints the production version, the dataset's current version and the pipeline run that read it
(registry/dataset_runs.py). Exits 1 when no run has read the current dataset version: right after
`make data-push` the run it started is still cloning and building (validate-data comes after, up
to two hours in); later, the Pub/Sub trigger was lost, and a run must be started by hand.
"""

from __future__ import annotations

import click

from core.cli import params_or_exit, registry_option
from registry.dataset_runs import dataset_status
from registry.store import Registry, RegistryError
from storage import StorageError, open_storage


@click.command()
@click.option("--dataset", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@registry_option
def main(dataset_uri, registry_uri):
    """Show production, the dataset version and the run that read it; exit 1 when no run did.

    Example: DATASET_URI=gs://bucket/datasets/x REGISTRY_URI=gs://bucket/registry python -m scripts.status
    """
    params = params_or_exit({"dataset_uri": dataset_uri, "registry_uri": registry_uri})
    try:
        registry = Registry(params["registry_uri"])
        current = registry.current()
        status = dataset_status(registry, open_storage(params["dataset_uri"]))
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"production: {current['version'] if current else 'none'}")
    version, consumed = status["dataset_version"], status["consumed_by"]
    click.echo(f"dataset {params['dataset_uri']}: version {version[:12]}")
    if consumed:
        click.echo(f"  read by pipeline run {consumed['run']} at {consumed['at']}")
        return
    raise click.ClickException(
        f"no pipeline run has read dataset version {version[:12]}. Just after a push its run is still on "
        "its way (validate-data records it, after the clone and the image builds); hours later the trigger "
        "was lost: start a run with `kubectl create -n xray-mlops -f tekton/runs/retraining.yaml`")


if __name__ == "__main__":
    main(prog_name="python -m scripts.status")

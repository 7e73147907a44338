"""Remove what the pipeline regenerates, and nothing else: ``python -m scripts.clean``.

``make clean`` removes the run files, the outbox, the dataset cache, and the dataset only when it is
the synthetic sample (it carries the sample marker); a real dataset is never touched. Wiping a
registry, production models and audit records included, is ``make clean-registry CONFIRM=1``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from core.config import ConfigError, load_params
from model.sample_data import MARKER_FILE
from registry.store import STAGES, Registry
from storage import StorageError, is_gcs


def _remove(path: Path, what: str) -> None:
    if path.exists():
        shutil.rmtree(path)
        click.echo(f"removed {what}: {path}")


def clean_generated(params: dict, run_dir: Path) -> None:
    """Remove run files, outbox, dataset cache, and the dataset if it is the sample one."""
    _remove(run_dir, "run files")
    _remove(Path(params["outbox_dir"]), "the outbox")
    _remove(Path(params["cache_dir"]), "the dataset cache")
    uri = params["dataset_uri"]
    if is_gcs(uri):
        click.echo(f"kept the dataset at {uri}: a bucket is not cleaned from here")
    elif (Path(uri) / MARKER_FILE).exists():
        _remove(Path(uri), "the sample dataset")
    elif Path(uri).exists():
        click.echo(f"kept the dataset at {uri}: it is not the sample dataset")


def wipe_registry(uri: str, confirm: bool) -> None:
    """Delete a local registry; refuse without ``confirm`` and for a bucket."""
    if is_gcs(uri):
        raise click.ClickException(f"{uri} is a bucket: delete it with `gcloud storage rm --recursive {uri}` "
                                   "if you really mean it")
    if not Path(uri).exists():
        click.echo(f"no registry at {uri}")
        return
    registry = Registry(uri)
    counts = {stage: len(registry.versions(stage)) for stage in STAGES}
    if not confirm:
        raise click.ClickException(
            f"{uri} holds {counts['testing']} testing and {counts['production']} production versions and the "
            "audit records; nothing was deleted. To wipe it: make clean-registry CONFIRM=1")
    _remove(Path(uri), f"the registry ({counts['testing']} testing, {counts['production']} production versions)")


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=".run", show_default=True,
              help="The run files to remove.")
@click.option("--registry", "registry_only", is_flag=True, help="Wipe the local registry instead (REGISTRY_URI).")
@click.option("--confirm", is_flag=True, help="With --registry: really delete it.")
def main(run_dir, registry_only, confirm):
    """Remove what is regenerated (never a real dataset); with --registry --confirm, wipe the registry.

    Example: python -m scripts.clean --registry --confirm
    """
    try:
        params = load_params()
        if registry_only:
            wipe_registry(params["registry_uri"], confirm)
        else:
            clean_generated(params, run_dir)
    except (ConfigError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main(prog_name="python -m scripts.clean")

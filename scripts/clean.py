"""Remove what the pipeline regenerates, and nothing else: ``python -m scripts.clean``.

``make clean`` removes the run files, the outbox's emails and the dataset cache's entries (only the
files the project writes there, so a RUN_DIR, OUTBOX_DIR or CACHE_DIR pointing at a folder with
other things keeps them), and the dataset only when it is the synthetic sample (it carries the
sample marker); a real dataset is never touched. Wiping a
registry, production models and audit records included, is ``make clean-registry CONFIRM=1``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from core.config import ConfigError, load_params
from model.decoded_cache import INDEX_FILE as DECODED_INDEX_FILE
from model.sample_data import MARKER_FILE
from registry.store import STAGES, Registry
from storage import StorageError, is_gcs
from storage.cache import INDEX_FILE as CACHE_INDEX_FILE

# What the project writes into folders a user names (RUN_DIR, OUTBOX_DIR, CACHE_DIR): only these
# go, so a folder that holds other things too (CACHE_DIR=~/.cache) keeps them.
RUN_FILES = ("api.pid", "api.port", "api.log", "candidate-version", "outcome.json", "data-validation.json",
             "ab-training.json", "acceptance-api-*.log", "logs/*.log")
OUTBOX_FILES = ("*.eml",)
CACHE_ENTRIES = (("gcs", CACHE_INDEX_FILE), ("decoded", DECODED_INDEX_FILE), ("sample", MARKER_FILE))


def _remove(path: Path, what: str) -> None:
    """Remove a folder the project owns whole (the sample dataset, a registry)."""
    if path.exists():
        shutil.rmtree(path)
        click.echo(f"removed {what}: {path}")


def _prune(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` (included) while they are empty."""
    for candidate in (folder, *folder.parents):
        if not candidate.is_relative_to(stop):
            return
        try:
            candidate.rmdir()
        except OSError:
            return
        if candidate == stop:
            return


def _remove_files(folder: Path, patterns: tuple[str, ...], what: str) -> None:
    """Remove the files matching ``patterns`` in ``folder`` (never following a link out of it)."""
    if folder.is_symlink() or not folder.is_dir():
        return
    removed = [path for pattern in patterns for path in folder.glob(pattern)
               if (path.is_file() or path.is_symlink()) and not path.parent.is_symlink()]
    for path in removed:
        path.unlink()
        _prune(path.parent, folder)
    if removed:
        click.echo(f"removed {what}: {len(removed)} file(s) in {folder}")


def _remove_cache(cache: Path) -> None:
    """Remove the cache entries the project wrote (each marked by its own index file) under ``cache``."""
    if cache.is_symlink() or not cache.is_dir():
        return
    removed = 0
    for sub, marker in CACHE_ENTRIES:
        for index in sorted((cache / sub).rglob(marker)) if (cache / sub).is_dir() else ():
            entry = index.parent
            if entry.exists() and not any(parent.is_symlink() for parent in (entry, *entry.parents)
                                          if parent.is_relative_to(cache)):
                shutil.rmtree(entry)
                removed += 1
                _prune(entry.parent, cache)
    if removed:
        click.echo(f"removed the dataset cache: {removed} entr{'y' if removed == 1 else 'ies'} in {cache}")


def clean_generated(params: dict, run_dir: Path) -> None:
    """Remove run files, outbox emails, dataset cache entries, and the dataset if it is the sample one."""
    _remove_files(run_dir, RUN_FILES, "run files")
    _remove_files(Path(params["outbox_dir"]), OUTBOX_FILES, "the outbox")
    _remove_cache(Path(params["cache_dir"]))
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

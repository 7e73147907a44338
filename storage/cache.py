"""A local mirror of a remote dataset, so training reads local files and a second run downloads
nothing.

Each cached file is keyed by the generation of the object it was downloaded from (GCS gives every
write a new generation), recorded in a hidden index beside the files. An object whose generation
changed is downloaded again; a file the remote no longer has is removed; a file without an index
entry (a crash mid-download) is never trusted. Downloads are atomic (temporary file, rename).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from storage.base import ObjectInfo
from storage.local import LocalStorage

INDEX_FILE = ".cache-index.json"
DOWNLOAD_THREADS = 8


def cache_folder(cache_root: str | os.PathLike, uri: str) -> Path:
    """Where the mirror of ``uri`` lives: ``<cache_root>/gcs/<bucket>/<prefix>``."""
    return Path(cache_root) / "gcs" / uri.split("://", 1)[1].strip("/")


def _read_index(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / INDEX_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_index(folder: Path, index: dict[str, str]) -> None:
    tmp = folder / f"{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps(index, sort_keys=True))
    os.replace(tmp, folder / INDEX_FILE)


def mirror(remote, objects: list[ObjectInfo], cache_root: str | os.PathLike, progress: bool = True) -> tuple[LocalStorage, int]:
    """Bring the mirror of ``remote`` up to date for ``objects``; return it and the download count."""
    folder = cache_folder(cache_root, remote.uri)
    folder.mkdir(parents=True, exist_ok=True)
    local = LocalStorage(folder)
    index = _read_index(folder)
    wanted = {info.path: info.generation for info in objects}
    stale = [info for info in objects if index.get(info.path) != info.generation or not local.exists(info.path)]
    removed = set(index) - set(wanted)
    for path in removed:
        local.delete(path)
        index.pop(path)

    def download(info: ObjectInfo) -> ObjectInfo:
        local.write(info.path, remote.read(info.path))
        return info

    if stale:
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool, click.progressbar(
            length=len(stale), label=f"downloading {remote.uri}", show_pos=True, hidden=not progress
        ) as bar:
            try:
                for done in pool.map(download, stale):
                    index[done.path] = done.generation
                    bar.update(1)
            finally:
                _write_index(folder, index)  # what finished is kept, even when one download failed
    elif removed:
        _write_index(folder, index)
    return local, len(stale)

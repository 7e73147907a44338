"""Upload a local dataset to DATASET_URI: ``python -m scripts.data_push --src DIR``.

Only objects whose content changed are uploaded (the MD5 of each local file against the one the
storage keeps), so pushing a grown dataset uploads only the new images; images removed locally are
deleted remotely. ``manifest.json`` is written last: it names every image with its sha256 and label, and its ``manifest_sha256`` is the dataset
version. On GKE its arrival is what starts the retraining pipeline, so it appears only once every
image it lists is in place.
"""

from __future__ import annotations

import base64
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import click

from model.dataset import MANIFEST_FILE, label_of, scan_dataset
from storage import open_storage

UPLOAD_THREADS = 8


def md5_base64(data: bytes) -> str:
    """The MD5 of ``data`` as GCS reports it (base64)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def manifest_document(dataset) -> dict:
    """What manifest.json holds: the dataset version and every image with its sha256 and label."""
    return {
        "manifest_sha256": dataset.manifest_sha256(),
        "class_counts": dataset.class_counts(),
        "images": [[e.path, e.sha256, e.label] for e in sorted(dataset.examples, key=lambda e: e.path)],
    }


def push_dataset(source: str, target_uri: str, params: dict, progress: bool = True) -> dict:
    """Upload the images of the local dataset ``source`` that ``target_uri`` lacks, then manifest.json.

    Returns what was done: counts of uploaded and unchanged images, and the dataset version.
    """
    local = scan_dataset(source, params["classes"], params["data"]["split"], cache_dir=params["cache_dir"])
    target = open_storage(target_uri)
    remote = {info.path: info for info in target.walk()}

    def differs(path: str, data: bytes) -> bool:
        """Whether the object at ``path`` is missing or holds other bytes (by MD5 where the backend
        has one, else by size, then content)."""
        info = remote.get(path)
        if info is None:
            return True
        return info.md5 != md5_base64(data) if info.md5 else info.size != len(data) or target.read(path) != data

    def changed(example) -> bool:
        return differs(example.path, local.read_bytes(example.path))

    def upload(example) -> None:
        target.write(example.path, local.read_bytes(example.path))

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        stale = [e for e, is_stale in zip(local.examples, pool.map(changed, local.examples)) if is_stale]
        with click.progressbar(length=len(stale), label=f"uploading to {target_uri}", show_pos=True,
                               hidden=not progress or not stale) as bar:
            for _ in pool.map(upload, stale):
                bar.update(1)
        # Images removed locally go before the manifest stops listing them: the new manifest then
        # names exactly what is there (readers of the old one meanwhile get a clear "push again").
        kept = {e.path for e in local.examples}
        removed = sorted(path for path in remote if label_of(path, params["classes"]) and path not in kept)
        list(pool.map(target.delete, removed))
    document = manifest_document(local)
    manifest = json.dumps(document, indent=1).encode()
    manifest_changed = differs(MANIFEST_FILE, manifest)
    if manifest_changed:
        target.write(MANIFEST_FILE, manifest)
    return {"uploaded": len(stale), "unchanged": len(local.examples) - len(stale), "deleted": len(removed),
            "manifest_sha256": document["manifest_sha256"], "manifest_written": manifest_changed}

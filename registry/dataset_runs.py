"""Which dataset versions a pipeline run has consumed: the trace that makes a lost trigger visible.

The EventListener answers a Pub/Sub push before it creates the PipelineRun, so a creation that
fails loses a dataset update without a word. Each run's validate-data step therefore files the
dataset version it read (the ``manifest_sha256`` of manifest.json) under
``index/dataset-runs/<manifest_sha256>.json``, create-only, and ``make status`` compares the
dataset's current manifest with those records: a version no run has read is a lost trigger, once
the run it started has had time to reach validate-data.
"""

from __future__ import annotations

import json

from registry.store import Registry, utc_now
from storage import ObjectNotFound, StorageError

INDEX_KIND = "dataset-runs"
MANIFEST_FILE = "manifest.json"


def record_consumed(registry: Registry, manifest_sha256: str, run: str, dataset_uri: str) -> dict:
    """File that ``run`` read dataset version ``manifest_sha256``; the first run's record stays."""
    return registry.index_put(INDEX_KIND, manifest_sha256, {"run": run, "at": utc_now(), "dataset_uri": dataset_uri})


def dataset_status(registry: Registry, dataset_storage) -> dict:
    """The dataset's current version (from its manifest.json) and the run that consumed it, if any.

    Raises StorageError when the dataset has no readable manifest.json (it was never pushed)."""
    try:
        document = json.loads(dataset_storage.read(MANIFEST_FILE))
        version = document["manifest_sha256"]
    except ObjectNotFound as exc:
        raise StorageError(f"{dataset_storage.describe(MANIFEST_FILE)} does not exist: push the dataset "
                           "with `make data-push`") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{dataset_storage.describe(MANIFEST_FILE)} is not a dataset manifest: {exc}") from exc
    return {"dataset_version": version, "consumed_by": registry.index_get(INDEX_KIND, version)}

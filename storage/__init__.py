"""Where the registry and the dataset live: the same few atomic operations on a local disk or GCS.

``open_storage(uri)`` returns the backend for a URI: a local path, or ``gs://BUCKET/PREFIX``.
The registry (registry/) and the dataset reader (model/dataset.py) both import it from here.
"""

from __future__ import annotations

from storage.base import (  # noqa: F401  (the package's public names)
    AlreadyExists,
    GenerationMismatch,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    join,
)
from storage.local import LocalStorage


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def open_storage(uri: str):
    """The storage backend for ``uri``: ``gs://BUCKET/PREFIX`` or a local path."""
    if not uri:
        raise StorageError("empty storage URI")
    if is_gcs(uri):
        from storage.gcs import GCSStorage  # google-cloud-storage is only imported when used

        return GCSStorage(uri)
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme (use a local path or gs://BUCKET/PREFIX)")
    return LocalStorage(uri)

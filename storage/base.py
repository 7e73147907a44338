"""What every storage backend offers, and the errors they raise.

Paths are relative, POSIX style (``testing/v0001-.../model.onnx``). The operations are the few a
local disk and an object store can both do atomically:

- ``create``: write an object only if it does not exist (the claim, the metadata, a test run);
- ``replace``: write an object only if it still has the generation it had when read (the
  production pointer, a lease);
- ``copy``: a server-side copy, create-only at the destination;
- ``list``: one level under a prefix (names and sub-prefixes, like a delimiter listing), and
  ``walk``: every object under a prefix (a dataset, garbage collection);
- ``read``, ``read_with_generation``, ``write`` (unconditional, for payload files that nobody
  else writes), ``delete``.

A *generation* is an opaque string that changes whenever an object's content is replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


class StorageError(RuntimeError):
    """A storage URI cannot be used, or an operation failed; the message says which and why."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class AlreadyExists(StorageError):
    """``create`` or ``copy`` found the object already there."""


class GenerationMismatch(StorageError):
    """``replace`` found the object changed (or gone) since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: its relative path, size, and what identifies its content."""

    path: str
    size: int
    generation: str
    md5: str | None = None  # base64 MD5 where the backend keeps one (GCS), else None
    updated: float = 0.0  # when it was last written, seconds since the epoch


def check_relative(path: str) -> str:
    """``path`` normalised, or StorageError when it is empty, absolute or leaves the root."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise StorageError(f"invalid storage path {path!r}")
    return pure.as_posix()


def join(*parts: str) -> str:
    """Join path parts with ``/``, ignoring empty ones."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))

"""Where the registry and the dataset live: one small interface, one backend per URI scheme.

Paths given to a storage are relative, POSIX style (``testing/v0001-.../model.onnx``). The local
backend is complete; a ``gs://`` URI is refused with a clear message until the GCS backend lands.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath


class StorageError(RuntimeError):
    """A storage URI cannot be used, or an object is missing."""


class LocalStorage:
    """Files under a local directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(root)

    def _path(self, relative: str) -> Path:
        parts = PurePosixPath(relative).parts
        if not parts or ".." in parts or PurePosixPath(relative).is_absolute():
            raise StorageError(f"invalid storage path {relative!r}")
        return self.root.joinpath(*parts)

    def local_path(self, relative: str) -> Path:
        """The file on this disk for ``relative`` (local backend only)."""
        return self._path(relative)

    def exists(self, relative: str) -> bool:
        return self._path(relative).exists()

    def read_bytes(self, relative: str) -> bytes:
        try:
            return self._path(relative).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.uri}/{relative} does not exist") from exc

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write atomically: readers see the old content or the new one, never a partial file."""
        target = self._path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def append_line(self, relative: str, line: str) -> None:
        """Append one line (an audit record); O_APPEND keeps concurrent writers' lines whole."""
        target = self._path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")

    def list_files(self, prefix: str = "") -> list[str]:
        """Relative paths of every file under ``prefix``, sorted; hidden temp files excluded."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            relative = path.relative_to(self.root)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                found.append(relative.as_posix())
        return sorted(found)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the directories directly under ``prefix``, sorted."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def create_dir(self, relative: str) -> bool:
        """Create a directory; False if it already exists (the atomic claim of a version number)."""
        path = self._path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            return False
        return True

    def copy_tree(self, source: str, target: str) -> None:
        """Copy a directory; the target appears complete or not at all."""
        src, dst = self._path(source), self._path(target)
        if dst.exists():
            raise StorageError(f"{self.uri}/{target} already exists")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            os.replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def lock(self, name: str):
        """Hold an exclusive lock named ``name`` for a read-modify-write; freed if the process dies."""
        path = self._path(f".locks/{name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_tree(self, relative: str) -> None:
        shutil.rmtree(self._path(relative), ignore_errors=True)


def open_storage(uri: str):
    """The storage backend for ``uri``: a local path today, ``gs://`` with the GCS backend."""
    if not uri:
        raise StorageError("empty storage URI")
    if uri.startswith("gs://"):
        raise StorageError(
            f"{uri}: the Google Cloud Storage backend is not available yet; use a local path"
        )
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme (use a local path)")
    return LocalStorage(uri)

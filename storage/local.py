"""The local-disk backend: objects are files under a root folder.

Atomicity comes from the file system: every write goes to a temporary file in the target's folder
first; ``create`` then hard-links it into place (``link`` fails if the name exists, like
``O_EXCL``), the others rename it over the target. Readers never see a partial file. Hidden names
(starting with ``.``) are this backend's own (temporary files, lock files) and never listed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from storage.base import AlreadyExists, GenerationMismatch, ObjectInfo, ObjectNotFound, check_relative

LOCK_DIR = ".locks"


class LocalStorage:
    """Objects as files under a local directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(root)

    def _path(self, relative: str) -> Path:
        return self.root.joinpath(*check_relative(relative).split("/"))

    def describe(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def exists(self, relative: str) -> bool:
        return self._path(relative).is_file()

    def read(self, relative: str) -> bytes:
        try:
            return self._path(relative).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"{self.describe(relative)} does not exist") from exc

    def read_with_generation(self, relative: str) -> tuple[bytes, str]:
        """The content and its generation: here the sha256 of the content, so it can never repeat
        for a pointer or lease (they carry unique ids), whatever the file system's clock does."""
        data = self.read(relative)
        return data, hashlib.sha256(data).hexdigest()

    def list(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """Names of the objects and of the sub-prefixes directly under ``prefix``, sorted."""
        base = self._path(prefix) if prefix.strip("/") else self.root
        try:
            entries = [entry for entry in os.scandir(base) if not entry.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        files = sorted(entry.name for entry in entries if entry.is_file())
        folders = sorted(entry.name for entry in entries if entry.is_dir())
        return files, folders

    def find(self, prefix: str, filename: str) -> list[str]:
        """Names of the folders directly under ``prefix`` that hold an object ``filename``."""
        return [name for name in self.list(prefix)[1] if self.exists(f"{prefix}/{name}/{filename}")]

    def walk(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (relative to the root), sorted by path."""
        base = self._path(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        found = []
        for folder, folders, files in os.walk(base):
            folders[:] = [name for name in folders if not name.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                stat = path.stat()
                found.append(ObjectInfo(path.relative_to(self.root).as_posix(), stat.st_size,
                                        f"{stat.st_mtime_ns}-{stat.st_size}-{stat.st_ino}",
                                        updated=stat.st_mtime))
        return sorted(found, key=lambda info: info.path)

    def _temporary_copy(self, target: Path, data: bytes | None = None, source: Path | None = None) -> Path:
        """A complete, synced temporary file beside ``target`` holding ``data`` or ``source``."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                if source is not None:
                    with open(source, "rb") as original:
                        shutil.copyfileobj(original, handle)
                else:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def _link_new(self, tmp: Path, target: Path, relative: str) -> None:
        try:
            os.link(tmp, target)
        except FileExistsError as exc:
            raise AlreadyExists(f"{self.describe(relative)} already exists") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, relative: str, data: bytes) -> None:
        """Write unconditionally; readers see the old content or the new one, never a part."""
        target = self._path(relative)
        os.replace(self._temporary_copy(target, data), target)

    def create(self, relative: str, data: bytes, deadline_s: float | None = None) -> str:
        """Write only if the object does not exist (AlreadyExists otherwise); return its generation.
        (``deadline_s``, which bounds a remote backend's retries, has nothing to bound here.)"""
        target = self._path(relative)
        self._link_new(self._temporary_copy(target, data), target, relative)
        return hashlib.sha256(data).hexdigest()

    def replace(self, relative: str, data: bytes, if_generation: str, deadline_s: float | None = None) -> str:
        """Write only if the object still has ``if_generation``; return the new generation."""
        target = self._path(relative)
        with self._lock(relative):
            try:
                _, current = self.read_with_generation(relative)
            except ObjectNotFound as exc:
                raise GenerationMismatch(f"{self.describe(relative)} was deleted since it was read") from exc
            if current != if_generation:
                raise GenerationMismatch(f"{self.describe(relative)} changed since it was read")
            os.replace(self._temporary_copy(target, data), target)
        return hashlib.sha256(data).hexdigest()

    def copy(self, source: str, target: str) -> None:
        """Copy one object; the target must not exist (AlreadyExists) and appears complete."""
        source_path, target_path = self._path(source), self._path(target)
        if not source_path.is_file():
            raise ObjectNotFound(f"{self.describe(source)} does not exist")
        self._link_new(self._temporary_copy(target_path, source=source_path), target_path, target)

    def delete(self, relative: str) -> None:
        """Delete one object; deleting a missing one is not an error. Empty folders go too."""
        path = self._path(relative)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    @contextlib.contextmanager
    def _lock(self, relative: str):
        """An exclusive lock for one object's read-compare-write; freed if the process dies."""
        name = hashlib.sha256(check_relative(relative).encode()).hexdigest()[:32]
        path = self.root / LOCK_DIR / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

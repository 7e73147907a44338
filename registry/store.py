"""The model registry: immutable, sortable versions in ``testing`` and ``production``.

Layout under the registry URI::

    testing/<version>/       model.onnx, model.keras, metadata.json, report files
    production/<version>/    the same files, copied on promotion
    production/current.json  {"version", "previous", "promoted_at", "promoted_by", "history"}
    audit.jsonl              one record per promotion or rollback
    claims/<number>/         the atomic claim of a version number

A version is ``v<number>-<UTC timestamp>`` (``v0007-20261127T133000Z``), so names sort by age.
It becomes visible only when its ``metadata.json`` is written, last. Model files never change
after that; the metadata gains test runs (``tests``), written atomically.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
from datetime import datetime, timezone

from registry.storage import StorageError, open_storage

STAGES = ("testing", "production")
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
KERAS_FILE = "model.keras"
POINTER_FILE = "production/current.json"
AUDIT_FILE = "audit.jsonl"
POINTER_LOCK = "production-pointer"
VERSION_PATTERN = re.compile(r"^v(\d{4,})-(\d{8}T\d{6}Z)$")


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why."""


class VersionNotFound(RegistryError):
    pass


class PromotionRefused(RegistryError):
    pass


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def whoami() -> str:
    """Who runs a promotion: PROMOTED_BY, else git's user.email, else the login name."""
    if os.environ.get("PROMOTED_BY"):
        return os.environ["PROMOTED_BY"]
    try:
        email = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or getpass.getuser()


def last_test_run(metadata: dict) -> dict | None:
    runs = metadata.get("tests") or []
    return runs[-1] if runs else None


def tests_passed(metadata: dict) -> bool:
    """True when the newest acceptance-test run of a version passed."""
    run = last_test_run(metadata)
    return bool(run) and run.get("failed", 1) == 0 and run.get("passed", 0) > 0


class Registry:
    """Versions, their files and the production pointer, on any storage backend."""

    def __init__(self, uri: str):
        self.uri = uri
        self.storage = open_storage(uri)

    def versions(self, stage: str) -> list[str]:
        """Visible versions of a stage (those whose metadata.json exists), oldest first."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        visible = [
            name
            for name in self.storage.list_dirs(stage)
            if VERSION_PATTERN.match(name) and self.storage.exists(f"{stage}/{name}/{METADATA_FILE}")
        ]
        return sorted(visible, key=lambda name: int(VERSION_PATTERN.match(name).group(1)))

    def stage_of(self, version: str) -> str:
        """The stage that holds ``version`` (``testing`` where both do)."""
        for stage in STAGES:
            if version in self.versions(stage):
                return stage
        raise VersionNotFound(f"version {version!r} is not in the registry at {self.uri}")

    def metadata(self, version: str, stage: str | None = None) -> dict:
        stage = stage or self.stage_of(version)
        try:
            return json.loads(self.storage.read_bytes(f"{stage}/{version}/{METADATA_FILE}"))
        except StorageError as exc:
            raise VersionNotFound(f"version {version!r} is not in {stage} at {self.uri}") from exc

    def read_file(self, version: str, name: str, stage: str | None = None) -> bytes:
        stage = stage or self.stage_of(version)
        return self.storage.read_bytes(f"{stage}/{version}/{name}")

    def files(self, version: str, stage: str | None = None) -> list[str]:
        stage = stage or self.stage_of(version)
        prefix = f"{stage}/{version}/"
        return [path[len(prefix):] for path in self.storage.list_files(prefix)]

    def claim_version(self) -> str:
        """Reserve the next version name; concurrent writers never get the same number."""
        existing = [
            int(match.group(1))
            for stage in STAGES
            for name in self.storage.list_dirs(stage)
            if (match := VERSION_PATTERN.match(name))
        ] + [int(name) for name in self.storage.list_dirs("claims") if name.isdigit()]
        number = max(existing, default=0) + 1
        while not self.storage.create_dir(f"claims/{number:04d}"):
            number += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"v{number:04d}-{stamp}"

    def register(self, files: dict[str, bytes], metadata: dict, version: str | None = None) -> str:
        """Store a new version in ``testing`` and return its name; metadata.json goes last.

        ``version`` is a name from :meth:`claim_version`, for callers that need the name before
        registering (to render it into a report); by default a new one is claimed.
        """
        if MODEL_FILE not in files:
            raise RegistryError(f"a version needs {MODEL_FILE}")
        if version is None:
            version = self.claim_version()
        elif not VERSION_PATTERN.match(version) or self.storage.list_files(f"testing/{version}"):
            raise RegistryError(f"{version!r} is not a fresh claimed version name")
        for name, data in files.items():
            self.storage.write_bytes(f"testing/{version}/{name}", data)
        record = {"version": version, "created_at": utc_now(), "tests": [], **metadata}
        record["version"] = version
        self._write_metadata("testing", version, record)
        return version

    def _write_metadata(self, stage: str, version: str, metadata: dict) -> None:
        data = json.dumps(metadata, indent=2, sort_keys=True).encode()
        self.storage.write_bytes(f"{stage}/{version}/{METADATA_FILE}", data)

    def record_test_run(self, version: str, run: dict) -> dict:
        """Append an acceptance-test run to the metadata of every stage that holds ``version``."""
        holders = [stage for stage in STAGES if version in self.versions(stage)]
        if not holders:
            raise VersionNotFound(f"version {version!r} is not in the registry at {self.uri}")
        with self.storage.lock(f"metadata-{version}"):
            for stage in holders:
                metadata = self.metadata(version, stage)
                metadata.setdefault("tests", []).append(run)
                self._write_metadata(stage, version, metadata)
        return self.metadata(version, holders[0])

    def current(self) -> dict | None:
        """The production pointer, or None when nothing was promoted yet."""
        if not self.storage.exists(POINTER_FILE):
            return None
        return json.loads(self.storage.read_bytes(POINTER_FILE))

    def newest_tested(self) -> str | None:
        """The newest testing version whose newest acceptance-test run passed."""
        for version in reversed(self.versions("testing")):
            if tests_passed(self.metadata(version, "testing")):
                return version
        return None

    def promote(self, version: str | None = None, by: str | None = None) -> dict:
        """Copy a tested testing version to production and point production at it."""
        if version is None:
            version = self.newest_tested()
            if version is None:
                raise PromotionRefused(
                    "no testing version has passed its acceptance tests; run `make pipeline` "
                    "or `make unittest VERSION=...` first"
                )
        if version not in self.versions("testing"):
            raise VersionNotFound(f"version {version!r} is not in testing at {self.uri}")
        metadata = self.metadata(version, "testing")
        run = last_test_run(metadata)
        if run is None:
            raise PromotionRefused(
                f"{version} has no acceptance-test run; run `make unittest VERSION={version}`"
            )
        if not tests_passed(metadata):
            if not run.get("failed") and not run.get("passed"):
                reason = f"ran no test in its last acceptance-test run at {run.get('at')}"
            else:
                reason = (f"failed its last acceptance tests ({run.get('failed')} failed, "
                          f"{run.get('passed')} passed at {run.get('at')})")
            raise PromotionRefused(f"{version} {reason}; it cannot go to production")
        with self.storage.lock(POINTER_LOCK):
            pointer = self.current()
            if pointer and pointer["version"] == version:
                raise PromotionRefused(f"{version} is already the production version")
            if version not in self.versions("production"):
                # A copy without metadata.json is one an earlier promotion left half done.
                self.storage.remove_tree(f"production/{version}")
                self.storage.copy_tree(f"testing/{version}", f"production/{version}")
            history = (pointer.get("history", []) + [pointer["version"]]) if pointer else []
            return self._move_pointer("promote", pointer, version, history, by)

    def rollback(self, by: str | None = None) -> dict:
        """Point production back at the version it served before the current one."""
        with self.storage.lock(POINTER_LOCK):
            pointer = self.current()
            if not pointer:
                raise RegistryError("nothing was promoted yet: there is no production version")
            history = pointer.get("history", [])
            if not history:
                raise RegistryError(f"{pointer['version']} is the first production version: nothing to roll back to")
            return self._move_pointer("rollback", pointer, history[-1], history[:-1], by)

    def _move_pointer(self, action: str, replaced: dict | None, version: str, history: list[str],
                      by: str | None) -> dict:
        """Write the new pointer, then its audit record; ``replaced`` is the pointer read under the lock."""
        pointer = {
            "version": version,
            "previous": history[-1] if history else None,
            "history": history,
            "promoted_at": utc_now(),
            "promoted_by": by or whoami(),
        }
        self.storage.write_bytes(POINTER_FILE, json.dumps(pointer, indent=2).encode())
        audit = {"action": action, "version": version, "replaced": replaced["version"] if replaced else None,
                 "at": pointer["promoted_at"], "by": pointer["promoted_by"]}
        self.storage.append_line(AUDIT_FILE, json.dumps(audit, sort_keys=True))
        return pointer

    def audit(self) -> list[dict]:
        if not self.storage.exists(AUDIT_FILE):
            return []
        return [json.loads(line) for line in self.storage.read_bytes(AUDIT_FILE).decode().splitlines() if line]

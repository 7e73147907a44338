"""The model registry: immutable, sortable versions in ``testing`` and ``production``.

Layout under the registry URI (a local folder or ``gs://BUCKET/PREFIX``)::

    counter.json                          {"last": n}: version numbers, claimed by compare-and-swap
    testing/<version>/claim.json          written when the number is claimed (gc reads its age)
    testing/<version>/                    model.onnx, model.keras, report files, metadata.json last
    production/<version>/                 the same files, copied on promotion, metadata.json last
    <stage>/<version>/tests/<at>-<id>.json        one object per acceptance-test run
    <stage>/<version>/evaluations/<at>-<id>.json  one object per later evaluation (retraining)
    production/current.json               the production pointer, replaced by compare-and-swap
    audit/<at>-<id>.json                  one object per promotion, rollback or revert
    index/<kind>/<key>.json               create-only lookups (retraining keys: what was already tried)
    locks/<name>.json                     leases (storage/lease.py)

A registry written by the first release (a pointer with a ``history`` list, ``audit.jsonl``) is
read as it is and migrated once by the first promotion or rollback (:meth:`Registry.migrate`).

A version is ``v<number>-<UTC timestamp>`` (``v0007-20261127T133000Z``). It becomes visible when its
``metadata.json`` is created, last and create-only; nothing rewrites an object of a version after
that. What happens to a version later (test runs, evaluations) is a new create-only object beside
it, and :meth:`Registry.metadata` merges them, so concurrent writers never overwrite each other.
Only the pointer is ever replaced, and only by compare-and-swap. ``current``, ``promote VERSION``
and ``rollback`` touch a fixed number of objects however long the history is.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from registry.policy import readiness, tests_passed
from storage import AlreadyExists, GenerationMismatch, ObjectNotFound, StorageError, open_storage
from storage.lease import DEFAULT_TTL_S as DEFAULT_LEASE_TTL_S
from storage.lease import LeaseBusy, lease

STAGES = ("testing", "production")
RECORD_KINDS = ("tests", "evaluations")
METADATA_FILE = "metadata.json"
CLAIM_FILE = "claim.json"
MODEL_FILE = "model.onnx"
KERAS_FILE = "model.keras"
POINTER_FILE = "production/current.json"
COUNTER_FILE = "counter.json"
AUDIT_PREFIX = "audit"
LEGACY_AUDIT_FILE = "audit.jsonl"  # the first release's audit (cd5dfab); read, and migrated by migrate()
INDEX_PREFIX = "index"
VERSION_PATTERN = re.compile(r"^v(\d{4,})-(\d{8}T\d{6}Z)$")
DEFAULT_GC_GRACE_S = 3600.0
LOG = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why."""


class VersionNotFound(RegistryError):
    pass


class PromotionRefused(RegistryError):
    pass


class ConcurrentChange(RegistryError):
    """Someone else moved the production pointer first; nothing of ours was changed."""


class RevertFailed(RegistryError):
    """What followed a pointer move failed, and the pointer could not be moved back either."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_name() -> str:
    """A unique, time-ordered object name: ``20261127T133000.123456Z-1a2b3c4d``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}"


def whoami() -> str:
    """Who runs a promotion: PROMOTED_BY, else git's user.email, else the cloud account, else the login."""
    if os.environ.get("PROMOTED_BY", "").strip():
        return os.environ["PROMOTED_BY"].strip()
    commands = (["git", "config", "user.email"], ["gcloud", "config", "get-value", "account"])
    for command in commands:
        try:
            found = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if found and "(unset)" not in found:
            return found
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _json(data: dict) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()


def check_version_name(version: str | None) -> str:
    """``version`` when it is a version name; VersionNotFound saying so otherwise."""
    if not VERSION_PATTERN.match(version or ""):
        raise VersionNotFound(f"{version!r} is not a version name (like v0007-20261127T133000Z)")
    return version


def is_legacy_pointer(pointer: dict | None) -> bool:
    """Whether ``pointer`` was written by the first release (cd5dfab): no audit name, a history list."""
    return bool(pointer) and "audit" not in pointer and "history" in pointer


def _compact(at: str | None) -> str:
    """``2026-11-27T13:30:00Z`` -> ``20261127T133000``, the time part of an audit record's name."""
    return (at or "19700101T000000").replace("-", "").replace(":", "").rstrip("Z")


def version_number(version: str) -> int:
    return int(VERSION_PATTERN.match(version).group(1))


class Registry:
    """Versions, their files and the production pointer, on any storage backend."""

    def __init__(self, uri: str, storage=None, lease_ttl_s: float = DEFAULT_LEASE_TTL_S):
        self.uri = uri
        self.storage = storage or open_storage(uri)
        self.lease_ttl_s = lease_ttl_s  # how long a crashed promoter can block that version

    def versions(self, stage: str) -> list[str]:
        """Visible versions of a stage (those whose metadata.json exists), oldest first."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        visible = [name for name in self.storage.find(stage, METADATA_FILE) if VERSION_PATTERN.match(name)]
        return sorted(visible, key=version_number)

    def holders(self, version: str) -> list[str]:
        """The stages that hold ``version`` (testing first)."""
        check_version_name(version)
        return [stage for stage in STAGES if self.storage.exists(f"{stage}/{version}/{METADATA_FILE}")]

    def stage_of(self, version: str) -> str:
        """The stage that holds ``version`` (``testing`` where both do)."""
        holders = self.holders(version)
        if not holders:
            raise VersionNotFound(f"version {version!r} is not in the registry at {self.uri}")
        return holders[0]

    def metadata(self, version: str, stage: str | None = None) -> dict:
        """The merged view of a version: its metadata.json plus every test run and evaluation
        recorded since, from every stage (oldest first)."""
        stage = stage or self.stage_of(version)
        try:
            metadata = json.loads(self.storage.read(f"{stage}/{version}/{METADATA_FILE}"))
        except ObjectNotFound as exc:
            raise VersionNotFound(f"version {version!r} is not in {stage} at {self.uri}") from exc
        for kind in RECORD_KINDS:
            metadata[kind] = list(metadata.get(kind) or []) + self._records(version, kind)
        return metadata

    def _records(self, version: str, kind: str) -> list[dict]:
        """The records of ``kind``, in the order the storage created them (its own clock: a writer
        whose clock is behind cannot sort its record before an older one); a record kept in both
        stages counts once, at its first creation."""
        first: dict[str, tuple[float, str, str]] = {}
        for stage in STAGES:
            folder = f"{stage}/{version}/{kind}/"
            for info in self.storage.walk(folder.rstrip("/")):
                name = info.path[len(folder):]
                if "/" not in name and (name not in first or info.updated < first[name][0]):
                    first[name] = (info.updated, name, info.path)
        return [json.loads(self.storage.read(path)) for _, _, path in sorted(first.values())]

    def read_file(self, version: str, name: str, stage: str | None = None) -> bytes:
        stage = stage or self.stage_of(version)
        try:
            return self.storage.read(f"{stage}/{version}/{name}")
        except ObjectNotFound as exc:
            raise RegistryError(f"version {version} has no file {name!r} in {stage}") from exc

    def files(self, version: str, stage: str | None = None) -> list[str]:
        """The files of a version (its own objects, not the claim or the records kept beside it)."""
        stage = stage or self.stage_of(version)
        return [name for name in self.storage.list(f"{stage}/{version}")[0] if name != CLAIM_FILE]

    def current(self) -> dict | None:
        """The production pointer, or None when nothing is in production."""
        pointer, _ = self._read_pointer()
        return pointer if pointer and pointer.get("version") else None

    def production_version(self) -> str | None:
        """The version in production now, or None."""
        return (self.current() or {}).get("version")

    def resolve_version(self, version: str | None) -> tuple[str, str]:
        """``(version, its stage)``: ``version`` itself, or the newest testing version when it is
        None (the default of every command that takes ``--version``)."""
        if version:
            return version, self.stage_of(version)  # VersionNotFound with the registry's own message
        versions = self.versions("testing")
        if not versions:
            raise VersionNotFound(f"the registry at {self.uri} has no testing version: run `make train` first")
        return versions[-1], "testing"

    def newest_tested(self) -> str | None:
        """The newest testing version whose newest acceptance-test run passed."""
        found = self.newest_tested_metadata()
        return found[0] if found else None

    def newest_tested_metadata(self) -> tuple[str, dict] | None:
        """:meth:`newest_tested` with the merged metadata it read to decide."""
        for version in reversed(self.versions("testing")):
            metadata = self.metadata(version, "testing")
            if tests_passed(metadata):
                return version, metadata
        return None

    def audit(self) -> list[dict]:
        """Every promotion, rollback and revert, oldest first. Only reads (a read-only principal can
        run it): the pointer's own record, when a crash or a storage error left it unwritten, is
        shown from the pointer, and written by the next change or `gc --apply`."""
        names = self.storage.list(AUDIT_PREFIX)[0]
        records = [json.loads(self.storage.read(f"{AUDIT_PREFIX}/{name}")) for name in names]
        records = [record for record in records if not record.get("restore_point")]
        pointer = self._read_pointer()[0]
        if is_legacy_pointer(pointer):
            return records + self._legacy_audit()  # a first-release registry, not migrated yet
        if pointer and pointer.get("audit") and f"{pointer['audit']}.json" not in names:
            records.append(self._audit_record(pointer))
        return records

    def claim_version(self) -> str:
        """Reserve the next version name; concurrent writers never get the same number."""
        number = self._next_number()
        version = f"v{number:04d}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        claim = {"version": version, "claimed_at": utc_now(), "by": f"{os.uname().nodename}:{os.getpid()}"}
        self.storage.create(f"testing/{version}/{CLAIM_FILE}", _json(claim))
        return version

    def _next_number(self) -> int:
        # Each write carries a random claim id: a storage retry recognises its own landed write by
        # its content, so two writers must never write the same bytes.
        while True:
            try:
                data, generation = self.storage.read_with_generation(COUNTER_FILE)
            except ObjectNotFound:
                # A new registry, or one from before the counter: start above what is there.
                last = max((version_number(name) for stage in STAGES for name in self.storage.list(stage)[1]
                            if VERSION_PATTERN.match(name)), default=0)
                try:
                    self.storage.create(COUNTER_FILE, _json({"last": last + 1, "claim": uuid.uuid4().hex}))
                    return last + 1
                except AlreadyExists:
                    continue
            last = json.loads(data)["last"]
            try:
                self.storage.replace(COUNTER_FILE, _json({"last": last + 1, "claim": uuid.uuid4().hex}), generation)
                return last + 1
            except GenerationMismatch:
                continue

    def register(self, files: dict[str, bytes], metadata: dict, version: str | None = None) -> str:
        """Store a new version in ``testing`` and return its name; metadata.json goes last.

        ``version`` is a name from :meth:`claim_version`, for callers that need the name before
        registering (to render it into a report); by default a new one is claimed.
        """
        if MODEL_FILE not in files:
            raise RegistryError(f"a version needs {MODEL_FILE}")
        if version is None:
            version = self.claim_version()
        elif not VERSION_PATTERN.match(version) or not self.storage.exists(f"testing/{version}/{CLAIM_FILE}") \
                or self.storage.exists(f"testing/{version}/{METADATA_FILE}"):
            raise RegistryError(f"{version!r} is not a fresh claimed version name")
        for name, data in files.items():
            if name in (METADATA_FILE, CLAIM_FILE) or "/" in name:
                raise RegistryError(f"{name!r} cannot be a file of a version")
            self.storage.create(f"testing/{version}/{name}", data)
        record = {"created_at": utc_now(), **metadata, "version": version}
        for kind in RECORD_KINDS:
            record[kind] = []  # kept beside the version as their own objects
        try:
            self.storage.create(f"testing/{version}/{METADATA_FILE}", _json(record))
        except AlreadyExists as exc:
            raise RegistryError(f"{version} was registered by someone else meanwhile") from exc
        return version

    def record(self, version: str, kind: str, record: dict) -> dict:
        """Add a test run or an evaluation to ``version`` in every stage that holds it."""
        if kind not in RECORD_KINDS:
            raise RegistryError(f"unknown record kind {kind!r}")
        # The version's lease orders this with a promotion: a run recorded during a promotion
        # lands before the verdict is read or after the pointer moved, never in between.
        with lease(self.storage, f"version-{version}", ttl_s=self.lease_ttl_s) as held:
            holders = self.holders(version)
            if not holders:
                raise VersionNotFound(f"version {version!r} is not in the registry at {self.uri}")
            name = f"{record_name()}.json"
            for stage in holders:
                held.check()  # a promotion that took the lease over must not see this record appear
                self.storage.create(f"{stage}/{version}/{kind}/{name}", _json(record), deadline_s=held.remaining_s())
        return self.metadata(version, holders[0])

    def record_test_run(self, version: str, run: dict) -> dict:
        return self.record(version, "tests", run)

    def record_evaluation(self, version: str, evaluation: dict) -> dict:
        return self.record(version, "evaluations", evaluation)

    def index_get(self, kind: str, key: str) -> dict | None:
        """The record filed under ``key`` (e.g. a retraining key), or None."""
        try:
            return json.loads(self.storage.read(f"{INDEX_PREFIX}/{kind}/{key}.json"))
        except ObjectNotFound:
            return None

    def index_put(self, kind: str, key: str, record: dict) -> dict:
        """File ``record`` under ``key``, create-only: the first writer wins and is returned."""
        try:
            self.storage.create(f"{INDEX_PREFIX}/{kind}/{key}.json", _json(record))
            return record
        except AlreadyExists:
            return self.index_get(kind, key)

    def migrate(self, by: str | None = None) -> dict | None:
        """Bring a registry written by the first release (cd5dfab) to this layout, once.

        That release's pointer has no ``audit``, keeps earlier versions in a ``history`` list, and
        its audit is ``audit.jsonl``. Each audit line becomes an audit record; each history entry a
        restore point (an audit record a rollback returns to, not listed by :meth:`audit`); then
        the pointer is replaced, by compare-and-swap, with one of this layout that says "migrate"
        and is audited. Every object has a fixed name and is create-only, so an interrupted or
        concurrent migration is finished by the next one. Returns the new pointer, or None when
        there was nothing to migrate.
        """
        pointer, generation = self._read_pointer()
        if not is_legacy_pointer(pointer):
            return None
        legacy = self._legacy_audit()
        for index, record in enumerate(legacy):
            self._create_once(f"{AUDIT_PREFIX}/{_compact(record.get('at'))}.000000Z-legacy{index:04d}.json",
                              {**record, "legacy": True})
        history, restores = list(pointer.get("history") or []), None
        for index, version in enumerate(history):
            last = next((r for r in reversed(legacy) if r.get("version") == version), {})
            name = f"{_compact(pointer.get('promoted_at'))}.000000Z-history{index:04d}"
            point = {"version": version, "previous": history[index - 1] if index else None, "action": "restore-point",
                     "replaced": None, "audit": name, "replaced_audit": None, "restores": restores,
                     "promoted_at": last.get("at") or pointer.get("promoted_at"),
                     "promoted_by": last.get("by") or pointer.get("promoted_by")}
            self._create_once(f"{AUDIT_PREFIX}/{name}.json", {**self._audit_record(point), "restore_point": True})
            restores = name
        new = self._pointer("migrate", pointer["version"], pointer, by or whoami(), restores=restores)
        new["previous"] = history[-1] if history else None
        new["reason"] = "the first release's registry layout (history list, audit.jsonl) migrated"
        try:
            return self._commit(new, None, generation)
        except ConcurrentChange:
            return None  # someone else migrated (or changed production) first

    def _legacy_audit(self) -> list[dict]:
        try:
            lines = self.storage.read(LEGACY_AUDIT_FILE).decode().splitlines()
        except ObjectNotFound:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _create_once(self, path: str, record: dict) -> None:
        try:
            self.storage.create(path, _json(record))
        except AlreadyExists:
            pass

    def _read_pointer(self) -> tuple[dict | None, str | None]:
        try:
            data, generation = self.storage.read_with_generation(POINTER_FILE)
        except ObjectNotFound:
            return None, None
        return json.loads(data), generation

    def promote(self, version: str | None = None, by: str | None = None,
                verify: Callable[[str, bytes, dict], None] | None = None,
                then: Callable[[dict], None] | None = None) -> dict:
        """Copy a tested testing version to production and point production at it.

        ``verify(version, model_bytes, metadata)`` runs first and raises to refuse a model that
        cannot be served. The verdict is read and the pointer moved under the version's lease, so
        a test run recorded meanwhile cannot be promoted past. ``then(pointer)`` (the deploy) runs
        once the pointer moved and the lease is given back; any exception or signal from the
        pointer move on moves the pointer back and propagates (see :meth:`_finish_or_undo`).
        """
        by = by or whoami()
        self.migrate(by)
        if version is None:
            version = self.newest_tested()
            if version is None:
                raise PromotionRefused("no testing version has passed its acceptance tests; run `make pipeline` "
                                       "or `make unittest VERSION=...` first")
        if "testing" not in self.holders(version):
            raise VersionNotFound(f"version {version!r} is not in testing at {self.uri}")
        metadata = self._promotable(version)
        if verify is not None:
            verify(version, self.read_file(version, MODEL_FILE, "testing"), metadata)
        moved: list[dict] = []
        with self._finish_or_undo(moved, then), lease(self.storage, f"version-{version}",
                                                       ttl_s=self.lease_ttl_s) as held:
            self._promotable(version)  # again: a test run may have been recorded meanwhile
            replaced, generation = self._read_pointer()
            if replaced and replaced.get("version") == version:
                raise PromotionRefused(f"{version} is already the production version")
            self._copy_to_production(version)
            self._check_production_copy(version)
            pointer = self._pointer("promote", version, replaced, by, restores=replaced and replaced.get("audit"))
            moved.append(self._commit(pointer, replaced, generation, held))
        return moved[0]

    @contextlib.contextmanager
    def _finish_or_undo(self, moved: list[dict], then: Callable[[dict], None] | None):
        """Run the block (which appends the pointer it committed to ``moved``), then ``then(pointer)``.

        Once the pointer moved, the change either finishes or is undone: any exception or signal
        (KeyboardInterrupt, SIGTERM turned into an exception by the CLI) before ``then`` returns
        moves the pointer back, then propagates. When even that fails, an Exception becomes
        RevertFailed saying both; a signal propagates as it is, the failure logged.
        """
        try:
            yield
            if moved and then is not None:
                then(moved[0])
        except BaseException as exc:
            if not moved:
                raise
            what = str(exc) or type(exc).__name__
            try:
                self.revert(moved[0], reason=f"failed after the pointer moved: {what}")
            except (RegistryError, StorageError) as revert_exc:
                message = (f"{moved[0]['action']} of {moved[0]['version']} failed after the pointer moved ({what}), "
                           f"and production could not be moved back: {revert_exc}")
                if not isinstance(exc, Exception):
                    LOG.error("%s", message)
                    raise
                raise RevertFailed(message) from exc
            raise

    def _promotable(self, version: str) -> dict:
        """The merged metadata of ``version``; PromotionRefused, saying why, unless it may be promoted."""
        metadata = self.metadata(version, "testing")
        verdict = readiness(metadata)
        if not verdict.promotable:
            raise PromotionRefused(verdict.next_step.rstrip("."))
        return metadata

    def _copy_to_production(self, version: str) -> None:
        """Copy the version's files server-side, metadata.json last; a half-done copy is redone."""
        if self.storage.exists(f"production/{version}/{METADATA_FILE}"):
            return  # promoted before (and rolled back since): the copy is complete
        for leftover in self.storage.walk(f"production/{version}"):
            self.storage.delete(leftover.path)
        names = self.files(version, "testing")
        for name in sorted(names, key=lambda name: name == METADATA_FILE):
            self.storage.copy(f"testing/{version}/{name}", f"production/{version}/{name}")

    def _check_production_copy(self, version: str) -> None:
        """Refuse to point at a production copy that lacks a file of the testing version or holds
        one of another size (whatever removed or damaged it: a crash, a concurrent gc)."""
        def sizes(stage: str) -> dict[str, int]:
            prefix = f"{stage}/{version}/"
            return {info.path[len(prefix):]: info.size for info in self.storage.walk(f"{stage}/{version}")
                    if "/" not in info.path[len(prefix):] and info.path[len(prefix):] != CLAIM_FILE}

        wanted, found = sizes("testing"), sizes("production")
        wrong = sorted(name for name, size in wanted.items() if found.get(name) != size)
        if wrong:
            raise RegistryError(f"the production copy of {version} is incomplete ({', '.join(wrong)} missing or of "
                                "another size); production was not changed. Run `python -m registry gc --apply "
                                "--grace-s 0` only if no promotion runs, then promote again")

    def rollback(self, by: str | None = None, then: Callable[[dict], None] | None = None) -> dict:
        """Point production back at the version it served before the current one; ``then`` as in
        :meth:`promote`."""
        self.migrate(by)
        current, generation = self._read_pointer()
        if not current or not current.get("version"):
            raise RegistryError("nothing was promoted yet: there is no production version")
        target = self._restorable(current)
        if target is None or not target.get("version"):
            raise RegistryError(f"{current['version']} is the first production version: nothing to roll back to")
        moved: list[dict] = []
        with self._finish_or_undo(moved, then):
            moved.append(self._commit(self._restored("rollback", current, target, by or whoami()), current, generation))
        return moved[0]

    def revert(self, promoted: dict, reason: str, by: str | None = None) -> dict:
        """Undo the change that wrote the pointer ``promoted``, if the pointer is still that one.

        Used when the deploy after a promotion (or a rollback) fails: production goes back to
        exactly what it was, even to "nothing" after a first promotion.
        """
        current, generation = self._read_pointer()
        if not current or current.get("audit") != promoted.get("audit"):
            raise ConcurrentChange("the production pointer moved since this change; it was left as it is")
        target = self._audited_pointer(current.get("replaced_audit")) or {}
        pointer = self._restored("revert", current, target, by or whoami())
        pointer["reason"] = reason
        return self._commit(pointer, current, generation)

    def _restorable(self, pointer: dict) -> dict | None:
        """The pointer a rollback from ``pointer`` returns to."""
        return self._audited_pointer(pointer.get("restores"))

    def _audited_pointer(self, audit_name: str | None) -> dict | None:
        """The pointer as it was written with the audit record ``audit_name``."""
        if not audit_name:
            return None
        try:
            return json.loads(self.storage.read(f"{AUDIT_PREFIX}/{audit_name}.json"))["pointer"]
        except ObjectNotFound as exc:
            raise RegistryError(f"the audit record {audit_name} is missing: cannot restore that state") from exc

    def _restored(self, action: str, current: dict, target: dict, by: str) -> dict:
        pointer = self._pointer(action, target.get("version"), current, by, restores=target.get("restores"))
        pointer["previous"] = target.get("previous")
        return pointer

    @staticmethod
    def _pointer(action: str, version: str | None, replaced: dict | None, by: str, restores: str | None) -> dict:
        """A new pointer; it carries its own audit record's name so the two can never disagree."""
        return {
            "version": version,
            "previous": replaced.get("version") if replaced else None,
            "promoted_at": utc_now(),
            "promoted_by": by,
            "action": action,
            "replaced": replaced.get("version") if replaced else None,
            "audit": record_name(),
            "replaced_audit": replaced.get("audit") if replaced else None,
            "restores": restores,
        }

    def _commit(self, pointer: dict, replaced: dict | None, generation: str | None, held=None) -> dict:
        """Move the pointer from ``replaced`` (read at ``generation``) by compare-and-swap, then
        write its audit record.

        The audit record of the pointer being replaced is ensured first, so a crash between a
        pointer write and its audit record is repaired by the next change (or `gc`). Under a lease
        (``held``), the lease is checked right before the swap, and the swap's retries end before
        the lease's safety margin does.
        """
        self._ensure_audit(replaced)
        deadline_s = None
        if held is not None:
            held.check()
            deadline_s = held.remaining_s()
        try:
            if generation is None:
                self.storage.create(POINTER_FILE, _json(pointer), deadline_s=deadline_s)
            else:
                self.storage.replace(POINTER_FILE, _json(pointer), generation, deadline_s=deadline_s)
        except (AlreadyExists, GenerationMismatch) as exc:
            raise ConcurrentChange(
                f"the production pointer changed while this {pointer['action']} ran (another promotion or "
                "rollback won); nothing was changed: run the command again"
            ) from exc
        try:
            self._ensure_audit(pointer)
        except StorageError as exc:
            # The pointer has moved: this must not fail the change. The next change or gc repairs it.
            LOG.warning("warning: %s of %s is done, but its audit record could not be written yet "
                        "(the next change or `registry gc` writes it): %s", pointer["action"], pointer["version"], exc)
        return pointer

    @staticmethod
    def _audit_record(pointer: dict) -> dict:
        record = {
            "action": pointer["action"], "version": pointer["version"], "replaced": pointer["replaced"],
            "at": pointer["promoted_at"], "by": pointer["promoted_by"], "pointer": pointer,
        }
        if pointer.get("reason"):
            record["reason"] = pointer["reason"]
        return record

    def _ensure_audit(self, pointer: dict | None) -> None:
        if not pointer or not pointer.get("audit"):
            return
        try:
            self.storage.create(f"{AUDIT_PREFIX}/{pointer['audit']}.json", _json(self._audit_record(pointer)))
        except AlreadyExists:
            pass

    def garbage(self, grace_s: float = DEFAULT_GC_GRACE_S, prefixes: list[str] | None = None) -> list[dict]:
        """What crashes left behind: version folders without metadata.json, untouched for ``grace_s``
        (all of them, or only those of ``prefixes``, ``stage/version``).

        In testing that is a registration that never finished; in production a promotion's
        half-done copy. Newer ones may still be in progress and are left alone.
        """
        found, now = [], time.time()
        folders = prefixes or [f"{stage}/{name}" for stage in STAGES for name in self.storage.list(stage)[1]]
        for prefix in folders:
            stage, name = prefix.split("/", 1)
            if not VERSION_PATTERN.match(name) or self.storage.exists(f"{stage}/{name}/{METADATA_FILE}"):
                continue
            objects = self.storage.walk(f"{stage}/{name}")
            if not objects:
                continue
            age = now - max(info.updated for info in objects)
            if age >= grace_s:
                what = "unfinished registration" if stage == "testing" else "half-done promotion copy"
                found.append({"prefix": f"{stage}/{name}", "reason": what, "objects": len(objects),
                              "age_s": round(age, 1), "paths": [info.path for info in objects]})
        return found

    def collect_garbage(self, grace_s: float = DEFAULT_GC_GRACE_S) -> list[dict]:
        """Delete what :meth:`garbage` finds; repair a missing audit record of the pointer.

        Each folder is deleted under its version's lease (the one promotion and registration of
        test runs take) and only if it is still garbage then: a promotion that redid the copy
        meanwhile keeps it. A folder whose lease is busy is left for the next run.
        """
        self._ensure_audit(self._read_pointer()[0])
        deleted = []
        for item in self.garbage(grace_s):
            version = item["prefix"].split("/", 1)[1]
            try:
                with lease(self.storage, f"version-{version}", ttl_s=self.lease_ttl_s, wait_s=5) as held:
                    still = self.garbage(grace_s, [item["prefix"]])
                    for again in still:
                        for path in again["paths"]:
                            held.check()
                            self.storage.delete(path)
                    deleted.extend(still)
            except LeaseBusy:
                LOG.warning("warning: %s is in use (its lease is held); left for the next gc", item["prefix"])
        return deleted


__all__ = ["Registry", "RegistryError", "VersionNotFound", "PromotionRefused", "ConcurrentChange", "RevertFailed",
           "StorageError", "STAGES", "METADATA_FILE", "MODEL_FILE", "KERAS_FILE", "utc_now", "whoami",
           "tests_passed"]

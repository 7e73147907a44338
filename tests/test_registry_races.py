"""Concurrent writers and crashes, on both backends (a local folder and fake-gcs-server): several
processes promote and record test runs at once; processes killed mid-registration and mid-promotion.

Afterwards the registry must say only true things: the pointer names a complete version, the audit
matches what happened, every loser got one clear error, no test run is lost, and what a crash left
behind is invisible and found by `gc`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from api_helpers import build_onnx_model, model_metadata, register_model
from helpers import REPO_ROOT, clean_env

from registry.store import Registry

WORKER = str(REPO_ROOT / "tests" / "registry_worker.py")


@pytest.fixture
def registry(storage_uri) -> Registry:
    return Registry(storage_uri)


def distinct_version(registry: Registry, index: int) -> str:
    model = build_onnx_model(biases=(-5.0, 0.0, 5.0, -2.0 + index / 10))
    return register_model(registry, model, model_metadata(model))


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=clean_env(PROMOTED_BY="racer"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=240), *p.communicate()) for p in processes]


def test_concurrent_promotions_leave_a_true_pointer_and_a_matching_audit(registry):
    versions = [distinct_version(registry, i) for i in range(4)]
    # Each version promoted by two processes at once: eight promoters racing.
    racers = [start("-m", "registry", "promote", version, "--registry", registry.uri)
              for version in versions for _ in range(2)]
    results = finish(racers)
    winners = [versions[i // 2] for i, (code, _, _) in enumerate(results) if code == 0]
    for code, _out, err in results:
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("Error: "), err
            assert "Traceback" not in err
            assert any(why in lines[0] for why in ("already the production version", "changed while",
                                                   "locked by")), lines[0]
    assert winners, [r[2] for r in results]
    records = [r for r in registry.audit() if r["action"] == "promote"]
    assert sorted(r["version"] for r in records) == sorted(winners)
    # The audit is one unbroken chain, and its end is the pointer.
    assert records[0]["replaced"] is None
    for before, after in zip(records, records[1:]):
        assert after["replaced"] == before["version"]
    current = registry.current()
    assert current["version"] == records[-1]["version"]
    # The version production names is complete: every file, byte for byte.
    for name in registry.files(current["version"], "testing"):
        assert registry.read_file(current["version"], name, "production") == \
            registry.read_file(current["version"], name, "testing")


def test_concurrent_test_runs_from_several_processes_are_all_kept(registry):
    version = distinct_version(registry, 0)
    registry.promote(version, by="owner")  # a version in both stages: every run lands in both
    recorders = [start(WORKER, registry.uri, "record", version, "5", str(i)) for i in range(4)]
    results = finish(recorders)
    assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code != 0]
    for stage in ("testing", "production"):
        runs = registry.metadata(version, stage)["tests"]
        assert sorted((run.get("by"), run["at"]) for run in runs if run.get("by")) == sorted(
            (f"worker-{i}", f"run-{n}") for i in range(4) for n in range(5))


def kill_when_hanging(process: subprocess.Popen) -> str:
    """Read the worker's output until it says it hangs mid-operation, then kill it (SIGKILL)."""
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.strip() == "HANGING":
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert lines[-1:] == ["HANGING"], (lines, process.stderr.read())
    return lines[0]


def test_a_registration_killed_mid_upload_is_invisible_and_gc_removes_it(registry):
    finished = distinct_version(registry, 0)
    crashed = kill_when_hanging(start(WORKER, registry.uri, "register-and-hang"))
    assert registry.storage.exists(f"testing/{crashed}/model.onnx")  # it did get half way
    assert registry.versions("testing") == [finished]
    assert registry.newest_tested() == finished

    assert registry.garbage(grace_s=3600) == []  # it might still be running: left alone
    listed = subprocess.run([sys.executable, "-m", "registry", "gc", "--grace-s", "0", "--registry", registry.uri],
                            cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"would delete (dry run; --apply deletes): testing/{crashed} (unfinished registration" in listed.stdout
    assert registry.storage.exists(f"testing/{crashed}/model.onnx")
    applied = subprocess.run([sys.executable, "-m", "registry", "gc", "--apply", "--grace-s", "0", "--json",
                              "--registry", registry.uri], cwd=REPO_ROOT, env=clean_env(), capture_output=True,
                             text=True, timeout=60)
    assert [item["prefix"] for item in json.loads(applied.stdout)] == [f"testing/{crashed}"]
    assert registry.storage.walk(f"testing/{crashed}") == []
    assert registry.versions("testing") == [finished]
    assert registry.claim_version() > crashed  # the number is never reused


def test_a_promotion_killed_mid_copy_changes_nothing_and_is_redone(registry):
    first, second = distinct_version(registry, 0), distinct_version(registry, 1)
    registry.promote(first, by="owner")
    kill_when_hanging(start(WORKER, registry.uri, "promote-and-hang", second))
    assert registry.current()["version"] == first
    assert registry.versions("production") == [first]
    (found,) = registry.garbage(grace_s=0)
    assert found["prefix"] == f"production/{second}" and found["reason"] == "half-done promotion copy"
    # Once the dead promoter's lease expires, a new promotion replaces the half-done copy.
    registry.promote(second, by="owner")
    assert registry.current()["version"] == second
    assert registry.garbage(grace_s=0) == []


def test_an_audit_record_lost_in_a_crash_after_the_pointer_moved_is_restored(registry):
    first, second = distinct_version(registry, 0), distinct_version(registry, 1)
    registry.promote(first, by="owner")
    pointer = registry.promote(second, by="owner")
    registry.storage.delete(f"audit/{pointer['audit']}.json")  # as if the process died right after the swap
    records = registry.audit()
    assert [(r["action"], r["version"]) for r in records] == [("promote", first), ("promote", second)]
    assert registry.rollback(by="owner")["version"] == first

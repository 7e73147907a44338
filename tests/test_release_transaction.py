"""Once the production pointer moves, the promotion finishes or is undone: on both backends a storage
error after the swap is a warning and the deploy still runs; any exception or signal after the swap
moves the pointer back and propagates; on GKE a failed rollout puts the Deployment back."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time

import pytest
from api_helpers import register_model
from fixtures.fake_kubectl import install
from helpers import REPO_ROOT, clean_env
from test_tekton_deploy_gke import deployment

from registry.store import Registry
from storage import StorageError, open_storage


class FaultyStorage:
    """A real backend whose writes matching ``fails(operation, path, data)`` raise a StorageError,
    as a 503 past the client's retry deadline would."""

    def __init__(self, inner, fails):
        self.inner, self.fails, self.refused = inner, fails, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _check(self, operation: str, path: str, data: bytes = b"") -> None:
        if self.fails(operation, path, data):
            self.refused.append((operation, path))
            raise StorageError(f"cannot write {path}: ServiceUnavailable: 503 (retry deadline exceeded)")

    def create(self, path, data, **options):
        self._check("create", path, data)
        return self.inner.create(path, data, **options)

    def replace(self, path, data, generation, **options):
        self._check("replace", path, data)
        return self.inner.replace(path, data, generation, **options)


def after_the_swap(operation: str, path: str, data: bytes) -> bool:
    """The lease release and the new pointer's audit record: the writes that follow the swap."""
    return (operation == "replace" and path.startswith("locks/") and b'"released"' in data) or \
        (operation == "create" and path.startswith("audit/"))


def test_storage_errors_after_the_swap_are_warnings_and_the_deploy_still_runs(storage_uri, caplog):
    version = register_model(Registry(storage_uri))
    faulty = FaultyStorage(open_storage(storage_uri), after_the_swap)
    deployed = []
    with caplog.at_level(logging.WARNING):
        pointer = Registry(storage_uri, storage=faulty).promote(version, by="owner", then=deployed.append)
    assert deployed == [pointer] and pointer["version"] == version
    assert {operation for operation, _ in faulty.refused} == {"replace", "create"}
    assert Registry(storage_uri).production_version() == version
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("could not be released" in w for w in warnings) and any("audit record" in w for w in warnings)
    # The missing audit record is written by the next change (or gc), from the pointer itself.
    healthy = Registry(storage_uri)
    healthy.collect_garbage()
    assert [(r["action"], r["version"]) for r in healthy.audit()] == [("promote", version)]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt("Ctrl-C"), KeyError("matchLabels"),
                                          json.JSONDecodeError("Expecting value", "", 0)])
def test_any_exception_or_signal_after_the_swap_moves_the_pointer_back(storage_uri, interruption):
    registry = Registry(storage_uri)
    first, second = register_model(registry), register_model(registry)
    registry.promote(first, by="owner")

    def deploy(pointer):
        assert registry.production_version() == pointer["version"] == second
        raise interruption

    with pytest.raises(type(interruption)):
        registry.promote(second, by="owner", then=deploy)
    assert registry.production_version() == first
    assert [(r["action"], r["version"]) for r in registry.audit()] == [
        ("promote", first), ("promote", second), ("revert", first)]
    registry.promote(second, by="owner")

    def redeploy(pointer):
        assert pointer["action"] == "rollback" and registry.production_version() == first
        raise interruption

    with pytest.raises(type(interruption)):
        registry.rollback(by="owner", then=redeploy)
    assert registry.production_version() == second


def gke_release(tmp_path, state: dict, registry_uri: str):
    """`python -m scripts.release promote --deploy gke` against the kubectl stand-in, started."""
    state_file, env = install(tmp_path, state, clean_env(
        REGISTRY_URI=registry_uri, GKE_NAMESPACE="xray-mlops", API_START_TIMEOUT_S="20", PROMOTED_BY="owner"))
    process = subprocess.Popen([sys.executable, "-m", "scripts.release", "promote", "--deploy", "gke"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, lambda: json.loads(state_file.read_text())


def test_sigterm_during_the_gke_rollout_restores_the_deployment_and_the_pointer(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    first, second = register_model(registry), register_model(registry)
    registry.promote(first, by="owner")
    before = deployment(2)
    process, state = gke_release(tmp_path, {"deployment": before, "pods": {}, "serves_after_patch": second,
                                            "rollout_sleep_s": 60}, registry.uri)
    deadline = time.monotonic() + 60
    while not any("rollout" in call for call in state().get("calls", [])):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # what Tekton sends when the task times out
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert f"the deploy of {second} failed, so production was moved back to {first}" in err
    assert "Traceback" not in err
    assert registry.production_version() == first
    assert state()["deployment"] == before  # template and replica count as they were


def test_a_deployment_kubectl_cannot_describe_fails_the_deploy_and_moves_the_pointer_back(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    register_model(registry)
    broken = deployment(1)
    del broken["spec"]["selector"]
    process, state = gke_release(tmp_path, {"deployment": broken, "pods": {}}, registry.uri)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "moved back to nothing" in err and "matchLabels" in err and "Traceback" not in err
    assert registry.current() is None
    assert "patches" not in state()



def gke_params(registry_uri: str) -> dict:
    from core.config import load_params

    return load_params({"registry_uri": registry_uri}, environ={})


@pytest.mark.parametrize("failure", [{"rollout_error": 'error: deployment "xray-api" exceeded its progress deadline'},
                                     {"serves_after_patch": "v0001-20261127T100000Z"}])
def test_a_failed_rollout_puts_back_the_template_and_replica_count(tmp_path, cluster, failure):
    from cluster.deploy_gke import RolloutError, rollout

    registry = Registry(str(tmp_path / "registry"))
    version = registry.register({"model.onnx": b"onnx"}, {"kind": "train", "images": {"api": "api@sha256:" + "ab" * 32}})
    before = deployment(0)
    state = cluster({"deployment": before, "pods": {}, "serves_after_patch": version, **failure})
    with pytest.raises(RolloutError, match="was restored to the template it had before"):
        rollout(version, gke_params(registry.uri), namespace="xray-mlops", timeout_s=0.1)
    recorded = state()
    assert recorded["deployment"] == before  # the old image, no version annotation, 0 replicas
    assert len(recorded["patches"]) == 2


@pytest.mark.parametrize(("replicas", "deadline", "expected"), [(1, None, "30s"), (3, None, "90s"), (2, 600, "600s")])
def test_the_rollout_wait_grows_with_the_replicas_and_the_progress_deadline(tmp_path, cluster, replicas, deadline,
                                                                            expected):
    from cluster.deploy_gke import rollout

    registry = Registry(str(tmp_path / "registry"))
    version = registry.register({"model.onnx": b"onnx"}, {"kind": "train"})
    current = deployment(replicas)
    if deadline:
        current["spec"]["progressDeadlineSeconds"] = deadline
    state = cluster({"deployment": current, "pods": {}, "serves_after_patch": version})
    rollout(version, gke_params(registry.uri), namespace="xray-mlops", timeout_s=30)
    waits = [call[-1] for call in state()["calls"] if "status" in call]
    assert waits == [f"--timeout={expected}"]


class ReadOnlyStorage:
    """A real backend seen through a read-only principal: every write is refused (403)."""

    def __init__(self, inner):
        self.inner, self.attempts = inner, []

    def __getattr__(self, name):
        if name in ("create", "replace", "write", "copy", "delete"):
            def refused(path, *args):
                self.attempts.append((name, path))
                raise StorageError(f"cannot write {path}: permission denied (403)")
            return refused
        return getattr(self.inner, name)


def test_read_commands_never_write_and_audit_shows_a_record_a_crash_left_unwritten(storage_uri):
    registry = Registry(storage_uri)
    version = register_model(registry)
    pointer = registry.promote(version, by="owner")
    registry.storage.delete(f"audit/{pointer['audit']}.json")  # a crash right after the swap
    reader = Registry(storage_uri, storage=ReadOnlyStorage(open_storage(storage_uri)))
    assert [(r["action"], r["version"], r["by"]) for r in reader.audit()] == [("promote", version, "owner")]
    assert reader.versions("testing") == [version] and reader.current()["version"] == version
    assert reader.metadata(version)["tests"] and reader.newest_tested() == version
    assert reader.garbage(0) == [] and reader.files(version) == ["metadata.json", "model.onnx"]
    assert reader.storage.attempts == []

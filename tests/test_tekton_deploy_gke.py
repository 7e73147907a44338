"""Rolling the API Deployment on GKE (cluster/deploy_gke.py), against a kubectl stand-in.

The registry is real (local disk); kubectl is tests/fixtures/fake_kubectl.py, which answers as a
cluster would and records the calls, so the tests pin down what is asked of the cluster.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fixtures.fake_kubectl import install
from helpers import REPO_ROOT, clean_env

from cluster.deploy_gke import MONITOR_CRONJOB, VERSION_ANNOTATION, KubectlError, RolloutError, kubectl, rollout
from core.config import load_params
from registry.store import Registry

API_IMAGE = "europe-west4-docker.pkg.dev/p/xray-mlops/api:3f2a9c1@sha256:" + "ab" * 32
TRAINER_IMAGE = "europe-west4-docker.pkg.dev/p/xray-mlops/trainer:3f2a9c1@sha256:" + "cd" * 32


def shipped_cronjob() -> dict:
    """The monitoring CronJob as tekton/deploy/xray-monitor.yaml ships it (suspended, placeholder image)."""
    import yaml

    documents = yaml.safe_load_all((REPO_ROOT / "tekton" / "deploy" / "xray-monitor.yaml").read_text())
    return next(d for d in documents if d["kind"] == "CronJob" and d["metadata"]["name"] == MONITOR_CRONJOB)


def deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "xray-api", "namespace": "xray-mlops"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": "xray-api"}},
                     "template": {"spec": {"containers": [{"name": "api", "image": "xray-mlops-api:set-by-promotion"}]}}}}


@pytest.fixture
def registry_uri(tmp_path) -> str:
    return str(tmp_path / "registry")


def register(registry_uri: str, images: dict | None) -> str:
    metadata = {"kind": "train", "classes": ["COVID", "Normal"], **({"images": images} if images else {})}
    return Registry(registry_uri).register({"model.onnx": b"onnx"}, metadata)



def params(registry_uri: str) -> dict:
    return load_params({"registry_uri": registry_uri}, environ={})


def test_first_promotion_sets_the_accepted_image_records_the_version_and_scales_from_zero(registry_uri, cluster):
    version = register(registry_uri, {"api": API_IMAGE, "trainer": "trainer@sha256:" + "cd" * 32})
    state = cluster({"deployment": deployment(0), "pods": {}, "serves_after_patch": version})
    answers = rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=30).answers
    assert [(a.pod, a.model_version) for a in answers] == [("xray-api-new-1", version)]
    recorded = state()
    assert recorded["patches"] == [{"spec": {"replicas": 1, "template": {
        "metadata": {"annotations": {VERSION_ANNOTATION: version}},
        "spec": {"containers": [{"name": "api", "image": API_IMAGE}]}}}}]
    verbs = [call[2:4] for call in recorded["calls"] if call[:2] == ["--namespace", "xray-mlops"]]
    assert verbs.index(["patch", "deployment"]) < verbs.index(["rollout", "status"])


def test_a_version_without_a_recorded_image_keeps_the_running_image_and_replica_count(registry_uri, cluster):
    version = register(registry_uri, None)
    state = cluster({"deployment": deployment(3), "pods": {}, "serves_after_patch": version})
    rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=30)
    assert state()["patches"] == [{"spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: version}}}}}]


def test_a_failed_rollout_is_a_rollout_error_with_kubectls_reason(registry_uri, cluster):
    version = register(registry_uri, {"api": API_IMAGE})
    cluster({"deployment": deployment(1), "pods": {}, "serves_after_patch": version,
             "rollout_error": 'error: deployment "xray-api" exceeded its progress deadline'})
    with pytest.raises(RolloutError, match="exceeded its progress deadline"):
        rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=30)


def test_pods_serving_another_version_fail_the_rollout_and_are_named(registry_uri, cluster):
    version = register(registry_uri, {"api": API_IMAGE})
    cluster({"deployment": deployment(1), "pods": {}, "serves_after_patch": "v0001-20261127T100000Z"})
    with pytest.raises(RolloutError, match=r"xray-api-new-1: v0001-20261127T100000Z"):
        rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=0.1)


def test_a_version_missing_from_the_registry_is_refused_before_touching_the_cluster(registry_uri, cluster):
    state = cluster({"deployment": deployment(1), "pods": {}})
    with pytest.raises(RolloutError, match="cannot read v0042"):
        rollout("v0042-20261127T100000Z", params(registry_uri), namespace="xray-mlops", timeout_s=1)
    assert "calls" not in state()


def test_missing_kubectl_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECTL", str(tmp_path / "no-kubectl"))
    with pytest.raises(KubectlError, match="not found: install kubectl"):
        kubectl("version")


def test_the_command_rolls_out_and_names_the_pods(registry_uri, tmp_path):
    version = register(registry_uri, {"api": API_IMAGE})
    _, env = install(tmp_path, {"deployment": deployment(0), "pods": {}, "serves_after_patch": version},
                     clean_env(REGISTRY_URI=registry_uri, GKE_NAMESPACE="xray-mlops"))
    result = subprocess.run([sys.executable, "-m", "scripts.deploy_gke", version, "--timeout", "30"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"xray-api: 1 pod(s) serve {version}: xray-api-new-1"
    assert "records no images.trainer" in result.stdout.splitlines()[1]  # the monitoring CronJob is left alone


def test_the_monitoring_cronjob_follows_production_onto_its_trainer_image_and_is_resumed(registry_uri, cluster):
    first = register(registry_uri, {"api": API_IMAGE, "trainer": TRAINER_IMAGE})
    second = register(registry_uri, {"api": API_IMAGE, "trainer": TRAINER_IMAGE.replace("cd", "ef")})
    state = cluster({"deployment": deployment(0), "pods": {}, "serves_after_patch": first, "cronjob": shipped_cronjob()})
    assert shipped_cronjob()["spec"]["suspend"] is True
    done = rollout(first, params(registry_uri), namespace="xray-mlops", timeout_s=30)
    assert done.monitor == f"monitoring: cronjob/{MONITOR_CRONJOB} runs {TRAINER_IMAGE} for {first} (resumed)"
    cronjob = state()["cronjob"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    assert cronjob["spec"]["suspend"] is False
    [container] = pod["spec"]["containers"]  # merged into the shipped container by name, not added beside it
    assert container["image"] == TRAINER_IMAGE and container["command"] == ["make", "monitor"]
    assert pod["metadata"]["annotations"][VERSION_ANNOTATION] == first
    with_second = state()
    with_second["serves_after_patch"] = second
    cluster(with_second)
    rollout(second, params(registry_uri), namespace="xray-mlops", timeout_s=30)  # a later promotion, or a rollback
    [container] = state()["cronjob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == TRAINER_IMAGE.replace("cd", "ef")


def test_a_version_without_a_trainer_image_leaves_the_monitoring_cronjob_as_it_is(registry_uri, cluster):
    version = register(registry_uri, {"api": API_IMAGE})
    state = cluster({"deployment": deployment(1), "pods": {}, "serves_after_patch": version, "cronjob": shipped_cronjob()})
    done = rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=30)
    assert "left as it is" in done.monitor and "records no images.trainer" in done.monitor
    assert state()["cronjob"] == shipped_cronjob() and "cronjob_patches" not in state()


def test_a_monitoring_cronjob_that_cannot_be_patched_is_a_warning_not_an_undone_promotion(registry_uri, cluster):
    version = register(registry_uri, {"api": API_IMAGE, "trainer": TRAINER_IMAGE})
    state = cluster({"deployment": deployment(1), "pods": {}, "serves_after_patch": version, "cronjob": shipped_cronjob(),
                     "cronjob_error": 'Error from server (Forbidden): cronjobs.batch "xray-monitor" is forbidden'})
    done = rollout(version, params(registry_uri), namespace="xray-mlops", timeout_s=30)
    assert [a.model_version for a in done.answers] == [version]
    assert done.monitor.startswith(f"WARNING: monitoring does not follow {version}") and "Forbidden" in done.monitor
    assert f"cronjob/{MONITOR_CRONJOB} monitor={TRAINER_IMAGE}" in done.monitor  # the command to run by hand
    assert len(state()["patches"]) == 1  # the Deployment was not restored

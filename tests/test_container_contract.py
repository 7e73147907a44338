"""The container contract: every Task step that runs a make target, run as its image runs it.

Each step's environment comes from the manifests only (tests/container.py): model/Dockerfile's
ENV, WORKDIR and USER, the xray-mlops-config ConfigMap that kustomize makes of tekton/config.env,
the Task's stepTemplate and the step's env. The repository is a root-owned /app, the step's
volumes are its only writable folders (the root is read-only where the step says so), and it runs
as the image's unprivileged user against fake-gcs-server. The test's only changes to config.env:
DATASET_URI and REGISTRY_URI point at a fake bucket, and SMTP_HOST is empty (emails go to the
outbox, like the cluster's SMTP server would take them).

Each step must get past its first I/O, and stop soon after so that no step trains for real:

- validate-data: mirrors the gs:// dataset under CACHE_DIR, writes its report to RUN_DIR and files
  in the registry that its run read this dataset version.
- train: mirrors a dataset of 3 images per class, then stops at its own data check.
- retrain: lists the empty registry, emails "no model to retrain" to the outbox, and the step
  script turns that outcome into its reported-failure result.
- acceptance-test, notify, promote: read a version the registry does not have and say so.
- model-test: lists the empty registry and says there is no model to test.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import new_bucket
from container import (
    ERROR_TRACES,
    Step,
    copy_image_files,
    read_dockerfile,
    resolve_step,
    run_step,
)
from helpers import REPO_ROOT, TINY_DATASET, clean_env, free_port, run_module

from registry.store import Registry

MAKE_TARGET = re.compile(r"\bmake\s+([A-Za-z0-9][A-Za-z0-9_-]*)")
MISSING_VERSION = "v0999-20260101T000000Z"
RUN_NAME = "retraining-x7k2p"
PARAMS = {"trainer-image": "europe-west4-docker.pkg.dev/p/xray-mlops/trainer:c@sha256:" + "1" * 64,
          "api-image": "europe-west4-docker.pkg.dev/p/xray-mlops/api:c@sha256:" + "2" * 64,
          "git-commit": "3" * 40, "model-version": MISSING_VERSION, "promoted-by": "po@example.com"}

pytestmark = [
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
    pytest.mark.skipif(shutil.which("unshare") is None or subprocess.run(["id", "-u"], capture_output=True, text=True,
                                                                          check=False).stdout.strip() != "0",
                       reason="needs root and unshare (a mount namespace per step)"),
]


def make_steps(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """Every step of every Task whose script runs a make target, by task name."""
    steps = {}
    for doc in docs:
        if doc["kind"] == "Task":
            for step in doc["spec"]["steps"]:
                if MAKE_TARGET.search(step.get("script", "")):
                    steps[doc["metadata"]["name"]] = (doc, step)
    return steps


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(REPO_ROOT / "tekton")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def sandbox():
    """A folder outside pytest's private tmp, where each step's root is built."""
    work = Path(tempfile.mkdtemp(prefix="contract-"))
    work.chmod(0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def dockerfile_of(docs: list[dict], image: str) -> str:
    """The Dockerfile of a step's image: the trainer the run built, or the prebuilt cluster image."""
    [config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xray-mlops-config"]
    paths = {"$(params.trainer-image)": "model/Dockerfile", config["data"]["CLUSTER_IMAGE"]: "cluster/Dockerfile"}
    return (REPO_ROOT / paths[image]).read_text()


@pytest.fixture(scope="module")
def cloud(fake_gcs, tiny_dataset, tmp_path_factory):
    """A bucket with a dataset that passes validation (``ok``), one too small to train on (``small``)
    and an empty registry."""
    bucket = new_bucket("contract")
    small = tmp_path_factory.mktemp("small") / "dataset"
    for image in sorted(tiny_dataset.rglob("*.png")):
        relative = image.relative_to(tiny_dataset)
        if int(re.search(r"-(\d+)\.png$", image.name).group(1)) <= 3:
            (small / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, small / relative)
    for name, source in (("ok", tiny_dataset), ("small", small)):
        pushed = run_module("scripts.data_push", "--src", str(source), "--to", f"gs://{bucket}/datasets/{name}",
                            env=clean_env(CACHE_DIR=str(tmp_path_factory.mktemp("push-cache")), **TINY_DATASET))
        assert pushed.returncode == 0, pushed.stderr
    return {"bucket": bucket, "emulator": fake_gcs.url}


def config_map(docs: list[dict], cloud: dict, dataset: str) -> dict[str, str]:
    [config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xray-mlops-config"]
    return {**config["data"], "DATASET_URI": f"gs://{cloud['bucket']}/datasets/{dataset}",
            "REGISTRY_URI": f"gs://{cloud['bucket']}/registry", "SMTP_HOST": ""}


def run_task_step(docs, task_name, cloud, sandbox, dataset="ok", dockerfile=None, params=None):
    task, step = {**make_steps(docs), **cluster_steps(docs)}[task_name]
    dockerfile = dockerfile or dockerfile_of(docs, step["image"])
    resolved = resolve_step(task, step, read_dockerfile(dockerfile), config_map(docs, cloud, dataset), params or PARAMS,
                            labels={"tekton.dev/pipelineRun": RUN_NAME})
    app = sandbox / f"app-{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    if not app.exists():
        copy_image_files(dockerfile, app)
    work = Path(tempfile.mkdtemp(prefix=f"{task_name}-", dir=sandbox))
    return resolved, run_step(resolved, app, work, {"STORAGE_EMULATOR_HOST": cloud["emulator"]})


def cluster_steps(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """The steps that run in the prebuilt cluster image."""
    return {doc["metadata"]["name"]: (doc, step) for doc in docs if doc["kind"] == "Task"
            for step in doc["spec"]["steps"] if step["image"] == dockerfile_image(docs)}


def dockerfile_image(docs: list[dict]) -> str:
    [config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xray-mlops-config"]
    return config["data"]["CLUSTER_IMAGE"]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_every_make_step_runs_in_the_trainer_image_as_its_unprivileged_user(rendered):
    image = read_dockerfile((REPO_ROOT / "model" / "Dockerfile").read_text())
    assert image.user == "10001" and image.workdir == "/app"
    steps = make_steps(rendered)
    assert set(steps) == {"validate-data", "train", "retrain", "acceptance-test", "model-test", "notify", "promote"}
    for task, step in steps.values():
        assert step["image"] == "$(params.trainer-image)", task["metadata"]["name"]


def test_validate_data_mirrors_the_dataset_and_writes_its_report(rendered, cloud, sandbox):
    step, run = run_task_step(rendered, "validate-data", cloud, sandbox)
    assert run.returncode == 0, run.output[-3000:]
    cache = run.volumes[step.env["CACHE_DIR"]]
    assert len([p for p in files_under(cache) if p.suffix == ".png"]) == 120
    report = json.loads((run.volumes["/tmp"] / "run" / "data-validation.json").read_text())
    record = Registry(f"gs://{cloud['bucket']}/registry").index_get(
        "dataset-runs", report["dataset"]["manifest_sha256"])
    assert record["run"] == RUN_NAME  # what `make status` reads


def test_train_mirrors_the_dataset_then_stops_at_its_data_check(rendered, cloud, sandbox):
    step, run = run_task_step(rendered, "train", cloud, sandbox, dataset="small")
    assert run.returncode == 2, run.output[-3000:]  # make's status for a failed recipe
    assert "data validation failed" in run.output, run.output[-3000:]
    assert not any(trace in run.output for trace in ERROR_TRACES), run.output[-3000:]
    assert len([p for p in files_under(run.volumes[step.env["CACHE_DIR"]]) if p.suffix == ".png"]) == 12


def test_retrain_without_a_model_emails_the_outbox_and_reports_the_outcome(rendered, cloud, sandbox):
    _, run = run_task_step(rendered, "retrain", cloud, sandbox, dataset="small")
    assert run.returncode == 0, run.output[-3000:]
    assert run.results == {"reported-failure": "no-model", "model-version": ""}
    [email] = files_under(run.volumes["/tmp"] / "outbox")
    assert email.suffix == ".eml"


REGISTRY_ANSWERS = {
    "acceptance-test": f"version '{MISSING_VERSION}' is not in the registry at gs://",
    "notify": f"version '{MISSING_VERSION}' is not in the registry at gs://",
    "promote": f"version '{MISSING_VERSION}' is not in testing at gs://",
    "model-test": "the registry has no model to test",
}


@pytest.mark.parametrize("task_name", sorted(REGISTRY_ANSWERS))
def test_steps_that_start_from_the_registry_reach_it(rendered, cloud, sandbox, task_name):
    _, run = run_task_step(rendered, task_name, cloud, sandbox)
    assert run.returncode == 2, run.output[-3000:]
    assert f"Error: {REGISTRY_ANSWERS[task_name]}" in run.output, run.output[-3000:]
    assert not any(trace in run.output for trace in ERROR_TRACES), run.output[-3000:]


def test_an_image_that_leaves_the_cache_in_root_owned_app_fails_the_contract(rendered, cloud, sandbox):
    """The bug this test exists for: without CACHE_DIR the mirror goes to /app/.cache."""
    dockerfile = (REPO_ROOT / "model" / "Dockerfile").read_text()
    mutant = dockerfile.replace("    CACHE_DIR=/cache \\\n", "")
    assert mutant != dockerfile
    _, run = run_task_step(rendered, "validate-data", cloud, sandbox, dockerfile=mutant)
    assert run.returncode != 0
    assert "PermissionError: [Errno 13] Permission denied: '.cache'" in run.output, run.output[-3000:]


def test_a_step_without_its_tmp_volume_cannot_write_under_a_read_only_root(rendered, cloud, sandbox):
    docs = [dict(d) for d in rendered]
    [task] = [d for d in docs if d["kind"] == "Task" and d["metadata"]["name"] == "validate-data"]
    template = dict(task["spec"]["stepTemplate"])
    template["volumeMounts"] = [m for m in template["volumeMounts"] if m["mountPath"] != "/tmp"]
    docs[docs.index(task)] = {**task, "spec": {**task["spec"], "stepTemplate": template}}
    _, run = run_task_step(docs, "validate-data", cloud, sandbox)
    assert run.returncode != 0
    assert "Read-only file system" in run.output, run.output[-3000:]


def test_the_failure_email_goes_out_from_the_cluster_image_with_only_what_every_run_has(rendered, cloud, sandbox):
    assert set(cluster_steps(rendered)) == {"notify-failure", "cancel-superseded"}
    params = {"pipeline": "training", "pipeline-run": "training-x7k2p", "revision": "",
              "task-statuses": "cancel-superseded=Succeeded clone=Failed build-trainer=None"}
    _, run = run_task_step(rendered, "notify-failure", cloud, sandbox, params=params)
    assert run.returncode == 0, run.output[-3000:]
    [email] = files_under(run.volumes["/tmp"] / "outbox")
    assert "Subject: [xray-mlops] training run training-x7k2p failed: clone" in email.read_text()


def test_cancel_superseded_reaches_kubectl_from_the_cluster_image(rendered, cloud, sandbox):
    """No API server here: the step gets as far as kubectl asking for one (its first I/O)."""
    params = {"pipeline": "training", "pipeline-run": "training-x7k2p", "branch": "main"}
    _, run = run_task_step(rendered, "cancel-superseded", cloud, sandbox, params=params)
    assert run.returncode != 0
    assert "Error: `kubectl get pipelineruns --selector tekton.dev/pipeline=training -o json` failed: " \
           "The connection to the server localhost:8080 was refused" in run.output, run.output[-3000:]
    assert not any(trace in run.output for trace in (*ERROR_TRACES, "Traceback")), run.output[-3000:]


def test_a_cluster_image_missing_a_module_its_steps_import_fails_the_contract(rendered, cloud, sandbox):
    dockerfile = (REPO_ROOT / "cluster" / "Dockerfile").read_text()
    mutant = dockerfile.replace(" cluster/deploy_gke.py", "")
    assert mutant != dockerfile
    params = {"pipeline": "training", "pipeline-run": "training-x7k2p", "branch": "main"}
    _, run = run_task_step(rendered, "cancel-superseded", cloud, sandbox, dockerfile=mutant, params=params)
    assert "No module named 'cluster.deploy_gke'" in run.output, run.output[-3000:]


def test_the_pubsub_interceptor_serves_from_the_cluster_image_as_its_deployment_runs_it(rendered, cloud, sandbox):
    """Its command, its env from the ConfigMap, its user, a read-only root: it answers /live."""
    [deployment] = [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "xray-mlops-pubsub-auth"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    dockerfile = dockerfile_of(rendered, container["image"])
    image = read_dockerfile(dockerfile)
    config = config_map(rendered, cloud, "ok")
    env = {**image.env, **{e["name"]: config[e["valueFrom"]["configMapKeyRef"]["key"]] for e in container["env"]}}
    port = free_port()
    command = " ".join(container["command"]) + f" --host 127.0.0.1 --port {port}"
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/live', timeout=1)"
    script = (f"#!/bin/sh\n{command} & server=$!\n"
              f"for _ in $(seq 50); do python -c \"{probe}\" 2>/dev/null && echo LIVE && break; sleep 0.2; done\n"
              "kill $server\n")
    step = Step("pubsub-auth", "pubsub-auth", script, env, image.workdir, pod["securityContext"]["runAsUser"],
                container["securityContext"]["readOnlyRootFilesystem"], [])
    app = sandbox / f"app-{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    if not app.exists():
        copy_image_files(dockerfile, app)
    run = run_step(step, app, Path(tempfile.mkdtemp(prefix="pubsub-auth-", dir=sandbox)), {})
    assert "LIVE" in run.output, run.output[-3000:]
    assert f"checking Pub/Sub pushes of {config['PUBSUB_PUSH_GSA']} for audience {config['PUBSUB_AUDIENCE']}" in run.output

"""Which runs a newer push cancels (cluster/supersede.py), on PipelineRuns as kubectl lists them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fixtures.fake_kubectl import install
from helpers import REPO_ROOT, clean_env

from cluster.supersede import SupersedeError, is_running, superseded

RUNNING = {"type": "Succeeded", "status": "Unknown", "reason": "Running"}
SUCCEEDED = {"type": "Succeeded", "status": "True", "reason": "Succeeded"}
FAILED = {"type": "Succeeded", "status": "False", "reason": "Failed"}


def run(name, created, pipeline="training", branch="main", condition=RUNNING, spec_status=None):
    """A PipelineRun as `kubectl get pipelineruns -o json` shows it (fields the selection reads, and some more)."""
    spec = {"pipelineRef": {"name": pipeline},
            "params": [{"name": "git-url", "value": "https://github.com/my-org/xray-mlops.git"},
                       {"name": "revision", "value": "3f2a9c1d0b7e4a5f6c8d9e0f1a2b3c4d5e6f7a8b"},
                       {"name": "branch", "value": branch},
                       {"name": "image-repo", "value": "europe-west4-docker.pkg.dev/p/xray-mlops"}],
            "taskRunTemplate": {"serviceAccountName": "xray-pipeline"}}
    if spec_status:
        spec["status"] = spec_status
    return {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": "xray-mlops", "creationTimestamp": created,
                     "labels": {"tekton.dev/pipeline": pipeline, "app.kubernetes.io/part-of": "xray-mlops",
                                "triggers.tekton.dev/eventlistener": "xray-mlops"}},
        "spec": spec,
        "status": {"conditions": [condition] if condition else [], "startTime": created},
    }


def test_a_newer_run_cancels_the_older_running_run_on_its_branch():
    runs = [run("training-old", "2026-11-27T14:00:00Z"), run("training-new", "2026-11-27T14:05:00Z")]
    assert superseded(runs, "training-new", "main") == ["training-old"]


def test_an_older_run_never_cancels_a_newer_one():
    runs = [run("training-old", "2026-11-27T14:00:00Z"), run("training-new", "2026-11-27T14:05:00Z")]
    assert superseded(runs, "training-old", "main") == []


def test_every_older_running_run_is_cancelled_not_only_the_last():
    runs = [run("training-a", "2026-11-27T13:00:00Z"), run("training-b", "2026-11-27T13:30:00Z"),
            run("training-c", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-c", "main") == ["training-a", "training-b"]


def test_finished_runs_are_left_alone():
    runs = [run("training-ok", "2026-11-27T13:00:00Z", condition=SUCCEEDED),
            run("training-ko", "2026-11-27T13:10:00Z", condition=FAILED),
            run("training-new", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-new", "main") == []


def test_a_run_not_yet_reporting_a_condition_counts_as_running():
    runs = [run("training-queued", "2026-11-27T13:00:00Z", condition=None), run("training-new", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-new", "main") == ["training-queued"]


@pytest.mark.parametrize("spec_status", ["Cancelled", "CancelledRunFinally", "StoppedRunFinally"])
def test_runs_already_stopping_are_not_cancelled_again(spec_status):
    runs = [run("training-old", "2026-11-27T13:00:00Z", spec_status=spec_status), run("training-new", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-new", "main") == []


def test_a_pending_run_is_superseded_too():
    runs = [run("training-pending", "2026-11-27T13:00:00Z", condition=None, spec_status="PipelineRunPending"),
            run("training-new", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-new", "main") == ["training-pending"]


def test_runs_of_another_branch_or_another_pipeline_are_left_alone():
    runs = [run("training-feature", "2026-11-27T13:00:00Z", branch="feature/x"),
            run("retraining-main", "2026-11-27T13:00:00Z", pipeline="retraining"),
            run("training-manual", "2026-11-27T13:00:00Z", branch=None),
            run("training-new", "2026-11-27T14:00:00Z")]
    runs[2]["spec"]["params"] = [p for p in runs[2]["spec"]["params"] if p["name"] != "branch"]
    assert superseded(runs, "training-new", "main") == []


def test_runs_created_in_the_same_second_do_not_cancel_each_other():
    runs = [run("training-a", "2026-11-27T14:00:00Z"), run("training-b", "2026-11-27T14:00:00Z")]
    assert superseded(runs, "training-a", "main") == [] and superseded(runs, "training-b", "main") == []


def test_the_current_run_must_be_listed():
    with pytest.raises(SupersedeError, match="training-gone"):
        superseded([run("training-a", "2026-11-27T14:00:00Z")], "training-gone", "main")


def test_is_running_reads_the_succeeded_condition():
    assert is_running(run("r", "2026-11-27T14:00:00Z"))
    assert not is_running(run("r", "2026-11-27T14:00:00Z", condition=SUCCEEDED))


def fake_kubectl(tmp_path, state: dict):
    return install(tmp_path, state, clean_env())


def test_the_command_cancels_the_superseded_runs_through_kubectl(tmp_path):
    runs = [run("training-old", "2026-11-27T13:00:00Z"), run("training-done", "2026-11-27T13:10:00Z", condition=SUCCEEDED),
            run("training-new", "2026-11-27T14:00:00Z")]
    state_file, env = fake_kubectl(tmp_path, {"pipelineruns": runs})
    result = subprocess.run(
        [sys.executable, "-m", "scripts.supersede", "--pipeline", "training", "--run", "training-new",
         "--branch", "main", "--namespace", "xray-mlops"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cancelled training-old: superseded by training-new on main" in result.stdout
    state = json.loads(state_file.read_text())
    assert state["patches"] == [{"pipelinerun": "training-old", "patch": {"spec": {"status": "Cancelled"}}}]
    listing = next(call for call in state["calls"] if "pipelineruns" in call)
    assert listing[:2] == ["--namespace", "xray-mlops"] and "tekton.dev/pipeline=training" in listing


def test_dry_run_cancels_nothing(tmp_path):
    runs = [run("training-old", "2026-11-27T13:00:00Z"), run("training-new", "2026-11-27T14:00:00Z")]
    state_file, env = fake_kubectl(tmp_path, {"pipelineruns": runs})
    result = subprocess.run(
        [sys.executable, "-m", "scripts.supersede", "--pipeline", "training", "--run", "training-new",
         "--branch", "main", "--namespace", "xray-mlops", "--dry-run"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "would cancel training-old" in result.stdout
    assert "patches" not in json.loads(state_file.read_text())

"""Cancel the runs a newer push supersedes: ``python -m scripts.supersede``.

Tekton has no built-in for this (tektoncd/pipeline#4898). Each pipeline's cancel-superseded task
runs this command as soon as the run's trainer image is built (the command lives in that image):
it lists the PipelineRuns of the same Pipeline and cancels those that

- have the same ``branch`` param,
- are still running (their Succeeded condition is neither True nor False) and not already
  being cancelled or stopped,
- were created strictly before this run (runs created in the same second are left alone: neither
  can tell which came first).

A cancelled run gets ``spec.status: Cancelled``: its running tasks stop and its finally tasks do
not run, so the product owner gets no failure email for a run that was merely replaced. A run
never cancels a newer one, so of two overlapping runs the newer always survives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cluster.deploy_gke import kubectl, kubectl_json

PIPELINE_LABEL = "tekton.dev/pipeline"
STOPPING = {"Cancelled", "CancelledRunFinally", "StoppedRunFinally"}


class SupersedeError(RuntimeError):
    """The current run is not among the listed runs, so nothing can be compared with it."""


def param(run: Mapping[str, Any], name: str) -> str | None:
    """The value of a PipelineRun param, or None when the run has no such param."""
    for entry in run.get("spec", {}).get("params", []):
        if entry.get("name") == name:
            return entry.get("value")
    return None


def is_running(run: Mapping[str, Any]) -> bool:
    """Not finished (Succeeded is Unknown or not reported yet) and not already stopping."""
    if run.get("spec", {}).get("status") in STOPPING:
        return False
    for condition in run.get("status", {}).get("conditions", []):
        if condition.get("type") == "Succeeded":
            return condition.get("status") not in ("True", "False")
    return True


def created_at(run: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(run["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def superseded(runs: list[Mapping[str, Any]], current: str, branch: str) -> list[str]:
    """Names of the runs in ``runs`` that the run named ``current`` supersedes on ``branch``."""
    by_name = {run["metadata"]["name"]: run for run in runs}
    if current not in by_name:
        raise SupersedeError(f"PipelineRun {current!r} is not among the {len(runs)} runs listed")
    me = by_name[current]
    pipeline = me["metadata"].get("labels", {}).get(PIPELINE_LABEL)
    return sorted(
        name for name, run in by_name.items()
        if name != current
        and run["metadata"].get("labels", {}).get(PIPELINE_LABEL) == pipeline
        and param(run, "branch") == branch
        and is_running(run)
        and created_at(run) < created_at(me)
    )


def list_runs(pipeline: str, namespace: str) -> list[dict]:
    return kubectl_json("get", "pipelineruns", "--selector", f"{PIPELINE_LABEL}={pipeline}", namespace=namespace)["items"]


def cancel(name: str, namespace: str) -> None:
    patch = json.dumps({"spec": {"status": "Cancelled"}})
    kubectl("patch", "pipelinerun", name, "--type", "merge", "--patch", patch, namespace=namespace)

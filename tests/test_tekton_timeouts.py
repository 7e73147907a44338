"""Timeouts, from the YAML: every run gives its finally tasks a budget of their own.

When ``timeouts.pipeline`` expires Tekton cancels the finally tasks too, and the failure email
never goes out. So each run sets ``tasks`` and ``finally`` as well, and:

- ``tasks`` covers the longest chain of task timeouts (one attempt each): a run that needs no
  retry is never cut short;
- ``finally`` covers every finally task's timeout times its attempts (they run side by side);
- ``pipeline`` is at least ``tasks + finally`` (Tekton refuses less).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache

import pytest
import yaml
from helpers import REPO_ROOT

TEKTON = REPO_ROOT / "tekton"
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
TASK_REFERENCE = re.compile(r"\$\(tasks\.([\w-]+)\.results\.")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def minutes(text: str) -> float:
    match = DURATION.fullmatch(text)
    assert match and text, f"{text!r} is not a duration like 1h30m"
    hours, mins, secs = (int(group or 0) for group in match.groups())
    return hours * 60 + mins + secs / 60


def critical_path(tasks: list[dict]) -> float:
    """The longest chain of task timeouts, in minutes, following runAfter and result references."""
    by_name = {task["name"]: task for task in tasks}

    @cache
    def finish(name: str) -> float:
        task = by_name[name]
        before = set(task.get("runAfter", [])) | set(TASK_REFERENCE.findall(yaml.safe_dump(task)))
        return minutes(task["timeout"]) + max((finish(other) for other in before if other in by_name), default=0)

    return max(finish(name) for name in by_name)


def finally_budget(tasks: list[dict]) -> float:
    return max(minutes(task["timeout"]) * (1 + task.get("retries", 0)) for task in tasks)


def runs() -> list[tuple[str, dict]]:
    """Every PipelineRun the project creates: the trigger templates' and those started by hand."""
    if shutil.which("kubectl") is None:
        return []
    rendered = subprocess.run(["kubectl", "kustomize", str(TEKTON)], capture_output=True, text=True, check=True,
                              timeout=60).stdout
    found = [(f"TriggerTemplate {doc['metadata']['name']}", doc["spec"]["resourcetemplates"][0])
             for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "TriggerTemplate"]
    found += [(f"tekton/runs/{path.name}", yaml.safe_load(path.read_text())) for path in sorted((TEKTON / "runs").glob("*.yaml"))]
    return found


def pipelines() -> dict[str, dict]:
    docs = [yaml.safe_load(path.read_text()) for path in (TEKTON / "pipelines").glob("*.yaml")]
    return {doc["metadata"]["name"]: doc["spec"] for doc in docs}


@pytest.mark.parametrize("where,run", runs(), ids=lambda value: value if isinstance(value, str) else "")
def test_finally_has_its_own_budget_and_the_tasks_theirs(where, run):
    spec = pipelines()[run["spec"]["pipelineRef"]["name"]]
    timeouts = {key: minutes(value) for key, value in run["spec"]["timeouts"].items()}
    assert set(timeouts) == {"pipeline", "tasks", "finally"}, where
    assert timeouts["tasks"] >= critical_path(spec["tasks"]), where
    assert timeouts["finally"] >= finally_budget(spec["finally"]), where
    assert timeouts["pipeline"] >= timeouts["tasks"] + timeouts["finally"], where


def test_the_critical_path_follows_run_after_and_results():
    tasks = [{"name": "a", "timeout": "10m"}, {"name": "b", "timeout": "1h", "runAfter": ["a"]},
             {"name": "c", "timeout": "30m", "params": [{"name": "x", "value": "$(tasks.b.results.r)"}]},
             {"name": "d", "timeout": "1h30m"}]
    assert critical_path(tasks) == 100
    assert finally_budget([{"name": "f", "timeout": "10m", "retries": 2}, {"name": "g", "timeout": "20m"}]) == 30


def test_the_training_run_has_the_budget_its_chain_needs():
    """A number on paper, so a change of any timeout on the chain shows up here."""
    # cancel-superseded, clone, build-trainer, validate-data, train, acceptance-test
    assert critical_path(pipelines()["training"]["tasks"]) == 5 + 10 + 90 + 30 + 180 + 60

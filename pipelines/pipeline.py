"""Run a pipeline locally, step by step, as the make targets Tekton runs on GKE:
``python -m scripts.pipeline training|retraining|model-test`` (``make pipeline`` and friends).

Each step is ``make <target>``; its output goes to the console and to ``<run-dir>/logs/``. A step
that ends in a known outcome (a refused candidate, production still good...) has emailed it and
noted so in ``<run-dir>/outcome.json``; a step that fails without such a note crashed, and the
runner emails that itself: which step, the error, where the log is. Failed acceptance tests are an
outcome too: the report is still sent, then the pipeline exits non-zero.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from api.process import log_tail
from notify.outcome import OutcomeNotTold, read_outcome, tell
from registry.store import Registry, RegistryError

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Step:
    name: str
    target: str
    variables: dict = field(default_factory=dict)
    needs_version: bool = False  # runs only when a version was registered (or chosen) before it


PIPELINES = {
    "training": [
        Step("data", "data", {"IF_MISSING": "1"}),
        Step("validate-data", "validate-data"),
        Step("train", "train"),
        Step("unittest", "unittest", needs_version=True),
        Step("notify", "notify", needs_version=True),
    ],
    "retraining": [
        Step("validate-data", "validate-data"),
        Step("retrain", "retrain"),
        Step("unittest", "unittest", needs_version=True),
        Step("notify", "notify", needs_version=True),
    ],
    "model-test": [
        Step("unittest", "unittest", needs_version=True),
        Step("notify", "notify", needs_version=True),
    ],
}


class PipelineFailed(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def model_under_test(registry: Registry) -> tuple[str, str]:
    """The model-test pipeline's model: production, else the newest testing version."""
    production = registry.production_version()
    if production:
        return production, "production"
    versions = registry.versions("testing")
    if not versions:
        raise RegistryError("the registry has no model to test: run `make pipeline` first")
    return versions[-1], "testing"


def run_make(step: Step, run_dir: Path, log_path: Path, variables: dict) -> int:
    """``make TARGET VARS`` with its output shown and kept in ``log_path``; its exit status."""
    command = ["make", "--no-print-directory", step.target, f"RUN_DIR={run_dir}",
               *(f"{key}={value}" for key, value in {**step.variables, **variables}.items())]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"==> {step.name}: {' '.join(command)}")
    with open(log_path, "w") as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, bufsize=1) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
    return process.returncode


def report_crash(params: dict, pipeline: str, step: Step, code: int, log_path: Path) -> str:
    tail = log_tail(log_path, LOG_TAIL_LINES)
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "(no output)")
    headline = f"The {pipeline} pipeline stopped: step {step.name} (make {step.target}) failed with exit status {code}."
    facts = {"step": step.name, "error": last, "log": str(log_path.resolve()),
             "last lines": "\n" + "\n".join(f"    {line}" for line in tail.splitlines())}
    try:
        return tell(params, None, "step-failed", headline, facts=facts)
    except OutcomeNotTold as exc:
        return f"NOT delivered ({exc.__cause__})"  # the pipeline fails anyway, saying so


def run_pipeline(name: str, params: dict, run_dir: Path) -> None:
    """Run the steps of pipeline ``name``; raise PipelineFailed when it must exit non-zero."""
    version_file, outcome_file = run_dir / "candidate-version", run_dir / "outcome.json"
    variables: dict[str, str] = {}
    if name == "model-test":
        version, stage = model_under_test(Registry(params["registry_uri"]))
        variables = {"VERSION": version, "TESTED_AS": stage}
        click.echo(f"model-test: {version} ({stage})")
    failed_tests = 0
    for step in PIPELINES[name]:
        if name != "model-test" and step.needs_version:
            version = version_file.read_text().strip() if version_file.exists() else ""
            variables = {"VERSION": version} if version else {}
        if step.needs_version and not variables.get("VERSION"):
            click.echo(f"==> {step.name}: skipped, no version was registered")
            continue
        outcome_file.unlink(missing_ok=True)
        if step.target in ("train", "retrain"):
            version_file.unlink(missing_ok=True)
        log_path = run_dir / "logs" / f"{name}-{step.name}.log"
        code = run_make(step, run_dir, log_path, variables)
        if code == 0:
            continue
        outcome = read_outcome(outcome_file)
        if outcome is None:
            where = report_crash(params, name, step, code, log_path)
            raise PipelineFailed(code, f"step {step.name} failed (exit {code}); log: {log_path}; email: {where}")
        if outcome["outcome"] == "tests-failed":
            failed_tests = code  # the report still goes out, then the pipeline fails
            continue
        raise PipelineFailed(code, f"step {step.name}: {outcome['outcome']} (email: {outcome['email']})")
    if failed_tests:
        raise PipelineFailed(failed_tests, f"the acceptance tests of {variables.get('VERSION')} failed; "
                                           "the report was sent")

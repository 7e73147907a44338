"""Every model that passes the gate passes the acceptance tests: models trained with three seeds.

Training differs from seed to seed and from machine to machine; the acceptance tests judge serving
against training, so each of these models, served by the real API (`make unittest`'s runner),
must pass them. Models trained for seconds (the session's `make pipeline` run, seed 42, and two
more seeds on its data) keep it cheap; the gate is opened for them, so every one passes it.
"""

from __future__ import annotations

import pytest
from helpers import run_module

from registry.policy import run_passed, run_problems
from registry.store import Registry


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_every_model_that_passes_the_gate_passes_the_acceptance_tests(trained_copy, seed):
    ws = trained_copy
    registry = Registry(ws["env"]["REGISTRY_URI"])
    version = ws["version"]  # None: the pipeline's own model, trained with train.seed (42)
    if seed is not None:
        version_file = ws["root"] / "candidate-version"
        trained = run_module("model.train", "--seed", str(seed), "--version-file", str(version_file), env=ws["env"])
        assert trained.returncode == 0, trained.stderr[-3000:]  # the opened gate passes every model
        version = version_file.read_text().strip()
        assert registry.metadata(version)["params"]["train"]["seed"] == seed
    tested = run_module("scripts.acceptance", "--version", version, "--run-dir", str(ws["root"] / "run"), env=ws["env"])
    run = registry.metadata(version)["tests"][-1]
    assert tested.returncode == 0 and run_passed(run), (run_problems(run), tested.stdout[-2000:], tested.stderr[-3000:])

"""`make promote` as one transaction: the model is checked before the pointer moves, and a failed
deploy moves production back. Real processes, a real registry, real ONNX models, the real API."""

from __future__ import annotations

import http.server
import threading

import pytest
import requests
from api_helpers import build_onnx_model, model_metadata, register_model
from helpers import clean_env, free_port, run_module

from registry.store import Registry


@pytest.fixture
def setup(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    env = clean_env(REGISTRY_URI=registry.uri, API_PORT=str(free_port()), API_RELOAD_INTERVAL_S="0.2",
                    API_START_TIMEOUT_S="60", PROMOTED_BY="owner@example.com")
    run_dir = str(tmp_path / "run")
    yield registry, env, run_dir
    run_module("scripts.deploy", "stop", "--run-dir", run_dir, env=env, timeout=60)


def release(*args: str, env: dict, run_dir: str):
    return run_module("scripts.release", *args, "--run-dir", run_dir, env=env, timeout=180)


def served(env: dict) -> str:
    return requests.get(f"http://127.0.0.1:{env['API_PORT']}/readyz", timeout=10).json()["model_version"]


def unservable(registry: Registry) -> str:
    """A tested version whose model loads but answers logits, not probabilities: the API refuses it."""
    model = build_onnx_model(softmax=False)
    return register_model(registry, model, model_metadata(model))


def test_promote_deploys_and_rollback_redeploys(setup):
    registry, env, run_dir = setup
    first, second = register_model(registry), register_model(registry, *_second_model())
    assert release("promote", "--version", first, env=env, run_dir=run_dir).returncode == 0
    assert served(env) == first
    result = release("promote", env=env, run_dir=run_dir)  # default: the newest tested version
    assert result.returncode == 0, result.stderr
    assert f"{second} is production and serving" in result.stdout
    assert served(env) == second
    assert release("rollback", env=env, run_dir=run_dir).returncode == 0
    assert served(env) == first == registry.current()["version"]


def test_a_model_that_cannot_be_served_is_refused_before_the_pointer_moves(setup):
    registry, env, run_dir = setup
    good = register_model(registry)
    assert release("promote", "--version", good, env=env, run_dir=run_dir).returncode == 0
    broken = unservable(registry)
    result = release("promote", "--version", broken, env=env, run_dir=run_dir)
    assert result.returncode == 1
    assert f"{broken} cannot be served, so production was not changed" in result.stderr
    assert "not probabilities" in result.stderr and "Traceback" not in result.stderr
    assert registry.current()["version"] == good
    assert served(env) == good
    assert [r["action"] for r in registry.audit()] == ["promote"]


def test_a_failed_deploy_moves_production_back_and_says_so(setup):
    registry, env, run_dir = setup
    first, second = register_model(registry), register_model(registry, *_second_model())
    assert release("promote", "--version", first, env=env, run_dir=run_dir).returncode == 0
    assert run_module("scripts.deploy", "stop", "--run-dir", run_dir, env=env).returncode == 0
    with _other_program_on(int(env["API_PORT"])):
        result = release("promote", "--version", second, env=env, run_dir=run_dir)
    assert result.returncode == 1
    assert f"the deploy of {second} failed, so production was moved back to {first}" in result.stderr
    assert registry.current()["version"] == first
    records = registry.audit()
    assert [(r["action"], r["version"]) for r in records] == [("promote", first), ("promote", second),
                                                               ("revert", first)]
    assert "something else answers" in records[-1]["reason"]
    # The pointer is back where it was, history included: a rollback still has nothing before first.
    assert registry.current()["previous"] is None
    # Nothing is left half done: the same promotion works once the port is free.
    assert release("promote", "--version", second, env=env, run_dir=run_dir).returncode == 0
    assert served(env) == second


def test_a_failed_first_deploy_leaves_production_empty(setup):
    registry, env, run_dir = setup
    version = register_model(registry)
    with _other_program_on(int(env["API_PORT"])):
        result = release("promote", "--version", version, env=env, run_dir=run_dir)
    assert result.returncode == 1
    assert "moved back to nothing (no production version)" in result.stderr
    assert registry.current() is None


def _second_model():
    model = build_onnx_model(biases=(5.0, 0.0, -5.0, -2.0))
    return model, model_metadata(model)


class _other_program_on:
    """Another web server holding the API's port."""

    def __init__(self, port: int):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

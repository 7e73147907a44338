"""Local deployment: `make promote` / `make rollback` start the background API or make the running
one switch models; `make stop` stops it. Real processes, a real registry, a real ONNX model."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from api_helpers import build_onnx_model, model_metadata, register_model
from helpers import clean_env, free_port, run_module

from api.process import is_our_api, pid_alive
from registry.store import Registry


@pytest.fixture
def setup(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    first = register_model(registry)
    second_model = build_onnx_model(biases=(5.0, 0.0, -5.0, -2.0))
    second = register_model(registry, second_model, model_metadata(second_model))
    env = clean_env(REGISTRY_URI=registry.uri, API_PORT=str(free_port()), API_RELOAD_INTERVAL_S="0.2",
                    PROMOTED_BY="owner@example.com")
    run_dir = str(tmp_path / "run")
    yield registry, first, second, env, run_dir
    run_module("scripts.deploy", "stop", "--run-dir", run_dir, env=env, timeout=60)


def deploy(command: str, env: dict, run_dir: str):
    return run_module("scripts.deploy", command, "--run-dir", run_dir, env=env, timeout=180)


def served(env: dict) -> str:
    response = requests.get(f"http://127.0.0.1:{env['API_PORT']}/readyz", timeout=10)
    assert response.status_code == 200
    return response.json()["model_version"]


def test_promote_starts_the_api_then_a_second_promote_and_a_rollback_switch_it(setup):
    registry, first, second, env, run_dir = setup
    assert run_module("registry", "promote", first, env=env).returncode == 0
    started = deploy("start", env, run_dir)
    assert started.returncode == 0, started.stderr
    assert served(env) == first

    assert run_module("registry", "promote", second, env=env).returncode == 0
    switched = deploy("start", env, run_dir)
    assert switched.returncode == 0, switched.stderr
    assert "is running; waiting until it serves" in switched.stdout
    assert served(env) == second

    rolled = run_module("registry", "rollback", env=env)
    assert rolled.returncode == 0 and f"rolled back to {first}" in rolled.stdout
    assert deploy("start", env, run_dir).returncode == 0
    assert served(env) == first
    assert [r["action"] for r in registry.audit()] == ["promote", "promote", "rollback"]

    pid = int((Path(run_dir) / "api.pid").read_text())
    assert is_our_api(pid, None)
    stopped = deploy("stop", env, run_dir)
    assert stopped.returncode == 0 and "stopped the API" in stopped.stdout
    assert not pid_alive(pid)
    assert "not running" in deploy("status", env, run_dir).stdout


def test_start_without_a_production_version_says_what_to_do(setup):
    _, _, _, env, run_dir = setup
    result = deploy("start", env, run_dir)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: nothing is in production yet: run `make promote` first"


def test_start_refuses_a_port_held_by_another_program(setup):
    _, first, _, env, run_dir = setup
    run_module("registry", "promote", first, env=env)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", int(env["API_PORT"])), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        result = deploy("start", env, run_dir)
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode == 1
    assert "something else answers" in result.stderr and "Traceback" not in result.stderr


def test_promote_of_an_untested_version_is_refused_with_the_reason(setup):
    registry, _, _, env, _ = setup
    untested = register_model(registry, tested=False)
    result = run_module("registry", "promote", untested, env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {untested} cannot be promoted: it has no acceptance-test run yet "
        f"(run `make unittest VERSION={untested}`)")
    assert registry.current() is None


@pytest.fixture
def unrelated_process():
    """A live process that is not the API, as a pid recycled after a reboot would be."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_pid_file_naming_another_process_is_neither_signalled_nor_waited_on(setup, unrelated_process):
    _, first, _, env, run_dir = setup
    pid_file = Path(run_dir) / "api.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{unrelated_process}\n")

    stopped = deploy("stop", env, run_dir)
    assert stopped.returncode == 0 and "the API is not running" in stopped.stdout
    assert f"names pid {unrelated_process}, which is not the API" in stopped.stderr
    assert pid_alive(unrelated_process) and not pid_file.exists()

    pid_file.write_text(f"{unrelated_process}\n")
    run_module("registry", "promote", first, env=env)
    started = deploy("start", env, run_dir)
    assert started.returncode == 0, started.stderr
    assert "is running; waiting" not in started.stdout
    assert served(env) == first
    assert int(pid_file.read_text()) != unrelated_process and pid_alive(unrelated_process)


def test_without_proc_the_recorded_port_decides(setup, unrelated_process, tmp_path):
    _, first, _, env, run_dir = setup
    run_module("registry", "promote", first, env=env)
    assert deploy("start", env, run_dir).returncode == 0
    url = f"http://127.0.0.1:{(Path(run_dir) / 'api.port').read_text().strip()}"
    no_proc = tmp_path / "no-proc"
    assert url.endswith(f":{env['API_PORT']}")
    assert is_our_api(unrelated_process, url, proc=no_proc)  # the API answers there
    assert not is_our_api(unrelated_process, None, proc=no_proc)
    assert not is_our_api(unrelated_process, f"http://127.0.0.1:{free_port()}", proc=no_proc)
    assert not is_our_api(unrelated_process, url)  # /proc tells the truth where it exists

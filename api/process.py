"""Run the API as a separate process: start it, wait until it serves the expected model, stop it.

Shared by the acceptance-test runner (a temporary API on a free port) and by local deployment
(a background API on the configured port, with its pid and log under the run directory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from core.config import REPO_ROOT

PROC = Path("/proc")


class ApiProcessError(RuntimeError):
    """The API process did not start, did not become ready, or could not be stopped."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def spawn_api(arguments: list[str], log_path: Path, detach: bool = False) -> subprocess.Popen:
    """Start ``python -m api.serve ARGUMENTS`` with its output in ``log_path``.

    ``detach`` puts it in its own session so it outlives the command that started it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "api.serve", *arguments],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )


def healthz_headers(url: str):
    """The headers of ``url``/healthz, whatever its status; None when nothing answers there."""
    try:
        return requests.get(f"{url}/healthz", timeout=2).headers
    except requests.RequestException:
        return None


def is_model_api(headers) -> bool:
    """True for this project's API, which marks every answer with X-Model-Version."""
    return "X-Model-Version" in headers


def is_our_api(pid: int, url: str | None, proc: Path = PROC) -> bool:
    """Whether ``pid`` is this checkout's API, before anyone waits on it or signals it.

    A pid file outlives its process: after a reboot its number may belong to anything. Where
    ``/proc`` exists the process must run ``-m api.serve`` from this repository; elsewhere the API
    must answer ``/healthz`` at ``url``, the address it recorded when it started.
    """
    if (proc / "self").is_dir():
        try:
            arguments = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / str(pid) / "cwd"))
        except OSError:  # gone, or another user's process: not one we started
            return False
        runs_api = any(arguments[i:i + 2] == [b"-m", b"api.serve"] for i in range(len(arguments)))
        return runs_api and cwd == REPO_ROOT
    headers = healthz_headers(url) if url else None
    return headers is not None and is_model_api(headers)


def readiness(url: str) -> dict | None:
    """The API's /readyz answer (served and wanted versions, why the wanted one is refused), or
    None when nothing answers or no model is loaded."""
    try:
        response = requests.get(f"{url}/readyz", timeout=2)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def wait_until_serving(url: str, version: str | None, timeout_s: float, is_alive, log_path: Path) -> str:
    """Wait until ``url`` is ready (and serves ``version`` when given); return the version.

    Fails at once when the API reports that it refused ``version`` (it cannot load it).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = readiness(url) or {}
        current = ready.get("model_version")
        if current and (version is None or current == version):
            return current
        if version and ready.get("wanted_version") == version and ready.get("wanted_error"):
            raise ApiProcessError(f"the API at {url} refused {version} and still serves {current}: "
                                  f"{ready['wanted_error']}")
        if not is_alive():
            raise ApiProcessError(f"the API process exited; last lines of {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.25)
    want = f"version {version}" if version else "a model"
    raise ApiProcessError(f"the API at {url} did not serve {want} within {timeout_s:.0f} s; "
                          f"last lines of {log_path}:\n{log_tail(log_path)}")


def wait_for_port_file(path: Path, process: subprocess.Popen, timeout_s: float, log_path: Path) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if process.poll() is not None:
            raise ApiProcessError(f"the API process exited; last lines of {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.1)
    raise ApiProcessError(f"the API did not bind a port within {timeout_s:.0f} s:\n{log_tail(log_path)}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL if it still runs."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:
            if not pid_alive(pid):
                return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def loopback_api(registry_uri: str, stage: str, version: str, log_path: Path,
                 timeout_s: float) -> Iterator[tuple[str, subprocess.Popen]]:
    """``(url, process)`` of an API serving ``version`` from ``stage`` on a free loopback port,
    stopped on leaving; ApiProcessError when it does not come up serving it."""
    with tempfile.TemporaryDirectory() as work:
        port_file = Path(work) / "port"
        process = spawn_api(["--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
                             "--registry", registry_uri, "--stage", stage, "--version", version], log_path)
        try:
            port = wait_for_port_file(port_file, process, timeout_s, log_path)
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, version, timeout_s, lambda: process.poll() is None, log_path)
            yield url, process
        finally:
            stop_pid(process.pid)

"""Deploy the API locally: ``python -m scripts.deploy start|stop|status``.

``start`` runs ``python -m api.serve`` in the background (pid and log in the run directory) when
it is not running, and waits until it serves the production version. A running API picks up a
new production version by itself; ``start`` then waits until it has switched.

The run directory holds ``api.pid``, ``api.port`` (written by the API once bound) and ``api.log``.
A pid is trusted only once it is known to be our API (``api.process.is_our_api``).
"""

from __future__ import annotations

from pathlib import Path

import click

from api.process import (
    healthz_headers,
    is_model_api,
    is_our_api,
    pid_alive,
    spawn_api,
    wait_until_serving,
)
from registry.store import Registry


class DeployRefused(RuntimeError):
    """The API cannot be started here; the message says what to do."""


def run_files(run_dir: Path) -> tuple[Path, Path, Path]:
    return run_dir / "api.pid", run_dir / "api.log", run_dir / "api.port"


def running_pid(run_dir: Path, host: str) -> int | None:
    """The pid of the background API started from ``run_dir``, if it still runs and is that API.

    A pid file naming any other process (left by a crash, its number reused after a reboot) is
    removed, so nobody waits on that process or signals it.
    """
    pid_file, _, port_file = run_files(run_dir)
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        url = f"http://{host}:{int(port_file.read_text())}"
    except (FileNotFoundError, ValueError):
        url = None
    if is_our_api(pid, url):
        return pid
    click.echo(f"{pid_file} names pid {pid}, which is not the API: a stale file, removed", err=True)
    pid_file.unlink(missing_ok=True)
    return None


def api_url(params: dict) -> str:
    return f"http://{params['api']['host']}:{params['api']['port']}"


def start_api(params: dict, run_dir: Path, version: str | None = None) -> None:
    """Start the API on the production model (``version``, which the caller has just read from the
    pointer, else read here), or wait until the running one serves it.

    Raises ApiProcessError (or DeployRefused) saying why not.
    """
    url, timeout = api_url(params), params["api"]["start_timeout_s"]
    if version is None:
        version = Registry(params["registry_uri"]).production_version()
    if version is None:
        raise DeployRefused("nothing is in production yet: run `make promote` first")
    pid_file, log_path, port_file = run_files(run_dir)
    pid = running_pid(run_dir, params["api"]["host"])
    headers = None if pid else healthz_headers(url)
    if headers is not None and not is_model_api(headers):
        raise DeployRefused(f"something else answers at {url}; stop it or set API_PORT to another port")
    if pid or headers is not None:
        # A running API, ours or one started by `make serve`, follows the production pointer.
        who = f"the API (pid {pid}) is running" if pid else f"an API started elsewhere answers at {url}"
        click.echo(f"{who}; waiting until it serves {version}")
        still_up = (lambda: pid_alive(pid)) if pid else (lambda: healthz_headers(url) is not None)
        wait_until_serving(url, version, timeout, still_up, log_path)
        click.echo(f"{url} now serves {version}")
        return
    port_file.unlink(missing_ok=True)
    process = spawn_api(["--port-file", str(port_file)], log_path, detach=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{process.pid}\n")
    wait_until_serving(url, version, timeout, lambda: process.poll() is None, log_path)
    click.echo(f"the API (pid {process.pid}) serves {version} at {url}; log: {log_path}; stop: make stop")
    click.echo(f"try: curl --data-binary @image.png -H 'Content-Type: image/png' {url}/predict")

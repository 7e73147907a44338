"""Serve the prediction API with waitress: ``python -m api.serve``.

Also the library side of serving: :func:`make_server` and :func:`start_in_thread`, which the
acceptance tests and the software tests use to run the real app under real waitress.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import waitress
from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask, WSGITask

from api.app import ARRIVED_ENVIRON_KEY, create_app, server_error_answer
from api.errors import body_too_large
from api.requestlog import configure_logging
from core.cli import registry_option
from core.config import ConfigError, describe, load_params
from registry.store import STAGES, RegistryError
from storage import StorageError

LOG = logging.getLogger("api.serve")

LOOP_TIMEOUT_S = 1.0
DEFAULT_CLEANUP_INTERVAL_S = 30  # waitress looks for silent connections this often (its default)
# One recv per 64 kB instead of waitress's 8 kB: a 40 kB image takes one turn of the I/O loop, not five.
RECV_BYTES = 65536


class JsonErrorTask(ErrorTask):
    """Waitress's own error answers (a body over its cap, a malformed request) as the API's JSON
    error, with the same headers, counting and log line as the app's answers."""

    def execute(self):
        error = self.request.error
        server = self.channel.server
        if error.code == 413:
            config = self.channel.app.config
            larger = "api.max_batch_bytes" if config["MAX_BATCH_BYTES"] >= config["MAX_CONTENT_LENGTH"] else "api.max_bytes"
            message = body_too_large(server.adj.max_request_body_size, f"{larger}, the server's cap on any body")
        else:
            message = f"{error.reason}: {error.body}"
        headers, body = server_error_answer(self.channel.app, error.code, message,
                                            self.request.headers.get("X_REQUEST_ID"),
                                            getattr(self.request, "command", "") or "")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(headers)
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class TimedRequestParser(HTTPRequestParser):
    """A request that notes when waitress has read all of it: from then on it waits in waitress's
    queue for a worker, and that wait is part of what the client waits."""

    arrived: float | None = None

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.completed and self.arrived is None:
            self.arrived = time.perf_counter()
        return consumed


class TimedWSGITask(WSGITask):
    """Hands the request's arrival time to the app in the WSGI environment."""

    def get_environment(self):
        environ = super().get_environment()
        environ.setdefault(ARRIVED_ENVIRON_KEY, getattr(self.request, "arrived", None))
        return environ


class JsonErrorChannel(HTTPChannel):
    """A waitress channel whose own error answers are the API's and whose requests carry their
    arrival time; ``app`` is set per server."""

    parser_class = TimedRequestParser
    task_class = TimedWSGITask
    error_task_class = JsonErrorTask
    app: Flask


def make_server(app: Flask, host: str, port: int, threads: int, socket_map: dict | None = None):
    """A bound waitress server for ``app`` (port 0 picks a free port); raises OSError if busy.

    Waitress reads a whole body (spooling it to a temporary file past 512 kB) before a worker
    thread sees the request, so a slow or stalled client never holds a worker; a connection silent
    for ``CHANNEL_TIMEOUT_S`` is closed. Its body cap is the largest body any route accepts, so an
    endless chunked body or a huge Content-Length stops there (answered by :class:`JsonErrorTask`);
    Flask enforces each route's own limit below it.
    """
    config = app.config
    cap = max(config["MAX_CONTENT_LENGTH"], config["MAX_BATCH_BYTES"])
    timeout = max(1, int(config["CHANNEL_TIMEOUT_S"]))
    socket_map = {} if socket_map is None else socket_map
    server = waitress.create_server(
        app, map=socket_map, host=host, port=port, threads=threads, ident="xray-api",
        max_request_body_size=cap, channel_timeout=timeout,
        cleanup_interval=min(timeout, DEFAULT_CLEANUP_INTERVAL_S), recv_bytes=RECV_BYTES,
    )
    channel_class = type(JsonErrorChannel.__name__, (JsonErrorChannel,), {"app": app})
    for listener in [server, *socket_map.values()]:  # one per listening socket
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = channel_class
    return server


def bound_address(server) -> tuple[str, int]:
    """The host and port a waitress server listens on (the first one, if it listens on several)."""
    listening = getattr(server, "effective_listen", None)
    if listening:
        host, port = listening[0][:2]
        return host, port
    return server.effective_host, server.effective_port


class BackgroundServer:
    """A waitress server running on a daemon thread; ``stop()`` ends it from any thread."""

    def __init__(self, server, socket_map: dict):
        self.server = server
        self.host, self.port = bound_address(server)
        self._socket_map = socket_map
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="waitress", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        # waitress's own run() can only be stopped by a signal in the main thread; looping here
        # lets another thread stop the server, and closes the sockets on the thread that polls them.
        while not self._stopping.is_set():
            wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=self._socket_map, count=1)
        self.server.task_dispatcher.shutdown()  # lets requests in flight finish (up to 5 s)
        wasyncore.close_all(self._socket_map)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish, close the sockets."""
        self._stopping.set()
        try:
            self.server.pull_trigger()  # wakes the loop now instead of after LOOP_TIMEOUT_S
        except OSError:
            pass  # the loop woke by itself first, saw the flag and closed its sockets, the trigger's too
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def start_in_thread(app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 4) -> BackgroundServer:
    """Serve ``app`` with waitress on a background thread; raises OSError if the port is busy."""
    socket_map: dict = {}
    return BackgroundServer(make_server(app, host, port, threads, socket_map), socket_map)


def write_port_file(path: Path, port: int) -> None:
    """Write the port atomically, so a reader never sees a partial number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", help="Interface to listen on. [default: api.host, env API_HOST]")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port; 0 picks a free one (see --port-file). [default: api.port, env API_PORT]")
@click.option("--threads", type=click.IntRange(min=1),
              help="Waitress worker threads. [default: api.threads, env API_THREADS]")
@registry_option
@click.option("--stage", type=click.Choice(STAGES), default="production", show_default=True,
              help="Stage the model is read from.")
@click.option("--version", "model_version",
              help="Serve this version only; without it, follow the production pointer.")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Once the socket is bound, write the port to this file.")
def main(host, port, threads, registry_uri, stage, model_version, port_file):
    """Serve the prediction API with waitress until SIGTERM or Ctrl-C.

    By default it serves the production model and picks up a newly promoted one without a restart.

    \b
    Example:
      python -m api.serve --stage testing --version v0007-20261127T133000Z --port 0 --port-file .run/api.port
    """
    configure_logging()
    if stage != "production" and not model_version:
        raise click.UsageError(f"--stage {stage} needs --version")
    try:
        params = load_params(
            {"api.host": host, "api.port": port, "api.threads": threads, "registry_uri": registry_uri}
        )
        LOG.info(describe(params, "serve", ("registry_uri", "api")))
        app = create_app({
            "REGISTRY_URI": params["registry_uri"],
            "MODEL_STAGE": stage,
            "MODEL_VERSION": model_version,
        })
    except (ConfigError, RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    holder = app.extensions["model_holder"]
    api = params["api"]
    sys.setswitchinterval(api["switch_interval_ms"] / 1000)
    try:
        server = start_in_thread(app, api["host"], api["port"], api["threads"])
    except OSError as exc:
        holder.stop()
        raise click.ClickException(
            f"cannot listen on {api['host']}:{api['port']}: {exc.strerror or exc}"
        ) from exc
    if port_file:
        write_port_file(port_file, server.port)
    served = holder.predictor.version if holder.predictor else "no model yet"
    LOG.info("serving %s on %s", served, server.url)

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    while not stop_requested.wait(1.0):
        if not server.running:
            raise click.ClickException("the server loop stopped unexpectedly; see the log above")
    LOG.info("stopping")
    server.stop()
    holder.stop()


if __name__ == "__main__":
    main()

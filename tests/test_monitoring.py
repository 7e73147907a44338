"""Production monitoring end to end: a model trained by `make pipeline` (its reference written at
training) served by the real API under waitress, streams of images sent through /predict/batch,
and `make monitor` / monitoring.run comparing the live statistics with the reference."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from api_helpers import TIMEOUT_S, RunningApi, image_bytes, promote_model, registry, serve, wait_for  # noqa: F401  (fixtures)
from helpers import REPO_ROOT, free_port, run_make
from PIL import Image

from core.config import load_params
from model.synthetic import image_seed, render
from monitoring.live import LiveMonitor, merge_snapshots
from monitoring.run import monitor_once
from registry.store import Registry
from scripts.monitor import email_sender

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
HELD_OUT_SEED = 4242  # the sample dataset is drawn with seed 7: these images are new to the model
STREAM = 120
MIN_IMAGES = 100
BATCH = 16


@pytest.fixture(scope="module")
def production(trained, tmp_path_factory) -> dict:
    """A copy of the trained registry with the trained version promoted."""
    import shutil

    root = tmp_path_factory.mktemp("monitoring")
    shutil.copytree(trained["root"] / "registry", root / "registry")
    registry = Registry(str(root / "registry"))
    registry.promote(trained["version"], by="tests")
    return {"root": root, "registry": registry, "version": trained["version"],
            "test_predictions": json.loads(registry.read_file(trained["version"], "test_predictions.json")),
            "data": trained["root"] / "data"}


@pytest.fixture
def start(serve, production):
    """An API serving the production version; each call is a fresh process state (new window)."""

    def started(**config) -> RunningApi:
        return serve(REGISTRY_URI=production["registry"].uri, MAX_BATCH_IMAGES=BATCH, MAX_BATCH_BYTES=4_000_000,
                     MAX_CONTENT_LENGTH=2_000_000, MAX_PIXELS=5_000_000, **config)

    return started


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _drawn(count: int, size: int, seed: int) -> tuple[Image.Image, ...]:
    return tuple(render(CLASSES[i % 4], image_seed(seed, CLASSES[i % 4], i), size) for i in range(count))


def radiographs(count: int = STREAM, size: int = 96, seed: int = HELD_OUT_SEED) -> list[Image.Image]:
    """Synthetic radiographs drawn like the sample dataset, but not in it; every class in turn."""
    return list(_drawn(count, size, seed))


def send(api: RunningApi, images: list[bytes]) -> list[dict]:
    answers = []
    for start in range(0, len(images), BATCH):
        files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images[start:start + BATCH])]
        response = api.post("/predict/batch", files=files)
        assert response.status_code == 200, response.text
        answers += response.json()
    assert all("label" in answer for answer in answers), answers
    return answers


def settings(production, tmp_path, **overrides) -> dict:
    environ = {"REGISTRY_URI": production["registry"].uri, "MONITOR_MIN_IMAGES": str(MIN_IMAGES),
               "MONITOR_REPORT_DIR": str(tmp_path / "report"), "OUTBOX_DIR": str(tmp_path / "outbox"),
               "MONITOR_STATE_URI": str(tmp_path / "state"), **overrides}
    return load_params(environ=environ)


def check_once(api: RunningApi, production, tmp_path) -> dict:
    params = settings(production, tmp_path)
    failures: list[str] = []
    report = monitor_once(params, [api.url], email_sender(params, failures))
    assert not failures
    return report


def darker(image: Image.Image) -> Image.Image:
    return Image.fromarray((np.asarray(image, dtype=np.float32) * 0.55).astype(np.uint8))


def inverted(image: Image.Image) -> Image.Image:
    return Image.fromarray(255 - np.asarray(image))


def sixteen_bit(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)


def test_an_in_distribution_stream_raises_no_alarm(start, production, tmp_path):
    api = start()
    answers = send(api, [encode(image) for image in radiographs()])
    scores = [answer["out_of_distribution"]["score"] for answer in answers]
    assert all(isinstance(score, float) for score in scores)
    report = check_once(api, production, tmp_path)
    verdict = report["verdict"]
    assert verdict["status"] == "ok", verdict
    assert verdict["images"] == STREAM and report["alarm"]["episode"] is None
    assert not list((tmp_path / "outbox").glob("*.eml"))
    assert Path(report["files"]["png"]).stat().st_size > 10_000
    print(f"in-distribution: OOD median {np.median(scores):.2f}, max {max(scores):.2f}; "
          + ", ".join(f"{c['name']} {c['value']:.3f}" for c in verdict["checks"]))


SHIFTS = {
    # name: (make the stream, checks that must cross, checks that must not)
    "darker": (lambda: [encode(darker(image)) for image in radiographs()], {"psi[mean]"}, {"psi[width]"}),
    "inverted": (lambda: [encode(inverted(image)) for image in radiographs()],
                 {"psi[mean]", "psi[near_black]", "ood_share"}, {"psi[width]"}),
    "larger": (lambda: [encode(image) for image in radiographs(size=192)], {"psi[width]", "psi[height]"},
               {"psi[mean]", "psi[bit_depth]", "ood_share"}),
    "16-bit": (lambda: [encode(sixteen_bit(image)) for image in radiographs()], {"psi[bit_depth]", "psi[mode]"},
               {"psi[mean]", "psi[width]", "ood_share"}),
}


@pytest.mark.parametrize("shift", list(SHIFTS))
def test_a_shifted_stream_raises_the_alarm_on_the_statistic_that_moved(start, production, tmp_path, shift):
    make, crossing, quiet = SHIFTS[shift]
    api = start()
    send(api, make())
    report = check_once(api, production, tmp_path)
    drifted = set(report["verdict"]["drifted"])
    assert report["verdict"]["status"] == "drift"
    assert crossing <= drifted, drifted
    assert not quiet & drifted, drifted
    assert report["alarm"]["opened"] and report["alarm"]["episode"] == 1
    (email,) = (tmp_path / "outbox").glob("*.eml")
    text = email.read_text()
    assert f"drift in production {production['version']}" in text and "LABELLED" in text
    assert "monitoring-report.png" in text
    print(f"{shift}: " + ", ".join(f"{c['name']} {c['value']:.3f}" for c in report["verdict"]["checks"]))


def test_a_class_mix_far_from_training_raises_the_alarm_on_the_predicted_classes(start, production, tmp_path):
    predictions = production["test_predictions"]
    most = max(CLASSES, key=lambda name: sum(p["predicted"] == name for p in predictions))
    chosen = [p["path"] for p in predictions if p["predicted"] == most]
    images = [(production["data"] / path).read_bytes() for path in chosen]
    api = start()
    answers = send(api, (images * (STREAM // len(images) + 1))[:STREAM])
    assert {answer["label"] for answer in answers} == {most}  # the served model answers as recorded
    report = check_once(api, production, tmp_path)
    assert "psi[class]" in report["verdict"]["drifted"], report["verdict"]
    print(f"class mix ({most} only): " + ", ".join(f"{c['name']} {c['value']:.3f}" for c in report["verdict"]["checks"]))


def test_images_of_other_kinds_score_far_out_of_distribution(start):
    api = start()
    radiograph = radiographs(4, seed=99)
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    others = {"photograph": photo, "black": Image.new("L", (96, 96), 0), "gray": Image.new("L", (96, 96), 128),
              "white": Image.new("L", (96, 96), 255), "inverted radiograph": inverted(radiograph[0])}
    scores = {name: answer["out_of_distribution"] for name, answer in
              zip(others, send(api, [encode(image) for image in others.values()]))}
    assert all(entry["flagged"] for entry in scores.values()), scores
    ordinary = [answer["out_of_distribution"] for answer in send(api, [encode(image) for image in radiograph])]
    assert not any(entry["flagged"] for entry in ordinary), ordinary
    assert min(entry["score"] for entry in scores.values()) > 1.5 * max(entry["score"] for entry in ordinary)
    assert api.metric("xray_api_ood_images_total", version=api.holder.predictor.version, result="flagged") == 5
    print("OOD scores: " + ", ".join(f"{name} {entry['score']:.1f}" for name, entry in scores.items())
          + "; radiographs " + ", ".join(f"{entry['score']:.1f}" for entry in ordinary))


def monitor_environment(production, tmp_path, api_url: str, record: Path) -> dict[str, str]:
    """`make monitor`'s settings: retraining on, and a retrain command that notes each start in ``record``."""
    command = f"{sys.executable} -c \"open('{record}', 'a').write('started\\n')\""
    return {"REGISTRY_URI": production["registry"].uri, "API_URL": api_url, "MONITOR_MIN_IMAGES": str(MIN_IMAGES),
            "OUTBOX_DIR": str(tmp_path / "outbox"), "MONITOR_STATE_URI": str(tmp_path / "state"),
            "MONITOR_REPORT_DIR": str(tmp_path / "report"), "MONITOR_TRIGGER_RETRAINING": "true",
            "MONITOR_RETRAIN_COMMAND": command}


def make_monitor(production, tmp_path, api: RunningApi, record: Path) -> str:
    from helpers import clean_env

    result = run_make("monitor", env=clean_env(**monitor_environment(production, tmp_path, api.url, record)),
                      timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def monitor_in_process(production, tmp_path, api: RunningApi, record: Path) -> dict:
    params = load_params(environ=monitor_environment(production, tmp_path, api.url, record))
    failures: list[str] = []
    report = monitor_once(params, [api.url], email_sender(params, failures), cwd=REPO_ROOT)
    assert not failures
    return report["alarm"]


def test_retraining_starts_once_per_alarm_and_the_product_owner_is_emailed_once(start, production, tmp_path):
    record = tmp_path / "retrain-starts"
    drifting = start()
    send(drifting, [encode(inverted(image)) for image in radiographs()])
    assert "alarm episode 1: opened" in make_monitor(production, tmp_path, drifting, record)
    wait_for(lambda: record.exists() and record.read_text() == "started\n", timeout=60, message="the retraining start")
    second = make_monitor(production, tmp_path, drifting, record)
    assert "alarm episode 1: still open; email: not sent now; retraining: not started now" in second
    time.sleep(1.0)  # a second start, had there been one, would likely have written by now
    assert record.read_text() == "started\n"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1

    calm = start()  # a restarted API: a fresh window, in distribution
    send(calm, [encode(image) for image in radiographs()])
    assert monitor_in_process(production, tmp_path, calm, record)["closed"]
    send(calm, [encode(inverted(image)) for image in radiographs()] * 2)
    alarm = monitor_in_process(production, tmp_path, calm, record)
    assert alarm["opened"] and alarm["episode"] == 2 and alarm["retraining"].startswith("started")
    wait_for(lambda: record.read_text() == "started\n" * 2, timeout=60, message="the second alarm's retraining")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def footprint(value, seen=None) -> int:
    """Elements held by ``value`` and everything it refers to in the monitoring package (lists,
    dicts, arrays): a structure that grows with traffic grows this."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return value.size
    if isinstance(value, dict):
        return len(value) + sum(footprint(item, seen) for item in value.values())
    if isinstance(value, (list, tuple, set)):
        return len(value) + sum(footprint(item, seen) for item in value)
    if type(value).__module__.startswith("monitoring"):
        return footprint(vars(value) if hasattr(value, "__dict__") else {}, seen)
    return 0


def test_the_live_statistics_stay_the_same_size_over_a_long_stream(start):
    api = start()
    monitor: LiveMonitor = api.app.extensions["monitor"]
    images = [encode(image) for image in radiographs(40)]
    send(api, images[:10])
    before, size_before = footprint(monitor), monitor.size()
    for _ in range(8):
        send(api, images)
    assert api.get("/monitoring").json()["stats"]["images"] == 330
    assert footprint(monitor) == before and monitor.size() == size_before


def spawn(production, tmp_path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp_path / f"{name}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "api.serve", "--port", str(port), "--registry",
                                production["registry"].uri], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def test_two_processes_statistics_merge_to_those_of_one_that_saw_every_request(start, production, tmp_path):
    import requests

    processes = [spawn(production, tmp_path, name) for name in ("a", "b")]
    try:
        for _, url in processes:
            wait_for(lambda url=url: _ready(requests, url), timeout=60, message=f"the API at {url}")
        streams = [[encode(image) for image in radiographs(24, seed=seed)] for seed in (1, 2)]
        streams[1] += [encode(inverted(image)) for image in radiographs(8, seed=3)]
        alone = start()
        for (_, url), stream in zip(processes, streams):
            send(_Remote(requests, url), stream)
            send(alone, stream)
        snapshots = [requests.get(f"{url}/monitoring", timeout=TIMEOUT_S).json() for _, url in processes]
    finally:
        for process, _ in processes:
            process.terminate()
            process.wait(30)
    merged = merge_snapshots(snapshots)
    assert merged["stats"] == alone.get("/monitoring").json()["stats"]
    assert merged["stats"]["images"] == 56 and merged["replicas"] == 2
    assert merged["window"]["started_at"] == min(s["window"]["started_at"] for s in snapshots)


def test_a_replica_that_does_not_answer_is_named_and_the_others_are_still_compared(start, production, tmp_path):
    from monitoring.run import MonitorError, summary_lines

    api = start()
    send(api, [encode(image) for image in radiographs()])
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens: a pod that went away
    params = settings(production, tmp_path)
    report = monitor_once(params, [gone, api.url], email_sender(params, []))
    assert report["urls"] == [api.url] and report["replicas"] == 1
    assert report["verdict"]["status"] == "ok" and report["verdict"]["images"] == STREAM
    [unanswered] = report["unanswered"]
    assert unanswered.startswith(f"cannot read {gone}/monitoring")
    assert f"  not counted: {unanswered}" in summary_lines(report)
    with pytest.raises(MonitorError, match=f"no API serves the production version.*cannot read {gone}"):
        monitor_once(params, [gone], email_sender(params, []))


def _ready(requests, url) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


class _Remote:
    """The part of RunningApi that send() uses, for an API in another process."""

    def __init__(self, requests, url):
        self.url, self.http = url, requests.Session()

    def post(self, path, **kwargs):
        return self.http.post(self.url + path, timeout=TIMEOUT_S, **kwargs)


def test_a_version_without_reference_is_served_with_null_scores_and_still_counted(serve, registry):
    promote_model(registry)  # a registry model made before monitoring: no reference file
    api = serve()
    answer = api.predict_png(image_bytes(100))
    assert answer.status_code == 200
    assert answer.json()["out_of_distribution"] == {"score": None, "flagged": None}
    batch = api.post("/predict/batch", files=[("image", ("a.png", image_bytes(30), "image/png"))]).json()
    assert batch[0]["out_of_distribution"] == {"score": None, "flagged": None}
    live = api.get("/monitoring").json()
    assert live["reference"] is False and live["stats"]["images"] == 2 and live["stats"]["ood"]["scored"] == 0
    version = api.holder.predictor.version
    assert api.metric("xray_api_ood_images_total", version=version, result="unscored") == 2
    assert api.metric("xray_monitor_bin_total", version=version, statistic="mode", bin="L") == 2


def test_monitoring_off_leaves_answers_unscored_and_counts_nothing(start):
    api = start(MONITORING=False)
    answer = api.predict_png(encode(radiographs(1)[0])).json()
    assert answer["out_of_distribution"] == {"score": None, "flagged": None}
    live = api.get("/monitoring").json()
    assert live["enabled"] is False and live["stats"]["images"] == 0
    assert api.metric("xray_monitor_cpu_seconds_total") == 0


def test_metrics_show_the_cpu_monitoring_takes_beside_the_processs(start):
    """Monitoring's own cost, measured where it runs: the request threads' CPU time in observe()."""
    api = start()
    assert api.metric("xray_monitor_cpu_seconds_total") == 0
    send(api, [encode(image) for image in radiographs(32)])
    spent = api.metric("xray_monitor_cpu_seconds_total")
    assert 0 < spent < api.metric("process_cpu_seconds_total")
    api.predict_png(encode(radiographs(1)[0]))
    assert api.metric("xray_monitor_cpu_seconds_total") > spent


def test_a_new_production_model_starts_new_statistics(serve, registry):
    promote_model(registry)
    api = serve()
    api.predict_png(image_bytes(100))
    first = api.get("/monitoring").json()
    assert first["stats"]["images"] == 1
    newer = promote_model(registry, metadata=None)
    wait_for(lambda: api.get("/monitoring").json()["version"] == newer, message="the reload")
    assert api.get("/monitoring").json()["stats"]["images"] == 0
    assert api.get("/monitoring").json()["window"]["started_at"] >= first["window"]["started_at"]


def test_on_gke_the_alarm_starts_retraining_through_the_authenticated_dataset_trigger(tmp_path):
    """The request `make monitor` posts is received over HTTP, then routed by the EventListener's
    own CEL filters (cluster/route.py): with its bearer token it starts retraining, without one nothing.
    (The token's signature and account are the interceptor's, tested in tests/test_pubsub_auth.py.)"""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cluster.route import pubsub_push_request, route
    from monitoring.run import start_retraining

    received = []

    class Listener(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, self.headers.get("Authorization"), body))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        params = load_params(environ={"MONITOR_TRIGGER_URL": f"http://127.0.0.1:{server.server_port}",
                                      "MONITOR_TRIGGER_TOKEN": "s3cret",
                                      "DATASET_URI": "gs://bucket/datasets/covid19-radiography"})
        assert "dataset trigger" in start_retraining(params, tmp_path, cwd=None)
    finally:
        server.shutdown()
    (path, authorization, body), = received
    assert path == "/" and authorization == "Bearer s3cret"  # the token never in the URL
    assert body["message"]["attributes"]["objectId"] == "datasets/covid19-radiography/manifest.json"
    assert route(pubsub_push_request(body, token=authorization.removeprefix("Bearer "))) == "retraining"
    assert route(pubsub_push_request(body, token=None)) == "none"


def test_without_a_token_or_workload_identity_the_trigger_says_so(tmp_path, monkeypatch):
    from monitoring.run import MonitorError, start_retraining

    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server: no Workload Identity
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    params = load_params(environ={"MONITOR_TRIGGER_URL": "http://127.0.0.1:9",
                                  "DATASET_URI": "gs://bucket/datasets/covid19-radiography"})
    with pytest.raises(MonitorError, match="no OIDC token for the retraining trigger"):
        start_retraining(params, tmp_path, cwd=None)


def test_the_monitor_cronjob_reads_every_api_pod_and_triggers_with_the_push_token():
    import yaml

    documents = list(yaml.safe_load_all((REPO_ROOT / "tekton" / "deploy" / "xray-monitor.yaml").read_text()))
    cronjob = next(d for d in documents if d["kind"] == "CronJob")
    service = next(d for d in documents if d["kind"] == "Service")
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert container["command"] == ["make", "monitor"]
    assert env["API_URL"]["value"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert service["spec"]["clusterIP"] == "None" and env["MONITOR_EACH_ADDRESS"]["value"] == "true"
    api = yaml.safe_load_all((REPO_ROOT / "tekton" / "deploy" / "xray-api.yaml").read_text())
    deployment = next(d for d in api if d and d["kind"] == "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "MONITOR_TRIGGER_TOKEN" not in env  # its own OIDC token, accepted by the trigger's interceptor
    assert env["MONITOR_TRIGGER_AUDIENCE"]["valueFrom"]["configMapKeyRef"]["key"] == "PUBSUB_AUDIENCE"
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == "xray-pipeline"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_answers_less_sure_than_the_reference_raise_the_low_confidence_alarm():
    from monitoring.drift import verdict
    from monitoring.reference import build_reference
    from monitoring.stats import Stats
    from monitoring.summaries import summarize

    rng = np.random.default_rng(0)
    summaries = [summarize(rng.random((32, 32, 1)).astype(np.float32), 299, 299, "L") for _ in range(200)]
    sure = [[0.9, 0.05, 0.03, 0.02], [0.03, 0.9, 0.05, 0.02]] * 100
    reference = build_reference(CLASSES, summaries, sure, [], [], 2.0)
    settings = load_params()["monitor"]
    for answers, alarm in ((sure, False), ([[0.4, 0.35, 0.15, 0.1], [0.35, 0.4, 0.15, 0.1]] * 100, True)):
        live = Stats(CLASSES)
        for summary, probabilities in zip(summaries, answers):
            live.add_input(summary)
            live.add_prediction(probabilities, reference.score(summary), False)
        result = verdict(live, reference, settings)
        assert ("low_confidence_excess" in result["drifted"]) is alarm, result["checks"]
        assert result["drifted"] == (["low_confidence_excess"] if alarm else [])


def test_the_summaries_of_a_production_size_input_read_few_pixels_and_match_the_whole_image():
    """At the network's input size (params data.image_size) the summaries read 400 pixels, under
    the 500 elements above which numpy hands the GIL to the API's other threads (the cost monitoring
    had under load), spread so that they still describe the whole image."""
    from core.preprocess import to_array
    from monitoring.summaries import FEATURES, summarize

    size = load_params()["data"]["image_size"]
    for image in radiographs(8, size=299):
        pixels = to_array(image, size)
        summary = summarize(pixels, *image.size, image.mode)
        assert summary.intensity.sum() <= 500
        whole = pixels.reshape(size, size).astype(np.float64)
        assert abs(summary.features[FEATURES.index("mean")] - whole.mean()) < 0.02
        assert abs(summary.features[FEATURES.index("std")] - whole.std()) < 0.02
        cells = whole.reshape(4, size // 4, 4, size // 4).mean(axis=(1, 3)).ravel()
        assert np.abs(summary.features[4:] - cells).max() < 0.05


def test_a_reference_of_the_earlier_summaries_is_refused_by_name_and_its_version_served_unscored(tmp_path):
    from monitoring.reference import REFERENCE_FILE, ReferenceError, read_reference

    registry = Registry(str(tmp_path / "registry"))
    version = registry.register({"model.onnx": b"onnx", REFERENCE_FILE: json.dumps({"schema": 1}).encode()},
                                {"kind": "train", "classes": CLASSES})
    with pytest.raises(ReferenceError, match="schema 1.*retrain the version"):
        read_reference(registry, version)
    monitor = LiveMonitor()
    monitor.load(registry, "testing", version, CLASSES)
    answer = monitor.observe(version, np.zeros((128, 128, 1), np.float32), (299, 299, "L"), [0.7, 0.1, 0.1, 0.1])
    assert answer == {"score": None, "flagged": None} and monitor.snapshot()["stats"]["images"] == 1


def _gil_hand_offs(work, calls: int = 50) -> int:
    """How many times another thread got the GIL while ``work`` ran ``calls`` times, with forced
    switches turned off: only a voluntary release (a numpy loop over more than 500 elements, a
    BLAS call, np.bincount, ...) lets the waiting thread in, and it gives the GIL straight back."""
    import sys
    import threading

    interval = sys.getswitchinterval()
    turns, stop, go = [0], threading.Event(), threading.Event()

    def waiting() -> None:
        go.wait()
        while not stop.is_set():
            turns[0] += 1
            time.sleep(0)  # hands the GIL back at once

    thread = threading.Thread(target=waiting, daemon=True)
    sys.setswitchinterval(1000)
    try:
        thread.start()
        go.set()
        time.sleep(0.01)
        before = turns[0]
        for _ in range(calls):
            work()
        taken = turns[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join()
    return taken


def test_monitoring_a_request_never_hands_the_gil_to_the_apis_other_threads():
    """Under load each hand-off made a request wait for another worker thread; that, not the
    arithmetic, was monitoring's cost (docs/measurements.md). Summarising 4,096 pixels gave ~56
    hand-offs in 50 requests. The control shows the probe sees a numpy loop that releases it."""
    from monitoring.reference import build_reference
    from monitoring.summaries import Source, summarize

    size = load_params()["data"]["image_size"]
    rng = np.random.default_rng(0)
    pixels = rng.random((size, size, 1)).astype(np.float32)
    reference = build_reference(CLASSES, [summarize(rng.random((size, size, 1)).astype(np.float32), 299, 299, "L")
                                          for _ in range(20)], [[0.7, 0.1, 0.1, 0.1]] * 20, [], [], 2.0)
    monitor = LiveMonitor()
    monitor.start("v1", CLASSES, reference)
    assert _gil_hand_offs(lambda: monitor.observe("v1", pixels, Source(299, 299, "L"), [0.6, 0.2, 0.1, 0.1])) == 0
    large = rng.random(1_000_000)
    assert _gil_hand_offs(large.sum, calls=20) > 0

"""The prediction API: the real Flask app under real waitress on a loopback port, a real ONNX model
in a real (temporary, local) registry, requests as the client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
from api_helpers import (  # noqa: F401  (fixtures)
    CLASSES,
    MAX_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    PNG,
    TIMEOUT_S,
    api,
    assert_json_error,
    build_onnx_model,
    gradient_png,
    image_bytes,
    model_metadata,
    production,
    promote_model,
    register_model,
    registry,
    serve,
    wait_for,
)
from helpers import REPO_ROOT

from api.app import create_app
from core.cores import available_cores
from core.predictor import ModelUnusable, Predictor
from registry.store import Registry


def test_png_body_answers_label_and_probabilities_of_the_production_model(api, production):
    dark = api.predict_png(image_bytes(0))
    bright = api.predict_png(image_bytes(255))

    for response in (dark, bright):
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Version"] == production
        body = response.json()
        assert body["model_version"] == production
        assert list(body["probabilities"]) == CLASSES
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert dark.json()["label"] == "Normal"
    assert bright.json()["label"] == "COVID"
    assert dark.json()["probabilities"] != bright.json()["probabilities"]


def test_jpeg_octet_stream_and_multipart_give_the_png_answer(api):
    expected = api.predict_png(image_bytes(180)).json()["probabilities"]
    answers = [
        api.post(data=image_bytes(180, fmt="JPEG"), headers={"Content-Type": "image/jpeg"}),
        api.post(data=image_bytes(180), headers={"Content-Type": "application/octet-stream"}),
        api.post(files={"image": ("xray.png", image_bytes(180), "image/png")}),
        api.post(files={"image": ("xray.jpg", image_bytes(180, fmt="JPEG"), "image/jpeg")}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["probabilities"] == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_rgb_and_16_bit_png_give_the_gray_answer(api, mode):
    gray = api.predict_png(image_bytes(200)).json()["probabilities"]
    response = api.predict_png(image_bytes(200, mode=mode))
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(gray, abs=1e-3)


def test_concurrent_predictions_all_succeed(api):
    results = []

    def client():
        with requests.Session() as http:
            for value in range(0, 250, 25):
                results.append(http.post(api.url + "/predict", data=image_bytes(value), headers=PNG,
                                         timeout=TIMEOUT_S).status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 60


def truncated_png() -> bytes:
    png = gradient_png(128)
    return png[: len(png) // 2]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "not_an_image"),
        (b"hello, this is text and not an image", "not_an_image"),
        (truncated_png(), "truncated_image"),
        (image_bytes(128, size=MIN_SIDE - 1), "wrong_dimensions"),
    ],
    ids=["empty", "text", "truncated", "tiny"],
)
def test_bad_images_answer_400_json(api, body, code):
    assert_json_error(api.predict_png(body), 400, code)


def test_multipart_without_image_field_answers_400(api):
    response = api.post(files={"picture": ("xray.png", image_bytes(), "image/png")})
    assert_json_error(response, 400, "missing_field")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None])
def test_unsupported_media_type_answers_415(api, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post(data=image_bytes(), headers=headers)
    assert response.request.headers.get("Content-Type") == content_type
    assert_json_error(response, 415, "unsupported_media_type")


def test_body_over_max_bytes_answers_413_with_content_length_or_chunked(api):
    body = os.urandom(MAX_BYTES + 1)
    assert_json_error(api.predict_png(body), 413, "too_many_bytes")

    chunks = (body[i:i + 50_000] for i in range(0, len(body), 50_000))
    chunked = api.predict_png(chunks)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_json_error(chunked, 413, "too_many_bytes")

    multipart = api.post(files={"image": ("big.png", body, "image/png")})
    assert_json_error(multipart, 413, "too_many_bytes")


def test_image_over_max_pixels_answers_413(api):
    side = int(MAX_PIXELS ** 0.5) + 1
    body = image_bytes(100, size=side)
    assert len(body) < MAX_BYTES  # the bytes are fine, the pixels are not
    assert_json_error(api.predict_png(body), 413, "too_many_pixels")


def test_unknown_route_and_wrong_method_answer_json(api):
    assert_json_error(api.get("/nowhere"), 404, "not_found")
    wrong_method = api.get("/predict")
    assert_json_error(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["Allow"]


def test_unexpected_error_answers_500_without_details(api, monkeypatch):
    def explode(image):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(api.holder.predictor, "classify", explode)
    body = assert_json_error(api.predict_png(image_bytes()), 500, "internal_error")
    assert "secret" not in json.dumps(body)


def test_health_readiness_and_model_metadata(api, production):
    assert api.get("/healthz").status_code == 200
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": production, "wanted_version": production,
                            "wanted_error": None}
    model = api.get("/model")
    assert model.status_code == 200
    assert model.headers["X-Model-Version"] == production
    assert model.json()["version"] == production
    assert model.json()["classes"] == CLASSES
    assert model.json()["tests"][-1]["passed"] == 3


def test_no_model_answers_503_then_a_promoted_model_is_picked_up_without_restart(serve, registry):
    api = serve()
    assert api.get("/healthz").status_code == 200
    assert_json_error(api.get("/readyz"), 503, "no_model")
    assert_json_error(api.get("/model"), 503, "no_model")
    assert_json_error(api.predict_png(image_bytes()), 503, "no_model")
    assert api.get("/healthz").headers["X-Model-Version"] == "none"

    version = promote_model(registry)
    wait_for(lambda: api.get("/readyz").status_code == 200, message="the promoted model")
    response = api.predict_png(image_bytes())
    assert response.status_code == 200
    assert response.json()["model_version"] == version


def test_hot_reload_swaps_the_model_while_requests_keep_succeeding(api, registry, production):
    answers_per_client: list[list[tuple[int, str]]] = [[] for _ in range(3)]
    stop = threading.Event()

    def client(answers):
        with requests.Session() as http:
            while not stop.is_set():
                response = http.post(api.url + "/predict", data=image_bytes(0), headers=PNG,
                                     timeout=TIMEOUT_S)
                answers.append((response.status_code, response.headers["X-Model-Version"]))

    clients = [threading.Thread(target=client, args=(answers,)) for answers in answers_per_client]
    for thread in clients:
        thread.start()
    try:
        time.sleep(0.1)  # requests answered by the old model
        # Swapped weights: the new model calls a black image COVID instead of Normal.
        new_model = build_onnx_model(weights=(-10.0, 0.0, 10.0, 4.0), biases=(5.0, 0.0, -5.0, -2.0))
        new_version = promote_model(registry, new_model)
        wait_for(lambda: api.get("/model").json()["version"] == new_version, message="the new model")
        time.sleep(0.3)  # requests answered by the new model
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    for answers in answers_per_client:
        assert all(status == 200 for status, _ in answers)
        versions = [version for _, version in answers]
        switch = versions.index(new_version)  # each client sees the old model, then only the new one
        assert switch > 0
        assert versions[:switch] == [production] * switch
        assert versions[switch:] == [new_version] * (len(versions) - switch)
    response = api.predict_png(image_bytes(0))
    assert response.json()["label"] == "COVID"
    assert response.headers["X-Model-Version"] == new_version


@pytest.mark.parametrize(
    "bad_model",
    [b"this is not an onnx model", build_onnx_model(softmax=False)],
    ids=["corrupt-file", "fails-warm-up"],
)
def test_a_model_that_fails_to_load_never_replaces_the_served_one(api, registry, production, bad_model):
    bad_version = promote_model(registry, bad_model)
    wait_for(lambda: api.metric("xray_api_model_reloads_total", result="failure") == 1, message="the failed load")

    assert api.get("/model").json()["version"] == production
    response = api.predict_png(image_bytes())
    assert response.status_code == 200 and response.json()["model_version"] == production
    ready = api.get("/readyz").json()
    assert (ready["model_version"], ready["wanted_version"]) == (production, bad_version)
    assert ready["wanted_error"].startswith(f"rejected: model {bad_version}: ")
    assert "\n" not in ready["wanted_error"]
    assert api.metric("xray_api_model_up_to_date") == 0
    time.sleep(0.5)  # several polls: the rejected version is not retried
    assert api.metric("xray_api_model_reloads_total", result="failure") == 1
    assert registry.current()["version"] == bad_version

    good_version = promote_model(registry)
    wait_for(lambda: api.get("/model").json()["version"] == good_version, message="the next good model")
    assert api.get("/readyz").json()["wanted_error"] is None
    assert api.metric("xray_api_model_up_to_date") == 1


def test_fixed_version_mode_serves_a_testing_version_and_ignores_the_pointer(serve, registry, production):
    candidate = register_model(registry, build_onnx_model(weights=(0.0, 10.0, 0.0, 0.0), biases=(0, 0, 0, 0)),
                               tested=False)
    api = serve(MODEL_STAGE="testing", MODEL_VERSION=candidate)
    response = api.predict_png(image_bytes(255))
    assert response.status_code == 200
    assert response.json()["model_version"] == candidate
    assert response.json()["label"] == "Lung_Opacity"

    promote_model(registry)
    time.sleep(0.5)
    assert api.get("/model").json()["version"] == candidate


def test_testing_stage_without_a_version_is_a_configuration_error(registry):
    with pytest.raises(ValueError, match="MODEL_VERSION"):
        create_app({"REGISTRY_URI": registry.uri, "MODEL_STAGE": "testing"})


def test_predictor_refuses_a_model_that_does_not_match_its_metadata():
    model = build_onnx_model()
    with pytest.raises(ModelUnusable, match="sha256"):
        Predictor(model, {**model_metadata(b"other bytes"), "version": "v1"})
    three_classes = {**model_metadata(model), "version": "v1", "classes": CLASSES[:3]}
    with pytest.raises(ModelUnusable, match="output shape"):
        Predictor(model, three_classes).warm_up()
    predictor = Predictor(model, {**model_metadata(model), "version": "v1"})
    predictor.warm_up()
    assert predictor.image_size == 32 and predictor.input_name == "image"
    assert predictor.predict(np.zeros((3, 32, 32, 1), np.float32)).shape == (3, 4)


def test_every_core_means_the_cores_this_process_may_use_not_the_hosts():
    model = build_onnx_model()
    metadata = {**model_metadata(model), "version": "v1"}

    def threads(predictor):
        return predictor._session.get_session_options().intra_op_num_threads

    assert threads(Predictor(model, metadata, intra_op_threads=0)) == available_cores()
    assert threads(Predictor(model, metadata, intra_op_threads=1)) == 1


def cli_env(registry: Registry) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("API_")}
    return {**env, "REGISTRY_URI": registry.uri, "PYTHONUNBUFFERED": "1"}


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "api.serve", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_help_lists_the_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--threads", "--registry", "--stage", "--version", "--port-file"):
        assert option in result.stdout


def test_serve_on_a_busy_port_fails_with_one_clear_line(registry):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--port", str(port), env=cli_env(registry))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: cannot listen on 127.0.0.1:{port}")


def test_serve_writes_the_port_file_serves_and_stops_on_sigterm(registry, production, tmp_path):
    port_file = tmp_path / "run" / "api.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "api.serve", "--port", "0", "--port-file", str(port_file)],
        cwd=REPO_ROOT, env=cli_env(registry), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: port_file.exists() or process.poll() is not None, timeout=30,
                 message="the port file")
        port = int(port_file.read_text())
        response = requests.get(f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": "cli-1"},
                                timeout=TIMEOUT_S)
        assert response.status_code == 200 and response.json()["model_version"] == production
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert f"serving {production} on http://127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [(line["request_id"], line["route"], line["status"], line["model_version"]) for line in access] == [
        ("cli-1", "/readyz", 200, production)]


def test_the_api_does_not_import_tensorflow():
    code = "import sys, api.serve; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60).returncode == 0

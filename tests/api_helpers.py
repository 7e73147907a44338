"""Shared helpers for tests that run the prediction API: a tiny real ONNX model, images, a registry.

The model maps an image's mean brightness ``m`` to four logits ``weights * m + biases`` followed by
Softmax, so different images get different probabilities and the winning class is predictable:
with the default weights a black image is ``Normal`` and a white one ``COVID``.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.serve import start_in_thread
from registry.store import Registry

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
IMAGE_SIZE = 32
OPSET = 17
DEFAULT_WEIGHTS = (10.0, 0.0, -10.0, 4.0)
DEFAULT_BIASES = (-5.0, 0.0, 5.0, -2.0)


def build_onnx_model(
    image_size: int = IMAGE_SIZE,
    weights=DEFAULT_WEIGHTS,
    biases=DEFAULT_BIASES,
    softmax: bool = True,
) -> bytes:
    """A serialized ONNX model: input "image" float [N, S, S, 1], output "probabilities" [N, 4].

    ``softmax=False`` leaves raw logits as output: a model that loads but fails the warm-up check.
    """
    classes = len(weights)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "flat_shape"], ["brightness"]),
        helper.make_node("MatMul", ["brightness", "weights"], ["scaled"]),
        helper.make_node("Add", ["scaled", "biases"], ["logits" if softmax else "probabilities"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "brightness_classifier",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", image_size, image_size, 1])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        initializer=[
            helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 1]),
            helper.make_tensor("weights", TensorProto.FLOAT, [1, classes], list(weights)),
            helper.make_tensor("biases", TensorProto.FLOAT, [classes], list(biases)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def model_metadata(model_bytes: bytes, image_size: int = IMAGE_SIZE, classes=CLASSES) -> dict:
    """Metadata shaped like the training pipeline's."""
    return {
        "kind": "train",
        "git_commit": "0" * 40,
        "parent_version": None,
        "classes": list(classes),
        "image_size": image_size,
        "dataset": {
            "uri": "data/test",
            "manifest_sha256": "1" * 64,
            "class_counts": {name: 10 for name in classes},
        },
        "params": {"data": {"image_size": image_size}},
        "metrics": {"accuracy": 0.95},
        "gate": {"passed": True, "checks": []},
        "onnx": {
            "input": "image",
            "output": "probabilities",
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "opset": OPSET,
            "parity_max_abs_diff": 1e-6,
        },
    }


def register_model(registry: Registry, model_bytes: bytes | None = None, metadata: dict | None = None,
                   tested: bool = True) -> str:
    """Register a version in testing (with a passed test run unless ``tested=False``)."""
    model_bytes = build_onnx_model() if model_bytes is None else model_bytes
    metadata = model_metadata(model_bytes) if metadata is None else metadata
    version = registry.register({"model.onnx": model_bytes}, metadata)
    if tested:
        registry.record_test_run(
            version, {"suite_sha256": "x", "passed": 3, "failed": 0, "at": "2026-11-27T13:30:00Z"}
        )
    return version


def promote_model(registry: Registry, model_bytes: bytes | None = None, metadata: dict | None = None) -> str:
    """Register, record a passed test run and promote; returns the version."""
    version = register_model(registry, model_bytes, metadata)
    registry.promote(version, by="tests")
    return version


def image_bytes(value: int = 128, size: int = 64, mode: str = "L", fmt: str = "PNG") -> bytes:
    """An image filled with ``value`` (0-255, scaled for 16-bit), encoded as PNG or JPEG."""
    if mode == "I;16":
        image = Image.fromarray(np.full((size, size), value * 257, dtype=np.uint16))
    elif mode == "RGB":
        image = Image.new("RGB", (size, size), (value, value, value))
    else:
        image = Image.new(mode, (size, size), value)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def gradient_png(size: int = 64) -> bytes:
    """A gray PNG with varied pixels, large enough that cutting it in half truncates pixel data."""
    rows = np.linspace(0, 255, size, dtype=np.float64)
    noise = np.random.default_rng(0).integers(0, 64, (size, size))
    pixels = np.clip(rows[:, None] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and carries no pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


MAX_BYTES = 200_000
MAX_BATCH_BYTES = 400_000
MAX_BATCH_IMAGES = 4
MAX_PIXELS = 1_000_000
MIN_SIDE = 16
PNG = {"Content-Type": "image/png"}
TIMEOUT_S = 10


class RunningApi:
    """An app served by waitress on a free loopback port."""

    def __init__(self, app, server):
        self.app, self.server, self.url = app, server, server.url
        self.http = requests.Session()

    def get(self, path, **kwargs):
        return self.http.get(self.url + path, timeout=TIMEOUT_S, **kwargs)

    def post(self, path="/predict", **kwargs):
        return self.http.post(self.url + path, timeout=TIMEOUT_S, **kwargs)

    def predict_png(self, png: bytes, **kwargs):
        return self.post(data=png, headers={**PNG, **kwargs.pop("headers", {})}, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.get("/metrics").text, name, **labels)

    @property
    def holder(self):
        return self.app.extensions["model_holder"]

    def close(self):
        self.http.close()
        self.server.stop()
        self.holder.stop()


def wait_for(condition, timeout=TIMEOUT_S, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {message}")


def assert_json_error(response, status: int, code: str) -> dict:
    """The error contract: status, JSON body of exactly {"error": {code, message}}, no trace."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "X-Model-Version" in response.headers and "X-Request-ID" in response.headers
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text (its full name and labels), 0 if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(str(tmp_path / "registry"))


@pytest.fixture
def serve(registry):
    """Start the API on the test registry; config keys override the test defaults."""
    running = []

    def start(**config) -> RunningApi:
        settings = {
            "REGISTRY_URI": registry.uri,
            "RELOAD_INTERVAL_S": 0.2,
            "MAX_CONTENT_LENGTH": MAX_BYTES,
            "MAX_BATCH_BYTES": MAX_BATCH_BYTES,
            "MAX_BATCH_IMAGES": MAX_BATCH_IMAGES,
            "MAX_PIXELS": MAX_PIXELS,
            "MIN_SIDE": MIN_SIDE,
            "INTRA_OP_THREADS": 1,
            **config,
        }
        app = create_app(settings)
        api = RunningApi(app, start_in_thread(app, threads=4))
        running.append(api)
        return api

    yield start
    for api in running:
        api.close()


@pytest.fixture
def production(registry) -> str:
    """A promoted version of the default test model."""
    return promote_model(registry)


@pytest.fixture
def api(serve, production) -> RunningApi:
    return serve()


def build_pattern_model(image_size: int = IMAGE_SIZE, seed: int = 0, scale: float = 40.0) -> bytes:
    """A serialized ONNX model whose logits are a fixed, zero-mean random projection of the pixels.

    Unlike the brightness model it reacts to the pattern of an image, not its mean, so how an image
    is decoded and resized changes its answers, as it does a trained CNN's.
    """
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((image_size * image_size, len(CLASSES)))
    weights = ((weights - weights.mean(axis=0)) / image_size * scale).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "pattern_classifier",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", image_size, image_size, 1])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)])],
        initializer=[helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, image_size * image_size]),
                     helper.make_tensor("weights", TensorProto.FLOAT, list(weights.shape), weights.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()

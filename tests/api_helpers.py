"""Shared helpers for tests that run the prediction API: a tiny real ONNX model, images, a registry.

The model maps an image's mean brightness ``m`` to four logits ``weights * m + biases`` followed by
Softmax, so different images get different probabilities and the winning class is predictable:
with the default weights a black image is ``Normal`` and a white one ``COVID``.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

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

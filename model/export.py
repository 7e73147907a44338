"""ONNX export with tf2onnx, and the parity of onnxruntime against Keras."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from model.network import INPUT_NAME, OUTPUT_NAME


class ExportError(RuntimeError):
    """The model could not be converted, or the ONNX model does not have the expected interface."""


def export_onnx(model: keras.Model, image_size: int, opset: int) -> bytes:
    """Convert ``model`` to ONNX bytes with input ``image`` and output ``probabilities``."""
    signature = (tf.TensorSpec((None, image_size, image_size, 1), tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as first_error:  # noqa: BLE001  tf2onnx raises many types; fall back once
        function = tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)})
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"tf2onnx could not convert the model: {exc}") from first_error
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(f"exported graph has inputs {inputs} and outputs {outputs}, "
                          f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_probabilities(onnx_bytes: bytes, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run the ONNX model on ``images`` (N, S, S, 1) with onnxruntime."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    parts = [
        session.run([OUTPUT_NAME], {INPUT_NAME: images[start:start + batch_size]})[0]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def onnx_info(onnx_bytes: bytes, opset: int, parity: float) -> dict:
    """What the registry records about an exported model."""
    return {
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "opset": opset,
        "parity_max_abs_diff": float(parity),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "bytes": len(onnx_bytes),
    }

"""One ONNX model ready to answer: an onnxruntime session plus what the API needs to know about it.

The network input is float32 ``(N, S, S, 1)`` in [0, 1] (see ``model.preprocess``); the output is
softmax probabilities ``(N, len(classes))`` in the order of the metadata's ``classes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from core.cores import available_cores

# onnxruntime's C++ core raises its own exception types, which derive from Exception directly; a
# bad model file or a model with the wrong signature raises one of them. The Python wrapper adds
# RuntimeError and ValueError.
ONNXRUNTIME_ERRORS = tuple(
    member
    for member in vars(ort_state).values()
    if isinstance(member, type) and issubclass(member, Exception)
) + (RuntimeError, ValueError)

SUM_TOLERANCE = 1e-3  # softmax in float32 sums to 1 within ~1e-6; anything further is not softmax


class ModelUnusable(RuntimeError):
    """A model cannot be served: it does not load, or its answers are not class probabilities."""


class Predictor:
    """An onnxruntime session with the model's input name, image size, classes and metadata.

    ``predict`` is safe to call from several threads at once: onnxruntime's ``run`` is thread-safe.
    """

    def __init__(self, model_bytes: bytes, metadata: Mapping, intra_op_threads: int = 0):
        self.metadata = dict(metadata)
        self.version = str(self.metadata.get("version") or "unknown")
        self._check_digest(model_bytes)
        options = ort.SessionOptions()
        # 0: every core this process may use. Not onnxruntime's own 0, which counts the host's
        # cores and, under a container's CPU quota, starts threads that are throttled.
        # Inter-op parallelism buys nothing for a plain CNN.
        options.intra_op_num_threads = intra_op_threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ONNXRUNTIME_ERRORS as exc:
            raise ModelUnusable(f"model {self.version}: onnxruntime cannot load it ({exc})") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise ModelUnusable(
                f"model {self.version}: expected one float input, got "
                f"{[(item.name, item.type) for item in inputs]}"
            )
        self.input_name = inputs[0].name
        self.output_name = self._output_name()
        self.image_size = self._image_size(inputs[0].shape)
        self.classes = [str(name) for name in self.metadata.get("classes") or []]
        if len(self.classes) < 2:
            raise ModelUnusable(f"model {self.version}: its metadata lists no classes")

    def _check_digest(self, model_bytes: bytes) -> None:
        expected = (self.metadata.get("onnx") or {}).get("sha256")
        if expected and hashlib.sha256(model_bytes).hexdigest() != expected:
            raise ModelUnusable(
                f"model {self.version}: model.onnx does not match the sha256 in its metadata"
            )

    def _output_name(self) -> str:
        names = [item.name for item in self._session.get_outputs()]
        wanted = (self.metadata.get("onnx") or {}).get("output")
        if wanted in names:
            return wanted
        if len(names) == 1:
            return names[0]
        raise ModelUnusable(f"model {self.version}: cannot tell the probabilities among {names}")

    def _image_size(self, shape: list) -> int:
        """The side S of the square input, from the ONNX shape ``[N, S, S, 1]``, else the metadata."""
        # Unknown dimensions are None or a symbolic name (a str); a known channel count must be 1.
        if len(shape) != 4 or (isinstance(shape[3], int) and shape[3] != 1):
            raise ModelUnusable(f"model {self.version}: input shape {shape} is not [N, S, S, 1]")
        height, width = shape[1], shape[2]
        if isinstance(height, int) and height > 0 and height == width:
            return height
        size = self.metadata.get("image_size")
        if isinstance(size, int) and size > 0:
            return size
        raise ModelUnusable(
            f"model {self.version}: neither its input shape {shape} nor its metadata give the image size"
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, len(classes))`` for a float32 batch ``(N, S, S, 1)`` in [0, 1]."""
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return self._session.run([self.output_name], feed)[0]

    def classify(self, image: np.ndarray) -> tuple[str, dict[str, float]]:
        """The label and the probability of every class for one image ``(S, S, 1)``."""
        return self._labelled(self.predict(image[np.newaxis])[0])  # a view: no copy on the request path

    def classify_batch(self, images: list[np.ndarray]) -> list[tuple[str, dict[str, float]]]:
        """``classify`` for several images, in one ``session.run``."""
        if not images:
            return []
        return [self._labelled(row) for row in self.predict(np.stack(images))]

    def _labelled(self, probabilities: np.ndarray) -> tuple[str, dict[str, float]]:
        by_class = {name: float(p) for name, p in zip(self.classes, probabilities)}
        return self.classes[int(np.argmax(probabilities))], by_class

    def warm_up(self) -> None:
        """Run one inference on a black image; raise ModelUnusable unless it answers probabilities.

        The first run also allocates onnxruntime's buffers, so the first request is not slow.
        """
        batch = np.zeros((1, self.image_size, self.image_size, 1), dtype=np.float32)
        try:
            probabilities = np.asarray(self.predict(batch), dtype=np.float64)
        except ONNXRUNTIME_ERRORS as exc:
            raise ModelUnusable(f"model {self.version}: inference fails ({exc})") from exc
        expected_shape = (1, len(self.classes))
        if probabilities.shape != expected_shape:
            raise ModelUnusable(
                f"model {self.version}: output shape {probabilities.shape}, expected {expected_shape} "
                f"for classes {self.classes}"
            )
        total = probabilities.sum()
        if (
            not np.all(np.isfinite(probabilities))
            or probabilities.min() < -SUM_TOLERANCE
            or abs(total - 1.0) > SUM_TOLERANCE
        ):
            raise ModelUnusable(
                f"model {self.version}: output {probabilities.tolist()} is not probabilities "
                f"(sum {total:.6f})"
            )

"""Registered models evaluated now, on the current test split: the production model for the
champion/challenger gate, and the base of a retraining run ("is it still good on the new data?").

The model runs through the API's own predictor (onnxruntime, the same checks as serving), at its
own input size, on the same test images the candidate is evaluated on.
"""

from __future__ import annotations

import numpy as np

from core.predictor import Predictor
from core.preprocess import DEFAULT_MAX_PIXELS, image_bytes_to_array
from model.dataset import Dataset, Example
from model.decoded_cache import decoded_rows
from model.evaluate import classification_metrics
from registry.store import MODEL_FILE, Registry

BATCH = 64


def decode_examples(dataset: Dataset, examples: list[Example], size: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The network inputs ``(N, size, size, 1)`` of ``examples``: gathered from the decoded cache
    when ``dataset`` carries it at ``size`` (the same pixels), else decoded by the shared decoder."""
    if not examples:
        return np.zeros((0, size, size, 1), dtype=np.float32)
    rows = decoded_rows(dataset, examples, size)
    if rows is not None:
        # The division of core/preprocess.py's to_array, in float32: bit for bit the same input.
        return (np.asarray(dataset.decoded.images[rows], dtype=np.float32) / 255.0)[..., np.newaxis]
    return np.stack([image_bytes_to_array(dataset.read_bytes(e.path), size, max_pixels=max_pixels)
                     for e in examples])


def predict_batches(predictor, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predictor.predict(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def evaluate_registered(registry: Registry, version: str, stage: str, dataset: Dataset,
                        decoded: dict[int, np.ndarray] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """``{"version", "stage", "metrics", "test_images"}`` of a registered model on ``dataset``'s test
    split, or ``{"version", "stage", "comparable": False, "reason"}`` when its classes differ.

    ``decoded`` maps an input size to the test images already decoded at that size (reused);
    ``max_pixels`` is the pixel budget of the decoder otherwise (``api.max_pixels``).
    """
    metadata = registry.metadata(version, stage)
    if list(metadata.get("classes") or []) != list(dataset.classes):
        return {"version": version, "stage": stage, "comparable": False,
                "reason": f"it predicts {metadata.get('classes')}, not {dataset.classes}"}
    predictor = Predictor(registry.read_file(version, MODEL_FILE, stage), metadata, intra_op_threads=0)
    examples = dataset.split("test")
    decoded = decoded if decoded is not None else {}
    if predictor.image_size not in decoded:
        decoded[predictor.image_size] = decode_examples(dataset, examples, predictor.image_size, max_pixels)
    probabilities = predict_batches(predictor, decoded[predictor.image_size])
    labels = np.array([dataset.classes.index(e.label) for e in examples])
    return {"version": version, "stage": stage, "test_images": len(examples),
            "metrics": classification_metrics(labels, probabilities, dataset.classes)}

"""The monitoring reference of a trained model (monitoring/reference.py): the summaries of its
training sample and test split, and its answers on both, from the pixels the model is fed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core.preprocess import ACCEPTED_FORMATS, open_image, to_array
from model.dataset import Dataset, Example
from model.decoded_cache import DecodedDataset, decoded_rows
from model.export import onnx_probabilities
from monitoring.reference import Reference, build_reference
from monitoring.summaries import Source, Summary, source_of, summarize

CHUNK = 512

def spread(examples: list[Example], limit: int) -> list[Example]:
    """At most ``limit`` of ``examples``, evenly spread (every class and source kept in proportion)."""
    if limit <= 0 or len(examples) <= limit:
        return list(examples)
    return [examples[int(i)] for i in np.linspace(0, len(examples) - 1, limit)]


def _recorded_source(dataset: Dataset, example: Example) -> Source | None:
    """The size and mode data validation recorded for ``example`` (decoded cache), if it did."""
    if not isinstance(dataset, DecodedDataset) or dataset.decoded is None:
        return None
    record = dataset.decoded.records.get(example.path) or {}
    if "mode" not in record or "size" not in record:
        return None
    width, height = (int(side) for side in record["size"].split("x"))
    return Source(width, height, record["mode"])


def _header_source(dataset: Dataset, example: Example) -> Source:
    """The size and mode of a (validated) file from its header; no pixels are decoded."""
    with Image.open(io.BytesIO(dataset.read_bytes(example.path)), formats=ACCEPTED_FORMATS) as image:
        return source_of(image)


def network_inputs(dataset: Dataset, examples: list[Example], image_size: int, max_pixels: int):
    """``(network input, source)`` of each example, in order: from the decoded cache when it holds
    them, else decoded here."""
    rows = decoded_rows(dataset, examples, image_size)
    for index, example in enumerate(examples):
        source = _recorded_source(dataset, example)
        if rows is not None:
            array = dataset.decoded.images[rows[index]].astype(np.float32)[..., np.newaxis] / np.float32(255.0)
        else:
            image = open_image(dataset.read_bytes(example.path), max_pixels=max_pixels)
            array, source = to_array(image, image_size), source_of(image)
        yield array, source or _header_source(dataset, example)


def summarized(dataset: Dataset, examples: list[Example], image_size: int, max_pixels: int,
               onnx_bytes: bytes) -> tuple[list[Summary], np.ndarray]:
    """The summaries of ``examples`` and the model's probabilities for them, :data:`CHUNK` images
    at a time (5,000 images of 128 x 128 would hold 330 MB at once)."""
    found, probabilities = [], []
    for start in range(0, len(examples), CHUNK):
        inputs = list(network_inputs(dataset, examples[start:start + CHUNK], image_size, max_pixels))
        probabilities.append(onnx_probabilities(onnx_bytes, np.stack([array for array, _ in inputs])))
        found += [summarize(array, *source) for array, source in inputs]
    return found, (np.concatenate(probabilities) if probabilities else np.zeros((0, len(dataset.classes))))


def reference_statistics(usable: Dataset, params: dict, onnx_bytes: bytes, test_images: np.ndarray,
                         test_probabilities: np.ndarray) -> Reference:
    """The reference of the model ``onnx_bytes`` trained on ``usable``: its training sample's summaries
    and answers, and its test split's (``test_images`` and ``test_probabilities``, in the split's order)."""
    size, budget = params["data"]["image_size"], params["api"]["max_pixels"]
    monitor = params["monitor"]
    train, train_probabilities = summarized(usable, spread(usable.split("train"), monitor["reference_max_images"]),
                                            size, budget, onnx_bytes)
    test_examples = usable.split("test")
    test = [summarize(array, *source) for array, source in
            zip(test_images, (_recorded_source(usable, e) or _header_source(usable, e) for e in test_examples))]
    return build_reference(usable.classes, train, train_probabilities, test, test_probabilities,
                           monitor["ood_threshold"])

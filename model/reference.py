"""The monitoring reference of a trained model (monitoring/reference.py): its training images'
summaries and its answers on the test split, computed from the pixels the model was fed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from model.dataset import Dataset, Example
from model.decoded_cache import DecodedDataset, decoded_rows
from model.preprocess import ACCEPTED_FORMATS, open_image, to_array
from monitoring.reference import Reference, build_reference
from monitoring.summaries import Source, Summary, summarize, source_of


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


def summaries(dataset: Dataset, examples: list[Example], image_size: int, max_pixels: int,
              pixels: np.ndarray | None = None) -> list[Summary]:
    """The summaries of ``examples``; ``pixels`` (their network inputs, in order) when the caller
    has them, else they come from the decoded cache or are decoded here."""
    rows = decoded_rows(dataset, examples, image_size) if pixels is None else None
    found = []
    for index, example in enumerate(examples):
        source = _recorded_source(dataset, example)
        if pixels is not None:
            array = pixels[index]
        elif rows is not None:
            array = dataset.decoded.images[rows[index]].astype(np.float32) / 255.0
        else:
            image = open_image(dataset.read_bytes(example.path), max_pixels=max_pixels)
            array, source = to_array(image, image_size), source_of(image)
        found.append(summarize(array, *(source or _header_source(dataset, example))))
    return found


def reference_statistics(usable: Dataset, params: dict, test_images: np.ndarray,
                         test_probabilities: np.ndarray) -> Reference:
    """The reference of a model evaluated on ``usable``'s test split (``test_images`` and the
    model's ``test_probabilities``, in the split's order)."""
    size, budget = params["data"]["image_size"], params["api"]["max_pixels"]
    monitor = params["monitor"]
    train = spread(usable.split("train"), monitor["reference_max_images"])
    return build_reference(
        usable.classes,
        summaries(usable, train, size, budget),
        summaries(usable, usable.split("test"), size, budget, pixels=test_images),
        test_probabilities,
        monitor["ood_threshold"],
    )

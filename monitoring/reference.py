"""The reference statistics of a model version, and the out-of-distribution score they give.

Written at training (and retraining) time as ``monitoring_reference.json``, a create-only file of
the registry version, before its metadata.json:

- ``train``: the summaries of (up to ``monitor.reference_max_images`` of) the training split's
  images, in the fixed bins of :mod:`monitoring.stats`: what the inputs should look like;
- ``test``: the same for the test split, plus the model's answers on it (predicted classes, top
  probability, margin, OOD scores): what the answers should look like;
- ``features``: the median and robust scale of each appearance feature on the training split.

**Out-of-distribution score** of one image: the mean of the :data:`TOP` largest robust z-scores of
its appearance features (:data:`monitoring.summaries.FEATURES`),

    z_k = |x_k - median_k| / scale_k,   scale_k = max(1.4826 * MAD_k, 0.02),   score = mean of the 3 largest z_k

where MAD is the median absolute deviation on the training split (1.4826 * MAD estimates the
standard deviation of a normal distribution, without letting outliers widen it) and 0.02 (2 % of
the intensity range) keeps a feature that barely varies in training from turning noise into
alarms. Three features, not the largest alone: one feature with a heavy tail in training (the
share of near-black pixels, say) does not flag an ordinary image by itself, while an image that is
not a chest radiograph is off on several at once. An image like the training images scores about 1 to 3; a blank, inverted, photographic
or other-body-part image scores far above ``monitor.ood_threshold``. A version registered
before this file existed has no reference: the API then answers ``score: null, flagged: null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from monitoring.stats import MergeError, Stats
from monitoring.summaries import FEATURES, Summary
from registry.store import Registry, RegistryError, utc_now

REFERENCE_FILE = "monitoring_reference.json"
SCHEMA = 1
MAD_TO_SIGMA = 1.4826
SCALE_FLOOR = 0.02
TOP = 3


class ReferenceError(ValueError):
    """A reference file that cannot be read."""


@dataclass
class Reference:
    median: np.ndarray
    scale: np.ndarray
    train: Stats
    test: Stats
    created_at: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.test.classes

    def score(self, summary: Summary) -> float:
        """The out-of-distribution score of one image (see the module docstring)."""
        z = np.abs(summary.features - self.median) / self.scale
        return float(np.partition(z, -TOP)[-TOP:].mean())

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "created_at": self.created_at,
                "features": {"names": list(FEATURES), "median": [float(v) for v in self.median],
                             "scale": [float(v) for v in self.scale],
                             "score": f"mean of the {TOP} largest |x - median| / scale"},
                "train": self.train.to_json(), "test": self.test.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> "Reference":
        try:
            if data.get("schema") != SCHEMA or data["features"]["names"] != list(FEATURES):
                raise ReferenceError(f"a reference of schema {data.get('schema')!r} or other features; this code "
                                     f"reads schema {SCHEMA}")
            median = np.asarray(data["features"]["median"], dtype=np.float64)
            scale = np.asarray(data["features"]["scale"], dtype=np.float64)
            if median.shape != (len(FEATURES),) or scale.shape != median.shape or not np.all(scale > 0):
                raise ReferenceError("the reference's feature medians or scales are malformed")
            return cls(median, scale, Stats.from_json(data["train"]), Stats.from_json(data["test"]),
                       str(data.get("created_at") or ""))
        except (KeyError, TypeError, ValueError, MergeError) as exc:
            if isinstance(exc, ReferenceError):
                raise
            raise ReferenceError(f"the reference statistics are malformed ({exc})") from exc


def build_reference(classes: Sequence[str], train: Iterable[Summary], test: Iterable[Summary],
                    test_probabilities: Iterable[Sequence[float]], ood_threshold: float) -> Reference:
    """The reference of a model from its training images' summaries, and its test images' summaries
    with the model's probabilities for them."""
    train = list(train)
    if not train:
        raise ReferenceError("no training images to build the reference from")
    features = np.stack([summary.features for summary in train])
    median = np.median(features, axis=0)
    scale = np.maximum(MAD_TO_SIGMA * np.median(np.abs(features - median), axis=0), SCALE_FLOOR)
    reference = Reference(median, scale, Stats(classes), Stats(classes), utc_now())
    for summary in train:
        reference.train.add_input(summary)
    for summary, probabilities in zip(test, test_probabilities):
        score = reference.score(summary)
        reference.test.add_input(summary)
        reference.test.add_prediction(probabilities, score, score > ood_threshold)
    return reference


def reference_bytes(reference: Reference) -> bytes:
    return json.dumps(reference.to_json(), separators=(",", ":")).encode()


def read_reference(registry: Registry, version: str, stage: str | None = None) -> Reference | None:
    """The reference of ``version``; None when it has none (registered before monitoring existed).

    ReferenceError when it has one that cannot be read; StorageError when the registry cannot be.
    """
    try:
        data = registry.read_file(version, REFERENCE_FILE, stage)
    except RegistryError:
        return None
    try:
        return Reference.from_json(json.loads(data))
    except ValueError as exc:  # json's errors are ValueErrors; ReferenceError is one too
        raise ReferenceError(f"{version}: {REFERENCE_FILE} cannot be read ({exc})") from exc

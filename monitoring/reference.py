"""The reference statistics of a model version, and the out-of-distribution score they give.

Written at training (and retraining) time as ``monitoring_reference.json``, a create-only file of
the registry version, before its metadata.json:

- ``train``: the summaries of (up to ``monitor.reference_max_images`` of) the training split's
  images, in the fixed bins of :mod:`monitoring.stats` (what the inputs should look like), and the
  model's answers on them (predicted class, top probability, margin, OOD score);
- ``test``: the same for the test split;
- ``features``: the median and robust scale of each appearance feature on the training split.

**Out-of-distribution score** of one image: how far its appearance features
(:data:`monitoring.summaries.FEATURES`) lie outside the range the training images covered, in
robust standard deviations, averaged over the :data:`TOP` features that lie furthest out:

    z_k = max(low_k - x_k, x_k - high_k, 0) / scale_k,   score = mean of the 3 largest z_k

where ``low_k``/``high_k`` are the 1st and 99th percentiles of feature k on the training sample
and ``scale_k = max(1.4826 * MAD_k, 0.02)`` (MAD: the median absolute deviation; 1.4826 * MAD
estimates a normal distribution's standard deviation without letting outliers widen it; 0.02,
2 % of the intensity range, keeps a feature that barely varies in training from turning noise into
alarms). Inside the training range a feature adds nothing, so the skewed, heavy-tailed features of
real images (the share of black border pixels, say) do not flag ordinary images; three features,
not the furthest alone, so one odd feature does not either, while an image that is not a chest
radiograph like the training ones is off on several at once. Measured on the sample data: held-out
radiographs score under 1; photographs, blank, noise and inverted images 4.7 to 15
(``monitor.ood_threshold``: 2). A version registered
before this file existed has no reference: the API then answers ``score: null, flagged: null``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monitoring.stats import MergeError, Stats
from monitoring.summaries import FEATURES, Summary
from registry.store import Registry, RegistryError, utc_now

REFERENCE_FILE = "monitoring_reference.json"
SCHEMA = 2  # 2: features from a 20 x 20 sample of pixels (monitoring/summaries.py); 1: from every 2nd pixel
MAD_TO_SIGMA = 1.4826
SCALE_FLOOR = 0.02
TOP = 3
RANGE_PERCENTILES = (1, 99)


class ReferenceError(ValueError):
    """A reference file that cannot be read."""


@dataclass
class Reference:
    low: np.ndarray
    high: np.ndarray
    scale: np.ndarray
    train: Stats
    test: Stats
    created_at: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.test.classes

    def score(self, summary: Summary) -> float:
        """The out-of-distribution score of one image (see the module docstring)."""
        features = summary.features
        z = np.maximum(self.low - features, features - self.high)
        np.maximum(z, 0.0, out=z)
        z /= self.scale
        return sum(sorted(z.tolist())[-TOP:]) / TOP  # in Python: np.partition releases the GIL (summaries.py)

    def answers(self) -> Stats:
        """The model's answers on the training sample and the test split together: what the
        answers' statistics (class mix, confidence) are compared with. The test split alone can be
        small (a sample dataset's is a few dozen images); a model is surer on its training images,
        which makes the low-confidence check err towards alarms, not towards silence."""
        return self.train.merge(self.test)

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "created_at": self.created_at,
                "features": {"names": list(FEATURES), "low": [float(v) for v in self.low],
                             "high": [float(v) for v in self.high], "scale": [float(v) for v in self.scale],
                             "score": f"mean of the {TOP} largest max(low - x, x - high, 0) / scale"},
                "train": self.train.to_json(), "test": self.test.to_json()}

    @classmethod
    def from_json(cls, data: Mapping) -> Reference:
        try:
            if data.get("schema") == 1:
                raise ReferenceError("a reference of schema 1, whose features were taken from other pixels than "
                                     "this code's: retrain the version to score and monitor it")
            if data.get("schema") != SCHEMA or data["features"]["names"] != list(FEATURES):
                raise ReferenceError(f"a reference of schema {data.get('schema')!r} or other features; this code "
                                     f"reads schema {SCHEMA}")
            low, high, scale = (np.asarray(data["features"][key], dtype=np.float64) for key in ("low", "high", "scale"))
            if any(item.shape != (len(FEATURES),) for item in (low, high, scale)) or not np.all(scale > 0):
                raise ReferenceError("the reference's feature ranges or scales are malformed")
            return cls(low, high, scale, Stats.from_json(data["train"]), Stats.from_json(data["test"]),
                       str(data.get("created_at") or ""))
        except (KeyError, TypeError, ValueError, MergeError) as exc:
            if isinstance(exc, ReferenceError):
                raise
            raise ReferenceError(f"the reference statistics are malformed ({exc})") from exc


def build_reference(classes: Sequence[str], train: Sequence[Summary], train_probabilities: Iterable[Sequence[float]],
                    test: Iterable[Summary], test_probabilities: Iterable[Sequence[float]],
                    ood_threshold: float) -> Reference:
    """The reference of a model from the summaries of its training sample and test split, with the
    model's probabilities for each image."""
    train = list(train)
    if not train:
        raise ReferenceError("no training images to build the reference from")
    features = np.stack([summary.features for summary in train])
    median = np.median(features, axis=0)
    scale = np.maximum(MAD_TO_SIGMA * np.median(np.abs(features - median), axis=0), SCALE_FLOOR)
    low, high = np.percentile(features, RANGE_PERCENTILES, axis=0)
    reference = Reference(low, high, scale, Stats(classes), Stats(classes), utc_now())
    for stats, summaries, answers in ((reference.train, train, train_probabilities),
                                      (reference.test, test, test_probabilities)):
        for summary, probabilities in zip(summaries, answers):
            score = reference.score(summary)
            stats.add_input(summary)
            stats.add_prediction(probabilities, score, score > ood_threshold)
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

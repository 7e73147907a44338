"""Fixed-size histograms of the per-image summaries and of the predictions, merged by addition.

Every histogram has bins fixed in this module (not learned from data), so statistics from two
threads, two replicas or training and serving line up bin for bin: merging is adding counts, and
the memory of a :class:`Stats` never grows with traffic. The JSON form (:meth:`Stats.to_json`) is
what ``GET /monitoring`` answers and what the reference of a version stores.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monitoring.summaries import INTENSITY_BINS, Summary

SCHEMA = 1
SIDE_EDGES = (64, 128, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
ASPECT_EDGES = (0.5, 0.67, 0.8, 0.91, 0.98, 1.02, 1.1, 1.25, 1.5, 2.0)
SHARE_EDGES = (0.002, 0.01, 0.03, 0.1, 0.2, 0.4)  # shares of near-black or near-white pixels: small ones matter
OOD_SCORE_EDGES = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 50, 100)
CONFIDENCE_BINS = 100  # 0.01 wide: a low-confidence threshold in hundredths is exact
OTHER = "other"


class MergeError(ValueError):
    """Statistics that cannot be added: another schema, other bins or other classes."""


@dataclass(frozen=True)
class Spec:
    """The bins of one histogram: equal bins of [low, high], inner ``edges``, or ``categories``."""

    name: str
    low: float = 0.0
    high: float = 1.0
    bins: int = 0
    edges: tuple = ()
    categories: tuple = ()

    @property
    def size(self) -> int:
        if self.categories:
            return len(self.categories)
        return self.bins or len(self.edges) + 1

    def index(self, value) -> int:
        if self.categories:
            key = str(value)
            return self.categories.index(key) if key in self.categories else self.categories.index(OTHER)
        if self.bins:
            position = int((value - self.low) * self.bins / (self.high - self.low))
            return min(max(position, 0), self.bins - 1)
        return bisect.bisect_right(self.edges, value)

    def layout(self) -> dict:
        """How the JSON names the bins."""
        if self.categories:
            return {"categories": list(self.categories)}
        if self.bins:
            return {"edges": [round(float(v), 6) for v in np.linspace(self.low, self.high, self.bins + 1)]}
        return {"edges": [None, *self.edges, None]}  # open ends


def uniform(name: str, low: float, high: float, bins: int) -> Spec:
    return Spec(name, low, high, bins)


INPUT_SPECS = (
    uniform("mean", 0.0, 1.0, 20),
    uniform("std", 0.0, 0.5, 20),
    Spec("near_black", edges=SHARE_EDGES),
    Spec("near_white", edges=SHARE_EDGES),
    Spec("width", edges=SIDE_EDGES),
    Spec("height", edges=SIDE_EDGES),
    Spec("aspect", edges=ASPECT_EDGES),
    Spec("bit_depth", categories=("1", "8", "16", "32", OTHER)),
    Spec("mode", categories=("L", "RGB", "RGBA", "LA", "P", "I;16", "I", "1", OTHER)),
)
INTENSITY = uniform("intensity", 0.0, 1.0, INTENSITY_BINS)  # pixel counts of every image, pooled
CONFIDENCE = uniform("confidence", 0.0, 1.0, CONFIDENCE_BINS)
MARGIN = uniform("margin", 0.0, 1.0, 20)
OOD_SCORE = Spec("ood_score", edges=OOD_SCORE_EDGES)
INPUT_NAMES = tuple(spec.name for spec in INPUT_SPECS) + (INTENSITY.name,)


def _input_values(summary: Summary) -> tuple:
    """The value each of INPUT_SPECS counts, in their order."""
    features = summary.features
    return (features[0], features[1], features[2], features[3], summary.width, summary.height,
            summary.aspect, summary.bit_depth, summary.mode)


class Stats:
    """Counts of images, of their summaries and of the model's answers, in fixed bins.

    Not locked: :class:`monitoring.live.LiveMonitor` serialises the updates of the API's threads.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(str(name) for name in classes)
        self.specs = (*INPUT_SPECS, Spec("class", categories=self.classes + (OTHER,)), CONFIDENCE, MARGIN,
                      OOD_SCORE)
        self.counts = {spec.name: [0] * spec.size for spec in self.specs}
        self.intensity = np.zeros(INTENSITY_BINS, dtype=np.int64)
        self.images = 0  # inputs summarised
        self.predictions = 0  # answers counted
        self.scored = 0  # images given an out-of-distribution score (their version has a reference)
        self.flagged = 0  # ... over the threshold

    def add_input(self, summary: Summary) -> None:
        for spec, value in zip(INPUT_SPECS, _input_values(summary)):
            self.counts[spec.name][spec.index(value)] += 1
        self.intensity += summary.intensity
        self.images += 1

    def add_prediction(self, probabilities: Sequence[float], score: float | None = None,
                       flagged: bool = False) -> None:
        """Count one answer: its class, top probability, margin over the second, OOD score."""
        values = list(probabilities)
        top = max(range(len(values)), key=values.__getitem__)
        ranked = sorted(values, reverse=True)
        self.counts["class"][top if top < len(self.classes) else -1] += 1  # -1: other
        self.counts["confidence"][CONFIDENCE.index(ranked[0])] += 1
        self.counts["margin"][MARGIN.index(ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0))] += 1
        self.predictions += 1
        if score is not None:
            self.counts["ood_score"][OOD_SCORE.index(score)] += 1
            self.scored += 1
            self.flagged += bool(flagged)

    def histogram(self, name: str) -> np.ndarray:
        """The counts of one histogram, by name (``intensity`` included)."""
        if name == INTENSITY.name:
            return self.intensity.copy()
        return np.asarray(self.counts[name], dtype=np.int64)

    def low_confidence(self, threshold: float) -> int:
        """Answers whose top probability is under ``threshold`` (rounded down to a hundredth)."""
        return int(sum(self.counts["confidence"][:int(threshold * CONFIDENCE_BINS + 1e-9)]))

    def size(self) -> int:
        """The number of counters held: fixed by the classes, whatever the traffic."""
        return sum(len(counts) for counts in self.counts.values()) + self.intensity.size + 4

    def to_json(self) -> dict:
        histograms = {spec.name: {**spec.layout(), "counts": list(self.counts[spec.name])} for spec in self.specs}
        histograms[INTENSITY.name] = {**INTENSITY.layout(), "counts": [int(v) for v in self.intensity]}
        return {"schema": SCHEMA, "classes": list(self.classes), "images": self.images,
                "predictions": self.predictions, "ood": {"scored": self.scored, "flagged": self.flagged},
                "histograms": histograms}

    @classmethod
    def from_json(cls, data: Mapping) -> Stats:
        if data.get("schema") != SCHEMA:
            raise MergeError(f"statistics of schema {data.get('schema')!r}; this code reads schema {SCHEMA}")
        stats = cls(data["classes"])
        histograms = data["histograms"]
        for spec in stats.specs:
            counts = [int(v) for v in histograms[spec.name]["counts"]]
            categories = histograms[spec.name].get("categories")
            if len(counts) != spec.size or (spec.categories and categories != list(spec.categories)):
                raise MergeError(f"histogram {spec.name!r} has other bins than this code's")
            stats.counts[spec.name] = counts
        intensity = [int(v) for v in histograms[INTENSITY.name]["counts"]]
        if len(intensity) != INTENSITY_BINS:
            raise MergeError("the intensity histogram has other bins than this code's")
        stats.intensity = np.asarray(intensity, dtype=np.int64)
        stats.images, stats.predictions = int(data["images"]), int(data["predictions"])
        stats.scored, stats.flagged = int(data["ood"]["scored"]), int(data["ood"]["flagged"])
        return stats

    def merge(self, other: Stats) -> Stats:
        """A new Stats holding both; MergeError when they are not of the same classes."""
        if other.classes != self.classes:
            raise MergeError(f"statistics of classes {list(other.classes)} and {list(self.classes)} do not add up")
        merged = Stats(self.classes)
        for name in merged.counts:
            merged.counts[name] = [a + b for a, b in zip(self.counts[name], other.counts[name])]
        merged.intensity = self.intensity + other.intensity
        merged.images = self.images + other.images
        merged.predictions = self.predictions + other.predictions
        merged.scored = self.scored + other.scored
        merged.flagged = self.flagged + other.flagged
        return merged


def merge_all(items: Iterable[Stats]) -> Stats:
    items = list(items)
    if not items:
        raise MergeError("no statistics to merge")
    total = items[0]
    for item in items[1:]:
        total = total.merge(item)
    return total

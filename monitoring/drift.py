"""Drift of the live statistics from the reference, and the verdict of ``make monitor``.

**Population stability index** of a histogram, live counts ``a`` against reference counts ``b``
over the same ``B`` bins:

    PSI = sum_i (p_i - q_i) * ln(p_i / q_i),   p_i = (a_i + 0.5) / (A + 0.5 B),   q_i likewise

(the half count in every bin keeps an empty bin finite). Under 0.1 is usually read as no change,
0.1-0.25 as a moderate one, above 0.25 as a major one (``monitor.max_psi``). With N live images
and no real change PSI is still about (B - 1) / N from sampling alone, hence the minimum sample
size ``monitor.min_images`` before any verdict.

Checks (each names the statistic that moved):

- ``psi[<summary>]`` for every input summary (mean, std, near-black and near-white shares, the
  pooled intensity histogram, width, height, aspect ratio, bit depth, mode) against the
  training split;
- ``psi[class]``: the predicted-class distribution against the model's answers on its training
  sample and test split (:meth:`monitoring.reference.Reference.answers`);
- ``low_confidence_excess``: the live share of answers with top probability under
  ``monitor.low_confidence``, minus that share in the same reference answers;
- ``ood_share``: the share of live images flagged out of distribution.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from monitoring.reference import Reference
from monitoring.stats import INPUT_NAMES, Stats

SMOOTHING = 0.5


def psi(live: np.ndarray, reference: np.ndarray) -> float:
    """The population stability index of ``live`` counts against ``reference`` counts."""
    live, reference = np.asarray(live, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    bins = live.size
    p = (live + SMOOTHING) / (live.sum() + SMOOTHING * bins)
    q = (reference + SMOOTHING) / (reference.sum() + SMOOTHING * bins)
    return float(np.sum((p - q) * np.log(p / q)))


def check(name: str, value: float, threshold: float, live: float | None = None,
          reference: float | None = None) -> dict:
    entry = {"name": name, "value": round(float(value), 6), "threshold": threshold,
             "drift": bool(value > threshold)}
    if live is not None:
        entry["live"], entry["reference"] = round(float(live), 6), round(float(reference), 6)
    return entry


def verdict(live: Stats, reference: Reference | None, settings: Mapping) -> dict:
    """Compare ``live`` with ``reference``: ``status`` is ``drift`` (some check crossed its
    threshold), ``ok``, ``insufficient`` (fewer than ``min_images`` live images) or
    ``no-reference``; ``checks`` lists every check, ``drifted`` the names of those that crossed."""
    base = {"images": live.images, "min_images": settings["min_images"], "checks": [], "drifted": []}
    if reference is None:
        return {**base, "status": "no-reference"}
    if live.images < settings["min_images"]:
        return {**base, "status": "insufficient"}
    checks = [check(f"psi[{name}]", psi(live.histogram(name), reference.train.histogram(name)), settings["max_psi"])
              for name in INPUT_NAMES]
    answers = reference.answers()
    checks.append(check("psi[class]", psi(live.histogram("class"), answers.histogram("class")),
                        settings["max_class_psi"]))
    threshold = settings["low_confidence"]
    live_low = live.low_confidence(threshold) / max(live.predictions, 1)
    reference_low = answers.low_confidence(threshold) / max(answers.predictions, 1)
    checks.append(check("low_confidence_excess", live_low - reference_low, settings["max_low_confidence_excess"],
                        live_low, reference_low))
    live_ood = live.flagged / live.scored if live.scored else 0.0
    reference_ood = answers.flagged / answers.scored if answers.scored else 0.0
    checks.append(check("ood_share", live_ood, settings["max_ood_share"], live_ood, reference_ood))
    drifted = [entry["name"] for entry in checks if entry["drift"]]
    return {**base, "status": "drift" if drifted else "ok", "checks": checks, "drifted": drifted}

"""The quality gate: what a candidate must meet before it is registered.

Absolute thresholds (accuracy, a recall floor per class, ONNX parity) and, whenever production
exists, champion/challenger: the candidate may not be worse than the production model, evaluated
now on the same test images, by more than ``gate.max_regression``.
"""

from __future__ import annotations

from registry.policy import check_text


def _check(name: str, comparison: str, threshold: float, value: float, production_value=None) -> dict:
    passed = value >= threshold if comparison == ">=" else value <= threshold
    check = {"name": name, "comparison": comparison, "threshold": threshold, "value": value, "passed": bool(passed)}
    if production_value is not None:
        check["production_value"] = production_value
    return check


def apply_gate(metrics: dict, parity_max_abs_diff: float, gate_params: dict, production: dict | None = None) -> dict:
    """Evaluate every check; return ``{"passed", "checks", "production"}`` (never raises).

    ``production`` is ``{"version", "metrics"}`` of the production model evaluated on the same test
    images as the candidate, or ``{"version", "comparable": False, "reason"}`` when it cannot be,
    or None when nothing is in production.
    """
    champion = (production or {}).get("metrics")

    def production_value(section: str, key: str | None = None):
        if not champion:
            return None
        return champion[section] if key is None else champion[section].get(key)

    checks = [_check("accuracy", ">=", gate_params["min_accuracy"], metrics["accuracy"],
                     production_value("accuracy"))]
    for name, floor in (gate_params.get("min_recall") or {}).items():
        checks.append(_check(f"recall[{name}]", ">=", floor, metrics["recall"].get(name, 0.0),
                             production_value("recall", name)))
    checks.append(_check("onnx_parity", "<=", gate_params["max_parity_diff"], parity_max_abs_diff))
    if champion:
        floor = round(champion["accuracy"] - gate_params["max_regression"], 6)
        checks.append(_check("vs_production", ">=", floor, metrics["accuracy"], champion["accuracy"]))
    return {"passed": all(c["passed"] for c in checks), "checks": checks, "production": production}


def failure_message(gate: dict) -> str:
    """One sentence per failed check: its name, value and threshold."""
    failed = [c for c in gate["checks"] if not c["passed"]]
    return "quality gate failed: " + "; ".join(check_text(check, between=" = ") for check in failed)

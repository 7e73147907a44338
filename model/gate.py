"""The quality gate: absolute thresholds a candidate must meet before it is registered."""

from __future__ import annotations

COVID = "COVID"


class GateFailed(RuntimeError):
    """At least one check failed; the message names each failed check, its value and threshold."""


def apply_gate(metrics: dict, parity_max_abs_diff: float, gate_params: dict) -> dict:
    """Evaluate every check; return ``{"passed": bool, "checks": [...]}`` (never raises)."""
    checks = [
        ("accuracy", ">=", gate_params["min_accuracy"], metrics["accuracy"]),
        ("covid_recall", ">=", gate_params["min_covid_recall"], metrics["recall"].get(COVID, 0.0)),
        ("onnx_parity", "<=", gate_params["max_parity_diff"], parity_max_abs_diff),
    ]
    results = [
        {
            "name": name,
            "comparison": comparison,
            "threshold": threshold,
            "value": value,
            "passed": bool(value >= threshold if comparison == ">=" else value <= threshold),
        }
        for name, comparison, threshold, value in checks
    ]
    return {"passed": all(r["passed"] for r in results), "checks": results}


def failure_message(gate: dict) -> str:
    """One sentence per failed check: its name, value and threshold."""
    failed = [c for c in gate["checks"] if not c["passed"]]
    return "quality gate failed: " + "; ".join(
        f"{c['name']} = {c['value']:.6g}, required {c['comparison']} {c['threshold']:.6g}" for c in failed
    )

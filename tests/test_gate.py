"""The quality gate: absolute thresholds, a recall floor per class from params, and
champion/challenger against production evaluated on the same test images."""

from __future__ import annotations

from model.gate import apply_gate, failure_message

GATE = {"min_accuracy": 0.9, "min_recall": {"COVID": 0.9, "Normal": 0.8}, "max_parity_diff": 1e-4,
        "max_regression": 0.01}


def metrics(accuracy: float, covid: float = 0.95, normal: float = 0.9) -> dict:
    return {"accuracy": accuracy, "recall": {"COVID": covid, "Normal": normal, "Lung_Opacity": 0.9}}


def production(accuracy: float) -> dict:
    return {"version": "v0001-20261127T133000Z", "metrics": metrics(accuracy, 0.97, 0.92), "test_images": 163}


def checks(gate: dict) -> dict:
    return {check["name"]: check for check in gate["checks"]}


def test_every_class_with_a_floor_gets_a_recall_check():
    gate = apply_gate(metrics(0.95, normal=0.7), 1e-6, GATE)
    assert list(checks(gate)) == ["accuracy", "recall[COVID]", "recall[Normal]", "onnx_parity"]
    assert not gate["passed"] and not checks(gate)["recall[Normal]"]["passed"]
    assert failure_message(gate) == "quality gate failed: recall[Normal] = 0.7, required >= 0.8"


def test_a_candidate_slightly_worse_than_production_within_the_margin_passes():
    gate = apply_gate(metrics(0.955), 1e-6, GATE, production(0.96))
    assert gate["passed"]
    vs = checks(gate)["vs_production"]
    assert vs["threshold"] == 0.95 and vs["production_value"] == 0.96
    assert checks(gate)["accuracy"]["production_value"] == 0.96
    assert checks(gate)["recall[COVID]"]["production_value"] == 0.97


def test_a_candidate_worse_than_production_by_more_than_the_margin_fails_even_above_the_thresholds():
    gate = apply_gate(metrics(0.93), 1e-6, GATE, production(0.96))
    assert not gate["passed"]
    assert [name for name, check in checks(gate).items() if not check["passed"]] == ["vs_production"]
    assert "vs_production = 0.93, required >= 0.95" in failure_message(gate)


def test_without_production_or_with_an_incomparable_one_there_is_no_regression_check():
    assert "vs_production" not in checks(apply_gate(metrics(0.95), 1e-6, GATE, None))
    incomparable = {"version": "v0001-20261127T133000Z", "comparable": False, "reason": "other classes"}
    gate = apply_gate(metrics(0.95), 1e-6, GATE, incomparable)
    assert "vs_production" not in checks(gate) and gate["production"] == incomparable

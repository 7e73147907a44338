"""``make bench``'s training section (quick mode: the numbers mean nothing, the shape does)."""

from __future__ import annotations

import json

from helpers import clean_env, run_module

MEASURES = ["tf.data from PNG (decode every image)", "tf.data from the decoded cache",
            "same batches in memory (ceiling)", "training arithmetic, in memory",
            "float32 matmul 256x256 (reference)", "make train to a gate-passing model"]


def test_quick_training_bench_prints_the_table(tmp_path):
    report = tmp_path / "bench.json"
    result = run_module("bench", "--section", "training", "--quick", "--json", str(report),
                        env=clean_env(TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Training: input paths against the in-memory ceiling" in result.stdout
    table = json.loads(report.read_text())["training"]
    assert [row["measure"] for row in table["rows"]] == MEASURES
    for row in table["rows"]:
        assert list(row) == ["measure", "value", "unit", "ratio", "note"] and row["value"] > 0
    rows = {row["measure"]: row for row in table["rows"]}
    assert rows["same batches in memory (ceiling)"]["ratio"] == 1.0
    assert "target >= 0.90" in rows["tf.data from PNG (decode every image)"]["note"]
    assert "GFLOP per image" in rows["training arithmetic, in memory"]["note"]
    train = rows["make train to a gate-passing model"]
    assert train["unit"] == "s" and "1 epoch " in train["note"] and "test accuracy" in train["note"]
    assert "quick mode" in " ".join(table["notes"])

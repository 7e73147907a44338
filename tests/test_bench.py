"""``make bench``: the runner prints one table per section; the serving section measures the real
API over HTTP and the in-process limit (quick mode: the numbers mean nothing, the shape does)."""

from __future__ import annotations

import json
import shutil

import pytest
from api_helpers import register_model
from helpers import clean_env, run_module

from bench.__main__ import format_table
from registry.store import Registry

COLUMNS = ["c", "monitoring", "image", "limit img/s", "limit p50 ms", "limit p99 ms", "limit CPU ms",
           "limit onnxruntime", "API req/s", "API p50 ms", "API p99 ms", "API CPU ms", "API/limit", "errors",
           "peak MB/req"]


def test_help_names_the_sections_and_shows_an_example():
    result = run_module("bench", "--help", env=clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: python -m bench ")
    assert "Example" in result.stdout and "serving" in result.stdout and "--quick" in result.stdout


def test_an_unknown_section_is_refused_with_the_known_ones():
    result = run_module("bench", "--section", "nope", env=clean_env(), timeout=60)
    assert result.returncode == 2 and "'serving'" in result.stderr and "Traceback" not in result.stderr


def test_format_table_aligns_columns_and_lists_notes():
    text = format_table({"title": "T", "rows": [{"c": 1, "rate": 1234.5, "p50": 0.5}, {"c": 16, "rate": 9.0, "p50": None}],
                         "notes": ["a note"]})
    assert text.splitlines() == ["T", "=", " c  rate   p50", " 1  1234  0.50", "16  9.00     -", "- a note"]


@pytest.mark.parametrize("generator", [
    "python",
    pytest.param("wrk", marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")),
])
def test_quick_serving_bench_prints_the_table_for_the_newest_model(tmp_path, generator):
    registry = Registry(str(tmp_path / "registry"))
    version = register_model(registry)
    report = tmp_path / "bench.json"
    result = run_module("bench", "--section", "serving", "--quick", "--json", str(report),
                        env=clean_env(REGISTRY_URI=registry.uri, BENCH_LOAD_GENERATOR=generator), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Serving: the API over HTTP against the in-process limit" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("c "))
    assert header.split("  ") and all(column in header for column in COLUMNS)
    table = json.loads(report.read_text())["serving"]
    small = "299px 8-bit PNG"
    assert [(row["c"], row["monitoring"], row["image"]) for row in table["rows"]] == [
        (1, "off", small), (4, "off", small), (1, "on", small), (4, "on", small),
        (1, "on", "2048px 8-bit PNG"), (1, "on", "2048px 16-bit PNG")]
    eight, sixteen = table["rows"][4]["peak MB/req"], table["rows"][5]["peak MB/req"]
    # 2048x2048: 4.2 MB decoded at 8 bits, 8.4 MB at 16; a full-size float32 copy alone is 16.8 MB.
    assert 0 < eight < 3 * 4.2 and 0 < sixteen < 3 * 8.4
    for row in table["rows"]:
        assert list(row) == COLUMNS
        assert row["errors"] == 0 and row["API req/s"] > 0 and row["limit img/s"] > 0
        assert row["API p50 ms"] <= row["API p99 ms"]
    notes = " ".join(table["notes"])
    assert f"model {version} (newest testing version)" in notes
    assert ("wrk" if generator == "wrk" else "Python asyncio client") in notes
    assert "target c=4" in notes and "target c=1" in notes and "target monitoring CPU/request" in notes


def _rounds(cpu_ms_pairs):
    from bench.serving import Measure, Paired

    def one(cpu_ms):
        return Measure(requests=100, seconds=1.0, p50_ms=5.0, p99_ms=9.0, cpu_s=cpu_ms / 10)
    return Paired([one(off) for off, _ in cpu_ms_pairs], [one(on) for _, on in cpu_ms_pairs])


def test_monitorings_cost_is_judged_inside_the_api_and_cross_checked_side_by_side():
    from dataclasses import replace

    from bench.serving import median_interval, monitoring_notes

    # The machine's speed drifts between rounds (8 ms, then 6 ms per request) far more than
    # monitoring costs: pairing each round cancels it.
    drifting = _rounds([(8.0, 8.16), (6.0, 6.12)] * 6)
    assert [round(r, 6) for r in drifting.ratios()] == [1.02] * 12
    assert monitoring_notes({1: drifting}, 0, None)[-1].endswith("c=1 +2.0% (+2.0 to +2.0); consistent")
    middle, low, high = median_interval([1.00, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.09, 1.10, 1.12])
    assert middle == 1.05 and low < middle < high
    noisy = _rounds([(10.0, 10.0 * r) for r in (0.96, 0.99, 1.01, 1.03, 1.04, 1.045, 1.05, 1.08, 1.10, 1.12)])
    assert monitoring_notes({1: noisy}, 0, None)[-1].endswith("; not settled")  # median within, interval not
    costly = _rounds([(10.0, 10.8), (10.0, 10.7), (10.0, 10.9)])
    assert monitoring_notes({1: drifting, 4: costly}, 0, None)[-1].endswith("; above the target")
    # The verdict: monitoring's share of the on API's CPU (0.04 of it is +4.2% over the rest).
    def sharing(*shares):
        return {c: replace(drifting, share=share) for c, share in zip((1, 4), shares)}
    [verdict] = [note for note in monitoring_notes(sharing(0.04, 0.045), 0, None) if note.startswith("target")]
    assert verdict.endswith("c=1 +4.2%, c=4 +4.7%; met")
    [verdict] = [note for note in monitoring_notes(sharing(0.04, 0.06), 0, None) if note.startswith("target")]
    assert verdict.endswith("c=4 +6.4%; MISSED")

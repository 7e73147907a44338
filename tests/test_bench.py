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

COLUMNS = ["c", "limit img/s", "limit p50 ms", "limit p99 ms", "limit CPU ms", "limit onnxruntime",
           "API req/s", "API p50 ms", "API p99 ms", "API CPU ms", "API/limit", "errors"]


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
    assert [row["c"] for row in table["rows"]] == [1, 4]
    for row in table["rows"]:
        assert list(row) == COLUMNS
        assert row["errors"] == 0 and row["API req/s"] > 0 and row["limit img/s"] > 0
        assert row["API p50 ms"] <= row["API p99 ms"]
    notes = " ".join(table["notes"])
    assert f"model {version} (newest testing version)" in notes
    assert ("wrk" if generator == "wrk" else "Python asyncio client") in notes
    assert "target c=4" in notes and "target c=1" in notes

"""The registry section of ``make bench``: real histories (real registry, real fake-gcs-server that
the section starts itself) at two sizes; ``current``, the reload check, ``promote VERSION`` and
``rollback`` make the same storage calls at both, what reads the whole history grows. Quick mode:
the timings mean nothing and are not checked."""

from __future__ import annotations

import os

import pytest
from helpers import clean_env, run_module

from bench.__main__ import SECTIONS
from bench.registry import CONSTANT, QUICK_VERSIONS, CountingStorage, run
from core.config import load_params
from storage import LocalStorage

OPERATIONS = ["current", "reload check", "promote VERSION", "rollback",
              "newest_tested", "registry list", "audit", "gc (dry run)"]
WHOLE_HISTORY = [operation for operation in OPERATIONS if operation not in CONSTANT]
SMALL, LARGE = QUICK_VERSIONS


@pytest.fixture(scope="module")
def table():
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    result = run(load_params(environ=clean_env()), quick=True)
    assert os.environ.get("STORAGE_EMULATOR_HOST") == emulator, "the section left STORAGE_EMULATOR_HOST changed"
    return result


def rows_of(table: dict, backend: str, versions: int) -> dict[str, dict]:
    return {row["operation"]: row for row in table["rows"] if row["backend"] == backend and row["versions"] == versions}


def test_the_runner_knows_the_section():
    assert SECTIONS["registry"] == "bench.registry"


def test_the_table_has_every_operation_at_both_sizes_on_both_backends(table):
    keys = [(row["backend"], row["versions"], row["operation"]) for row in table["rows"]]
    assert keys == [(backend, size, operation) for backend in ("local", "gcs") for size in QUICK_VERSIONS
                    for operation in OPERATIONS]
    for row in table["rows"]:
        assert row["calls"] == row["reads"] + row["lists"] + row["writes"] > 0
        assert row["median ms"] >= 0 and row["runs"] >= 1
        assert (row["HTTP"] is None) == (row["backend"] == "local")


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_current_reload_promote_and_rollback_make_the_same_calls_at_both_sizes(table, backend):
    small, large = rows_of(table, backend, SMALL), rows_of(table, backend, LARGE)
    for operation in CONSTANT:
        assert small[operation]["runs"] > 1
        assert "runs differed" not in small[operation]["calls by primitive"] + large[operation]["calls by primitive"]
        for column in ("calls by primitive", "listed", "HTTP"):
            assert small[operation][column] == large[operation][column], (operation, column)
    assert small["current"]["calls by primitive"] == small["reload check"]["calls by primitive"] == \
        "read_with_generation 1"
    assert "copy" in small["promote VERSION"]["calls by primitive"]
    assert "replace 1" in small["rollback"]["calls by primitive"]
    notes = " ".join(table["notes"])
    assert f"{backend}: the same storage calls at {SMALL} and {LARGE} versions: {', '.join(CONSTANT)}" in notes
    assert "CLAIM BROKEN" not in notes


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_what_reads_the_whole_history_is_listed_as_growing(table, backend):
    small, large = rows_of(table, backend, SMALL), rows_of(table, backend, LARGE)
    for operation in WHOLE_HISTORY:
        assert large[operation]["listed"] > small[operation]["listed"], operation
    assert large["registry list"]["calls"] > small["registry list"]["calls"]
    growing = next(note for note in table["notes"] if note.startswith(f"{backend}: grows with the history"))
    assert all(operation in growing for operation in WHOLE_HISTORY)


def test_counting_storage_counts_each_primitive_and_the_names_listed(tmp_path):
    counted = CountingStorage(LocalStorage(tmp_path))
    counted.create("a/x/metadata.json", b"{}")
    counted.create("a/y/other.json", b"{}")
    assert counted.find("a", "metadata.json") == ["x"]
    assert counted.list("a") == ([], ["x", "y"])
    assert counted.read("a/x/metadata.json") == b"{}"
    assert counted.uri == str(tmp_path)
    assert dict(counted.calls) == {"create": 2, "find": 1, "list": 1, "read": 1}
    assert counted.listed == 3


def test_a_bad_setting_is_one_clear_line():
    result = run_module("bench", "--section", "registry", env=clean_env(BENCH_REGISTRY_REPEATS="0"), timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "registry benchmark: bench.registry_versions needs two sizes or more" in result.stderr

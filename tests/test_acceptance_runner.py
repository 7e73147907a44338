"""The acceptance runner's record of a run: what the tests measured never overwrites the verdict."""

from __future__ import annotations

from pipelines.acceptance import ResultCollector, run_record, suite_sha256


def test_properties_recorded_by_tests_cannot_overwrite_the_verdict():
    results = ResultCollector()
    results.passed, results.failed, results.failures = 3, 1, ["test_accuracy.py::test_x"]
    results.properties = {"passed": 999, "failed": 0, "failures": [], "api_agreement": 0.5}
    run = run_record(results, 1)
    assert (run["passed"], run["failed"], run["failures"]) == (3, 1, ["test_accuracy.py::test_x"])
    assert run["api_agreement"] == 0.5
    assert run["suite_sha256"] == suite_sha256() and len(run["suite_sha256"]) == 64


def test_a_pytest_that_could_not_run_counts_as_failed():
    assert run_record(ResultCollector(), code=4)["failed"] == 1  # usage error: nothing ran, nothing passed

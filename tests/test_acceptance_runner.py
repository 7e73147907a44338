"""The acceptance runner's record of a run: what the tests measured never overwrites the verdict."""

from __future__ import annotations

from pipelines.acceptance import ResultCollector, run_record, suite_sha256
from registry.policy import run_passed, run_problems


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


FIGURES = {"api_agreement": 1.0, "api_max_probability_diff": 2e-7, "api_images": 24}


def passing_run(**changes) -> dict:
    return {"passed": 14, "failed": 0, "skipped": 0, **FIGURES, **changes}


def test_a_run_with_its_agreement_figures_and_nothing_failed_or_skipped_passes():
    assert run_passed(passing_run())


def test_a_skipped_test_fails_the_run():
    assert not run_passed(passing_run(skipped=1))
    assert "1 skipped" in run_problems(passing_run(skipped=1))


def test_a_run_without_the_agreement_figures_fails_even_when_every_test_passed():
    for name in FIGURES:
        run = passing_run()
        del run[name]
        assert not run_passed(run), name
        assert any(name in problem for problem in run_problems(run))


def test_a_run_that_compared_no_image_fails():
    assert run_problems(passing_run(api_images=0)) == ["no test image compared"]


def test_the_runner_and_the_promotion_rule_give_one_verdict():
    from registry.policy import readiness

    for run in (passing_run(), passing_run(skipped=1), passing_run(api_images=0), passing_run(failed=1)):
        metadata = {"version": "v0001-20261127T143000Z", "gate": {"passed": True}, "tests": [run]}
        assert readiness(metadata).promotable is run_passed(run)

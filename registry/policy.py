"""The promotion rule, in one place: may a version go to production, and if not, why.

``Registry.promote``, the registry CLI, the report and the email all call :func:`readiness`, so
the email never offers a command the registry would refuse, and the answer is always derived from
the version's current state (its newest test run), never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Readiness:
    """Whether a version may go to production, and what the product owner does next.

    ``problems`` are short phrases for an email subject ("acceptance tests failed"); ``reasons``
    are the matching sentences; ``next_step`` is the exact promote command when promotable, else a
    sentence saying why not (or, for the production model itself, what is left to do).
    """

    promotable: bool
    problems: tuple[str, ...]
    reasons: tuple[str, ...]
    next_step: str
    in_production: bool = False


def promote_command(version: str) -> str:
    """The command that promotes ``version`` to production."""
    return f"make promote VERSION={version}"


def last_test_run(metadata: Mapping[str, Any]) -> dict | None:
    """The newest acceptance-test run of a version (runs are kept oldest first)."""
    runs = [run for run in metadata.get("tests") or [] if isinstance(run, dict)]
    return runs[-1] if runs else None


# What the agreement test (unittests/test_accuracy.py) records on a run: its share of test images
# labelled as at training, the largest difference of a probability from training's, and how many
# images it sent. A run without them did not compare serving with training: it is no pass.
AGREEMENT_FIGURES = ("api_agreement", "api_max_probability_diff", "api_images")


def run_problems(run: Mapping[str, Any] | None) -> list[str]:
    """Why an acceptance-test run is not a pass, in short phrases; empty when it passed.

    A pass: at least one test ran, none failed, none was skipped (a skipped test checked nothing),
    and the agreement test ran on at least one image and its figures are recorded on the run.
    """
    if not run:
        return ["no run"]
    problems = []
    failed = run.get("failed", 1)
    if failed:
        problems.append(f"{failed} failed")
    if run.get("skipped"):
        problems.append(f"{run['skipped']} skipped")
    if not run.get("passed"):
        problems.append("no test passed")
    missing = [name for name in AGREEMENT_FIGURES if not isinstance(run.get(name), (int, float))]
    if missing:
        problems.append(f"agreement figures not recorded ({', '.join(missing)})")
    elif not run["api_images"]:
        problems.append("no test image compared")
    return problems


def run_passed(run: Mapping[str, Any] | None) -> bool:
    """The one verdict of an acceptance-test run (see :func:`run_problems`)."""
    return not run_problems(run)


def tests_passed(metadata: Mapping[str, Any]) -> bool:
    """True when the newest acceptance-test run of a version passed."""
    return run_passed(last_test_run(metadata))


def failed_gate_checks(metadata: Mapping[str, Any]) -> list[dict]:
    gate = metadata.get("gate") if isinstance(metadata.get("gate"), dict) else {}
    checks = gate.get("checks") if isinstance(gate.get("checks"), list) else []
    return [check for check in checks if isinstance(check, dict) and check.get("passed") is not True]


def gate_number(value: Any) -> str:
    """A gate value for people: floats to 6 significant digits, which show both 0.9 (accuracy) and
    1e-7 (ONNX parity) and never round a value onto its threshold; missing as n/a."""
    if value is None:
        return "n/a"
    return format(value, ".6g") if isinstance(value, float) else str(value)


def check_cells(check: Mapping[str, Any]) -> dict[str, str]:
    """The one way a gate check is shown: each field in words, for a sentence or a table row."""
    return {
        "name": str(check.get("name", "?")),
        "comparison": str(check.get("comparison", "")),
        "threshold": gate_number(check.get("threshold")),
        "value": gate_number(check.get("value")),
        "production": gate_number(check.get("production_value")),
        "passed": "yes" if check.get("passed") is True else "NO",
    }


def check_text(check: Mapping[str, Any], between: str = " ") -> str:
    """``accuracy 0.43, required >= 0.9`` (``between`` the name and the value): one gate check in words."""
    cells = check_cells(check)
    return f"{cells['name']}{between}{cells['value']}, required {cells['comparison']} {cells['threshold']}"


def readiness(metadata: Mapping[str, Any], production: str | None = None) -> Readiness:
    """Promotable only when the quality gate passed and the newest acceptance-test run passed.

    ``production`` is the version the production pointer names now: when it is this version, the
    next step says so (nothing to promote; a rollback when its newest tests failed).
    """
    version = str(metadata.get("version", "?"))
    problems: list[str] = []
    reasons: list[str] = []
    gate = metadata.get("gate") if isinstance(metadata.get("gate"), dict) else {}
    if "passed" not in gate:
        problems.append("no quality gate result")
        reasons.append("its metadata records no quality gate result")
    elif gate["passed"] is not True:
        problems.append("quality gate failed")
        failed = "; ".join(check_text(check) for check in failed_gate_checks(metadata))
        reasons.append("the quality gate failed" + (f" ({failed})" if failed else ""))
    run = last_test_run(metadata)
    if run is None:
        problems.append("acceptance tests not run yet")
        reasons.append(f"it has no acceptance-test run yet (run `make unittest VERSION={version}`)")
    elif not run_passed(run):
        if run.get("failed", 1) == 0 and not run.get("passed"):
            problems.append("acceptance tests ran no test")
            reasons.append(f"its last acceptance-test run, at {run.get('at', '?')}, ran no test")
        else:
            problems.append("acceptance tests failed")
            others = [problem for problem in run_problems(run) if not problem.endswith((" failed", "no test passed"))]
            reasons.append(
                f"its last acceptance-test run failed ({run.get('failed', '?')} failed, "
                f"{run.get('passed', '?')} passed{''.join(', ' + problem for problem in others)}, "
                f"at {run.get('at', '?')})"
            )
    if version == production:
        next_step = (f"{version} is the production model; nothing to promote." if not problems else
                     f"{version} is the production model, but {'; '.join(reasons)}: "
                     f"`make rollback` restores the previous production model.")
        return Readiness(not problems, tuple(problems), tuple(reasons), next_step, in_production=True)
    if not problems:
        return Readiness(True, (), (), promote_command(version))
    return Readiness(False, tuple(problems), tuple(reasons), f"{version} cannot be promoted: {'; '.join(reasons)}.")

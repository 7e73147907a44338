"""Serve a registry version with the real API and run the acceptance tests: ``python -m scripts.acceptance``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
import pytest

from api.process import loopback_api, wait_until_serving
from core.config import REPO_ROOT
from registry.store import Registry, utc_now

SUITE_DIR = REPO_ROOT / "unittests"


def suite_sha256(folder: Path = SUITE_DIR) -> str:
    """A hash of the acceptance suite's files: which tests a recorded result belongs to."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class ResultCollector:
    """A pytest plugin that counts outcomes and keeps the properties tests record."""

    def __init__(self):
        self.passed, self.failed, self.skipped = 0, 0, 0
        self.failures: list[str] = []
        self.properties: dict[str, object] = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.passed:
            self.passed += 1
        elif report.failed:
            self.failed += 1
            self.failures.append(report.nodeid.rsplit("/", 1)[-1])  # test_file.py::test_name
        elif report.skipped and report.when in ("setup", "call"):
            self.skipped += 1
        self.properties.update(dict(report.user_properties))

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed += 1
            self.failures.append(f"collecting {report.nodeid}")


def run_suite(api_url: str, version: str, params: dict) -> tuple[int, ResultCollector]:
    """Run unittests/ against ``api_url`` in this process; return pytest's exit code and counts."""
    collector = ResultCollector()
    code = pytest.main(
        [str(SUITE_DIR), "-q", "-p", "no:cacheprovider", "--api-url", api_url, "--model-version", version,
         "--registry", params["registry_uri"], "--dataset", params["dataset_uri"]],
        plugins=[collector],
    )
    return int(code), collector


def run_acceptance(params: dict, version: str, run_dir: Path, api_url: str | None = None) -> dict:
    """Serve ``version`` on a free loopback port (or use the API already serving it at ``api_url``),
    run the suite, record the run on every stage that holds the version, and return it."""
    registry = Registry(params["registry_uri"])
    stage = registry.stage_of(version)
    timeout = params["api"]["start_timeout_s"]
    if api_url:
        wait_until_serving(api_url, version, timeout, lambda: True, run_dir / "api.log")
        code, results = run_suite(api_url, version, params)
    else:
        code, results = serve_and_run(params, version, stage, run_dir)
    run = run_record(results, code, api_url)
    registry.record_test_run(version, run)
    return run


def run_record(results: ResultCollector, code: int, api_url: str | None = None) -> dict:
    """What is recorded of a run: what the tests measured, then the verdict, which they cannot overwrite."""
    return {
        **results.properties,
        "suite_sha256": suite_sha256(),
        "passed": results.passed,
        "failed": results.failed if code in (0, 1) else max(results.failed, 1),  # pytest itself failed
        "failures": results.failures,
        "skipped": results.skipped,
        "at": utc_now(),
        "pytest_exit_code": code,
        **({"api_url": api_url} if api_url else {}),
    }


def serve_and_run(params: dict, version: str, stage: str, run_dir: Path) -> tuple[int, ResultCollector]:
    """Start the API on ``version`` on a free loopback port, run the suite against it, stop it."""
    log_path = run_dir / f"acceptance-api-{version}.log"
    with loopback_api(params["registry_uri"], stage, version, log_path,
                      params["api"]["start_timeout_s"]) as (api_url, _):
        click.echo(f"serving {version} ({stage}) at {api_url}; running {SUITE_DIR.name}/")
        return run_suite(api_url, version, params)

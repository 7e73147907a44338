"""Serve a registry version with the real API and run the acceptance tests: ``python -m scripts.acceptance``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
import pytest

from model.config import REPO_ROOT, ConfigError, describe, load_params
from registry.policy import run_passed, run_problems
from registry.store import Registry, RegistryError, utc_now
from scripts.outcome import record_outcome
from storage import StorageError
from scripts.api_process import ApiProcessError, loopback_api, wait_until_serving

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


@click.command()
@click.option("--version", "version", help="Registry version to test (default: newest testing version).")
@click.option("--registry", "registry_uri", help="Registry root (default: REGISTRY_URI / params.yaml).")
@click.option("--dataset", "dataset_uri", help="Dataset root for the test images (default: DATASET_URI).")
@click.option("--api-url", envvar="API_URL", help="Test the API already serving VERSION here (a sidecar on "
              "GKE) instead of starting one. [env API_URL]")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=".run", show_default=True,
              help="Where the API's log goes.")
@click.option("--outcome-file", type=click.Path(dir_okay=False),
              help="Once a verdict is recorded, note it here (the pipeline then emails the report).")
def main(version, registry_uri, dataset_uri, api_url, run_dir, outcome_file):
    """Serve VERSION with the real API on a free port, run unittests/ against it, record the result.

    Exits 1 unless the run passes (registry/policy.py: no test failed or skipped, and the
    agreement with training was measured and recorded), naming what failed; the run is recorded on
    the version either way.

    Example: python -m scripts.acceptance --version v0001-20261127T143000Z
    """
    try:
        params = load_params({"registry_uri": registry_uri, "dataset_uri": dataset_uri})
        click.echo(describe(params, "unittest", ("registry_uri", "dataset_uri", "acceptance")))
        registry = Registry(params["registry_uri"])
        if not version:
            versions = registry.versions("testing")
            if not versions:
                raise RegistryError("the registry has no testing version: run `make train` first")
            version = versions[-1]
        run = run_acceptance(params, version, run_dir, api_url)
    except (ConfigError, StorageError, RegistryError, ApiProcessError) as exc:
        raise click.ClickException(str(exc)) from exc
    verdict = "passed" if run_passed(run) else "failed"
    record_outcome(outcome_file, f"tests-{verdict}", "the report follows")
    agreement, diff = run.get("api_agreement"), run.get("api_max_probability_diff")
    summary = f"{run['passed']} passed, {run['failed']} failed, {run['skipped']} skipped" + (
        f"; the API agrees with training on {agreement:.2%} of {run.get('api_images')} test images (labels), "
        f"probabilities within {diff:.2g}" if agreement is not None and diff is not None else "")
    if verdict == "failed":
        raise click.ClickException(f"acceptance tests of {version} failed: {summary}; "
                                   f"{'; '.join(run_problems(run))}; failed: "
                                   f"{', '.join(run['failures']) or 'none'} (recorded on the version)")
    click.echo(f"acceptance tests of {version} passed: {summary} (recorded on the version)")


if __name__ == "__main__":
    main(prog_name="python -m scripts.acceptance")

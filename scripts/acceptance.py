"""Serve a registry version with the real API and run the acceptance tests: ``python -m scripts.acceptance``."""

from __future__ import annotations

from pathlib import Path

import click

from api.process import ApiProcessError
from core.cli import registry_option
from core.config import ConfigError, describe, load_params
from notify.outcome import record_outcome
from pipelines.acceptance import run_acceptance
from registry.policy import run_passed, run_problems
from registry.store import Registry, RegistryError
from storage import StorageError


@click.command()
@click.option("--version", "version", help="Registry version to test (default: newest testing version).")
@registry_option
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
        version, _ = registry.resolve_version(version)
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

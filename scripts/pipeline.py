"""Run a pipeline locally, step by step: ``python -m scripts.pipeline training|retraining|model-test``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from core.config import ConfigError, load_params
from pipelines.pipeline import PIPELINES, PipelineFailed, run_pipeline
from registry.store import RegistryError
from storage import StorageError


@click.command()
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=".run", show_default=True,
              help="Where steps leave their version, outcome and logs.")
def main(pipeline, run_dir):
    """Run PIPELINE locally: each step is a make target; a crash is emailed to the product owner.

    \b
    training:    data (if missing) -> validate-data -> train -> unittest -> notify
    retraining:  validate-data -> retrain -> unittest -> notify (when a candidate was registered)
    model-test:  unittest (production, else the newest testing version) -> notify

    Example: python -m scripts.pipeline retraining
    """
    try:
        params = load_params()
        run_pipeline(pipeline, params, run_dir)
    except PipelineFailed as failed:
        click.echo(f"Error: {failed.message}", err=True)
        sys.exit(failed.code)
    except (ConfigError, RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(prog_name="python -m scripts.pipeline")

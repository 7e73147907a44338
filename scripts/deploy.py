"""Deploy the API locally: ``python -m scripts.deploy start|stop|status`` (pipelines/deploy.py)."""

from __future__ import annotations

from pathlib import Path

import click

from api.process import ApiProcessError, log_tail, readiness, stop_pid
from core.cli import params_or_exit
from pipelines.deploy import DeployRefused, api_url, run_files, running_pid, start_api
from storage import StorageError

run_dir_option = click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=".run",
                              show_default=True, help="Where the pid and log files live.")


@click.group()
def cli():
    """Start, stop or inspect the local background API.

    Example: python -m scripts.deploy status
    """


@cli.command()
@run_dir_option
def start(run_dir):
    """Start the API on the production model, or wait until the running one has switched to it.

    Example: python -m scripts.deploy start
    """
    try:
        start_api(params_or_exit(), run_dir)
    except (ApiProcessError, DeployRefused, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@run_dir_option
def stop(run_dir):
    """Stop the background API started by `make promote`."""
    pid_file, _, port_file = run_files(run_dir)
    pid = running_pid(run_dir, params_or_exit()["api"]["host"])
    if pid is not None:
        stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    port_file.unlink(missing_ok=True)
    if pid is None:
        click.echo("the API is not running")
        return
    click.echo(f"stopped the API (pid {pid})")


@cli.command()
@run_dir_option
def status(run_dir):
    """Say whether the background API runs and which version it serves."""
    params = params_or_exit()
    pid = running_pid(run_dir, params["api"]["host"])
    if pid is None:
        click.echo("the API is not running")
        return
    click.echo(f"the API (pid {pid}) at {api_url(params)} serves {(readiness(api_url(params)) or {}).get('model_version') or 'no model'}; "
               f"last log lines:\n{log_tail(run_files(run_dir)[1], 3)}")


if __name__ == "__main__":
    cli(prog_name="python -m scripts.deploy")

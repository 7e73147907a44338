"""Which pipeline an event starts on GKE: ``python -m scripts.route < push.json`` (cluster/route.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from cluster.route import (
    LISTENER_FILE,
    RouteError,
    evaluate_listener,
    github_push_request,
    started_pipeline,
)


@click.command()
@click.option("--event", default="push", show_default=True,
              help="The X-GitHub-Event header the payload came with.")
@click.option("--url", "request_url", default="/", show_default=True,
              help="The URL the listener received the request on (Pub/Sub push carries its token there).")
@click.option("--listener", "listener_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=LISTENER_FILE, show_default="tekton/triggers/xray-mlops.yaml", help="The EventListener's YAML file.")
@click.option("--explain", is_flag=True, help="Also print, on stderr, why each trigger fired or not.")
def main(event, request_url, listener_file, explain):
    """Print the pipeline an event (JSON payload on stdin) starts on GKE, or `none`.

    Runs the EventListener's own interceptors (GitHub event type, CEL filters and overlays read
    from the YAML) on the payload; signatures and secrets are taken as valid.

    Example: python -m scripts.route < tests/fixtures/github/push-model.json
    """
    try:
        body = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"the payload on stdin is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise click.ClickException("the payload on stdin must be a JSON object")
    request = github_push_request(body, event=event, url=request_url)
    try:
        outcomes = evaluate_listener(request, listener_file)
        pipeline = started_pipeline(outcomes)
    except (RouteError, OSError, yaml.YAMLError, KeyError) as exc:
        raise click.ClickException(f"cannot evaluate {listener_file}: {exc}") from exc
    if explain:
        for o in outcomes:
            verdict = "fires" if o.fired else f"stopped by {o.stopped_by}: {o.reason}"
            click.echo(f"{o.trigger} -> {o.pipeline}: {verdict}", err=True)
    click.echo(pipeline)


if __name__ == "__main__":
    main(prog_name="python -m scripts.route")

"""Print the outcome a step noted: ``python -m scripts.outcome FILE`` (the train and retrain Tasks)."""

from __future__ import annotations

import click

from notify.outcome import read_outcome


@click.command()
@click.argument("outcome_file", type=click.Path(dir_okay=False))
def main(outcome_file: str) -> None:
    """Print the outcome a step noted in OUTCOME_FILE (e.g. poor-model), or nothing when it noted none.

    Example: python -m scripts.outcome .run/outcome.json
    """
    outcome = read_outcome(outcome_file)
    if outcome and outcome.get("outcome"):
        click.echo(outcome["outcome"])


if __name__ == "__main__":
    main(prog_name="python -m scripts.outcome")

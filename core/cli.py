"""What the command lines share: the ``--registry`` option and loading the configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from core.config import ConfigError, load_params

registry_option = click.option(
    "--registry", "registry_uri", help="Registry URI (default: REGISTRY_URI, else params.yaml)."
)


def params_or_exit(overrides: Mapping[str, Any] | None = None) -> dict:
    """:func:`core.config.load_params`, with a configuration error as click's one line ``Error: ...``."""
    try:
        return load_params(overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

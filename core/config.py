"""The project's configuration: params.yaml, overridden by environment variables, then by CLI options.

Every leaf of params.yaml has an environment variable named after its path in upper case, with
dots and dashes as underscores (``data.image_size`` -> ``DATA_IMAGE_SIZE``). An override is parsed
as YAML and must have the type of the value it replaces, so a typo fails loudly instead of
training with a string where a number belongs.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_FILE = REPO_ROOT / "params.yaml"
SECRET_WORDS = ("password", "secret", "token")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def env_name(dotted_key: str) -> str:
    """The environment variable that overrides a dotted params key."""
    return dotted_key.upper().replace(".", "_").replace("-", "_")


def _leaves(tree: Mapping[str, Any], prefix: str = ""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _coerce(dotted_key: str, raw: Any, default: Any, source: str) -> Any:
    """Parse ``raw`` (a string from the environment or a CLI value) to the type of ``default``."""
    if isinstance(default, str) or default is None:
        return "" if raw is None else str(raw)
    try:
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {dotted_key} cannot be parsed from {raw!r}") from exc
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(raw)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except (TypeError, ValueError):
            pass
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
    raise ConfigError(f"{source}: {dotted_key} must be {_KIND_NAMES[type(default)]}, got {raw!r}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", list: "a list (a, b or [a, b])"}


def _set(tree: dict, dotted_key: str, value: Any) -> None:
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


def load_params(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    params_file: str | os.PathLike | None = None,
) -> dict:
    """Return the resolved configuration as a nested dict.

    ``overrides`` maps dotted keys (``"train.epochs"``) to CLI values; ``None`` values are ignored
    so that unset click options fall through to the environment and the file.
    """
    environ = os.environ if environ is None else environ
    path = Path(params_file or environ.get("PARAMS_FILE") or DEFAULT_PARAMS_FILE)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    defaults = dict(_leaves(params))
    for dotted, default in defaults.items():
        name = env_name(dotted)
        # An empty variable counts as unset, except for text, where empty is a value (SMTP_HOST=).
        if name in environ and (environ[name].strip() or isinstance(default, str)):
            _set(params, dotted, _coerce(dotted, environ[name], default, f"environment {name}"))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted not in defaults:
            raise ConfigError(f"unknown configuration key {dotted!r}")
        _set(params, dotted, _coerce(dotted, value, defaults[dotted], "option"))
    _check(params)
    return params


def _check(params: dict) -> None:
    split = params["data"]["split"]
    if abs(sum(split.values()) - 1.0) > 1e-6 or min(split.values()) < 0:
        raise ConfigError(f"data.split shares must be >= 0 and sum to 1, got {split}")
    if split["test"] <= 0 or split["train"] <= 0:
        raise ConfigError("data.split.train and data.split.test must be > 0")
    if not 0 <= params["data"]["duplicate_distance"] <= 64:
        raise ConfigError(f"data.duplicate_distance must be 0 to 64 bits, got {params['data']['duplicate_distance']}")
    if len(set(params["classes"])) != len(params["classes"]) or len(params["classes"]) < 2:
        raise ConfigError(f"classes must be at least two distinct names, got {params['classes']}")


def masked(params: Mapping[str, Any]) -> dict:
    """A copy of ``params`` with secret values replaced, safe to log or store."""
    result = copy.deepcopy(dict(params))
    for dotted, value in _leaves(params):
        if value and any(word in dotted.lower() for word in SECRET_WORDS):
            _set(result, dotted, "***")
    return result


def describe(params: Mapping[str, Any], step: str, keys: tuple[str, ...] | None = None) -> str:
    """One log line with the resolved configuration of a step (its top-level ``keys``), secrets masked."""
    shown = {key: params[key] for key in keys} if keys else params
    return f"[{step}] configuration: {json.dumps(masked(shown), sort_keys=True)}"

"""Helpers of the software tests: a clean environment, free ports, running the project's CLIs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from core.config import DEFAULT_PARAMS_FILE, env_name

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_variables() -> set[str]:
    """Every environment variable that overrides params.yaml, plus the few read directly."""
    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"
    names = {env_name(key) for key in leaves(yaml.safe_load(DEFAULT_PARAMS_FILE.read_text()))}
    return names | {"PARAMS_FILE", "PROMOTED_BY", "GIT_COMMIT", "API_URL", "MODEL_VERSION"}


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without configuration variables, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in config_variables() and not k.startswith("MAKE")}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_module(module: str, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root, as a make target would."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


TINY_DATASET = {"SAMPLE_DATA_IMAGES_PER_CLASS": "30", "SAMPLE_DATA_IMAGE_SIZE": "96"}


def run_make(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``make ARGS`` in the repository, as a user would."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# A model trained for seconds on the tiny dataset: small images, few epochs, the gate opened.
TINY_TRAINING = {"DATA_IMAGE_SIZE": "32", "DATA_MIN_IMAGES_PER_CLASS": "5", "TRAIN_EPOCHS": "3",
                 "GATE_MIN_ACCURACY": "0", "GATE_MIN_RECALL_COVID": "0", "ACCEPTANCE_MIN_CONFIDENT_SHARE": "0"}

"""Every command of the project answers ``--help`` with a usage line, fast, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO_ROOT, clean_env

PACKAGES = ("scripts", "bench", "model", "registry", "retrain", "api")


def discover_commands() -> list[str]:
    """Every module of the project that runs as a command (``python -m X``): all get checked."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).glob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text():
                module = f"{package}.{path.stem}"
                found.append(package if path.stem == "__main__" else module)
    return found


COMMANDS = discover_commands()
SUBCOMMANDS = {
    "registry": ["list", "show", "current", "promote", "rollback", "migrate", "audit", "gc"],
    "scripts.deploy": ["start", "stop", "status"],
    "scripts.release": ["promote", "rollback"],
}
INVOCATIONS = [(module,) for module in COMMANDS] + [
    (module, sub) for module, subs in SUBCOMMANDS.items() for sub in subs
]
HEAVY_MODULES = ("tensorflow", "keras", "tf2onnx")


def run_help(invocation: tuple[str, ...]) -> subprocess.CompletedProcess:
    module, *sub = invocation
    return subprocess.run(
        [sys.executable, "-m", module, *sub, "--help"],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def answers() -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """Run every ``--help`` at once; each starts its own interpreter."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(INVOCATIONS, pool.map(run_help, INVOCATIONS)))


def test_the_commands_are_found():
    assert {"registry", "model.train", "api.serve", "scripts.release", "scripts.data_push"} <= set(COMMANDS)


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=" ".join)
def test_help_exits_0_with_a_usage_line_naming_the_command(answers, invocation):
    result = answers[invocation]
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"Usage: python -m {' '.join(invocation)} "), first
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_help_describes_the_command_and_its_options(answers, module):
    text = answers[(module,)].stdout
    description = text.split("\n\n", 2)[1].strip()
    assert description, f"{module} --help has no description"
    assert "--help" in text


@pytest.mark.parametrize("module", COMMANDS)
def test_help_carries_an_example(answers, module):
    assert "Example" in answers[(module,)].stdout, f"{module} --help shows no example"


def test_model_train_help_does_not_import_tensorflow():
    """``-X importtime`` lists every module the interpreter imported, on stderr."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "model.train", "--help"],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "click" in imported, "no import times reported"
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY_MODULES)
    assert heavy == []


def test_every_registry_option_is_the_shared_one(answers):
    """core/cli.py declares ``--registry`` once: every command that takes it reads the same."""
    shared = "--registry TEXT Registry URI (default: REGISTRY_URI, else params.yaml)."
    taking = {invocation for invocation, result in answers.items() if "--registry TEXT" in result.stdout}
    assert {("model.train",), ("api.serve",), ("scripts.report",), ("scripts.notify",), ("scripts.acceptance",),
            ("registry", "list"), ("registry", "gc")} <= taking
    for invocation in taking:
        assert shared in " ".join(answers[invocation].stdout.split()), invocation

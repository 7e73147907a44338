"""The training pipeline end to end, through make, as a user runs it; then promote, predict, stop.

A tiny dataset, small images and few epochs (environment overrides) keep it to about a minute;
the quality gate is opened because a model trained for seconds cannot meet the real thresholds.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from email import policy
from email.parser import BytesParser

import pytest
import requests
from helpers import free_port, run_make, run_module
from PIL import Image

from registry.store import Registry


def make(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_make(*args, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory):
    """The pipeline's run (the ``trained`` fixture); promotion and the API work on a copy."""
    root = tmp_path_factory.mktemp("promoted")
    shutil.copytree(trained["root"] / "registry", root / "registry")
    env = dict(trained["env"], REGISTRY_URI=str(root / "registry"), API_PORT=str(free_port()))
    run_dir = f"RUN_DIR={root / 'run'}"
    yield {"root": trained["root"], "env": env, "run_dir": run_dir, "pipeline": trained["pipeline"],
           "url": f"http://127.0.0.1:{env['API_PORT']}"}
    make("stop", run_dir, env=env, timeout=60)


@pytest.fixture(scope="module")
def version(trained) -> str:
    return trained["version"]


def test_pipeline_writes_data_trains_tests_and_ends_with_the_promote_command(workspace, version):
    output = workspace["pipeline"].stdout
    assert (workspace["root"] / "data" / "COVID" / "images" / "COVID-1.png").exists()
    assert json.loads((workspace["root"] / "run" / "data-validation.json").read_text())["passed"]
    assert f"registered {version} in testing" in output
    assert f"acceptance tests of {version} passed" in output
    tail = output[output.rindex("notify summary"):]
    assert version in tail and "test accuracy" in tail
    assert f"make promote VERSION={version}" in tail
    email_path = re.search(r"email\s+(\S+\.eml)", tail).group(1)
    message = BytesParser(policy=policy.default).parsebytes(open(email_path, "rb").read())
    assert message["To"] == "product-owner@example.com"
    assert f"make promote VERSION={version}" in message.get_body(("plain",)).get_content()


def test_registry_lists_the_version_with_its_metadata_and_passed_tests(workspace, version):
    result = run_module("registry", "list", "--stage", "testing", "--json", env=workspace["env"])
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["version"] == version
    for key in ("created_at", "git_commit", "kind", "parent_version", "dataset", "params", "metrics",
                "gate", "onnx", "tests", "libraries"):
        assert key in entry
    (run,) = entry["tests"]
    assert run["failed"] == 0 and run["passed"] >= 10 and len(run["suite_sha256"]) == 64
    assert run["api_agreement"] == 1.0
    assert run["api_accuracy"] == pytest.approx(entry["metrics"]["accuracy"], abs=1e-9)


def test_promote_starts_the_api_which_answers_predictions_and_bad_input(workspace, version):
    result = make("promote", workspace["run_dir"], env=workspace["env"], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert Registry(workspace["env"]["REGISTRY_URI"]).current()["version"] == version

    png = (workspace["root"] / "data" / "Viral Pneumonia" / "images" / "Viral Pneumonia-3.png").read_bytes()
    answer = requests.post(f"{workspace['url']}/predict", data=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["X-Model-Version"] == version
    probabilities = answer.json()["probabilities"]
    assert list(probabilities) == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, "JPEG", quality=95)
    assert requests.post(f"{workspace['url']}/predict", files={"image": ("x.jpg", buffer.getvalue(), "image/jpeg")},
                         timeout=30).status_code == 200
    for body, content_type, status in ((b"", "image/png", 400), (png[:200], "image/png", 400),
                                       (b"text", "text/plain", 415)):
        bad = requests.post(f"{workspace['url']}/predict", data=body, headers={"Content-Type": content_type}, timeout=30)
        assert bad.status_code == status and "error" in bad.json()


def test_stop_stops_the_background_api(workspace, version):
    result = make("stop", workspace["run_dir"], env=workspace["env"], timeout=60)
    assert result.returncode == 0 and "stopped the API" in result.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{workspace['url']}/healthz", timeout=5)


def test_failed_acceptance_tests_are_recorded_and_block_promotion(workspace, version, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(workspace["env"]["REGISTRY_URI"], registry)
    shutil.rmtree(registry / "production")
    env = dict(workspace["env"], REGISTRY_URI=str(registry), ACCEPTANCE_MIN_AGREEMENT="1.01")
    result = run_module("scripts.acceptance", "--version", version, "--run-dir", str(tmp_path), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: acceptance tests of {version} failed")
    assert Registry(str(registry)).metadata(version)["tests"][-1]["failed"] >= 1

    refused = run_module("registry", "promote", version, env=env)
    assert refused.returncode == 1
    assert f"{version} cannot be promoted: its last acceptance-test run failed" in refused.stderr
    assert Registry(str(registry)).current() is None

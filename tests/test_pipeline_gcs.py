"""The training pipeline with the dataset and the registry both on GCS (fake-gcs-server, the real
client), through make as a user runs it, then promotion and a prediction from the API reading the
registry from the bucket. Nothing in the make targets changes: only the two URIs."""

from __future__ import annotations

import pytest
import requests
from helpers import TINY_DATASET, TINY_TRAINING, clean_env, free_port, run_make, run_module

from registry.store import Registry
from storage import open_storage


@pytest.fixture(scope="module")
def gcs_workspace(fake_gcs, tmp_path_factory):
    from conftest import new_bucket

    root, bucket = tmp_path_factory.mktemp("gcs-pipeline"), new_bucket("pipeline")
    env = clean_env(DATASET_URI=f"gs://{bucket}/datasets/covid", REGISTRY_URI=f"gs://{bucket}/registry",
                    OUTBOX_DIR=str(root / "outbox"), CACHE_DIR=str(root / "cache"), API_PORT=str(free_port()),
                    API_RELOAD_INTERVAL_S="0.5", PROMOTED_BY="product-owner@example.com", **TINY_DATASET,
                    **TINY_TRAINING)
    run_dir = f"RUN_DIR={root / 'run'}"
    pipeline = run_make("pipeline", run_dir, env=env)
    yield {"root": root, "env": env, "run_dir": run_dir, "pipeline": pipeline}
    run_make("stop", run_dir, env=env, timeout=60)


def test_the_pipeline_runs_with_both_uris_on_gcs(gcs_workspace):
    pipeline, env = gcs_workspace["pipeline"], gcs_workspace["env"]
    assert pipeline.returncode == 0, pipeline.stdout[-4000:] + pipeline.stderr[-2000:]
    assert "pushed to gs://" in pipeline.stdout
    dataset = open_storage(env["DATASET_URI"])
    assert dataset.exists("manifest.json") and dataset.exists("COVID/images/COVID-1.png")
    version = (gcs_workspace["root"] / "run" / "candidate-version").read_text().strip()
    registry = Registry(env["REGISTRY_URI"])
    assert registry.versions("testing") == [version]
    assert registry.metadata(version)["tests"][-1]["failed"] == 0
    assert registry.metadata(version)["dataset"]["uri"] == env["DATASET_URI"]


def test_promote_serves_the_model_from_the_bucket(gcs_workspace):
    env, run_dir = gcs_workspace["env"], gcs_workspace["run_dir"]
    version = (gcs_workspace["root"] / "run" / "candidate-version").read_text().strip()
    promoted = run_make("promote", run_dir, env=env, timeout=300)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert Registry(env["REGISTRY_URI"]).current()["version"] == version
    png = open_storage(env["DATASET_URI"]).read("Normal/images/Normal-2.png")
    answer = requests.post(f"http://127.0.0.1:{env['API_PORT']}/predict", data=png,
                           headers={"Content-Type": "image/png"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == version
    listed = run_module("registry", "list", env=env)
    assert listed.returncode == 0 and "<- production" in listed.stdout

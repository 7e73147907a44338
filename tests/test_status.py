"""`make status`: a dataset version no pipeline run has read (a lost trigger) is shown, and fails."""

from __future__ import annotations

import json

from helpers import clean_env, run_make, run_module


def push(tiny_dataset, target, tmp_path):
    pushed = run_module("scripts.data_push", "--src", str(tiny_dataset), "--to", str(target),
                        env=clean_env(CACHE_DIR=str(tmp_path / "cache")))
    assert pushed.returncode == 0, pushed.stderr
    return json.loads((target / "manifest.json").read_text())["manifest_sha256"]


def test_a_pushed_dataset_no_run_has_read_is_reported_until_a_run_reads_it(tiny_dataset, tmp_path):
    dataset, registry = tmp_path / "dataset", tmp_path / "registry"
    env = clean_env(DATASET_URI=str(dataset), REGISTRY_URI=str(registry), CACHE_DIR=str(tmp_path / "cache"))
    version = push(tiny_dataset, dataset, tmp_path)

    lost = run_make("status", env=env)
    assert lost.returncode == 2, lost.stdout + lost.stderr
    assert "production: none" in lost.stdout
    assert f"no pipeline run has read dataset version {version[:12]}" in lost.stderr
    assert "tekton/runs/retraining.yaml" in lost.stderr

    validated = run_module("scripts.validate_data", "--report", str(tmp_path / "report.json"),
                           env={**env, "PIPELINE_RUN": "retraining-x7k2p"})
    assert validated.returncode == 0, validated.stderr
    seen = run_make("status", env=env)
    assert seen.returncode == 0, seen.stderr
    assert f"version {version[:12]}" in seen.stdout and "read by pipeline run retraining-x7k2p" in seen.stdout


def test_validation_outside_a_pipeline_run_records_nothing(tiny_dataset, tmp_path):
    dataset, registry = tmp_path / "dataset", tmp_path / "registry"
    env = clean_env(DATASET_URI=str(dataset), REGISTRY_URI=str(registry), CACHE_DIR=str(tmp_path / "cache"))
    push(tiny_dataset, dataset, tmp_path)
    validated = run_module("scripts.validate_data", "--report", str(tmp_path / "report.json"), env=env)
    assert validated.returncode == 0, validated.stderr
    assert not registry.exists()


def test_a_dataset_never_pushed_is_one_clear_line(tmp_path):
    env = clean_env(DATASET_URI=str(tmp_path / "nothing"), REGISTRY_URI=str(tmp_path / "registry"))
    result = run_module("scripts.status", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: {tmp_path / 'nothing'}/manifest.json does not exist: "
                                     "push the dataset with `make data-push`")

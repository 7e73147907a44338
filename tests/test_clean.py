"""`make clean` removes only what is regenerated; wiping a registry needs CONFIRM=1."""

from __future__ import annotations

import shutil

from api_helpers import register_model
from helpers import REPO_ROOT, clean_env, run_module

from registry.store import Registry


def make_clean(env: dict, *args: str):
    import subprocess

    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_clean_removes_the_sample_dataset_run_files_outbox_and_cache_but_keeps_the_registry(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    registry = Registry(str(tmp_path / "registry"))
    version = register_model(registry)
    for folder in ("run", "outbox", "cache"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "file").write_text("x")
    env = clean_env(DATASET_URI=str(data), REGISTRY_URI=registry.uri, OUTBOX_DIR=str(tmp_path / "outbox"),
                    CACHE_DIR=str(tmp_path / "cache"))
    result = make_clean(env, "clean", f"RUN_DIR={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert not any((tmp_path / name).exists() for name in ("data", "run", "outbox", "cache"))
    assert registry.versions("testing") == [version]


def test_clean_never_removes_a_real_dataset(tiny_dataset, tmp_path):
    data = tmp_path / "kaggle"
    shutil.copytree(tiny_dataset, data)
    (data / ".sample-dataset.json").unlink()  # what the user unpacked carries no sample marker
    result = run_module("scripts.clean", "--run-dir", str(tmp_path / "run"), env=clean_env(DATASET_URI=str(data)))
    assert result.returncode == 0, result.stderr
    assert "kept the dataset" in result.stdout and "not the sample dataset" in result.stdout
    assert len(list(data.rglob("*.png"))) == 120


def test_clean_registry_refuses_without_confirm_and_wipes_with_it(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    version = register_model(registry)
    registry.promote(version, by="owner")
    env = clean_env(REGISTRY_URI=registry.uri)
    refused = make_clean(env, "clean-registry")
    assert refused.returncode != 0
    assert "holds 1 testing and 1 production versions" in refused.stderr
    assert "make clean-registry CONFIRM=1" in refused.stderr
    assert registry.versions("production") == [version]
    wiped = make_clean(env, "clean-registry", "CONFIRM=1")
    assert wiped.returncode == 0, wiped.stderr
    assert not (tmp_path / "registry").exists()


def test_clean_registry_refuses_a_bucket(tmp_path):
    result = run_module("scripts.clean", "--registry", "--confirm", env=clean_env(REGISTRY_URI="gs://bucket/reg"))
    assert result.returncode == 1 and "gcloud storage rm" in result.stderr and "Traceback" not in result.stderr

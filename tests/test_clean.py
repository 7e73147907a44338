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
    written = ["run dir/api.log", "run dir/candidate-version", "run dir/logs/training-train.log",
               "outbox/20261127T133000Z-v0001.eml", "cache/gcs/bucket/data/.cache-index.json",
               "cache/gcs/bucket/data/COVID/images/COVID-1.png", "cache/decoded/0a1b/index.json",
               "cache/decoded/0a1b/images.npy", "cache/sample/bucket/data/.sample-dataset.json"]
    for name in written:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    env = clean_env(DATASET_URI=str(data), REGISTRY_URI=registry.uri, OUTBOX_DIR=str(tmp_path / "outbox"),
                    CACHE_DIR=str(tmp_path / "cache"))
    result = make_clean(env, "clean", f"RUN_DIR={tmp_path / 'run dir'}")  # a path with a space works
    assert result.returncode == 0, result.stderr
    assert not any((tmp_path / name).exists() for name in ("data", "run dir", "outbox", "cache"))
    assert registry.versions("testing") == [version]


def test_clean_removes_only_what_the_project_wrote_in_folders_the_user_named(tmp_path):
    home = tmp_path / "home"  # RUN_DIR=~ OUTBOX_DIR=~ CACHE_DIR=~/.cache: the user's files stay
    users = ["notes.txt", "logs/syslog", "mail/letter.eml.txt", ".cache/pip/wheel.whl", ".cache/gcs/other.txt",
             ".cache/decoded/notes.json", "bench/results.csv"]
    ours = ["api.pid", "outcome.json", "logs/retraining-retrain.log", "20261127T133000Z-v0001.eml",
            ".cache/gcs/b/p/.cache-index.json", ".cache/gcs/b/p/x.png", ".cache/decoded/k/index.json"]
    for name in users + ours:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text("x")
    env = clean_env(DATASET_URI=str(tmp_path / "none"), OUTBOX_DIR=str(home), CACHE_DIR=str(home / ".cache"))
    result = make_clean(env, "clean", f"RUN_DIR={home}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()) == sorted(users)


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


def test_make_passes_values_as_single_arguments_never_as_shell_code(tmp_path):
    planted = tmp_path / "planted"
    env = clean_env(REGISTRY_URI=str(tmp_path / "registry"))
    result = make_clean(env, "promote", f"VERSION=v1; touch {planted} #")
    assert result.returncode != 0
    assert not planted.exists()
    assert "is not a version name" in result.stderr and "Traceback" not in result.stderr
    stopped = make_clean(env, "stop", f"RUN_DIR={tmp_path / 'a run dir'}; touch {planted}")
    assert stopped.returncode == 0, stopped.stderr
    assert not planted.exists() and "the API is not running" in stopped.stdout

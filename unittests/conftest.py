"""Fixtures of the model acceptance tests: which API, which version, which test images.

Run by ``make unittest VERSION=...`` (pipelines/acceptance.py), which serves the version with the
real API and passes ``--api-url`` and ``--model-version``. Run by hand against any running API:
``python -m pytest unittests --api-url http://127.0.0.1:8080 --model-version v0001-...``.
"""

from __future__ import annotations

import os
import random

import pytest
import requests

from core.config import load_params
from model.dataset import scan_dataset
from registry.store import Registry


def pytest_addoption(parser):
    group = parser.getgroup("acceptance", "model acceptance tests")
    group.addoption("--api-url", default=os.environ.get("API_URL"), help="Base URL of the API under test.")
    group.addoption("--model-version", default=os.environ.get("MODEL_VERSION"),
                    help="Registry version the API is expected to serve.")
    group.addoption("--registry", default=None, help="Registry URI (default: REGISTRY_URI / params.yaml).")
    group.addoption("--dataset", default=None, help="Dataset URI (default: DATASET_URI / params.yaml).")


@pytest.fixture(scope="session")
def params(pytestconfig):
    return load_params({"registry_uri": pytestconfig.getoption("--registry"),
                        "dataset_uri": pytestconfig.getoption("--dataset")})


@pytest.fixture(scope="session")
def api_url(pytestconfig) -> str:
    url = pytestconfig.getoption("--api-url")
    if not url:
        pytest.exit("give --api-url (or API_URL): the acceptance tests run against a served model", 2)
    return url.rstrip("/")


@pytest.fixture(scope="session")
def model_version(pytestconfig) -> str:
    version = pytestconfig.getoption("--model-version")
    if not version:
        pytest.exit("give --model-version (or MODEL_VERSION): the version under test", 2)
    return version


@pytest.fixture(scope="session")
def metadata(params, model_version) -> dict:
    return Registry(params["registry_uri"]).metadata(model_version)


@pytest.fixture(scope="session")
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="session")
def test_split(params, metadata, model_version):
    """The dataset and the version's recorded test predictions: every test image training evaluated,
    what the model predicted for it, and the image's sha256 then. At most
    ``acceptance.max_test_images`` of them: a seeded sample, stratified by class, the same every run.

    A file that is missing or whose bytes changed since training fails here, by name: the
    comparison image by image would mean nothing.
    """
    import hashlib
    import json

    registry = Registry(params["registry_uri"])
    recorded = (metadata.get("test_predictions") or {}).get("file")
    if not recorded:
        pytest.fail(f"{model_version} records no test predictions (registered before they were kept): "
                    "retrain it to test it image by image")
    predictions = json.loads(registry.read_file(model_version, recorded))
    dataset = scan_dataset(params["dataset_uri"], metadata["classes"], {"train": 0.0, "validation": 0.0, "test": 1.0},
                           with_hashes=False, cache_dir=params["cache_dir"], progress=False)
    present = {e.path for e in dataset.examples}
    missing = [p["path"] for p in predictions if p["path"] not in present]
    if missing:
        pytest.fail(f"{len(missing)} test images of {model_version} are missing from {dataset.uri}, e.g. {missing[0]}")
    changed = [p["path"] for p in predictions if hashlib.sha256(dataset.read_bytes(p["path"])).hexdigest() != p["sha256"]]
    if changed:
        pytest.fail(f"{len(changed)} test images of {model_version} changed since training, e.g. {changed[0]}")
    return dataset, stratified_sample(predictions, params["acceptance"]["max_test_images"])


def stratified_sample(items: list[dict], limit: int, seed: int = 0) -> list[dict]:
    """At most ``limit`` items, each label in proportion (at least one each), seeded, in path order;
    all of them when ``limit`` is 0."""
    if not limit or len(items) <= limit:
        return sorted(items, key=lambda item: item["path"])
    groups: dict[str, list[dict]] = {}
    for item in sorted(items, key=lambda item: item["path"]):
        groups.setdefault(item["label"], []).append(item)
    quota = {label: max(1, round(limit * len(group) / len(items))) for label, group in groups.items()}
    while sum(quota.values()) > limit and max(quota.values()) > 1:
        quota[max(quota, key=quota.get)] -= 1
    rng = random.Random(seed)
    chosen = [item for label in sorted(groups) for item in rng.sample(groups[label], quota[label])]
    return sorted(chosen, key=lambda item: item["path"])


def post_image(http, api_url: str, data: bytes, content_type: str = "image/png") -> requests.Response:
    return http.post(f"{api_url}/predict", data=data, headers={"Content-Type": content_type}, timeout=60)

"""Fixtures of the model acceptance tests: which API, which version, which test images.

Run by ``make unittest VERSION=...`` (scripts/acceptance.py), which serves the version with the
real API and passes ``--api-url`` and ``--model-version``. Run by hand against any running API:
``python -m pytest unittests --api-url http://127.0.0.1:8080 --model-version v0001-...``.
"""

from __future__ import annotations

import os
import random

import pytest
import requests

from model.config import load_params
from model.dataset import scan_dataset
from model.validation import validate_dataset
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
def test_split(params, metadata):
    """The dataset and its usable test examples, at most ``acceptance.max_test_images`` of them.

    Split shares come from the version's recorded params and usable examples from the same
    validation training ran, so these are the images the registry's accuracy was measured on
    (when the dataset has not changed since). A subset is a seeded sample, the same on every run.
    """
    recorded = {**params, "data": {**params["data"], **metadata.get("params", {}).get("data", {})}}
    dataset = scan_dataset(params["dataset_uri"], metadata["classes"], recorded["data"]["split"],
                           with_hashes=False, cache_dir=params["cache_dir"], progress=False)
    _, usable = validate_dataset(dataset, recorded, progress=False)
    examples = usable.split("test")
    limit = params["acceptance"]["max_test_images"]
    if limit and len(examples) > limit:
        examples = sorted(random.Random(0).sample(examples, limit), key=lambda e: e.path)
    if not examples:
        pytest.fail(f"the dataset at {usable.uri} has no usable test images")
    return usable, examples


def post_image(http, api_url: str, data: bytes, content_type: str = "image/png") -> requests.Response:
    return http.post(f"{api_url}/predict", data=data, headers={"Content-Type": content_type}, timeout=60)

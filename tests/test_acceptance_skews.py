"""The acceptance suite catches every skew between training's and serving's preprocessing.

A model trained for seconds by `make pipeline` (the session's ``trained`` fixture) is served by the
real app under real waitress, in this process, and `make unittest API_URL=...`'s own code
(scripts/acceptance.py, then the verdict of registry/policy.py) runs the suite against it. Each
skew replaces the API's image-to-input function (core/preprocess.py ``to_array``, which
``image_bytes_to_array`` calls) for one run; training's recorded answers stay as they were.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from core import preprocess
from core.config import load_params
from registry.policy import run_passed, run_problems
from registry.store import Registry

AGREEMENT = "test_accuracy.py::test_api_answers_agree_with_training_image_by_image"
COLOUR = "test_input_invariance.py::test_a_colour_image_is_read_as_its_gray_conversion"
BT709 = (0.2126, 0.7152, 0.0722, 0.0)  # HDTV luma; training reads colour with ITU-R 601's weights


def skewed_to_array(resample=Image.Resampling.BILINEAR, divisor=255.0, gamma=1.0, offset=0.0, rgb_weights=None):
    """``preprocess.to_array`` with one of its choices changed."""

    def to_array(image: Image.Image, size: int) -> np.ndarray:
        if rgb_weights and image.mode == "RGB":
            gray = image.convert("L", matrix=rgb_weights)
        else:
            gray = preprocess.to_gray8(image)
        if gray.size != (size, size):
            gray = gray.resize((size, size), resample)
        pixels = np.asarray(gray, dtype=np.float32) / divisor
        return (pixels ** gamma + offset).astype(np.float32)[..., np.newaxis]

    return to_array


# skew -> (the planted function, the test that must fail among others)
SKEWS = {
    "bicubic resize": (skewed_to_array(resample=Image.Resampling.BICUBIC), AGREEMENT),
    "nearest resize": (skewed_to_array(resample=Image.Resampling.NEAREST), AGREEMENT),
    "gamma 0.9": (skewed_to_array(gamma=0.9), AGREEMENT),
    "pixels / 256": (skewed_to_array(divisor=256.0), AGREEMENT),
    "+0.02 offset": (skewed_to_array(offset=0.02), AGREEMENT),
    "BT.709 gray weights": (skewed_to_array(rgb_weights=BT709), COLOUR),
}


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The trained version served from a copy of its registry by the real app under waitress."""
    from api.app import create_app
    from api.serve import start_in_thread

    root = tmp_path_factory.mktemp("skews")
    shutil.copytree(trained["root"] / "registry", root / "registry")
    params = load_params({"registry_uri": str(root / "registry"), "dataset_uri": trained["env"]["DATASET_URI"]},
                         environ=trained["env"])
    app = create_app({"REGISTRY_URI": params["registry_uri"], "MODEL_STAGE": "testing",
                      "MODEL_VERSION": trained["version"], "RELOAD_INTERVAL_S": 0})
    server = start_in_thread(app)
    yield {"url": server.url, "params": params, "version": trained["version"], "run_dir": root / "run"}
    server.stop()
    app.extensions["model_holder"].stop()


def acceptance_run(served) -> dict:
    from pipelines.acceptance import run_acceptance

    run = run_acceptance(served["params"], served["version"], served["run_dir"], api_url=served["url"])
    assert Registry(served["params"]["registry_uri"]).metadata(served["version"])["tests"][-1] == run
    return run


def test_the_suite_passes_when_the_api_serves_what_training_evaluated(served):
    run = acceptance_run(served)
    assert run_passed(run), (run_problems(run), run["failures"])
    assert run["api_max_probability_diff"] <= served["params"]["acceptance"]["max_probability_diff"]
    assert run["api_images"] > 0 and run["api_agreement"] == 1.0


@pytest.mark.parametrize("skew", list(SKEWS))
def test_the_suite_fails_when_serving_preprocesses_differently(served, monkeypatch, skew):
    planted, must_fail = SKEWS[skew]
    monkeypatch.setattr(preprocess, "to_array", planted)
    run = acceptance_run(served)
    assert not run_passed(run)
    assert must_fail in run["failures"], run["failures"]

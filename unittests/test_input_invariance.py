"""The same radiograph sent as PNG, as JPEG (quality 95) and as RGB gets the same label."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from unittests.conftest import post_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictions(http, api_url, test_split, params):
    dataset, examples = test_split
    answers = []
    for example in examples[: params["acceptance"]["invariance_images"]]:
        image = Image.open(io.BytesIO(dataset.read_bytes(example.path)))
        image.load()
        gray = image.convert("L")
        variants = {
            "png": post_image(http, api_url, encode(gray, "PNG")),
            "jpeg": post_image(http, api_url, encode(gray, "JPEG", quality=95), "image/jpeg"),
            "rgb": post_image(http, api_url, encode(gray.convert("RGB"), "PNG")),
        }
        for name, response in variants.items():
            assert response.status_code == 200, f"{example.path} as {name}: {response.text}"
        answers.append((example.path, {name: r.json() for name, r in variants.items()}))
    return answers


def test_rgb_copy_gets_the_same_answer(predictions):
    for path, answer in predictions:
        assert answer["rgb"]["label"] == answer["png"]["label"], path
        for name, p in answer["png"]["probabilities"].items():
            assert answer["rgb"]["probabilities"][name] == pytest.approx(p, abs=1e-5), path


def test_jpeg_copy_gets_the_same_label_when_the_model_is_confident(predictions, params):
    # JPEG at quality 95 moves pixels slightly; a label may flip only where the model hesitates.
    sure = params["acceptance"]["confident_probability"]
    confident = [(path, a) for path, a in predictions if max(a["png"]["probabilities"].values()) >= sure]
    required = params["acceptance"]["min_confident_share"] * len(predictions)
    assert len(confident) >= required, (
        f"the model gives a probability >= {sure} to only {len(confident)} of {len(predictions)} images"
    )
    flipped = [path for path, a in confident if a["jpeg"]["label"] != a["png"]["label"]]
    assert not flipped, f"JPEG (quality 95) changed the label of {flipped}"

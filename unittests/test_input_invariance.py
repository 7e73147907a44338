"""The same radiograph sent as PNG, as JPEG (quality 95) and as RGB gets the same label."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from unittests.conftest import post_image, stratified_sample


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def tinted(gray: Image.Image) -> Image.Image:
    """A colour copy of a gray image whose three channels differ (a tinted scan)."""
    pixels = np.asarray(gray, dtype=np.float32)
    channels = [pixels, pixels * 0.85 + 20, pixels * 0.7 + 40]
    return Image.fromarray(np.stack([np.clip(c, 0, 255).astype(np.uint8) for c in channels], axis=-1), "RGB")


@pytest.fixture(scope="module")
def predictions(http, api_url, test_split, params):
    """Each image of a class-stratified sample, sent as PNG, as JPEG (quality 95), and as a tinted RGB
    PNG with the gray image that image converts to (ITU-R 601 luma, what training's decoder does)."""
    dataset, items = test_split
    answers = []
    for item in stratified_sample(items, params["acceptance"]["invariance_images"], seed=1):
        image = Image.open(io.BytesIO(dataset.read_bytes(item["path"])))
        image.load()
        gray = image.convert("L")
        colour = tinted(gray)
        variants = {
            "png": post_image(http, api_url, encode(gray, "PNG")),
            "jpeg": post_image(http, api_url, encode(gray, "JPEG", quality=95), "image/jpeg"),
            "rgb": post_image(http, api_url, encode(colour, "PNG")),
            "rgb_as_gray": post_image(http, api_url, encode(colour.convert("L"), "PNG")),
        }
        for name, response in variants.items():
            assert response.status_code == 200, f"{item['path']} as {name}: {response.text}"
        answers.append((item["path"], {name: r.json() for name, r in variants.items()}))
    return answers


def test_a_colour_image_is_read_as_its_gray_conversion(predictions):
    for path, answer in predictions:
        assert answer["rgb"]["label"] == answer["rgb_as_gray"]["label"], path
        for name, p in answer["rgb_as_gray"]["probabilities"].items():
            assert answer["rgb"]["probabilities"][name] == pytest.approx(p, abs=1e-5), path


def test_the_sample_covers_every_class(predictions, test_split):
    dataset, items = test_split
    labels = {item["label"] for item in items if item["path"] in {path for path, _ in predictions}}
    assert labels == {item["label"] for item in items}


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

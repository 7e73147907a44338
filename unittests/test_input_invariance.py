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


def test_a_colour_image_is_read_as_its_gray_conversion(predictions, params):
    tolerance = params["acceptance"]["max_probability_diff"]  # the same pixels: the same answer
    for path, answer in predictions:
        assert answer["rgb"]["label"] == answer["rgb_as_gray"]["label"], path
        for name, p in answer["rgb_as_gray"]["probabilities"].items():
            assert answer["rgb"]["probabilities"][name] == pytest.approx(p, abs=tolerance), path


def test_the_sample_covers_every_class(predictions, test_split):
    dataset, items = test_split
    labels = {item["label"] for item in items if item["path"] in {path for path, _ in predictions}}
    assert labels == {item["label"] for item in items}


def top_two_margin(probabilities: dict[str, float]) -> float:
    first, second = sorted(probabilities.values(), reverse=True)[:2]
    return first - second


def test_jpeg_copy_moves_the_probabilities_little_and_flips_only_hesitant_labels(predictions, params,
                                                                                 record_property):
    # JPEG at quality 95 moves pixels by a level or two. Any model's answers may follow a little,
    # so the change of the probabilities is bounded, not zero; a label may change only where the
    # PNG answer hesitates between its top two classes. Whether the model is confident is not
    # judged here: that is the quality gate's business, not the serving path's.
    bound, margin = params["acceptance"]["jpeg_max_probability_change"], params["acceptance"]["jpeg_flip_margin"]
    changes, flipped = [], []
    for path, answer in predictions:
        png, jpeg = answer["png"], answer["jpeg"]
        changes.append((max(abs(jpeg["probabilities"][name] - p) for name, p in png["probabilities"].items()), path))
        if jpeg["label"] != png["label"] and top_two_margin(png["probabilities"]) >= margin:
            flipped.append(f"{path} ({png['label']} -> {jpeg['label']}, margin "
                           f"{top_two_margin(png['probabilities']):.3f})")
    largest, where = max(changes)
    record_property("jpeg_max_probability_change", round(largest, 6))
    assert largest <= bound, (
        f"JPEG (quality 95) moved a probability by {largest:.3f} on {where}, more than {bound}")
    assert not flipped, f"JPEG (quality 95) changed labels the model was sure of (margin >= {margin}): {flipped}"

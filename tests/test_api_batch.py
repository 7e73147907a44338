"""``POST /predict/batch``: several images in one call, one entry each, a bad image fails alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from api_helpers import (  # noqa: F401  (fixtures)
    MAX_BATCH_BYTES,
    MAX_BATCH_IMAGES,
    MAX_BYTES,
    api,
    assert_json_error,
    image_bytes,
    production,
    registry,
    serve,
)
from PIL import Image


def parts(*images: bytes) -> list:
    return [("image", (f"xray-{index}.png", data, "image/png")) for index, data in enumerate(images)]


def noise_png(seed: int, size: int = 300) -> bytes:
    """A PNG that barely compresses: about ``size * size`` bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_batch_answers_one_prediction_per_image_in_order_as_predict_would(api, production):
    images = [image_bytes(0), image_bytes(255), image_bytes(180, fmt="JPEG")]
    response = api.post("/predict/batch", files=parts(*images))
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == production
    entries = response.json()
    assert [entry["label"] for entry in entries[:2]] == ["Normal", "COVID"]
    for entry, data in zip(entries, images):
        single = api.post(files={"image": ("one", data)}).json()
        assert entry["model_version"] == production
        assert entry["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def test_a_bad_image_gets_its_own_error_entry_and_the_others_their_predictions(api):
    images = [image_bytes(0), b"not an image", image_bytes(10, size=4), image_bytes(255)]
    response = api.post("/predict/batch", files=parts(*images))
    assert response.status_code == 200, response.text
    first, text, tiny, last = response.json()
    assert first["label"] == "Normal" and last["label"] == "COVID"
    assert text["error"]["code"] == "not_an_image" and text["error"]["message"]
    assert tiny["error"]["code"] == "wrong_dimensions"
    assert api.metric("xray_api_images_total", result="ok") == 2
    assert api.metric("xray_api_images_total", result="not_an_image") == 1


def test_a_batch_may_be_larger_than_one_predict_body_up_to_its_own_limit(api):
    images = [noise_png(seed) for seed in range(3)]
    assert MAX_BYTES < sum(map(len, images)) < MAX_BATCH_BYTES
    response = api.post("/predict/batch", files=parts(*images))
    assert response.status_code == 200, response.text
    assert all("label" in entry for entry in response.json())

    too_large = [noise_png(seed, size=330) for seed in range(MAX_BATCH_IMAGES)]
    assert sum(map(len, too_large)) > MAX_BATCH_BYTES
    body = assert_json_error(api.post("/predict/batch", files=parts(*too_large)), 413, "too_many_bytes")
    assert body["error"]["message"] == f"the request body is larger than {MAX_BATCH_BYTES} bytes"


def test_more_images_than_the_limit_answer_413(api):
    images = [image_bytes(value) for value in range(MAX_BATCH_IMAGES + 1)]
    body = assert_json_error(api.post("/predict/batch", files=parts(*images)), 413, "too_many_images")
    assert f"at most {MAX_BATCH_IMAGES}" in body["error"]["message"]


def test_a_batch_needs_multipart_with_image_fields(api):
    assert_json_error(api.post("/predict/batch", data=image_bytes(), headers={"Content-Type": "image/png"}),
                      415, "unsupported_media_type")
    other_field = [("picture", ("a.png", image_bytes(), "image/png"))]
    assert_json_error(api.post("/predict/batch", files=other_field), 400, "missing_field")


def test_a_batch_without_a_model_answers_503(serve):
    assert_json_error(serve().post("/predict/batch", files=parts(image_bytes())), 503, "no_model")

"""Accuracy measured through the API matches the accuracy the registry recorded at training."""

from __future__ import annotations

import math

from unittests.conftest import post_image


def test_api_accuracy_matches_registry(http, api_url, test_split, metadata, params, record_property):
    dataset, examples = test_split
    correct = 0
    for example in examples:
        response = post_image(http, api_url, dataset.read_bytes(example.path))
        assert response.status_code == 200, f"{example.path}: {response.status_code} {response.text}"
        correct += response.json()["label"] == example.label
    accuracy = correct / len(examples)
    record_property("api_accuracy", round(accuracy, 6))
    record_property("api_images", len(examples))

    expected = metadata["metrics"]["accuracy"]
    tolerance = params["acceptance"]["accuracy_tolerance"]
    if len(examples) < metadata["metrics"].get("test_images", len(examples)):
        # A sample of the split: widen by 2.58 standard errors (99%) of a binomial proportion.
        tolerance += 2.58 * math.sqrt(max(expected * (1 - expected), 1e-4) / len(examples))
    assert abs(accuracy - expected) <= tolerance, (
        f"accuracy through the API {accuracy:.4f} on {len(examples)} images differs from the "
        f"registry's {expected:.4f} by more than {tolerance:.4f}"
    )

"""The served model answers, image by image, what the model answered at training time.

Training recorded, for every test image, the label its exported model predicted. The API must give
the same label for (almost) all of them: a change in decoding, resizing or normalisation between
training and serving shows up here, even when it costs only a few points of accuracy.
"""

from __future__ import annotations

from unittests.conftest import post_image


def test_api_labels_agree_with_training_image_by_image(http, api_url, test_split, params, record_property):
    dataset, predictions = test_split
    disagreements, correct = [], 0
    for item in predictions:
        response = post_image(http, api_url, dataset.read_bytes(item["path"]))
        assert response.status_code == 200, f"{item['path']}: {response.status_code} {response.text}"
        label = response.json()["label"]
        correct += label == item["label"]
        if label != item["predicted"]:
            disagreements.append(f"{item['path']} ({item['predicted']} at training, {label} now)")
    agreement = 1 - len(disagreements) / len(predictions)
    record_property("api_agreement", round(agreement, 6))
    record_property("api_accuracy", round(correct / len(predictions), 6))
    record_property("api_images", len(predictions))
    required = params["acceptance"]["min_agreement"]
    assert agreement >= required, (
        f"the API agrees with training on {agreement:.2%} of {len(predictions)} test images, required "
        f"{required:.2%}; first disagreements: {'; '.join(disagreements[:5])}"
    )

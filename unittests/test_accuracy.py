"""The served model answers, image by image, what the model answered at training time.

Training recorded, for every test image, the probability of every class its exported model gave.
The API must give the same probabilities, within ``acceptance.max_probability_diff``: any change in
decoding, resizing or normalisation between training and serving moves them, even one too small to
change a label. The share of images labelled as at training is the second figure.
"""

from __future__ import annotations

from registry.policy import AGREEMENT_FIGURES
from unittests.conftest import post_image


def test_api_answers_agree_with_training_image_by_image(http, api_url, test_split, params, metadata,
                                                        record_property):
    dataset, predictions = test_split
    assert predictions, "no test image to compare: the version records an empty test split"
    tolerance = params["acceptance"]["max_probability_diff"]
    classes = metadata["classes"]
    disagreements, moved, correct, largest = [], [], 0, 0.0
    for item in predictions:
        response = post_image(http, api_url, dataset.read_bytes(item["path"]))
        assert response.status_code == 200, f"{item['path']}: {response.status_code} {response.text}"
        answer = response.json()
        correct += answer["label"] == item["label"]
        if answer["label"] != item["predicted"]:
            disagreements.append(f"{item['path']} ({item['predicted']} at training, {answer['label']} now)")
        diff = max(abs(answer["probabilities"][name] - p) for name, p in zip(classes, item["probabilities"]))
        largest = max(largest, diff)
        if diff > tolerance:
            moved.append(f"{item['path']} ({diff:.2g})")
    agreement = 1 - len(disagreements) / len(predictions)
    figures = dict(zip(AGREEMENT_FIGURES, (round(agreement, 6), largest, len(predictions))))
    for name, value in figures.items():
        record_property(name, value)
    record_property("api_accuracy", round(correct / len(predictions), 6))
    assert not moved, (
        f"the API's probabilities differ from training's by more than {tolerance:g} on {len(moved)} of "
        f"{len(predictions)} test images (largest {largest:.2g}), e.g. {'; '.join(moved[:5])}"
    )
    required = params["acceptance"]["min_agreement"]
    assert agreement >= required, (
        f"the API agrees with training on {agreement:.2%} of {len(predictions)} test images, required "
        f"{required:.2%}; first disagreements: {'; '.join(disagreements[:5])}"
    )

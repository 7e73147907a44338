"""The served model answers in the documented shape, for the version under test."""

from __future__ import annotations

import pytest

from unittests.conftest import post_image


@pytest.fixture(scope="module")
def answer(http, api_url, test_split):
    dataset, items = test_split
    return post_image(http, api_url, dataset.read_bytes(items[0]["path"]))


def test_readyz_reports_ready(http, api_url):
    assert http.get(f"{api_url}/readyz", timeout=10).status_code == 200


def test_api_serves_the_version_under_test(http, api_url, model_version):
    response = http.get(f"{api_url}/model", timeout=10)
    assert response.status_code == 200
    assert response.json()["version"] == model_version
    assert response.headers["X-Model-Version"] == model_version


def test_prediction_follows_the_schema(answer, metadata, model_version):
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"model_version", "label", "probabilities", "out_of_distribution"}
    assert body["model_version"] == model_version
    assert answer.headers["X-Model-Version"] == model_version
    assert list(body["probabilities"]) == metadata["classes"]
    assert body["label"] in metadata["classes"]


def test_probabilities_are_a_distribution_and_label_is_their_argmax(answer):
    probabilities = answer.json()["probabilities"]
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert answer.json()["label"] == max(probabilities, key=probabilities.get)


def test_the_answer_carries_an_out_of_distribution_score_when_the_version_has_a_reference(answer, metadata):
    ood = answer.json()["out_of_distribution"]
    assert set(ood) == {"score", "flagged"}
    if metadata.get("monitoring"):  # versions registered before monitoring have no reference: null
        assert isinstance(ood["score"], float) and ood["score"] >= 0 and isinstance(ood["flagged"], bool)
    else:
        assert ood == {"score": None, "flagged": None}

"""Training for real on a tiny dataset: tf.data, Keras, tf2onnx export, onnxruntime parity, gate."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from helpers import clean_env, run_module
from PIL import Image

from core.config import load_params
from registry.store import Registry

IMAGE_SIZE = 32


def tiny_params(dataset, registry, **extra) -> dict:
    """The configuration of a fast run: small images, few epochs, the gate opened wide."""
    return load_params(
        {"dataset_uri": str(dataset), "registry_uri": str(registry), "data.image_size": IMAGE_SIZE,
         "data.min_images_per_class": 5, "train.epochs": 2, "gate.min_accuracy": 0.0,
         "gate.min_recall.COVID": 0.0, **extra},
        environ={},
    )


@pytest.fixture(scope="module")
def dataset_with_a_corrupt_file(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt") / "dataset"
    shutil.copytree(tiny_dataset, root)
    good = (root / "Normal" / "images" / "Normal-1.png").read_bytes()
    (root / "Normal" / "images" / "Normal-999.png").write_bytes(good[: len(good) // 3])
    (root / "Normal" / "images" / "Normal-again.png").write_bytes(good)  # a near-duplicate group of two
    return root


@pytest.fixture(scope="module")
def candidate(dataset_with_a_corrupt_file, tmp_path_factory):
    from model.train import build_candidate

    params = tiny_params(dataset_with_a_corrupt_file, tmp_path_factory.mktemp("registry"),
                         **{"data.max_corrupt_share": 0.05})
    metadata, files = build_candidate(params)
    return params, metadata, files


def test_candidate_metadata_holds_lineage_metrics_gate_and_onnx(candidate):
    params, metadata, _ = candidate
    assert metadata["kind"] == "train" and metadata["parent_version"] is None
    assert metadata["classes"] == params["classes"]
    assert len(metadata["dataset"]["manifest_sha256"]) == 64
    assert sum(metadata["dataset"]["class_counts"].values()) == 121
    metrics = metadata["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["recall"]) == set(params["classes"])
    assert np.asarray(metrics["confusion"]).sum() == metrics["test_images"] == metadata["dataset"]["split_counts"]["test"]
    assert [c["name"] for c in metadata["gate"]["checks"]] == ["accuracy", "recall[COVID]", "onnx_parity"]
    assert metadata["gate"]["passed"]
    assert metadata["training"]["epochs_run"] == 2
    assert {"tensorflow-cpu", "onnxruntime", "tf2onnx"} <= set(metadata["libraries"])


def test_one_unreadable_file_is_excluded_and_training_goes_on(candidate):
    _, metadata, _ = candidate
    assert metadata["dataset"]["excluded_files"] == 1


def test_the_versions_report_counts_the_near_duplicate_groups_and_shows_them(candidate):
    from model.train import GROUPS_IMAGE

    _, metadata, files = candidate
    assert metadata["dataset"]["groups"]["groups"] == 1 and metadata["dataset"]["groups"]["images_in_groups"] == 2
    assert metadata["reports"][-1] == GROUPS_IMAGE
    assert len(metadata["dataset"]["splits_sha256"]) == 64  # which split it was evaluated on
    assert Image.open(io.BytesIO(files[GROUPS_IMAGE])).format == "PNG"


def test_onnx_export_has_named_input_and_output_and_matches_keras(candidate):
    _, metadata, files = candidate
    assert metadata["onnx"]["parity_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    (image_input,), (output,) = session.get_inputs(), session.get_outputs()
    assert image_input.name == "image" and image_input.shape[1:] == [IMAGE_SIZE, IMAGE_SIZE, 1]
    assert output.name == "probabilities"
    batch = np.random.default_rng(0).random((3, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    probabilities = session.run(None, {"image": batch})[0]
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_report_images_are_real_pngs(candidate):
    _, _, files = candidate
    for name in ("training_curves.png", "confusion_matrix.png"):
        image = Image.open(io.BytesIO(files[name]))
        assert image.format == "PNG" and image.size[0] > 200


def test_register_candidate_stores_files_and_report_with_metadata_last(candidate):
    from model.train import register_candidate

    params, metadata, files = candidate
    registry = Registry(params["registry_uri"])
    version = register_candidate(registry, metadata, files)
    assert registry.versions("testing") == [version]
    assert set(registry.files(version)) >= {"model.onnx", "model.keras", "metadata.json", "report.html",
                                            "training_curves.png", "confusion_matrix.png"}
    assert registry.read_file(version, "model.onnx") == files["model.onnx"]
    assert version in registry.read_file(version, "report.html").decode()
    assert registry.metadata(version)["tests"] == []


def test_failed_gate_exits_1_naming_the_check_and_registers_nothing(tiny_dataset, tmp_path):
    registry = tmp_path / "registry"
    env = clean_env(DATASET_URI=str(tiny_dataset), REGISTRY_URI=str(registry), DATA_IMAGE_SIZE=str(IMAGE_SIZE),
                    DATA_MIN_IMAGES_PER_CLASS="5", TRAIN_EPOCHS="1", GATE_MIN_ACCURACY="1.01",
                    OUTBOX_DIR=str(tmp_path / "outbox"))
    result = run_module("model.train", "--version-file", str(tmp_path / "version"), "--outcome-file",
                        str(tmp_path / "outcome.json"), env=env)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: quality gate failed: accuracy = ")
    assert "required >= 1.01" in last_line
    assert "Traceback" not in result.stderr
    assert Registry(str(registry)).versions("testing") == []
    assert (tmp_path / "version").read_text() == ""  # the next step sees that nothing was registered
    (email,) = (tmp_path / "outbox").glob("*.eml")
    message = email.read_text()
    assert "Subject: [xray-mlops] training failed the quality gate" in message
    assert "accuracy" in message and "1.01" in message
    assert json.loads((tmp_path / "outcome.json").read_text())["outcome"] == "training-failed-gate"


def test_missing_dataset_is_one_clear_error(tmp_path):
    env = clean_env(DATASET_URI=str(tmp_path / "nothing"), REGISTRY_URI=str(tmp_path / "registry"))
    result = run_module("model.train", env=env, timeout=120)
    assert result.returncode == 1
    assert "make data" in result.stderr and "Traceback" not in result.stderr
    assert json.dumps(result.stderr).count("Error:") == 1


def test_the_gate_compares_with_production_evaluated_now_not_its_stored_figure(tiny_dataset, tmp_path):
    from api_helpers import build_pattern_model, model_metadata, register_model

    from model.compare import evaluate_registered
    from model.train import build_candidate, load_training_data

    registry = Registry(str(tmp_path / "registry"))
    model = build_pattern_model(image_size=IMAGE_SIZE)
    stored = model_metadata(model)
    stored["metrics"]["accuracy"] = 0.123  # what it scored once, on other data: the gate must not trust it
    production = register_model(registry, model, stored)
    registry.promote(production, by="owner")
    params = tiny_params(tiny_dataset, tmp_path / "registry", **{"train.epochs": 1, "gate.max_regression": 1.0})
    metadata, _ = build_candidate(params, registry=registry)
    compared = metadata["gate"]["production"]
    now = evaluate_registered(registry, production, "production", load_training_data(params)[0])
    assert compared["version"] == production and compared["metrics"] == now["metrics"]
    assert compared["test_images"] == metadata["metrics"]["test_images"]
    assert compared["metrics"]["accuracy"] != 0.123
    vs = next(c for c in metadata["gate"]["checks"] if c["name"] == "vs_production")
    assert vs["production_value"] == now["metrics"]["accuracy"]

"""Data validation: unreadable files, class minimums, identical images across splits, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from helpers import clean_env, config_variables, run_module

from core.config import load_params
from model.dataset import scan_dataset, split_of
from model.synthetic import image_seed, render
from model.validation import validate_dataset

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
PER_CLASS = 6
SIZE = 64


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)


def png_bytes(label: str, index: int, **save_options) -> bytes:
    buffer = io.BytesIO()
    render(label, image_seed(3, label, index), SIZE).save(buffer, "PNG", **save_options)
    return buffer.getvalue()


def write(root: Path, relative: str, data: bytes) -> str:
    path = root.joinpath(*relative.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relative


def make_dataset(root: Path, per_class: int = PER_CLASS) -> Path:
    for label in CLASSES:
        for index in range(1, per_class + 1):
            write(root, f"{label}/images/{label}-{index}.png", png_bytes(label, index))
    return root


def params_with(min_images: int = 3, max_corrupt_share: float = 0.1) -> dict:
    params = load_params(environ={})
    params["data"]["min_images_per_class"] = min_images
    params["data"]["max_corrupt_share"] = max_corrupt_share
    return params


def validate(root: Path, params: dict):
    dataset = scan_dataset(str(root), params["classes"], params["data"]["split"])
    return validate_dataset(dataset, params, progress=False)


def add_corrupt_files(root: Path) -> list[str]:
    """A PNG cut in half and a text file named .png."""
    whole = png_bytes("Normal", 1)
    return [
        write(root, "Normal/images/Normal-truncated.png", whole[: len(whole) // 2]),
        write(root, "COVID/images/COVID-notes.png", b"this is a text file, not an image\n"),
    ]


def name_in_other_split(label: str, original: str, shares: dict) -> str:
    """A relative path in ``label``'s folder whose split differs from ``original``'s."""
    for index in range(1000):
        candidate = f"{label}/images/{label}-copy-{index}.png"
        if split_of(candidate, shares) != split_of(original, shares):
            return candidate
    raise AssertionError("no name in another split found")


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "dataset")


def test_a_clean_dataset_passes(dataset_root):
    report, usable = validate(dataset_root, params_with())
    assert report["passed"] is True
    assert report["problems"] == []
    assert report["corrupt"] == [] and report["excluded"] == [] and report["duplicates_across_splits"] == []
    assert report["class_counts"] == {name: PER_CLASS for name in CLASSES}
    assert report["modes"] == {"L": PER_CLASS * len(CLASSES)}
    assert report["sizes"] == {f"{SIZE}x{SIZE}": PER_CLASS * len(CLASSES)}
    assert len(usable.examples) == PER_CLASS * len(CLASSES)
    assert sum(sum(c.values()) for c in report["split_counts"].values()) == PER_CLASS * len(CLASSES)
    json.dumps(report)


def test_unreadable_files_are_listed_by_path_and_excluded(dataset_root):
    bad = add_corrupt_files(dataset_root)
    report, usable = validate(dataset_root, params_with(max_corrupt_share=0.1))
    assert sorted(item["path"] for item in report["corrupt"]) == sorted(bad)
    assert all(item["error"] for item in report["corrupt"])
    assert sorted(bad) == [p for p in report["excluded"] if p in bad]
    usable_paths = {e.path for e in usable.examples}
    assert not usable_paths & set(bad)
    assert report["class_counts"] == {name: PER_CLASS for name in CLASSES}
    assert report["dataset"]["files"] == PER_CLASS * len(CLASSES) + 2
    assert report["corrupt_share"] == pytest.approx(2 / (PER_CLASS * len(CLASSES) + 2), abs=1e-6)
    assert report["passed"] is True


def test_the_truncated_file_and_the_text_file_get_distinct_errors(dataset_root):
    truncated, text = add_corrupt_files(dataset_root)
    report, _ = validate(dataset_root, params_with())
    errors = {item["path"]: item["error"] for item in report["corrupt"]}
    assert "truncated" in errors[truncated]
    assert "not an image" in errors[text]


def test_images_the_api_would_refuse_are_excluded_by_the_same_rules(dataset_root):
    """Other formats (a TIFF named .png) and images over the API's pixel budget."""
    tiff = io.BytesIO()
    render("COVID", image_seed(3, "COVID", 99), SIZE).save(tiff, "TIFF")
    disguised = write(dataset_root, "COVID/images/COVID-tiff.png", tiff.getvalue())
    large = io.BytesIO()
    render("Normal", image_seed(3, "Normal", 99), SIZE + 1).save(large, "PNG")
    too_large = write(dataset_root, "Normal/images/Normal-large.png", large.getvalue())
    params = params_with()
    params["api"]["max_pixels"] = SIZE * SIZE

    report, usable = validate(dataset_root, params)
    errors = {item["path"]: item["error"] for item in report["corrupt"]}
    assert errors[disguised] == "TIFF images are not accepted; send a PNG or JPEG"
    assert errors[too_large] == f"the image has {SIZE + 1}x{SIZE + 1} = {(SIZE + 1) ** 2} pixels, more than {SIZE * SIZE}"
    assert {disguised, too_large}.isdisjoint(e.path for e in usable.examples)


def test_more_unreadable_files_than_allowed_fails_with_the_counts(dataset_root):
    add_corrupt_files(dataset_root)
    total = PER_CLASS * len(CLASSES) + 2
    report, _ = validate(dataset_root, params_with(max_corrupt_share=0.05))
    assert report["passed"] is False
    assert len(report["problems"]) == 1
    problem = report["problems"][0]
    assert f"2 of {total} files are unreadable" in problem
    assert "5.0%" in problem


def test_a_class_below_the_minimum_fails_naming_the_class(dataset_root):
    for index in range(3, PER_CLASS + 1):
        (dataset_root / "Viral Pneumonia" / "images" / f"Viral Pneumonia-{index}.png").unlink()
    report, _ = validate(dataset_root, params_with(min_images=3))
    assert report["passed"] is False
    assert report["problems"] == ["class 'Viral Pneumonia' has 2 usable images, fewer than the minimum 3"]


def test_a_missing_class_fails(tmp_path):
    root = tmp_path / "dataset"
    for label in CLASSES[:3]:
        for index in (1, 2, 3):
            write(root, f"{label}/images/{label}-{index}.png", png_bytes(label, index))
    report, _ = validate(root, params_with(min_images=1))
    assert report["passed"] is False
    assert report["class_counts"]["Viral Pneumonia"] == 0
    assert any("'Viral Pneumonia' has 0 usable images" in p for p in report["problems"])


def test_unreadable_files_do_not_count_towards_the_class_minimum(tmp_path):
    root = make_dataset(tmp_path / "dataset", per_class=3)
    whole = png_bytes("COVID", 3)
    write(root, "COVID/images/COVID-3.png", whole[: len(whole) // 3])
    report, _ = validate(root, params_with(min_images=3, max_corrupt_share=0.5))
    assert report["passed"] is False
    assert report["problems"] == ["class 'COVID' has 2 usable images, fewer than the minimum 3"]


def test_an_identical_image_whose_path_hashes_into_another_split_joins_its_originals_split(dataset_root):
    params = params_with()
    shares = params["data"]["split"]
    original = "Normal/images/Normal-1.png"
    copy = write(dataset_root, name_in_other_split("Normal", original, shares),
                 (dataset_root / original).read_bytes())

    report, usable = validate(dataset_root, params)
    splits = {e.path: e.split for e in usable.examples}
    assert splits[copy] == splits[original] == split_of(min(original, copy), shares)
    assert report["groups"]["groups"] == 1 and report["groups"]["images_in_groups"] == 2
    assert [[m["path"] for m in group] for group in report["groups"]["members"]] == [sorted([original, copy])]
    assert report["groups"]["moved_images"] == 1
    assert report["duplicates_across_splits"] == [] and report["excluded"] == []
    assert report["passed"] is True


def test_the_same_pixels_saved_with_other_png_settings_count_as_the_same_image(dataset_root):
    params = params_with()
    shares = params["data"]["split"]
    original = "COVID/images/COVID-2.png"
    recompressed = png_bytes("COVID", 2, compress_level=0)
    assert recompressed != (dataset_root / original).read_bytes()
    copy = write(dataset_root, name_in_other_split("COVID", original, shares), recompressed)
    report, usable = validate(dataset_root, params)
    assert [[m["path"] for m in group] for group in report["groups"]["members"]] == [sorted([original, copy])]
    assert len({e.split for e in usable.examples if e.path in (original, copy)}) == 1


def test_identical_images_within_one_split_move_nothing(dataset_root):
    params = params_with()
    shares = params["data"]["split"]
    original = "Normal/images/Normal-1.png"
    for index in range(1000):
        candidate = f"Normal/images/Normal-same-{index}.png"
        if split_of(candidate, shares) == split_of(original, shares):
            break
    write(dataset_root, candidate, (dataset_root / original).read_bytes())
    report, usable = validate(dataset_root, params)
    assert report["duplicates_across_splits"] == [] and report["groups"]["moved_images"] == 0
    assert report["groups"]["groups"] == 1
    assert candidate in {e.path for e in usable.examples}


def test_the_report_versions_the_usable_dataset(dataset_root):
    add_corrupt_files(dataset_root)
    params = params_with()
    dataset = scan_dataset(str(dataset_root), params["classes"], params["data"]["split"])
    report, usable = validate_dataset(dataset, params, progress=False)
    assert report["dataset"]["manifest_sha256"] == usable.manifest_sha256()
    assert report["dataset"]["manifest_sha256"] != dataset.manifest_sha256()


def validate_cli(dataset: Path, report: Path, **env: str) -> subprocess.CompletedProcess:
    return run_module("scripts.validate_data", "--dataset", str(dataset), "--report", str(report),
                      env=clean_env(**env), timeout=60)


def test_cli_writes_the_report_and_passes(dataset_root, tmp_path):
    add_corrupt_files(dataset_root)
    report_path = tmp_path / "out" / "validation.json"
    result = validate_cli(dataset_root, report_path, DATA_MIN_IMAGES_PER_CLASS="3", DATA_MAX_CORRUPT_SHARE="0.1")
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    assert len(report["corrupt"]) == 2
    assert "Normal/images/Normal-truncated.png" in result.stdout
    assert "data validation passed" in result.stdout


def test_cli_failure_writes_the_report_and_exits_1_with_one_clear_line(dataset_root, tmp_path):
    report_path = tmp_path / "validation.json"
    result = validate_cli(dataset_root, report_path, DATA_MIN_IMAGES_PER_CLASS="100")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: data validation failed: ")
    assert "fewer than the minimum 100" in lines[0]
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert report["min_images_per_class"] == 100


def test_cli_on_a_missing_dataset_exits_1_with_one_clear_line(tmp_path):
    result = validate_cli(tmp_path / "nowhere", tmp_path / "validation.json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: no files under"), result.stderr

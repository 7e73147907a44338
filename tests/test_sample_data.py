"""The synthetic sample dataset and its command line, ``python -m scripts.sample_data``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, run_module
from PIL import Image, ImageFilter

from model.synthetic import image_seed, render

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
MARKER = ".sample-dataset.json"


def sample_data(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_module("scripts.sample_data", *args, env=env or clean_env(), timeout=120)


def generate(out: Path, *args: str) -> subprocess.CompletedProcess:
    result = sample_data("--out", str(out), "--images-per-class", "3", *args)
    assert result.returncode == 0, result.stderr
    return result


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_clear_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Three datasets of 3 images per class at the default size: seed 11 twice, seed 12 once."""
    base = tmp_path_factory.mktemp("sample")
    for name, seed in (("a", "11"), ("b", "11"), ("c", "12")):
        generate(base / name, "--seed", seed)
    return base


def test_writes_the_kaggle_layout_and_file_names(datasets):
    files = set(snapshot(datasets / "a"))
    expected = {f"{name}/images/{name}-{i}.png" for name in CLASSES for i in (1, 2, 3)} | {MARKER}
    assert files == expected
    assert "Viral Pneumonia/images/Viral Pneumonia-1.png" in files
    assert "COVID/images/COVID-1.png" in files


def test_marker_file_records_the_settings(datasets):
    marker = json.loads((datasets / "a" / MARKER).read_text())
    assert marker == {"classes": CLASSES, "images_per_class": 3, "image_size": 299, "seed": 11}


def test_images_are_299_pixel_8_bit_grayscale_pngs_by_default(datasets):
    for path in (datasets / "a").rglob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.mode == "L"
            assert image.size == (299, 299)


def test_image_size_option_sets_the_side(tmp_path):
    generate(tmp_path / "small", "--image-size", "64")
    sizes = set()
    for path in (tmp_path / "small").rglob("*.png"):
        with Image.open(path) as image:
            sizes.add((image.format, image.mode, image.size))
    assert sizes == {("PNG", "L", (64, 64))}


def test_the_same_seed_writes_identical_bytes(datasets):
    assert snapshot(datasets / "a") == snapshot(datasets / "b")


def test_a_different_seed_writes_different_images(datasets):
    a, c = snapshot(datasets / "a"), snapshot(datasets / "c")
    images = [path for path in a if path.endswith(".png")]
    assert images and set(images) == {path for path in c if path.endswith(".png")}
    for path in images:
        assert a[path] != c[path], path


def test_images_of_one_class_differ_from_each_other(datasets):
    images = [p.read_bytes() for p in sorted((datasets / "a" / "Normal" / "images").glob("*.png"))]
    assert len(set(images)) == len(images) == 3


def test_lung_opacity_is_measurably_more_asymmetric_than_normal():
    """A focal consolidation sits in one lung, so the two lung fields differ more than in Normal.

    Averaged over 40 images the ratio is about 2.5 (1.9 at worst over 15 seeds); without the
    consolidation it is about 1 (1.4 at worst), so 1.6 tells the two apart.
    """
    size = 96
    y, x = np.mgrid[0:size, 0:size] / size
    left = (x > 0.24) & (x < 0.40) & (y > 0.30) & (y < 0.68)
    right = (x > 0.60) & (x < 0.76) & (y > 0.30) & (y < 0.68)
    body = (x > 0.15) & (x < 0.85) & (y > 0.2) & (y < 0.8)

    def asymmetry(label: str) -> float:
        values = []
        for index in range(1, 41):
            image = render(label, image_seed(7, label, index), size)
            pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
            values.append(abs(pixels[left].mean() - pixels[right].mean()) / pixels[body].mean())
        return float(np.mean(values))

    assert asymmetry("Lung_Opacity") > 1.6 * asymmetry("Normal")


def test_covid_lower_outer_lung_zones_are_measurably_brighter_than_normal():
    """COVID adds ground-glass haze low and outside in both lungs.

    Averaged over 40 images the ratio is about 1.4 (1.3 at worst over 10 seeds); without the
    haze it is about 1.0 (1.08 at worst), so 1.2 tells the two apart.
    """
    size = 96
    y, x = np.mgrid[0:size, 0:size] / size
    lower_outer = (((x > 0.2) & (x < 0.33)) | ((x > 0.67) & (x < 0.8))) & (y > 0.5) & (y < 0.7)
    body = (x > 0.15) & (x < 0.85) & (y > 0.2) & (y < 0.8)

    def brightness(label: str) -> float:
        values = []
        for index in range(1, 41):
            pixels = np.asarray(render(label, image_seed(7, label, index), size), dtype=np.float64)
            values.append(pixels[lower_outer].mean() / pixels[body].mean())
        return float(np.mean(values))

    assert brightness("COVID") > 1.2 * brightness("Normal")


def test_every_class_renders_something_different_from_normal_for_the_same_draws():
    size = 96
    for label in ("COVID", "Lung_Opacity", "Viral Pneumonia"):
        finding = np.asarray(render(label, image_seed(3, "same", 1), size), dtype=np.int16)
        normal = np.asarray(render("Normal", image_seed(3, "same", 1), size), dtype=np.int16)
        assert np.abs(finding - normal).mean() > 1.0, label


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="Pneumothorax"):
        render("Pneumothorax", image_seed(1, "Pneumothorax", 1), 32)


def test_refuses_to_overwrite_a_folder_with_foreign_files(tmp_path):
    real = tmp_path / "COVID-19_Radiography_Dataset"
    (real / "COVID" / "images").mkdir(parents=True)
    (real / "COVID" / "images" / "COVID-1.png").write_bytes(b"a real radiograph")
    (real / "README.md.txt").write_text("the real dataset")
    before = snapshot(real)
    result = sample_data("--out", str(real), "--images-per-class", "2")
    line = assert_one_clear_error_line(result)
    assert "refusing" in line and str(real) in line
    assert snapshot(real) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [real.name], "a staging folder was left behind"


def test_an_out_path_that_is_a_file_is_refused_with_one_clear_line(tmp_path):
    target = tmp_path / "dataset"
    target.write_text("not a folder")
    line = assert_one_clear_error_line(sample_data("--out", str(target), "--images-per-class", "1"))
    assert str(target) in line
    assert target.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_if_missing_keeps_an_existing_sample_dataset(tmp_path):
    out = tmp_path / "data"
    generate(out, "--seed", "1")
    before = snapshot(out)
    result = generate(out, "--seed", "2", "--if-missing")
    assert "kept" in result.stdout
    assert snapshot(out) == before


def test_if_missing_keeps_a_foreign_dataset_without_error(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    generate(out, "--if-missing")
    assert snapshot(out) == {"keep.txt": b"mine"}


def test_if_missing_writes_the_dataset_when_the_folder_is_empty(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    generate(out, "--if-missing")
    assert len(list(out.rglob("*.png"))) == 3 * len(CLASSES)


def test_rerun_with_the_same_settings_leaves_the_files_alone(tmp_path):
    out = tmp_path / "data"
    generate(out, "--seed", "5")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = generate(out, "--seed", "5")
    assert "up to date" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_rerun_with_new_settings_replaces_the_sample_dataset_without_stale_files(tmp_path):
    out = tmp_path / "data"
    generate(out, "--seed", "5")
    result = sample_data("--out", str(out), "--images-per-class", "2", "--seed", "6")
    assert result.returncode == 0, result.stderr
    files = set(snapshot(out))
    assert files == {f"{name}/images/{name}-{i}.png" for name in CLASSES for i in (1, 2)} | {MARKER}
    assert json.loads((out / MARKER).read_text())["seed"] == 6


def test_dataset_uri_environment_variable_is_the_default_output(tmp_path):
    out = tmp_path / "from-env"
    result = sample_data("--images-per-class", "1", "--image-size", "32",
                         env=clean_env(DATASET_URI=str(out)))
    assert result.returncode == 0, result.stderr
    assert len(list(out.rglob("*.png"))) == len(CLASSES)


@pytest.mark.parametrize("args", [("--images-per-class", "0"), ("--image-size", "8")])
def test_nonsense_sizes_are_refused_with_one_line(tmp_path, args):
    out = tmp_path / "data"
    result = sample_data("--out", str(out), *args)
    assert_one_clear_error_line(result)
    assert not out.exists()


def test_bad_environment_value_is_one_clear_line(tmp_path):
    result = sample_data("--out", str(tmp_path / "data"), env=clean_env(SAMPLE_DATA_SEED="seven"))
    line = assert_one_clear_error_line(result)
    assert "SAMPLE_DATA_SEED" in line


def test_new_settings_never_replace_a_sample_dataset_holding_added_files(tmp_path):
    out = tmp_path / "data"
    generate(out, "--seed", "5")
    added = out / "COVID" / "images" / "COVID-real-scan.png"
    added.write_bytes((out / "COVID" / "images" / "COVID-1.png").read_bytes())
    result = sample_data("--out", str(out), "--images-per-class", "2", "--seed", "6")
    assert result.returncode == 1
    assert "COVID/images/COVID-real-scan.png" in assert_one_clear_error_line(result)
    assert added.exists()


def test_extra_adds_new_images_per_class_and_never_touches_existing_ones(tmp_path):
    out = tmp_path / "data"
    assert generate(out, "--images-per-class", "4").returncode == 0
    before = snapshot(out)
    grown = generate(out, "--images-per-class", "4", "--extra", "3", "--seed", "777")
    assert "added 12 new images" in grown.stdout
    after = snapshot(out)
    assert {path: after[path] for path in before if path != MARKER} == {
        path: data for path, data in before.items() if path != MARKER}
    assert [extra["seed"] for extra in json.loads(after[MARKER])["extras"]] == [777]
    new = sorted(set(after) - set(before))
    assert new == sorted(f"{label}/images/{label}-{i}.png" for label in CLASSES for i in (5, 6, 7))
    # The same command again changes nothing; the base settings are still "up to date".
    assert "were added before: nothing to do" in generate(out, "--images-per-class", "4", "--extra", "3",
                                                          "--seed", "777").stdout
    assert snapshot(out) == after
    assert "up to date" in generate(out, "--images-per-class", "4").stdout
    assert snapshot(out) == after


def test_extra_needs_a_seed_and_an_existing_sample_dataset(tmp_path):
    assert "needs --seed" in assert_one_clear_error_line(sample_data("--out", str(tmp_path / "d"), "--extra", "3"))
    line = assert_one_clear_error_line(sample_data("--out", str(tmp_path / "d"), "--extra", "3", "--seed", "1"))
    assert "run `make data` first" in line


def test_images_keep_their_split_when_the_dataset_grows(tmp_path):
    from model.dataset import scan_dataset

    out, shares = tmp_path / "data", {"train": 0.7, "validation": 0.15, "test": 0.15}
    generate(out, "--images-per-class", "20", "--image-size", "32")
    before = {e.path: e.split for e in scan_dataset(str(out), CLASSES, shares).examples}
    generate(out, "--images-per-class", "20", "--image-size", "32", "--extra", "10", "--seed", "5")
    after = {e.path: e.split for e in scan_dataset(str(out), CLASSES, shares).examples}
    assert {path: after[path] for path in before} == before
    assert len(after) == len(before) + 40
    assert {"train", "test"} <= set(after[path] for path in set(after) - set(before))

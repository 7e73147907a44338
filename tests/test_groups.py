"""Near-duplicate groups: planted copies split with their originals, unrelated images apart, label
conflicts, the recorded split assignment across growth, the index, the cache, the report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, config_variables, run_module
from PIL import Image, ImageEnhance

from core.config import load_params
from model import validation
from model.dataset import scan_dataset, split_of
from model.decoded_cache import DecodedCache
from model.fingerprint import BITS, as_array, distances
from model.groups import BIT_ORDER_SEED, SPLIT_RECORD_FILE, near_pairs
from model.synthetic import image_seed, render
from model.validation import validate_dataset
from notify.report import render_text

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SIZE = 299  # the sample dataset's (and Kaggle's) size: borders and resizing as they are there


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)


def encode(image: Image.Image, kind: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def bordered(image: Image.Image, width: int = 20) -> Image.Image:
    frame = Image.new("L", (image.width + 2 * width, image.height + 2 * width), 0)
    frame.paste(image, (width, width))
    return frame


# The copies the issue plants: each is the same radiograph saved another way.
COPIES = {
    "jpeg-q90": (".jpg", lambda image: encode(image, "JPEG", quality=90)),
    "resized": (".png", lambda image: encode(image.resize((SIZE // 2, SIZE // 2), Image.Resampling.BILINEAR)
                                         .resize((SIZE, SIZE), Image.Resampling.BILINEAR))),
    "brighter": (".png", lambda image: encode(ImageEnhance.Brightness(image).enhance(1.03))),
    "black-border": (".png", lambda image: encode(bordered(image))),
}


def write(root: Path, relative: str, data: bytes) -> str:
    path = root.joinpath(*relative.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relative


def make_dataset(root: Path, per_class: int, seed: int = 11) -> Path:
    for label in CLASSES:
        for index in range(1, per_class + 1):
            write(root, f"{label}/images/{label}-{index}.png", encode(render(label, image_seed(seed, label, index), SIZE)))
    return root


def original_image(root: Path, relative: str) -> Image.Image:
    return Image.open(root / relative).convert("L")


def name_in(split: str, label: str, stem: str, suffix: str, shares: dict, before: str | None = None) -> str:
    """A path in ``label``'s folder that hashes into ``split`` (sorting before ``before``, if given)."""
    for index in range(10000):
        candidate = f"{label}/images/{stem}-{index}{suffix}"
        if split_of(candidate, shares) == split and (before is None or candidate < before):
            return candidate
    raise AssertionError(f"no name hashing into {split}")


def params_for(tmp_path: Path, **data) -> dict:
    params = load_params(environ={})
    params["data"].update({"min_images_per_class": 1, **data})
    params["cache_dir"] = str(tmp_path / "cache")
    return params


def validate(root: Path, params: dict):
    dataset = scan_dataset(str(root), params["classes"], params["data"]["split"])
    return validate_dataset(dataset, params, progress=False)


def splits_of(usable) -> dict[str, str]:
    return {e.path: e.split for e in usable.examples}


def group_sets(report: dict) -> list[set[str]]:
    return [{m["path"] for m in group} for group in report["groups"]["members"]]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("groups") / "template", per_class=6)


@pytest.fixture
def dataset_root(small_dataset, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(small_dataset, tmp_path / "dataset"))


def test_planted_copies_hashing_into_the_test_split_are_grouped_with_their_originals_and_split_with_them(
        dataset_root, tmp_path):
    params = params_for(tmp_path)
    shares = params["data"]["split"]
    _, before = validate(dataset_root, params)
    originals = [e.path for e in before.examples if e.split == "train"][:len(COPIES)]
    planted = {}
    for (kind, (suffix, save)), original in zip(COPIES.items(), originals):
        label = original.split("/")[0]
        copy = name_in("test", label, f"{label}-{kind}", suffix, shares)
        planted[write(dataset_root, copy, save(original_image(dataset_root, original)))] = original

    report, usable = validate(dataset_root, params)
    splits = splits_of(usable)
    assert sorted(group_sets(report), key=sorted) == sorted(({c, o} for c, o in planted.items()), key=sorted)
    for copy, original in planted.items():
        assert split_of(copy, shares) == "test"
        assert splits[copy] == splits[original] == "train"
    assert report["groups"]["moved_images"] == len(planted)
    assert report["passed"] is True


def test_unrelated_images_of_one_class_are_not_grouped(tmp_path):
    root = make_dataset(tmp_path / "dataset", per_class=20, seed=5)
    report, usable = validate(root, params_for(tmp_path))
    assert report["groups"]["groups"] == 0 and report["groups"]["conflicts"] == 0
    assert all(e.split == split_of(e.path, load_params(environ={})["data"]["split"]) for e in usable.examples)


def test_a_new_copy_joins_its_recorded_originals_split_even_when_its_path_sorts_first(dataset_root, tmp_path):
    """The recorded split wins: by the smallest path alone, the old image would move to train."""
    params = params_for(tmp_path)
    shares = params["data"]["split"]
    _, before = validate(dataset_root, params)
    assert (dataset_root / SPLIT_RECORD_FILE).exists()
    original = next(e.path for e in before.examples if e.split == "test")
    label = original.split("/")[0]
    copy = write(dataset_root, name_in("train", label, label[:1], ".jpg", shares, before=original),
                 COPIES["jpeg-q90"][1](original_image(dataset_root, original)))

    report, usable = validate(dataset_root, params)
    assert group_sets(report) == [{original, copy}]
    assert splits_of(usable)[original] == splits_of(usable)[copy] == "test"

    (dataset_root / SPLIT_RECORD_FILE).unlink()
    derived, unrecorded = validate(dataset_root, params)
    assert splits_of(unrecorded)[original] == "train"
    assert derived["dataset"]["splits_sha256"] != report["dataset"]["splits_sha256"]


def test_growth_keeps_every_old_images_split(tmp_path):
    root = tmp_path / "sample"
    env = clean_env(DATASET_URI=str(root), SAMPLE_DATA_IMAGES_PER_CLASS="5", SAMPLE_DATA_IMAGE_SIZE="128")
    assert run_module("scripts.sample_data", env=env, timeout=120).returncode == 0
    params = params_for(tmp_path)
    _, before = validate(root, params)
    old = splits_of(before)
    test_image = next(path for path, split in old.items() if split == "test")
    label = test_image.split("/")[0]
    copy = write(root, name_in("train", label, label[:1], ".png", params["data"]["split"], before=test_image),
                 (root / test_image).read_bytes())

    grown = run_module("scripts.sample_data", "--extra", "3", "--seed", "99", env=env, timeout=120)
    assert grown.returncode == 0, grown.stderr
    report, after = validate(root, params)
    new = splits_of(after)
    assert len(new) == len(old) + 1 + 3 * len(CLASSES)
    assert {path: new[path] for path in old} == old
    assert new[copy] == "test"
    assert report["passed"] is True


def test_a_planted_label_conflict_fails_validation_with_the_list(dataset_root, tmp_path):
    params = params_for(tmp_path)
    original = "COVID/images/COVID-2.png"
    conflict = write(dataset_root, "Normal/images/Normal-from-elsewhere.jpg",
                     COPIES["jpeg-q90"][1](original_image(dataset_root, original)))
    report, _ = validate(dataset_root, params)
    assert report["passed"] is False
    assert report["groups"]["conflict_groups"] == [[{"path": original, "label": "COVID"},
                                                     {"path": conflict, "label": "Normal"}]]
    assert len(report["problems"]) == 1
    assert f"{original} (COVID) = {conflict} (Normal)" in report["problems"][0]
    assert "2 of 25 images (8.0%)" in report["problems"][0]
    assert not (dataset_root / SPLIT_RECORD_FILE).exists()  # a failed version records nothing

    params["data"]["max_conflict_share"] = 0.1
    allowed, _ = validate(dataset_root, params)
    assert allowed["passed"] is True and allowed["groups"]["conflicts"] == 1


def test_the_cli_lists_a_conflict_in_one_line_and_its_share_is_set_by_the_environment(dataset_root, tmp_path):
    original = "Viral Pneumonia/images/Viral Pneumonia-1.png"
    conflict = write(dataset_root, "Lung_Opacity/images/Lung_Opacity-x.png", (dataset_root / original).read_bytes())
    report_path = tmp_path / "validation.json"
    args = ("scripts.validate_data", "--dataset", str(dataset_root), "--report", str(report_path))
    env = {"DATA_MIN_IMAGES_PER_CLASS": "1", "CACHE_DIR": str(tmp_path / "cache")}
    failed = run_module(*args, env=clean_env(**env), timeout=120)
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert lines[0].startswith("Error: data validation failed: 2 of 25 images")
    assert lines[0].endswith(f"{conflict} (Lung_Opacity) = {original} (Viral Pneumonia)")

    passed = run_module(*args, env=clean_env(DATA_MAX_CONFLICT_SHARE="0.1", **env), timeout=120)
    assert passed.returncode == 0, passed.stderr
    report = json.loads(report_path.read_text())
    assert report["groups"]["conflicts"] == 1 and report["groups"]["groups"] == 1
    assert report["groups"]["images_in_groups"] == 2 and report["groups"]["max_conflict_share"] == 0.1
    sheet = Image.open(report["groups"]["contact_sheet"])
    assert sheet.format == "PNG" and sheet.width > 2 * 72 and sheet.height < 2 * 72
    assert "near-duplicate groups: 1 (2 images" in passed.stdout


def test_a_group_whose_recorded_members_straddle_splits_is_reported_and_its_later_split_left_out(
        dataset_root, tmp_path):
    """An old record (made before grouping, or under a smaller distance) put two copies apart."""
    params = params_for(tmp_path)
    shares = params["data"]["split"]
    original = "Normal/images/Normal-3.png"
    copy = write(dataset_root, name_in("test", "Normal", "Normal-copy", ".png", shares),
                 (dataset_root / original).read_bytes())
    validate(dataset_root, params)  # writes the record, then made as an older one would be
    record = json.loads((dataset_root / SPLIT_RECORD_FILE).read_text())
    record["splits"].update({original: "train", copy: "test"})
    (dataset_root / SPLIT_RECORD_FILE).write_text(json.dumps(record))

    report, usable = validate(dataset_root, params)
    assert report["duplicates_across_splits"] == [
        {"paths": sorted([original, copy]), "splits": ["train", "test"], "kept_in": "train", "left_out": [copy]}]
    assert copy in report["excluded"] and copy not in splits_of(usable)
    assert splits_of(usable)[original] == "train"


def test_training_reads_the_grouped_split(dataset_root, tmp_path):
    from model.train import load_training_data

    params = params_for(tmp_path)
    params["dataset_uri"] = str(dataset_root)
    original = "COVID/images/COVID-4.png"
    for split in ("validation", "test"):
        write(dataset_root, name_in(split, "COVID", "COVID-again", ".png", params["data"]["split"]),
              (dataset_root / original).read_bytes())
    usable, _ = load_training_data(params)
    group = [e for e in usable.examples if e.path == original or "again" in e.path]
    assert len(group) == 3 and len({e.split for e in group}) == 1


def test_fingerprints_come_from_the_one_decode_and_are_kept_in_the_decoded_cache(dataset_root, tmp_path, monkeypatch):
    params = params_for(tmp_path)
    params["speed"]["decoded_cache_min_images"] = 0
    write(dataset_root, "COVID/images/COVID-twin.png", (dataset_root / "COVID/images/COVID-1.png").read_bytes())
    decoded = []
    real_open = validation.open_image
    monkeypatch.setattr(validation, "open_image", lambda *a, **k: decoded.append(1) or real_open(*a, **k))

    first, _ = validate(dataset_root, params)
    assert len(decoded) == 25
    cache = DecodedCache.from_params(params)
    dataset = scan_dataset(str(dataset_root), params["classes"], params["data"]["split"])
    key = cache.key(dataset, params["data"]["image_size"], params["api"]["max_pixels"])
    records = cache.read(key).records
    assert all(len(bytes.fromhex(r["fingerprint"])) * 8 == BITS for r in records.values())

    second, _ = validate(dataset_root, params)
    assert len(decoded) == 25  # nothing decoded again
    assert second["groups"] == first["groups"] and second["groups"]["groups"] == 1

    monkeypatch.setattr("model.decoded_cache.fingerprint_version", lambda: "another fingerprint")
    assert cache.key(dataset, params["data"]["image_size"], params["api"]["max_pixels"]) != key


@pytest.mark.parametrize("distance", [1, 2, 10])
def test_the_index_finds_exactly_the_pairs_a_full_comparison_finds(distance):
    rng = np.random.default_rng(distance)
    prints = rng.integers(0, 256, (200, BITS // 8), dtype=np.uint8)
    order = np.random.default_rng(BIT_ORDER_SEED).permutation(BITS)
    planted = []
    for flips in range(distance + 3):
        # Flipped bits spread evenly over the index's bit order: with one chunk fewer than
        # distance + 1, every chunk of a pair at the distance would differ.
        bits = np.unpackbits(prints[flips])
        bits[order[np.arange(flips) * BITS // max(flips, 1)]] ^= 1
        planted.append(np.packbits(bits))
    prints = np.concatenate([prints, np.array(planted)])
    found, compared = near_pairs(prints, distance)
    everything = distances(prints[:, None, :], prints[None, :, :])
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(everything <= distance, 1)))}
    assert {tuple(pair) for pair in found.tolist()} == expected
    assert {(i, 200 + i) for i in range(distance + 1)} <= expected
    assert (distance + 1, 201 + distance) not in expected
    assert compared < len(prints) * (len(prints) - 1) // 2 / 10


def test_the_report_names_the_groups_of_a_version():
    metadata = {"version": "v0001", "dataset": {"groups": {"groups": 3, "images_in_groups": 7, "largest_group": 3,
                                                           "moved_images": 2, "conflicts": 0, "images_in_conflicts": 0}}}
    text = render_text(metadata, status=False)
    line = next(line for line in text.splitlines() if line.strip().startswith("near-duplicates"))
    assert line.endswith("  3 groups of 7 images (the largest 3), 2 moved to their group's split, "
                         "0 label conflicts (0 images)")
    assert "near-duplicates" not in render_text({"version": "v0001", "dataset": {}}, status=False)


def test_fingerprints_of_an_empty_list_are_an_empty_array():
    assert as_array([]).shape == (0, BITS // 8)


def test_a_damaged_split_record_fails_validation_instead_of_moving_images_silently(dataset_root, tmp_path):
    (dataset_root / SPLIT_RECORD_FILE).write_text('{"format": 1, "splits": {"COVID/images/COVID-1.png": "tr')
    report, _ = validate(dataset_root, params_for(tmp_path))
    assert report["passed"] is False
    assert len(report["problems"]) == 1 and SPLIT_RECORD_FILE in report["problems"][0]
    assert "delete it to derive every split from the paths again" in report["problems"][0]


def test_the_quick_grouping_bench_prints_its_row(tmp_path):
    out = tmp_path / "bench.json"
    result = run_module("bench", "--section", "grouping", "--quick", "--json", str(out),
                        env=clean_env(REGISTRY_URI=str(tmp_path / "registry")), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Grouping: near-duplicates of 2,000 images" in result.stdout
    (row,) = json.loads(out.read_text())["grouping"]["rows"]
    assert row["images"] == 2000 and row["groups"] > 0 and row["grouping s"] > 0
    assert 0 < row["pairs compared"] < 2000 * 1999 // 2 / 100
    assert row["training run s"] is None and row["grouping % of training"] is None


def test_a_black_frame_is_cropped_back_to_the_original_even_when_the_originals_edges_are_dark():
    from model.fingerprint import crop_dark_border

    pixels = np.full((100, 100), 120, dtype=np.uint8)
    pixels[[0, -1], :50], pixels[[0, -1], 50:] = 2, 10  # edge rows of median 6: picture, not border
    original = Image.fromarray(pixels, "L")
    assert crop_dark_border(original).size == (100, 100)
    assert crop_dark_border(bordered(original)).size == (100, 100)
    assert np.array_equal(np.asarray(crop_dark_border(bordered(original))), pixels)

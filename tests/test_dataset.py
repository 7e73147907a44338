"""The dataset: layouts, labels, stable splits, and the manifest that versions a dataset."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter

import pytest

from model.dataset import DatasetError, label_of, scan_dataset, split_of

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SHARES = {"train": 0.70, "validation": 0.15, "test": 0.15}


def put(root, relative: str, data: bytes | None = None) -> None:
    """Write a file; the scanner hashes bytes without decoding them, so any bytes will do."""
    path = root.joinpath(*relative.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else f"image bytes of {relative}".encode())


def kaggle_dataset(root, per_class: int = 5, first: int = 1) -> list[str]:
    """Files in the Kaggle v4 layout, ``<CLASS>/images/<CLASS>-<n>.png``, with their masks."""
    written = []
    for name in CLASSES:
        for index in range(first, first + per_class):
            relative = f"{name}/images/{name}-{index}.png"
            put(root, relative)
            put(root, f"{name}/masks/{name}-{index}.png", b"mask")
            written.append(relative)
    return written


def scan(root, shares=SHARES, with_hashes=True):
    return scan_dataset(str(root), CLASSES, shares, with_hashes=with_hashes)


def test_reads_the_kaggle_layout_with_an_images_folder(tmp_path):
    written = kaggle_dataset(tmp_path, per_class=3)
    dataset = scan(tmp_path)
    assert sorted(e.path for e in dataset.examples) == sorted(written)
    assert all(e.label == e.path.split("/")[0] for e in dataset.examples)
    assert dataset.class_counts() == {name: 3 for name in CLASSES}


def test_reads_the_older_layout_with_images_directly_in_the_class_folder(tmp_path):
    put(tmp_path, "COVID/COVID (1).png")
    put(tmp_path, "Viral Pneumonia/Viral Pneumonia (1).png")
    put(tmp_path, "Normal/images/Normal-1.png")
    dataset = scan(tmp_path)
    labels = {e.path: e.label for e in dataset.examples}
    assert labels == {
        "COVID/COVID (1).png": "COVID",
        "Viral Pneumonia/Viral Pneumonia (1).png": "Viral Pneumonia",
        "Normal/images/Normal-1.png": "Normal",
    }


def test_masks_folders_are_ignored(tmp_path):
    kaggle_dataset(tmp_path, per_class=2)
    dataset = scan(tmp_path)
    assert not [e for e in dataset.examples if "/masks/" in e.path]
    assert dataset.unknown_folders == []
    assert label_of("COVID/masks/COVID-1.png", CLASSES) is None


def test_folders_that_are_not_a_class_are_reported_and_skipped(tmp_path):
    kaggle_dataset(tmp_path, per_class=2)
    put(tmp_path, "Tuberculosis/images/Tuberculosis-1.png")
    put(tmp_path, "scratch/notes.png")
    dataset = scan(tmp_path)
    assert dataset.unknown_folders == ["Tuberculosis", "scratch"]
    assert not [e for e in dataset.examples if e.label not in CLASSES]


def test_kaggle_side_files_at_the_root_and_hidden_files_are_ignored_quietly(tmp_path):
    kaggle_dataset(tmp_path, per_class=2)
    put(tmp_path, "README.md.txt", b"readme")
    put(tmp_path, "COVID.metadata.xlsx", b"xlsx")
    put(tmp_path, "COVID/images/.DS_Store", b"finder")
    put(tmp_path, "COVID/images/notes.txt", b"text")
    dataset = scan(tmp_path)
    assert dataset.unknown_folders == []
    assert len(dataset.examples) == 2 * len(CLASSES)


def test_jpeg_and_upper_case_suffixes_are_images():
    assert label_of("Normal/images/a.JPG", CLASSES) == "Normal"
    assert label_of("Normal/b.jpeg", CLASSES) == "Normal"
    assert label_of("Normal/images/c.PNG", CLASSES) == "Normal"
    assert label_of("Normal/images/radiograph.DCM", CLASSES) == "Normal"
    assert label_of("Normal/images/d.gif", CLASSES) is None
    assert label_of("Normal/extra/deeper/e.png", CLASSES) is None
    assert label_of("Other/images/f.png", CLASSES) is None


def test_adding_files_never_moves_an_existing_file_to_another_split(tmp_path):
    kaggle_dataset(tmp_path, per_class=40)
    before = {e.path: e.split for e in scan(tmp_path).examples}
    kaggle_dataset(tmp_path, per_class=200, first=41)
    after = {e.path: e.split for e in scan(tmp_path).examples}
    assert len(after) == len(before) + 200 * len(CLASSES)
    assert {path: after[path] for path in before} == before


def test_split_depends_on_the_relative_path_not_on_where_the_dataset_lies(tmp_path):
    kaggle_dataset(tmp_path / "here", per_class=30)
    shutil.copytree(tmp_path / "here", tmp_path / "moved" / "elsewhere")
    here = {e.path: e.split for e in scan(tmp_path / "here").examples}
    moved = {e.path: e.split for e in scan(tmp_path / "moved" / "elsewhere").examples}
    assert here == moved


@pytest.mark.parametrize(
    "shares",
    [SHARES, {"train": 0.8, "validation": 0.1, "test": 0.1}, {"train": 0.5, "validation": 0.25, "test": 0.25}],
)
def test_split_shares_follow_the_configured_shares(shares):
    paths = [f"{name}/images/{name}-{i}.png" for name in CLASSES for i in range(1, 501)]
    counts = Counter(split_of(path, shares) for path in paths)
    for split, share in shares.items():
        assert counts[split] / len(paths) == pytest.approx(share, abs=0.03), (split, counts)


def test_split_of_is_the_same_on_every_call():
    path = "COVID/images/COVID-17.png"
    assert len({split_of(path, SHARES) for _ in range(5)}) == 1


def test_a_zero_validation_share_puts_no_file_in_validation():
    shares = {"train": 0.8, "validation": 0.0, "test": 0.2}
    splits = {split_of(f"Normal/images/Normal-{i}.png", shares) for i in range(1, 1001)}
    assert splits == {"train", "test"}


def test_manifest_lists_sorted_paths_with_their_sha256_and_label(tmp_path):
    put(tmp_path, "Normal/images/Normal-1.png", b"n1")
    put(tmp_path, "COVID/images/COVID-1.png", b"c1")
    manifest = scan(tmp_path).manifest()
    assert manifest == (
        "COVID/images/COVID-1.png\t" + hashlib.sha256(b"c1").hexdigest() + "\tCOVID\n"
        "Normal/images/Normal-1.png\t" + hashlib.sha256(b"n1").hexdigest() + "\tNormal\n"
    )


def test_manifest_sha256_is_unchanged_when_nothing_changes(tmp_path):
    kaggle_dataset(tmp_path, per_class=5)
    assert scan(tmp_path).manifest_sha256() == scan(tmp_path).manifest_sha256()


def test_manifest_sha256_does_not_depend_on_the_dataset_location(tmp_path):
    kaggle_dataset(tmp_path / "a", per_class=5)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert scan(tmp_path / "a").manifest_sha256() == scan(tmp_path / "b").manifest_sha256()


def test_manifest_sha256_changes_when_one_file_changes_its_bytes(tmp_path):
    kaggle_dataset(tmp_path, per_class=5)
    before = scan(tmp_path).manifest_sha256()
    put(tmp_path, "Normal/images/Normal-3.png", b"one changed byte")
    assert scan(tmp_path).manifest_sha256() != before


def test_manifest_sha256_changes_when_a_file_is_added_or_relabelled(tmp_path):
    kaggle_dataset(tmp_path, per_class=5)
    before = scan(tmp_path).manifest_sha256()
    put(tmp_path, "COVID/images/COVID-99.png")
    added = scan(tmp_path).manifest_sha256()
    assert added != before
    moved = tmp_path / "COVID" / "images" / "COVID-99.png"
    (tmp_path / "Normal" / "images").mkdir(exist_ok=True)
    moved.rename(tmp_path / "Normal" / "images" / "COVID-99.png")
    assert scan(tmp_path).manifest_sha256() not in (before, added)


def test_masks_do_not_change_the_manifest(tmp_path):
    kaggle_dataset(tmp_path, per_class=3)
    before = scan(tmp_path).manifest_sha256()
    put(tmp_path, "COVID/masks/COVID-1.png", b"a redrawn mask")
    assert scan(tmp_path).manifest_sha256() == before


def test_without_hashes_the_files_are_listed_but_not_hashed(tmp_path):
    kaggle_dataset(tmp_path, per_class=2)
    dataset = scan(tmp_path, with_hashes=False)
    assert len(dataset.examples) == 2 * len(CLASSES)
    assert {e.sha256 for e in dataset.examples} == {""}


def test_class_counts_name_every_class_even_an_empty_one(tmp_path):
    put(tmp_path, "COVID/images/COVID-1.png")
    put(tmp_path, "COVID/images/COVID-2.png")
    dataset = scan(tmp_path)
    assert dataset.class_counts() == {"COVID": 2, "Lung_Opacity": 0, "Normal": 0, "Viral Pneumonia": 0}
    assert sum(len(dataset.split(s)) for s in ("train", "validation", "test")) == 2


def test_read_bytes_returns_a_file_by_its_relative_path(tmp_path):
    put(tmp_path, "Normal/images/Normal-1.png", b"pixels")
    assert scan(tmp_path).read_bytes("Normal/images/Normal-1.png") == b"pixels"


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_empty_or_missing_dataset_says_how_to_get_one(tmp_path, make):
    root = tmp_path / "dataset"
    if make == "empty":
        root.mkdir()
    with pytest.raises(DatasetError) as caught:
        scan(root)
    message = str(caught.value)
    assert str(root) in message
    assert "make data" in message
    assert "DATASET_URI" in message


def test_dataset_without_any_class_folder_names_the_expected_layout(tmp_path):
    put(tmp_path, "covid/images/covid-1.png")
    with pytest.raises(DatasetError) as caught:
        scan(tmp_path)
    message = str(caught.value)
    assert "COVID" in message
    assert "<CLASS>/images/" in message

"""The data that is pushed is the data that trains: `make data-push` deletes what was removed locally
before writing manifest.json, and a gs:// dataset is the manifest's list, each file checked by its
hash (a push still running is never half read). Both backends for the push; the real client on
fake-gcs-server for reading."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import clean_env, run_module

from model.dataset import DatasetError, scan_dataset
from storage import open_storage

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SHARES = {"train": 0.7, "validation": 0.15, "test": 0.15}


@pytest.fixture
def small(tiny_dataset, tmp_path):
    """Three images per class of the tiny dataset."""
    copy = tmp_path / "small"
    for label in CLASSES:
        for n in (1, 2, 3):
            name = f"{label}/images/{label}-{n}.png"
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_dataset / name, copy / name)
    return copy


def push(source, uri, tmp_path):
    result = run_module("scripts.data_push", "--src", str(source), "--to", uri,
                        env=clean_env(CACHE_DIR=str(tmp_path / "push-cache")), timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_an_image_removed_locally_is_deleted_remotely_before_the_manifest_stops_listing_it(small, storage_uri,
                                                                                          tmp_path):
    push(small, storage_uri, tmp_path)
    (small / "Normal/images/Normal-2.png").unlink()
    again = push(small, storage_uri, tmp_path)
    assert "0 images uploaded, 11 unchanged, 1 deleted" in again.stdout
    remote = open_storage(storage_uri)
    manifest = json.loads(remote.read("manifest.json"))
    images = sorted(info.path for info in remote.walk() if info.path != "manifest.json")
    assert sorted(path for path, _, _ in manifest["images"]) == images and len(images) == 11
    dataset = scan_dataset(storage_uri, CLASSES, SHARES, cache_dir=str(tmp_path / "cache"))
    assert len(dataset.examples) == 11 and dataset.manifest_sha256() == manifest["manifest_sha256"]


def test_a_gcs_dataset_is_what_its_manifest_lists_checked_by_hash(small, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/covid"
    push(small, uri, tmp_path)
    remote = open_storage(uri)
    version = json.loads(remote.read("manifest.json"))["manifest_sha256"]
    # A push in progress: a new image is there, the manifest does not list it yet.
    remote.write("COVID/images/COVID-99.png", (small / "COVID/images/COVID-1.png").read_bytes())
    dataset = scan_dataset(uri, CLASSES, SHARES, cache_dir=str(tmp_path / "cache"))
    assert "COVID/images/COVID-99.png" not in {e.path for e in dataset.examples}
    assert dataset.manifest_sha256() == version
    # A listed image replaced by other bytes, or gone: a clear error, not another dataset.
    remote.write("COVID/images/COVID-1.png", (small / "Normal/images/Normal-1.png").read_bytes())
    with pytest.raises(DatasetError, match="COVID-1.png is not the file manifest.json lists"):
        scan_dataset(uri, CLASSES, SHARES, cache_dir=str(tmp_path / "cache"))
    remote.delete("COVID/images/COVID-1.png")
    with pytest.raises(DatasetError, match="lists 1 image\\(s\\) that are not there"):
        scan_dataset(uri, CLASSES, SHARES, cache_dir=str(tmp_path / "cache"))

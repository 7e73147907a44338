"""A dataset on GCS (fake-gcs-server, the real client): `make data-push` uploads only what changed
and writes manifest.json last; training reads through a local mirror that downloads only changes."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import clean_env, run_module

from core.config import load_params
from model.dataset import scan_dataset
from storage import open_storage
from storage.cache import mirror

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SHARES = {"train": 0.7, "validation": 0.15, "test": 0.15}


@pytest.fixture
def local_copy(tiny_dataset, tmp_path):
    copy = tmp_path / "local-dataset"
    shutil.copytree(tiny_dataset, copy)
    return copy


def push(source, uri, tmp_path):
    return run_module("scripts.data_push", "--src", str(source), "--to", uri,
                      env=clean_env(CACHE_DIR=str(tmp_path / "cache")), timeout=300)


def test_push_uploads_every_image_then_the_manifest_and_a_second_push_uploads_nothing(local_copy, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/datasets/covid"
    first = push(local_copy, uri, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "120 images uploaded, 0 unchanged, 0 deleted; manifest.json written" in first.stdout
    remote = {info.path: info for info in open_storage(uri).walk()}
    manifest = json.loads(open_storage(uri).read("manifest.json"))
    assert sorted(path for path, _, _ in manifest["images"]) == sorted(p for p in remote if p != "manifest.json")
    assert remote["manifest.json"].updated >= max(i.updated for p, i in remote.items() if p != "manifest.json")
    local = scan_dataset(str(local_copy), CLASSES, SHARES)
    assert manifest["manifest_sha256"] == local.manifest_sha256()

    again = push(local_copy, uri, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 images uploaded, 120 unchanged, 0 deleted; manifest.json unchanged" in again.stdout


def test_push_of_a_grown_dataset_uploads_only_the_new_image(local_copy, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/covid"
    assert push(local_copy, uri, tmp_path).returncode == 0
    before = json.loads(open_storage(uri).read("manifest.json"))["manifest_sha256"]
    shutil.copy(local_copy / "Normal/images/Normal-1.png", local_copy / "Normal/images/Normal-999.png")
    grown = push(local_copy, uri, tmp_path)
    assert "1 images uploaded, 120 unchanged, 0 deleted; manifest.json written" in grown.stdout
    assert json.loads(open_storage(uri).read("manifest.json"))["manifest_sha256"] != before


def test_push_refuses_a_missing_source_with_one_line(gcs_bucket, tmp_path):
    result = push(tmp_path / "nowhere", f"gs://{gcs_bucket}/x", tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_gcs_dataset_is_read_through_a_mirror_that_downloads_only_changes(local_copy, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/covid"
    assert push(local_copy, uri, tmp_path).returncode == 0
    cache = tmp_path / "mirror"
    remote = open_storage(uri)

    dataset = scan_dataset(uri, CLASSES, SHARES, cache_dir=str(cache))
    assert dataset.uri == uri
    assert dataset.manifest_sha256() == scan_dataset(str(local_copy), CLASSES, SHARES).manifest_sha256()
    images = [info for info in remote.walk() if info.path != "manifest.json"]
    assert mirror(remote, images, cache)[1] == 0  # the second run downloads nothing

    # An object replaced remotely is downloaded again; one deleted remotely leaves the mirror.
    remote.write("COVID/images/COVID-1.png", local_copy.joinpath("Normal/images/Normal-2.png").read_bytes())
    remote.delete("COVID/images/COVID-2.png")
    images = [info for info in remote.walk() if info.path != "manifest.json"]
    local, downloaded = mirror(remote, images, cache)
    assert downloaded == 1
    assert local.read("COVID/images/COVID-1.png") == local_copy.joinpath("Normal/images/Normal-2.png").read_bytes()
    assert not local.exists("COVID/images/COVID-2.png")
    # A deletion alone (nothing to download) leaves the mirror's index too.
    remote.delete("COVID/images/COVID-3.png")
    images = [info for info in remote.walk() if info.path != "manifest.json"]
    assert mirror(remote, images, cache)[1] == 0
    index = json.loads(next(cache.rglob(".cache-index.json")).read_text())
    assert "COVID/images/COVID-3.png" not in index and "COVID/images/COVID-1.png" in index


def test_a_mirror_never_trusts_a_file_it_did_not_finish(local_copy, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/covid"
    assert push(local_copy, uri, tmp_path).returncode == 0
    remote = open_storage(uri)
    images = [info for info in remote.walk() if info.path != "manifest.json"]
    local, _ = mirror(remote, images, tmp_path / "mirror")
    # A crash after a file was written but before the index recorded it: the file is fetched again.
    index_path = next((tmp_path / "mirror").rglob(".cache-index.json"))
    index = json.loads(index_path.read_text())
    del index["Normal/images/Normal-3.png"]
    index_path.write_text(json.dumps(index))
    local.write("Normal/images/Normal-3.png", b"garbage from a crash")
    local, downloaded = mirror(remote, images, tmp_path / "mirror")
    assert downloaded == 1
    assert local.read("Normal/images/Normal-3.png") == remote.read("Normal/images/Normal-3.png")


def test_sample_data_for_a_gcs_dataset_is_generated_locally_and_pushed(gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/sample"
    env = clean_env(DATASET_URI=uri, CACHE_DIR=str(tmp_path / "cache"), SAMPLE_DATA_IMAGES_PER_CLASS="3",
                    SAMPLE_DATA_IMAGE_SIZE="32")
    made = run_module("scripts.sample_data", "--if-missing", env=env)
    assert made.returncode == 0, made.stderr
    assert "12 images uploaded" in made.stdout
    assert run_module("scripts.sample_data", "--if-missing", env=env).stdout.strip().endswith(
        f"dataset already present at {uri}: kept as it is")
    grown = run_module("scripts.sample_data", "--extra", "2", "--seed", "777", env=env)
    assert grown.returncode == 0, grown.stderr
    assert "8 images uploaded, 12 unchanged" in grown.stdout
    params = load_params(environ=env)
    assert len(scan_dataset(uri, params["classes"], SHARES, cache_dir=params["cache_dir"]).examples) == 20

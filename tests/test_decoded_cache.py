"""The decoded cache: one decode per image per dataset version and image size, never read when stale."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import model.validation as validation
from core.config import load_params
from core.preprocess import image_bytes_to_array
from model.dataset import scan_dataset
from model.decoded_cache import DecodedCache, DecodedDataset
from model.validation import validate_dataset

IMAGE_SIZE = 32


@pytest.fixture
def dataset_root(tiny_dataset, tmp_path):
    root = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, root)
    return root


@pytest.fixture
def decodes(monkeypatch):
    """How many images validation decoded."""
    calls = []
    real = validation.open_image

    def counting(data, **options):
        calls.append(1)
        return real(data, **options)

    monkeypatch.setattr(validation, "open_image", counting)
    return calls


def params_for(cache_dir, image_size=IMAGE_SIZE, **extra) -> dict:
    return load_params({"cache_dir": str(cache_dir), "data.image_size": image_size,
                        "data.min_images_per_class": 5, "speed.decoded_cache_min_images": 0, **extra},
                       environ={})


def validate(root, params, with_hashes=True):
    dataset = scan_dataset(str(root), params["classes"], params["data"]["split"], with_hashes=with_hashes,
                           progress=False)
    return validate_dataset(dataset, params, progress=False)


def entries(cache_dir) -> list[str]:
    folder = cache_dir / "decoded"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_second_validation_decodes_nothing_and_reports_the_same(dataset_root, tmp_path, decodes):
    params = params_for(tmp_path / "cache")
    first_report, first = validate(dataset_root, params)
    assert len(decodes) == 120 and len(entries(tmp_path / "cache")) == 1
    second_report, second = validate(dataset_root, params)
    assert len(decodes) == 120, "the second validation decoded images again"
    assert second_report == first_report
    assert isinstance(second, DecodedDataset) and second.examples == first.examples


def test_cached_pixels_are_the_decoders_bit_for_bit(dataset_root, tmp_path):
    _, usable = validate(dataset_root, params_for(tmp_path / "cache"))
    examples = usable.examples[:10]
    rows = usable.decoded.rows(examples)
    for example, row in zip(examples, rows):
        expected = image_bytes_to_array(usable.read_bytes(example.path), IMAGE_SIZE)
        cached = usable.decoded.images[row].astype(np.float32)[..., np.newaxis] / 255.0
        assert np.array_equal(cached, expected), example.path


def test_training_batches_from_the_cache_equal_the_decoding_pipelines(dataset_root, tmp_path):
    from model.tfdata import make_tf_dataset

    _, cached = validate(dataset_root, params_for(tmp_path / "cache"))
    plain = validate(dataset_root, params_for(tmp_path / "off", **{"speed.decoded_cache": False}))[1]
    assert not isinstance(plain, DecodedDataset)
    train = cached.split("train")
    for shuffle in (False, True):
        a = list(make_tf_dataset(cached, train, IMAGE_SIZE, 16, shuffle=shuffle, seed=3).as_numpy_iterator())
        b = list(make_tf_dataset(plain, train, IMAGE_SIZE, 16, shuffle=shuffle, seed=3).as_numpy_iterator())
        assert len(a) == len(b) == -(-len(train) // 16)
        for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
            assert images_a.dtype == np.float32 and images_a.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 1)
            assert np.array_equal(images_a, images_b) and np.array_equal(labels_a, labels_b)


def test_a_changed_dataset_is_decoded_again_never_read_stale(dataset_root, tmp_path, decodes):
    params = params_for(tmp_path / "cache")
    _, before = validate(dataset_root, params)
    changed = dataset_root / "COVID" / "images" / "COVID-1.png"
    Image.new("L", (96, 96), 255).save(changed)  # same path, other content: a new dataset version
    decodes.clear()
    _, after = validate(dataset_root, params)
    assert len(decodes) == 120 and len(entries(tmp_path / "cache")) == 2
    example = next(e for e in after.examples if e.path == "COVID/images/COVID-1.png")
    row = after.decoded.rows([example])[0]
    assert after.decoded.images[row].min() == 255, "the changed image came from the stale entry"
    assert before.decoded.rows([example]) is None, "the old entry answers for the new file"


def test_another_image_size_is_another_entry(dataset_root, tmp_path, decodes):
    validate(dataset_root, params_for(tmp_path / "cache", image_size=32))
    _, bigger = validate(dataset_root, params_for(tmp_path / "cache", image_size=48))
    assert len(decodes) == 240 and len(entries(tmp_path / "cache")) == 2
    assert bigger.decoded.image_size == 48 and bigger.decoded.images.shape[1:] == (48, 48)
    decodes.clear()
    _, again = validate(dataset_root, params_for(tmp_path / "cache", image_size=32))
    assert decodes == [] and again.decoded.image_size == 32


def test_a_pipeline_asking_another_size_decodes_rather_than_use_the_entry(dataset_root, tmp_path):
    from model.tfdata import decoded_rows

    _, usable = validate(dataset_root, params_for(tmp_path / "cache", image_size=32))
    assert decoded_rows(usable, usable.examples, 32) is not None
    assert decoded_rows(usable, usable.examples, 48) is None


def test_a_dataset_without_hashes_is_neither_read_nor_written(dataset_root, tmp_path, decodes):
    params = params_for(tmp_path / "cache")
    validate(dataset_root, params)
    decodes.clear()
    _, usable = validate(dataset_root, params, with_hashes=False)
    assert len(decodes) == 120 and not isinstance(usable, DecodedDataset)
    shutil.rmtree(tmp_path / "cache")
    validate(dataset_root, params, with_hashes=False)
    assert entries(tmp_path / "cache") == []


def test_a_file_changed_after_the_scan_leaves_no_entry(dataset_root, tmp_path):
    params = params_for(tmp_path / "cache")
    dataset = scan_dataset(str(dataset_root), params["classes"], params["data"]["split"], progress=False)
    Image.new("L", (96, 96), 0).save(dataset_root / "Normal" / "images" / "Normal-3.png")
    _, usable = validate_dataset(dataset, params, progress=False)
    assert entries(tmp_path / "cache") == [] and not isinstance(usable, DecodedDataset)


def test_unreadable_files_are_reported_the_same_from_the_cache(dataset_root, tmp_path):
    good = (dataset_root / "Normal" / "images" / "Normal-1.png").read_bytes()
    (dataset_root / "Normal" / "images" / "Normal-999.png").write_bytes(good[: len(good) // 3])
    params = params_for(tmp_path / "cache", **{"data.max_corrupt_share": 0.05})
    first, _ = validate(dataset_root, params)
    second, usable = validate(dataset_root, params)
    assert [c["path"] for c in second["corrupt"]] == ["Normal/images/Normal-999.png"]
    assert second["corrupt"] == first["corrupt"] and second["excluded"] == first["excluded"]
    assert "Normal/images/Normal-999.png" not in {e.path for e in usable.examples}


def test_a_decoder_change_is_another_key(dataset_root, tmp_path, monkeypatch):
    import model.decoded_cache as decoded_cache

    params = params_for(tmp_path / "cache")
    cache = DecodedCache.from_params(params)
    dataset = scan_dataset(str(dataset_root), params["classes"], params["data"]["split"], progress=False)
    key = cache.key(dataset, IMAGE_SIZE, params["api"]["max_pixels"])
    assert key != cache.key(dataset, IMAGE_SIZE, params["api"]["max_pixels"] // 2)
    monkeypatch.setattr(decoded_cache, "decoder_version", lambda: "another decoder")
    assert key != cache.key(dataset, IMAGE_SIZE, params["api"]["max_pixels"])


def test_small_datasets_and_a_cache_turned_off_write_nothing(dataset_root, tmp_path):
    validate(dataset_root, params_for(tmp_path / "cache", **{"speed.decoded_cache_min_images": 121}))
    validate(dataset_root, params_for(tmp_path / "cache", **{"speed.decoded_cache": False}))
    assert entries(tmp_path / "cache") == []


def test_only_the_most_recently_used_entries_stay(dataset_root, tmp_path):
    params = params_for(tmp_path / "cache", **{"speed.decoded_cache_keep": 2})
    for size in (16, 24, 32):
        validate(dataset_root, {**params, "data": {**params["data"], "image_size": size}})
    kept = entries(tmp_path / "cache")
    assert len(kept) == 2
    _, usable = validate(dataset_root, {**params, "data": {**params["data"], "image_size": 32}})
    assert isinstance(usable, DecodedDataset), "the newest entry was dropped"


def test_a_damaged_entry_is_never_read_and_is_replaced(dataset_root, tmp_path, decodes):
    params = params_for(tmp_path / "cache")
    validate(dataset_root, params)
    (name,) = entries(tmp_path / "cache")
    (tmp_path / "cache" / "decoded" / name / "images.npy").write_bytes(b"not numpy")
    decodes.clear()
    report, _ = validate(dataset_root, params)
    assert report["passed"] and len(decodes) == 120
    decodes.clear()
    _, usable = validate(dataset_root, params)
    assert decodes == [] and usable.decoded.images.shape == (120, IMAGE_SIZE, IMAGE_SIZE)



def test_a_cache_that_cannot_be_written_costs_only_the_next_decode(dataset_root, tmp_path):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    report, usable = validate(dataset_root, params_for(tmp_path / "cache"))
    assert report["passed"] and isinstance(usable, DecodedDataset)

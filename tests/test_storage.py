"""The storage primitives, the same on both backends: a local folder and GCS (fake-gcs-server)."""

from __future__ import annotations

import pytest

from storage import AlreadyExists, GenerationMismatch, ObjectNotFound, StorageError, open_storage
from storage.lease import LeaseBusy, lease


@pytest.fixture
def store(storage_uri):
    return open_storage(storage_uri)


def test_create_writes_once_and_refuses_an_existing_object(store):
    store.create("a/b.json", b"first")
    with pytest.raises(AlreadyExists, match="a/b.json"):
        store.create("a/b.json", b"second")
    assert store.read("a/b.json") == b"first"


def test_replace_needs_the_generation_that_was_read(store):
    store.create("pointer.json", b"1")
    _, seen = store.read_with_generation("pointer.json")
    newer = store.replace("pointer.json", b"2", seen)
    with pytest.raises(GenerationMismatch):
        store.replace("pointer.json", b"3", seen)  # a stale compare-and-swap loses
    assert store.read("pointer.json") == b"2"
    assert store.read_with_generation("pointer.json")[1] == newer
    store.replace("pointer.json", b"3", newer)
    assert store.read("pointer.json") == b"3"


def test_replace_of_a_deleted_object_is_a_mismatch(store):
    generation = store.create("gone.json", b"x")
    store.delete("gone.json")
    with pytest.raises(GenerationMismatch):
        store.replace("gone.json", b"y", generation)


def test_list_is_one_level_and_walk_is_everything(store):
    for path in ("testing/v1/metadata.json", "testing/v1/tests/r.json", "testing/v2/model.onnx", "counter.json"):
        store.write(path, path.encode())
    assert store.list("") == (["counter.json"], ["testing"])
    assert store.list("testing") == ([], ["v1", "v2"])
    assert store.list("testing/v1") == (["metadata.json"], ["tests"])
    assert store.list("nothing/here") == ([], [])
    assert [info.path for info in store.walk("testing")] == [
        "testing/v1/metadata.json", "testing/v1/tests/r.json", "testing/v2/model.onnx"]
    assert store.find("testing", "metadata.json") == ["v1"]
    sizes = {info.path: info.size for info in store.walk()}
    assert sizes["counter.json"] == len(b"counter.json")


def test_copy_is_complete_and_create_only(store):
    store.write("src/model.onnx", bytes(range(256)) * 100)
    store.copy("src/model.onnx", "dst/model.onnx")
    assert store.read("dst/model.onnx") == bytes(range(256)) * 100
    with pytest.raises(ObjectNotFound):
        store.copy("src/missing", "dst/missing")


def test_copy_onto_an_existing_object_is_refused_on_disk(tmp_path):
    # On GCS the refusal comes from if_generation_match=0, which fake-gcs-server ignores for
    # copies, so this is checked on the local backend only.
    store = open_storage(str(tmp_path))
    store.write("a", b"1")
    store.write("b", b"2")
    with pytest.raises(AlreadyExists):
        store.copy("a", "b")
    assert store.read("b") == b"2"


def test_reading_a_missing_object_says_which(store):
    with pytest.raises(ObjectNotFound, match="missing.json"):
        store.read("missing.json")
    assert not store.exists("missing.json")
    store.delete("missing.json")  # deleting what is not there is not an error


def test_paths_that_leave_the_root_are_refused(store):
    for bad in ("../outside", "/etc/passwd", ""):
        with pytest.raises(StorageError):
            store.write(bad, b"x")


def test_unknown_schemes_and_bucketless_uris_are_refused():
    with pytest.raises(StorageError, match="unsupported"):
        open_storage("s3://bucket/registry")
    with pytest.raises(StorageError, match="bucket"):
        open_storage("gs://")


def test_a_lease_excludes_a_second_holder_until_released(store):
    with lease(store, "x", ttl_s=30):
        with pytest.raises(LeaseBusy, match="locked by"):
            with lease(store, "x", wait_s=0.3):
                pass
    with lease(store, "x", wait_s=1):
        pass


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it(store):
    import time

    first_holder = lease(store, "x", ttl_s=0.2)
    first = first_holder.__enter__()
    time.sleep(0.3)
    with lease(store, "x", wait_s=1, ttl_s=30):
        with pytest.raises(Exception, match="expired"):
            first.check()
        first_holder.__exit__(None, None, None)  # the old holder gives back what is no longer its own...
        with pytest.raises(LeaseBusy, match="locked by"):  # ...and the second holder still holds it
            with lease(store, "x", wait_s=0.3):
                pass
    with lease(store, "x", wait_s=1):
        pass

"""Races the lease and the storage's own order must fence, on both backends: gc against a promotion,
a damaged production copy, a lease that runs out before the swap, test runs recorded by machines
whose clocks disagree, and GCS retries whose first attempt landed."""

from __future__ import annotations

import time

import pytest
from api_helpers import register_model

from registry import store
from registry.store import Registry, RegistryError
from storage import AlreadyExists, open_storage
from storage.lease import LeaseLost


class PromotionDuringGc(Registry):
    """gc whose listing is followed at once by a promotion of the version it found half copied."""

    def __init__(self, uri: str, version: str):
        super().__init__(uri)
        self.version, self.promoted = version, None

    def garbage(self, *args, **kwargs):
        found = super().garbage(*args, **kwargs)
        if found and self.promoted is None:
            self.promoted = Registry(self.uri).promote(self.version, by="owner")
        return found


def test_gc_racing_a_promotion_never_deletes_the_copy_the_pointer_names(storage_uri):
    registry = Registry(storage_uri)
    version = register_model(registry)
    registry.storage.write(f"production/{version}/model.onnx", b"half")  # a promotion that crashed
    collector = PromotionDuringGc(storage_uri, version)
    deleted = collector.collect_garbage(grace_s=0)
    assert collector.promoted["version"] == registry.production_version() == version
    assert deleted == []
    assert registry.read_file(version, "model.onnx", "production") == registry.read_file(version, "model.onnx",
                                                                                         "testing")


def test_a_damaged_production_copy_is_refused_before_the_pointer_moves(storage_uri):
    registry = Registry(storage_uri)
    first, second = register_model(registry), register_model(registry)
    registry.promote(first, by="owner")
    registry.promote(second, by="owner")
    registry.storage.delete(f"production/{first}/model.onnx")  # what the gc race above used to leave
    with pytest.raises(RegistryError, match=f"production copy of {first} is incomplete \\(model.onnx"):
        registry.promote(first, by="owner")
    assert registry.production_version() == second


class SlowAuditStorage:
    """A real backend on which writing an audit record takes ``delay_s`` (retries of a flaky write)
    and which records the deadline each pointer write was given."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s, self.deadlines = inner, delay_s, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create(self, path, data, **options):
        if path.startswith("audit/"):
            time.sleep(self.delay_s)
        if path == store.POINTER_FILE:
            self.deadlines.append(options.get("deadline_s"))
        return self.inner.create(path, data, **options)

    def replace(self, path, data, generation, **options):
        if path == store.POINTER_FILE:
            self.deadlines.append(options.get("deadline_s"))
        return self.inner.replace(path, data, generation, **options)


def test_the_lease_is_checked_right_before_the_swap_and_bounds_its_retries(storage_uri):
    registry = Registry(storage_uri)
    first, second = register_model(registry), register_model(registry)
    pointer = registry.promote(first, by="owner")
    registry.storage.delete(f"audit/{pointer['audit']}.json")  # the next change writes it first
    slow = Registry(storage_uri, storage=SlowAuditStorage(open_storage(storage_uri), delay_s=1.2), lease_ttl_s=1.0)
    with pytest.raises(LeaseLost, match="expired before the change was committed"):
        slow.promote(second, by="owner")
    assert registry.production_version() == first
    fast = SlowAuditStorage(open_storage(storage_uri), delay_s=0)
    Registry(storage_uri, storage=fast, lease_ttl_s=30).promote(second, by="owner")
    (deadline,) = fast.deadlines
    assert 0 < deadline < 30 - 7.5  # shorter than the lease less its margin


def test_the_newest_test_run_is_the_one_the_storage_created_last_whatever_the_writers_clock(storage_uri,
                                                                                            monkeypatch):
    registry = Registry(storage_uri)
    version = register_model(registry)  # its passing run is recorded now
    time.sleep(0.05)
    # A failing run recorded afterwards by a machine whose clock is a day behind.
    monkeypatch.setattr(store, "record_name", lambda: "19991231T000000.000000Z-behind00")
    registry.record_test_run(version, {"suite_sha256": "x", "passed": 2, "failed": 1, "at": "1999-12-31T00:00:00Z"})
    assert [run["failed"] for run in registry.metadata(version)["tests"]] == [0, 1]
    assert registry.newest_tested() is None
    with pytest.raises(store.PromotionRefused):
        registry.promote(version, by="owner")


@pytest.fixture
def gcs(fake_gcs):
    from conftest import new_bucket

    return open_storage(f"gs://{new_bucket()}/store")


def landed_then_refused(monkeypatch, target, method: str):
    """Make ``target.method`` do its work, then raise 412, as a retry of a landed first attempt is answered."""
    from google.api_core.exceptions import PreconditionFailed

    real = getattr(target, method)

    def first_attempt_landed(*args, **kwargs):
        real(*args, **kwargs)
        raise PreconditionFailed("conditionNotMet (the retry of a request whose first attempt landed)")

    monkeypatch.setattr(target, method, first_attempt_landed)


def test_a_gcs_copy_whose_first_attempt_landed_is_a_success(gcs, monkeypatch):
    gcs.write("testing/v/model.onnx", b"model bytes" * 100)
    landed_then_refused(monkeypatch, gcs.bucket, "copy_blob")
    gcs.copy("testing/v/model.onnx", "production/v/model.onnx")
    assert gcs.read("production/v/model.onnx") == b"model bytes" * 100


def test_a_gcs_copy_refused_over_other_content_is_already_exists(gcs, monkeypatch):
    from google.api_core.exceptions import PreconditionFailed

    gcs.write("testing/v/model.onnx", b"model bytes")
    gcs.write("production/v/model.onnx", b"other bytes")

    def refused(*args, **kwargs):
        raise PreconditionFailed("conditionNotMet")

    monkeypatch.setattr(gcs.bucket, "copy_blob", refused)
    with pytest.raises(AlreadyExists):
        gcs.copy("testing/v/model.onnx", "production/v/model.onnx")


def test_a_gcs_create_whose_first_attempt_landed_is_ours_and_another_writers_is_not(gcs, monkeypatch):
    from google.cloud.storage import Blob

    real_upload = Blob.upload_from_string
    landed_then_refused(monkeypatch, Blob, "upload_from_string")
    generation = gcs.create("counter.json", b'{"claim": "ours"}')
    assert gcs.read_with_generation("counter.json") == (b'{"claim": "ours"}', generation)
    monkeypatch.setattr(Blob, "upload_from_string", real_upload)
    gcs.create("lease.json", b'{"token": "theirs"}')
    with pytest.raises(AlreadyExists):
        gcs.create("lease.json", b'{"token": "ours"}')

"""The model registry: versions, test runs, promotion, rollback, the audit records and the CLI.

Every registry test runs on both backends: a local folder, and GCS (a real fake-gcs-server
driven by the real google-cloud-storage client).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest
from api_helpers import build_onnx_model, model_metadata
from helpers import clean_env, config_variables, run_module

from registry.store import (
    METADATA_FILE,
    PromotionRefused,
    Registry,
    RegistryError,
    VersionNotFound,
)
from registry.store import tests_passed as passed_its_tests
from storage import StorageError

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
VERSION_NAME = re.compile(r"^v\d{4}-\d{8}T\d{6}Z$")
PASSED = {"suite_sha256": "ab" * 32, "passed": 9, "failed": 0, "at": "2026-11-27T14:40:00Z",
          "api_agreement": 1.0, "api_max_probability_diff": 1e-7, "api_images": 24}
FAILED = {"suite_sha256": "ab" * 32, "passed": 7, "failed": 2, "at": "2026-11-27T14:41:00Z"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)


def realistic_metadata(accuracy: float = 0.953) -> dict:
    """What model.train registers, minus the version name and creation time."""
    return {
        "git_commit": "3f2a9c1d0b7e4a5f6c8d9e0f1a2b3c4d5e6f7a8b",
        "kind": "train",
        "parent_version": None,
        "classes": CLASSES,
        "image_size": 32,
        "dataset": {
            "uri": "data/COVID-19_Radiography_Dataset",
            "manifest_sha256": "ab12" * 16,
            "class_counts": {name: 300 for name in CLASSES},
        },
        "params": {"train": {"epochs": 25}},
        "metrics": {
            "accuracy": accuracy,
            "precision": {name: 0.91 for name in CLASSES},
            "recall": {name: 0.92 for name in CLASSES},
            "f1": {name: 0.915 for name in CLASSES},
            "confusion": [[43, 1, 1, 0], [2, 41, 2, 0], [0, 2, 43, 0], [0, 0, 1, 44]],
        },
        "gate": {
            "passed": True,
            "checks": [{"name": "accuracy", "comparison": ">=", "threshold": 0.9, "value": accuracy,
                        "passed": True}],
        },
        "onnx": {"sha256": "9f" * 32, "opset": 17, "parity_max_abs_diff": 3e-07},
        "libraries": {"python": "3.11"},
    }


def model_files(tag: str = "a") -> dict[str, bytes]:
    """A real, servable ONNX model (a different one per tag) and its companions."""
    return {
        "model.onnx": build_onnx_model(biases=(-5.0, 0.0, 5.0, -2.0 + 0.01 * sum(tag.encode()))),
        "model.keras": b"PK\x03\x04fake keras " + tag.encode(),
        "report.html": f"<html>{tag}</html>".encode(),
    }


@pytest.fixture
def registry(storage_uri) -> Registry:
    return Registry(storage_uri)


def registered(registry: Registry, tag: str = "a", run: dict | None = PASSED) -> str:
    files = model_files(tag)
    metadata = dict(realistic_metadata(), onnx=model_metadata(files["model.onnx"])["onnx"])
    version = registry.register(files, metadata)
    if run is not None:
        registry.record_test_run(version, run)
    return version


def test_register_makes_a_version_visible_in_testing(registry):
    version = registry.register(model_files(), realistic_metadata())
    assert VERSION_NAME.match(version)
    assert registry.versions("testing") == [version]
    assert registry.versions("production") == []
    metadata = registry.metadata(version)
    assert metadata["version"] == version
    assert metadata["tests"] == []
    assert metadata["metrics"]["accuracy"] == 0.953
    assert datetime.strptime(metadata["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert registry.read_file(version, "model.onnx") == model_files()["model.onnx"]
    assert sorted(registry.files(version)) == sorted([*model_files(), METADATA_FILE])


def test_a_version_folder_without_metadata_is_not_listed(registry):
    version = registry.register(model_files(), realistic_metadata())
    half = "v0002-20261127T133000Z"
    registry.storage.write(f"testing/{half}/model.onnx", b"half written")
    assert registry.versions("testing") == [version]
    with pytest.raises(VersionNotFound, match=half):
        registry.metadata(half)
    with pytest.raises(VersionNotFound):
        registry.promote(half, by="po@example.com")


def test_a_half_written_version_never_has_its_number_reused(registry):
    registry.register(model_files(), realistic_metadata())
    half = registry.claim_version()
    registry.storage.write(f"testing/{half}/model.onnx", b"half written")
    assert registry.claim_version().startswith("v0003-")


def test_a_registry_without_a_counter_numbers_above_its_versions(registry):
    registry.storage.write("testing/v0041-20261127T133000Z/model.onnx", b"from before the counter")
    assert registry.claim_version().startswith("v0042-")


def test_metadata_json_is_created_last(registry, monkeypatch):
    written = []
    original = type(registry.storage).create

    def recording(storage, relative, data):
        written.append(relative.rsplit("/", 1)[-1])
        return original(storage, relative, data)

    version = registry.claim_version()
    monkeypatch.setattr(type(registry.storage), "create", recording)
    registry.register(model_files(), realistic_metadata(), version=version)
    assert written[-1] == METADATA_FILE
    assert sorted(written[:-1]) == sorted(model_files())


def test_version_names_sort_by_age_and_increase(registry):
    versions = [registry.register(model_files(str(i)), realistic_metadata()) for i in range(3)]
    assert registry.versions("testing") == versions
    assert sorted(versions) == versions
    numbers = [int(v[1:5]) for v in versions]
    assert numbers == [1, 2, 3]


def test_claim_version_is_unique_under_concurrency(registry):
    claimed, errors = [], []
    barrier = threading.Barrier(8)

    def claim():
        try:
            barrier.wait()
            for _ in range(3):
                claimed.append(registry.claim_version())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(int(name[1:5]) for name in claimed)
    assert numbers == list(range(1, 25))


def test_register_with_a_claimed_name_uses_it_and_refuses_reuse(registry):
    version = registry.claim_version()
    assert registry.register(model_files(), realistic_metadata(), version=version) == version
    with pytest.raises(RegistryError, match="fresh"):
        registry.register(model_files("b"), realistic_metadata(), version=version)
    with pytest.raises(RegistryError, match="fresh"):
        registry.register(model_files("b"), realistic_metadata(), version="latest")


def test_register_needs_the_onnx_model(registry):
    with pytest.raises(RegistryError, match="model.onnx"):
        registry.register({"model.keras": b"k"}, realistic_metadata())
    assert registry.versions("testing") == []


def test_unknown_stage_is_refused(registry):
    with pytest.raises(RegistryError, match="staging"):
        registry.versions("staging")


def test_record_test_run_appends_in_order(registry):
    version = registered(registry, run=FAILED)
    metadata = registry.record_test_run(version, PASSED)
    assert metadata["tests"] == [FAILED, PASSED]
    assert registry.metadata(version)["tests"] == [FAILED, PASSED]
    assert passed_its_tests(registry.metadata(version))


def test_record_test_run_on_an_unknown_version_is_refused(registry):
    with pytest.raises(VersionNotFound, match="v0099-20261127T133000Z"):
        registry.record_test_run("v0099-20261127T133000Z", PASSED)


def test_record_test_run_updates_the_production_copy_too(registry):
    version = registered(registry)
    registry.promote(version, by="po@example.com")
    registry.record_test_run(version, FAILED)
    assert registry.metadata(version, "testing")["tests"] == [PASSED, FAILED]
    assert registry.metadata(version, "production")["tests"] == [PASSED, FAILED]


def test_newest_tested_skips_untested_and_failed_versions(registry):
    good = registered(registry, "a")
    registered(registry, "b", run=FAILED)
    registered(registry, "c", run=None)
    assert registry.newest_tested() == good


def test_promote_refuses_an_untested_version_naming_it(registry):
    version = registered(registry, run=None)
    with pytest.raises(PromotionRefused, match=re.escape(version)) as caught:
        registry.promote(version, by="po@example.com")
    assert "acceptance-test" in str(caught.value)
    assert registry.current() is None
    assert registry.versions("production") == []


def test_promote_refuses_a_version_whose_last_tests_failed(registry):
    version = registered(registry, run=PASSED)
    registry.record_test_run(version, FAILED)
    with pytest.raises(PromotionRefused, match=re.escape(version)) as caught:
        registry.promote(version, by="po@example.com")
    assert "2 failed" in str(caught.value)
    assert registry.current() is None


def test_promote_refuses_an_unknown_version_naming_it(registry):
    registered(registry)
    with pytest.raises(VersionNotFound, match="v0042-20261127T133000Z"):
        registry.promote("v0042-20261127T133000Z", by="po@example.com")


def test_promote_without_a_version_and_nothing_tested_is_refused(registry):
    registered(registry, run=None)
    with pytest.raises(PromotionRefused, match="no testing version has passed"):
        registry.promote(by="po@example.com")


def test_promote_without_a_version_takes_the_newest_tested(registry):
    registered(registry, "a")
    newest = registered(registry, "b")
    registered(registry, "c", run=FAILED)
    assert registry.promote(by="po@example.com")["version"] == newest


def test_promote_copies_the_files_byte_for_byte_and_moves_the_pointer(registry):
    version = registered(registry)
    pointer = registry.promote(version, by="po@example.com")
    assert registry.versions("production") == [version]
    assert registry.versions("testing") == [version]
    for name in registry.files(version, "testing"):
        assert registry.read_file(version, name, "production") == registry.read_file(version, name, "testing")
    assert sorted(registry.files(version, "production")) == sorted(registry.files(version, "testing"))
    assert pointer["version"] == version
    assert pointer["previous"] is None
    assert pointer["promoted_by"] == "po@example.com"
    assert datetime.strptime(pointer["promoted_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert registry.current() == pointer


def test_promote_records_the_previous_version(registry):
    first, second = registered(registry, "a"), registered(registry, "b")
    registry.promote(first, by="po@example.com")
    pointer = registry.promote(second, by="po@example.com")
    assert pointer["version"] == second
    assert pointer["previous"] == first
    assert registry.versions("production") == [first, second]


def test_promoted_by_defaults_to_the_promoted_by_variable(registry, monkeypatch):
    monkeypatch.setenv("PROMOTED_BY", "product-owner@example.com")
    version = registered(registry)
    assert registry.promote(version)["promoted_by"] == "product-owner@example.com"


def test_promoting_the_current_version_again_is_refused(registry):
    version = registered(registry)
    registry.promote(version, by="po@example.com")
    with pytest.raises(PromotionRefused, match=re.escape(version)):
        registry.promote(version, by="po@example.com")
    assert len(registry.audit()) == 1


def test_the_pointer_is_written_atomically(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    first, second = registered(registry, "a"), registered(registry, "b")
    registry.promote(first, by="po@example.com")
    pointer_file = Path(registry.uri) / "production" / "current.json"
    with open(pointer_file, "rb") as reader:  # a reader that opened the pointer before the swap
        registry.promote(second, by="po@example.com")
        # ...reads the whole old pointer: the new one was written beside it and renamed over it,
        # never truncated and rewritten in place, where a reader could see half of it.
        assert json.loads(reader.read())["version"] == first
    assert json.loads(pointer_file.read_text())["version"] == second
    leftovers = [p.name for p in pointer_file.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_audit_gets_one_record_per_promotion_and_rollback(registry):
    first, second = registered(registry, "a"), registered(registry, "b")
    registry.promote(first, by="alice@example.com")
    registry.promote(second, by="bob@example.com")
    registry.rollback(by="carol@example.com")
    records = registry.audit()
    assert [(r["action"], r["version"], r["replaced"], r["by"]) for r in records] == [
        ("promote", first, None, "alice@example.com"),
        ("promote", second, first, "bob@example.com"),
        ("rollback", first, second, "carol@example.com"),
    ]
    assert all(r["at"] for r in records)
    assert len(registry.storage.list("audit")[0]) == 3


def test_rollback_returns_to_the_previous_version(registry):
    first, second, third = registered(registry, "a"), registered(registry, "b"), registered(registry, "c")
    for version in (first, second, third):
        registry.promote(version, by="po@example.com")
    assert registry.rollback(by="po@example.com")["version"] == second
    assert registry.current()["version"] == second
    assert registry.rollback(by="po@example.com")["version"] == first
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(by="po@example.com")
    assert registry.current()["version"] == first


def test_rollback_refuses_when_nothing_was_promoted(registry):
    registered(registry)
    with pytest.raises(RegistryError, match="nothing was promoted"):
        registry.rollback(by="po@example.com")
    assert registry.audit() == []


def test_rollback_refuses_after_the_first_promotion(registry):
    version = registered(registry)
    registry.promote(version, by="po@example.com")
    with pytest.raises(RegistryError, match=re.escape(version)):
        registry.rollback(by="po@example.com")
    assert registry.current()["version"] == version


def test_a_rolled_back_version_can_be_promoted_again(registry):
    first, second = registered(registry, "a"), registered(registry, "b")
    registry.promote(first, by="po@example.com")
    registry.promote(second, by="po@example.com")
    registry.rollback(by="po@example.com")
    pointer = registry.promote(second, by="po@example.com")
    assert pointer["version"] == second and pointer["previous"] == first
    assert registry.rollback(by="po@example.com")["version"] == first


def test_unknown_schemes_are_refused_with_a_clear_message():
    with pytest.raises(StorageError, match="unsupported"):
        Registry("s3://bucket/registry")


def registry_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run_module("registry", *args, env=clean_env(**env), timeout=60)


def assert_one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_cli_list_json_shows_each_version_with_its_record(registry):
    version = registered(registry)
    result = registry_cli("list", "--stage", "testing", "--json", "--registry", registry.uri)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["version"] for row in rows] == [version]
    row = rows[0]
    for key in ("version", "created_at", "metrics", "gate", "onnx", "tests"):
        assert key in row, key
    assert row["stage"] == "testing"
    assert row["metrics"]["accuracy"] == 0.953
    assert row["tests"] == [PASSED]


def test_cli_list_text_marks_the_production_version(registry):
    version = registered(registry)
    registry.promote(version, by="po@example.com")
    result = registry_cli("list", "--registry", registry.uri)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert any(line.startswith("production") and "<- production" in line for line in lines)
    assert "accuracy=0.9530" in result.stdout


def test_cli_reads_the_registry_from_the_environment(registry):
    version = registered(registry)
    result = registry_cli("list", "--json", REGISTRY_URI=registry.uri)
    assert result.returncode == 0, result.stderr
    assert [row["version"] for row in json.loads(result.stdout)] == [version]


def test_cli_show_prints_the_metadata(registry):
    version = registered(registry)
    result = registry_cli("show", version, "--json", "--registry", registry.uri)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown.pop("promotion") == {"promotable": True, "reasons": [], "in_production": False,
                                      "next_step": f"make promote VERSION={version}"}
    assert shown == registry.metadata(version)
    registry.promote(version, by="owner@example.com")
    promoted = json.loads(registry_cli("show", version, "--json", "--registry", registry.uri).stdout)
    assert promoted["promotion"]["in_production"] is True
    assert promoted["promotion"]["next_step"] == f"{version} is the production model; nothing to promote."


def test_cli_show_of_an_unknown_version_is_one_error_line(registry):
    registered(registry)
    line = assert_one_error_line(registry_cli("show", "v0042-20261127T133000Z", "--registry", registry.uri))
    assert "v0042-20261127T133000Z" in line


def test_cli_current_json_is_null_before_and_the_pointer_after_promotion(registry):
    version = registered(registry)
    before = registry_cli("current", "--json", "--registry", registry.uri)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout) is None
    registry.promote(version, by="po@example.com")
    after = registry_cli("current", "--json", "--registry", registry.uri)
    assert after.returncode == 0, after.stderr
    pointer = json.loads(after.stdout)
    assert pointer["version"] == version
    assert {"previous", "promoted_at", "promoted_by"} <= set(pointer)


def test_cli_current_without_json_says_nothing_was_promoted(registry):
    line = assert_one_error_line(registry_cli("current", "--registry", registry.uri))
    assert "nothing was promoted" in line


def test_cli_promote_refusal_is_one_error_line_naming_the_version(registry):
    version = registered(registry, run=None)
    line = assert_one_error_line(registry_cli("promote", version, "--registry", registry.uri, "--by", "po"))
    assert version in line
    assert registry.current() is None


def test_cli_promote_and_rollback_move_the_pointer(registry):
    first, second = registered(registry, "a"), registered(registry, "b")
    result = registry_cli("promote", first, "--registry", registry.uri, PROMOTED_BY="po@example.com")
    assert result.returncode == 0, result.stderr
    assert f"promoted {first}" in result.stdout
    result = registry_cli("promote", "--registry", registry.uri, "--by", "po@example.com")
    assert result.returncode == 0, result.stderr
    assert registry.current()["version"] == second
    assert registry.current()["previous"] == first
    result = registry_cli("rollback", "--registry", registry.uri, "--by", "po@example.com")
    assert result.returncode == 0, result.stderr
    assert f"rolled back to {first}" in result.stdout
    assert registry.current()["version"] == first
    assert [r["by"] for r in registry.audit()] == ["po@example.com"] * 3


def test_cli_rollback_refusal_is_one_error_line(registry):
    version = registered(registry)
    registry.promote(version, by="po@example.com")
    line = assert_one_error_line(registry_cli("rollback", "--registry", registry.uri, "--by", "po"))
    assert version in line


def test_cli_promote_over_a_stale_production_folder_never_shows_a_traceback(registry):
    """A production folder without metadata.json (a copy cut short) must not crash the CLI."""
    version = registered(registry)
    registry.storage.write(f"production/{version}/model.onnx", b"stale partial copy")
    result = registry_cli("promote", version, "--registry", registry.uri, "--by", "po")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert registry.current()["version"] == version
    assert registry.read_file(version, "model.onnx", "production") == model_files()["model.onnx"]


def test_concurrent_test_runs_are_all_recorded(registry):
    version = registered(registry, run=None)
    runs = [dict(PASSED, at=f"2026-11-27T14:40:{i:02d}Z") for i in range(16)]
    threads = [threading.Thread(target=registry.record_test_run, args=(version, run)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["at"] for r in registry.metadata(version)["tests"]) == sorted(r["at"] for r in runs)


def test_versions_sort_by_number_past_9999(registry):
    registry.storage.write("counter.json", json.dumps({"last": 9998}).encode())
    versions = [registry.register(model_files(str(i)), realistic_metadata()) for i in range(2)]
    assert [v.split("-")[0] for v in versions] == ["v9999", "v10000"]
    assert registry.versions("testing") == versions


def test_promote_replaces_a_half_done_production_copy(registry):
    version = registered(registry)
    registry.storage.write(f"production/{version}/model.onnx", b"partial")
    registry.promote(version, by="owner")
    assert registry.read_file(version, "model.onnx", "production") == registry.read_file(version, "model.onnx", "testing")
    assert registry.current()["version"] == version


def test_cli_list_shows_versions_with_missing_kind_or_accuracy(registry):
    metadata = realistic_metadata()
    metadata["kind"], metadata["metrics"]["accuracy"] = None, None
    version = registry.register(model_files(), metadata)
    result = run_module("registry", "list", "--registry", registry.uri, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert version in result.stdout and "accuracy=?" in result.stdout


def test_who_promotes_is_never_blank(monkeypatch, tmp_path):
    from registry.store import whoami

    monkeypatch.setenv("PROMOTED_BY", "  ")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither git nor gcloud to ask
    assert whoami().strip()
    monkeypatch.setenv("PROMOTED_BY", "po@example.com")
    assert whoami() == "po@example.com"

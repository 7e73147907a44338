"""A registry written by the first release (commit cd5dfab: a pointer with a ``history`` list and no
``audit`` key, ``audit.jsonl``) is read, promoted from and rolled back through, after one audited,
idempotent migration. tests/fixtures/registry-cd5dfab was written by that commit's own code (three
versions of a tiny ONNX model, promoted one after the other); each test works on a copy, on both
backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_helpers import register_model
from helpers import clean_env, run_module

from registry.store import Registry
from storage import open_storage

FIXTURE = Path(__file__).parent / "fixtures" / "registry-cd5dfab"
V1, V2, V3 = sorted(path.name for path in (FIXTURE / "testing").iterdir())


@pytest.fixture
def legacy(storage_uri) -> Registry:
    storage = open_storage(storage_uri)
    for path in sorted(FIXTURE.rglob("*")):
        if path.is_file():
            storage.write(path.relative_to(FIXTURE).as_posix(), path.read_bytes())
    return Registry(storage_uri)


def test_a_first_release_registry_is_read_as_it_is(legacy):
    assert legacy.versions("testing") == [V1, V2, V3] == legacy.versions("production")
    assert legacy.production_version() == V3
    # Its test runs are read, and judged by today's rule: they recorded no agreement figures
    # (issue 13), so none of its versions counts as tested.
    assert legacy.newest_tested() is None
    assert [(r["action"], r["version"]) for r in legacy.audit()] == [("promote", V1), ("promote", V2), ("promote", V3)]
    assert legacy.storage.list("audit") == ([], [])  # reading wrote nothing


def test_rollback_walks_back_the_history_after_one_audited_migration(legacy):
    back = legacy.rollback(by="owner")
    assert (back["version"], back["previous"]) == (V2, V1)
    assert legacy.rollback(by="owner")["version"] == V1
    with pytest.raises(Exception, match="nothing to roll back to"):
        legacy.rollback(by="owner")
    actions = [(r["action"], r["version"]) for r in legacy.audit()]
    assert actions == [("promote", V1), ("promote", V2), ("promote", V3), ("migrate", V3), ("rollback", V2),
                       ("rollback", V1)]


def test_migration_is_idempotent_and_promotion_then_works(legacy):
    migrated = legacy.migrate(by="owner")
    assert migrated["version"] == V3 and migrated["action"] == "migrate"
    objects = [info.path for info in legacy.storage.walk()]
    assert legacy.migrate(by="owner") is None
    assert [info.path for info in legacy.storage.walk()] == objects
    fresh = register_model(legacy)
    assert legacy.promote(fresh, by="owner")["previous"] == V3
    assert legacy.rollback(by="owner")["version"] == V3


def test_the_cli_promotes_from_a_first_release_registry_without_a_traceback(tmp_path):
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "registry")
    env = clean_env(REGISTRY_URI=str(tmp_path / "registry"), PROMOTED_BY="owner")
    refused = run_module("registry", "promote", V2, env=env, timeout=120)
    assert refused.returncode == 1 and "agreement figures not recorded" in refused.stderr
    assert "Traceback" not in refused.stderr
    fresh = register_model(Registry(str(tmp_path / "registry")))
    result = run_module("registry", "promote", fresh, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    pointer = json.loads((tmp_path / "registry" / "production" / "current.json").read_text())
    assert (pointer["version"], pointer["previous"]) == (fresh, V3)
    audit = run_module("registry", "audit", "--json", env=env)
    assert [(r["action"], r["version"]) for r in json.loads(audit.stdout)] == [
        ("promote", V1), ("promote", V2), ("promote", V3), ("migrate", V3), ("promote", fresh)]
    assert run_module("registry", "migrate", env=env).stdout.strip().startswith("nothing to migrate")

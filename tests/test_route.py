"""The EventListener's routing, evaluated from its own YAML with cel-python (cluster/route.py).

The payloads in tests/fixtures/github/ are in GitHub's push webhook format; those in
tests/fixtures/pubsub/ are Pub/Sub push deliveries of GCS object notifications.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import REPO_ROOT, clean_env

from cluster.route import (
    LISTENER_FILE,
    RouteError,
    evaluate_listener,
    github_push_request,
    route,
)
from scripts.route import main

FIXTURES = REPO_ROOT / "tests" / "fixtures"
PUBSUB_URL = "/?token=s3cret"


def payload(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def cli(*args: str, stdin: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("fixture, pipeline", [
    ("push-model.json", "training"),
    ("push-retrain.json", "retraining"),
    ("push-unittests.json", "model-test"),
    ("push-mixed-retrain-unittests.json", "retraining"),
    ("push-mixed-model-removed.json", "training"),
    ("push-head-commit-null.json", "model-test"),
    ("push-docs.json", "none"),
    ("push-tag.json", "none"),
    ("push-branch-deleted.json", "none"),
    ("push-other-branch.json", "none"),
    ("push-forced-no-commits.json", "none"),
])
def test_a_push_starts_the_pipeline_of_the_first_folder_it_changed(fixture, pipeline):
    code, out, err = cli(stdin=(FIXTURES / "github" / fixture).read_text())
    assert code == 0, err
    assert out == f"{pipeline}\n"


def test_python_m_scripts_route_reads_the_payload_on_stdin():
    with open(FIXTURES / "github" / "push-model.json", "rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "scripts.route"], stdin=stdin, cwd=REPO_ROOT,
                                env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "training\n"


def test_model_folder_wins_even_when_its_file_was_only_removed_in_a_middle_commit():
    body = payload("github/push-mixed-model-removed.json")
    assert body["commits"][1]["removed"] == ["model/augment.py"]
    assert route(github_push_request(body)) == "training"


def test_a_path_must_start_with_the_folder_not_merely_mention_it():
    body = payload("github/push-docs.json")
    changed = [p for c in body["commits"] for p in c["added"] + c["modified"] + c["removed"]]
    assert "docs/model/card.md" in changed and "model_card.md" in changed and "models.md" in changed
    assert route(github_push_request(body)) == "none"


def test_explain_names_the_interceptor_that_stopped_each_trigger():
    code, out, err = cli("--explain", stdin=(FIXTURES / "github" / "push-tag.json").read_text())
    assert code == 0 and out == "none\n"
    assert "push-training -> training: stopped by route-push: filter is false" in err
    assert "dataset-retraining -> retraining: stopped by pubsub-token" in err


def test_branch_deletion_is_stopped_by_the_branch_filter_not_by_a_missing_head_commit():
    outcomes = evaluate_listener(github_push_request(payload("github/push-branch-deleted.json")))
    push = [o for o in outcomes if o.trigger.startswith("push-")]
    assert push and all(o.stopped_by == "route-push" and "filter is false" in o.reason for o in push)


def test_only_push_events_reach_the_routing():
    code, out, err = cli("--event", "pull_request", "--explain",
                         stdin=(FIXTURES / "github" / "push-model.json").read_text())
    assert code == 0 and out == "none\n"
    assert "push-training -> training: stopped by github-push" in err


def test_a_finalised_dataset_manifest_starts_retraining():
    code, out, err = cli("--url", PUBSUB_URL, stdin=(FIXTURES / "pubsub" / "manifest-finalized.json").read_text())
    assert code == 0, err
    assert out == "retraining\n"


@pytest.mark.parametrize("fixture", ["image-finalized.json", "manifest-deleted.json"])
def test_other_dataset_notifications_start_nothing(fixture):
    code, out, _ = cli("--url", PUBSUB_URL, stdin=(FIXTURES / "pubsub" / fixture).read_text())
    assert (code, out) == (0, "none\n")


def test_a_dataset_notification_without_the_push_token_starts_nothing():
    code, out, _ = cli(stdin=(FIXTURES / "pubsub" / "manifest-finalized.json").read_text())
    assert (code, out) == (0, "none\n")


def test_the_push_token_is_compared_with_the_secret_when_one_is_given():
    request = github_push_request(payload("pubsub/manifest-finalized.json"), url=PUBSUB_URL)
    right = {("xray-mlops-pubsub-push", "token"): "s3cret"}
    wrong = {("xray-mlops-pubsub-push", "token"): "other"}
    assert route(request, secrets=right) == "retraining"
    assert route(request, secrets=wrong) == "none"


def test_a_listener_whose_triggers_overlap_is_an_error(tmp_path):
    folder = tmp_path / "triggers"
    shutil.copytree(LISTENER_FILE.parent, folder)
    listener_file = folder / LISTENER_FILE.name
    listener = yaml.safe_load(listener_file.read_text())
    retraining = next(t for t in listener["spec"]["triggers"] if t["name"] == "push-retraining")
    retraining["interceptors"][-1]["params"][0]["value"] = "extensions.pipeline != 'none'"
    listener_file.write_text(yaml.safe_dump(listener))
    with pytest.raises(RouteError, match="starts 2 pipelines"):
        route(github_push_request(payload("github/push-model.json")), listener_file)


def test_a_payload_that_is_not_json_is_refused_in_one_line():
    code, _, err = cli(stdin="ref=refs/heads/main")
    assert code == 1
    assert "the payload on stdin is not JSON" in err


def test_fixtures_are_in_githubs_push_format():
    keys = {"ref", "before", "after", "repository", "pusher", "sender", "created", "deleted", "forced",
            "base_ref", "compare", "commits", "head_commit"}
    for path in sorted((FIXTURES / "github").glob("*.json")):
        body = json.loads(path.read_text())
        assert keys <= set(body), f"{path.name} lacks {sorted(keys - set(body))}"
        for commit in body["commits"]:
            assert {"id", "message", "timestamp", "added", "removed", "modified"} <= set(commit), path.name
    deleted = payload("github/push-branch-deleted.json")
    assert deleted["deleted"] is True and deleted["after"] == "0" * 40 and deleted["head_commit"] is None


def test_cli_reads_the_listener_file_it_is_given(tmp_path: Path):
    folder = tmp_path / "triggers"
    shutil.copytree(LISTENER_FILE.parent, folder)
    text = (folder / LISTENER_FILE.name).read_text().replace("refs/heads/main", "refs/heads/release")
    (folder / LISTENER_FILE.name).write_text(text)
    body = payload("github/push-model.json")
    body["ref"] = "refs/heads/release"
    code, out, err = cli("--listener", str(folder / LISTENER_FILE.name), stdin=json.dumps(body))
    assert code == 0, err
    assert out == "training\n"

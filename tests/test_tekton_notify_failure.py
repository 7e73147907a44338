"""The email a failed pipeline run sends from its finally section (cluster/notify_failure.py)."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys

from helpers import REPO_ROOT, clean_env


def notify_failure(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = clean_env(OUTBOX_DIR=str(tmp_path / "outbox"), NOTIFY_TO="po@example.com", NOTIFY_FROM="ci@example.com")
    return subprocess.run([sys.executable, "-m", "scripts.notify_failure", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_email_names_the_run_the_failed_task_and_every_status(tmp_path):
    result = notify_failure(
        tmp_path, "--pipeline", "training", "--run", "training-x7k2p", "--commit", "3f2a9c1d",
        "--task", "clone=Succeeded", "--task", "validate-data=Failed", "--task", "train=None")
    assert result.returncode == 0, result.stderr
    [eml] = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "[xray-mlops] training run training-x7k2p failed: validate-data"
    assert (message["To"], message["From"]) == ("po@example.com", "ci@example.com")
    body = message.get_content()
    assert "commit     3f2a9c1d" in body
    assert "validate-data  Failed" in body and "train          None" in body
    assert "tkn pipelinerun logs training-x7k2p -n xray-mlops" in body
    assert str(eml) in result.stdout


def test_a_task_status_that_is_not_task_equals_status_is_refused(tmp_path):
    result = notify_failure(tmp_path, "--pipeline", "training", "--run", "r", "--task", "validate-data")
    assert result.returncode == 2
    assert "is not TASK=STATUS" in result.stderr
    assert not (tmp_path / "outbox").exists()

"""The git-clone Task's own script: the revision it checks out, and the credentials it installs."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

TASK = yaml.safe_load((REPO_ROOT / "tekton" / "tasks" / "git-clone.yaml").read_text())
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def origin(tmp_path) -> Path:
    """A repository with two commits on main; HEAD is the second."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "--quiet", "--initial-branch", "main", cwd=repo)
    for n in (1, 2):
        (repo / "file.txt").write_text(f"{n}\n")
        git("add", "file.txt", cwd=repo)
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", f"c{n}", cwd=repo)
    return repo


def run_clone(tmp_path: Path, url: str, revision: str, credentials: dict[str, str] | None):
    """The step's script with its env resolved as Tekton would (params, workspaces, results)."""
    [step] = TASK["spec"]["steps"]
    out, results, home, creds = (tmp_path / name for name in ("out", "results", "home", "creds"))
    for folder in (out, results, home, creds):
        folder.mkdir()
    for name, text in (credentials or {}).items():
        (creds / name).write_text(text)
    values = {"params.url": url, "params.revision": revision, "params.branch": "main",
              "workspaces.output.path": str(out), "workspaces.credentials.path": str(creds),
              "workspaces.credentials.bound": "true" if credentials is not None else "false"}
    env = {e["name"]: re.sub(r"\$\(([^)]+)\)", lambda m: values[m.group(1)], e["value"]) for e in step["env"]}
    env.update(HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin")
    script = re.sub(r"\$\(results\.([\w-]+)\.path\)", lambda m: str(results / m.group(1)), step["script"])
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    return result, out, results, home


def test_the_pushed_commit_is_checked_out_and_returned(origin, tmp_path):
    first = git("rev-parse", "HEAD~1", cwd=origin)
    result, out, results, _ = run_clone(tmp_path, f"file://{origin}", first, None)
    assert result.returncode == 0, result.stderr
    assert (out / "file.txt").read_text() == "1\n"
    assert (results / "commit").read_text() == first


def test_an_empty_revision_checks_out_the_head_of_the_branch(origin, tmp_path):
    result, _, results, home = run_clone(tmp_path, f"file://{origin}", "", None)
    assert result.returncode == 0, result.stderr
    assert (results / "commit").read_text() == git("rev-parse", "HEAD", cwd=origin)
    assert not (home / ".git-credentials").exists()


def test_https_credentials_are_installed_for_git_only_readable_by_the_step(origin, tmp_path):
    token = "https://x-access-token:t0ken@github.com\n"
    result, _, _, home = run_clone(tmp_path, f"file://{origin}", "", {".git-credentials": token})
    assert result.returncode == 0, result.stderr
    assert (home / ".git-credentials").read_text() == token
    assert stat.S_IMODE((home / ".git-credentials").stat().st_mode) == 0o600
    helper = git("config", "--file", str(home / ".gitconfig"), "credential.helper", cwd=tmp_path)
    assert helper == f"store --file {home}/.git-credentials"
    assert "t0ken" not in result.stdout + result.stderr


def test_an_ssh_key_and_known_hosts_are_installed_with_owner_only_modes(origin, tmp_path):
    files = {"id_ed25519": "KEY\n", "known_hosts": "github.com ssh-ed25519 AAAA\n"}
    result, _, _, home = run_clone(tmp_path, f"file://{origin}", "", files)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    for name in files:
        assert stat.S_IMODE((home / ".ssh" / name).stat().st_mode) == 0o600, name

"""`opentraces setup git`: the chained, removable post-commit hook, on real repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dulwich.repo import Repo

from opentraces import api, hooks
from opentraces import events as ev
from opentraces.commands.main import cli
from opentraces.config import load_settings
from opentraces.errors import Refused, UsageError
from opentraces.git_hook import CHAINED_NAME, setup_git
from opentraces.store import store_exists

HOOK_PROGRAM = Path(sys.executable).parent / "opentraces-hook"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the git program is needed")


def make_repo(path: Path) -> Path:
    Repo.init(str(path), mkdir=True).close()
    return path


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout


def wait_for_anchor_searches(home: Path, seconds: float = 30.0) -> list[ev.AnchorSearchRequested]:
    """The anchor searches the background importer recorded (it drains the spool first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store_exists(load_settings(home).store):
            with api.open_workspace(home, readonly=True) as ws:
                found = [r.event for s in ws.log.stream_ids("repo") for r in ws.log.read(s)
                         if isinstance(r.event, ev.AnchorSearchRequested)]
            if found and not hooks.read_spool(home):
                return found
        time.sleep(0.1)
    return []


def test_install_is_idempotent_and_remove_restores_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    hook = repo / ".git" / "hooks" / "post-commit"
    first = setup_git(repo, hook_command=str(HOOK_PROGRAM))
    assert first.changed and hook.is_file() and os.access(hook, os.X_OK)
    content = hook.read_bytes()
    again = setup_git(repo, hook_command=str(HOOK_PROGRAM))
    assert not again.changed and hook.read_bytes() == content
    removed = setup_git(repo, remove=True)
    assert removed.changed and not hook.exists()
    assert not setup_git(repo, remove=True).changed


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    report = setup_git(repo, dry_run=True)
    assert report.changed and report.dry_run
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


@needs_git
def test_commit_runs_the_users_hook_first_and_records_the_commit(
        tmp_path: Path, isolated_home: Path) -> None:
    repo = make_repo(tmp_path / "r")
    hooks_dir = repo / ".git" / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    user_hook = hooks_dir / "post-commit"
    user_text = "#!/bin/sh\necho \"user hook ran $(git rev-parse HEAD)\" > user-hook.out\nexit 3\n"
    user_hook.write_text(user_text)
    user_hook.chmod(0o755)

    report = setup_git(repo, hook_command=str(HOOK_PROGRAM))
    assert report.backup_path == str(hooks_dir / CHAINED_NAME)
    (repo / "a.txt").write_text("hello\n")
    git(repo, "add", "a.txt")
    began = time.perf_counter()
    git(repo, "commit", "-q", "-m", "first")  # a post-commit status never fails a commit
    elapsed = time.perf_counter() - began
    sha = git(repo, "rev-parse", "HEAD").strip()

    assert (repo / "user-hook.out").read_text().strip() == f"user hook ran {sha}"
    assert elapsed < 5  # the hook returns at once; the import runs detached
    searches = wait_for_anchor_searches(isolated_home)
    assert [(e.commit, e.path, e.source) for e in searches] == [(sha, str(repo), "post-commit")]

    setup_git(repo, remove=True)
    assert user_hook.read_text() == user_text and not (hooks_dir / CHAINED_NAME).exists()


@needs_git
def test_our_hook_exit_status_is_the_chained_hooks(tmp_path: Path,
                                                   isolated_home: Path) -> None:
    repo = make_repo(tmp_path / "r")
    hooks_dir = repo / ".git" / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    (hooks_dir / "post-commit").write_text("#!/bin/sh\nexit 7\n")
    (hooks_dir / "post-commit").chmod(0o755)
    setup_git(repo, hook_command=str(HOOK_PROGRAM))
    run = subprocess.run([str(hooks_dir / "post-commit")], cwd=repo, capture_output=True)
    assert run.returncode == 7 and run.stdout == b"" and run.stderr == b""


def test_hooks_path_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    with Repo(str(repo)) as r:
        config = r.get_config()
        config.set((b"core",), b"hooksPath", b".husky")
        config.write_to_path()
    with pytest.raises(Refused, match=r"core\.hooksPath") as info:
        setup_git(repo)
    assert "post-commit" in (info.value.hint or "")
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


def test_a_foreign_chained_file_is_never_overwritten(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    hooks_dir = repo / ".git" / "hooks"
    hooks_dir.mkdir(exist_ok=True)
    (hooks_dir / "post-commit").write_text("#!/bin/sh\necho mine\n")
    (hooks_dir / CHAINED_NAME).write_text("#!/bin/sh\necho also mine\n")
    with pytest.raises(Refused):
        setup_git(repo)
    assert (hooks_dir / "post-commit").read_text() == "#!/bin/sh\necho mine\n"


def test_not_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not inside a git repository"):
        setup_git(tmp_path)


def test_cli_setup_git_json(tmp_path: Path, isolated_home: Path) -> None:
    repo = make_repo(tmp_path / "r")
    result = CliRunner().invoke(cli, ["--json", "setup", "git", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.output)
    assert envelope["status"] == "ok" and envelope["changed"] is True
    assert api.setup_git(repo, remove=True).changed
    refused = CliRunner().invoke(cli, ["--json", "setup", "git", "--repo", str(tmp_path)])
    assert refused.exit_code == 2
    assert json.loads(refused.output)["error"]["code"] == "usage_error"

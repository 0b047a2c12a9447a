"""The optional git post-commit hook (``opentraces setup git``): install, inspect, remove.

The hook tells opentraces "a commit happened here"; it does no anchoring itself. It runs
``opentraces-hook git post-commit`` with the new commit in ``OPENTRACES_COMMIT``; that program
appends one spool line and starts the background importer, which records an anchor search for
the commit (see :mod:`opentraces.hooks`). The commit returns as fast as without the hook.

This is the one place opentraces writes into a repository's ``.git`` folder, and only when the
user asks for it. Invariants:
- Chained: a post-commit hook the user already had is renamed to ``post-commit.pre-opentraces``
  and run first by ours, with the same arguments; its exit status is the hook's exit status.
  Our part can never fail the commit or print anything.
- Removable: ``remove`` deletes our hook and renames the user's back, byte for byte. A hook
  file that is not ours is never overwritten or deleted.
- Idempotent: installing twice, or removing when nothing is installed, changes nothing.
- ``core.hooksPath`` set (husky, a shared hooks folder): refused, since writing there would
  change tracked files or every repository at once; the report says what line to add by hand.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from opentraces.agent_setup import SetupReport, default_hook_command
from opentraces.errors import Refused, UsageError

__all__ = ["CHAINED_NAME", "HOOK_MARKER", "hook_script", "record_line", "setup_git"]

HOOK_NAME = "post-commit"
CHAINED_NAME = "post-commit.pre-opentraces"
#: The line that identifies a hook file as ours.
HOOK_MARKER = "# opentraces post-commit hook"


def record_line(hook_command: str) -> str:
    """The shell line that tells opentraces about the new commit (never fails, prints nothing)."""
    return (f'OPENTRACES_COMMIT="$(git rev-parse HEAD 2>/dev/null)" {hook_command} git '
            "post-commit </dev/null >/dev/null 2>&1 || true")


def hook_script(hook_command: str) -> str:
    """The hook file's text; ``hook_command`` is the hook program as a shell word."""
    return f"""#!/bin/sh
{HOOK_MARKER} (installed by `opentraces setup git`; removed by
# `opentraces setup git --remove`, which also puts back any hook you had before).
status=0
chained="$(dirname "$0")/{CHAINED_NAME}"
if [ -x "$chained" ]; then
    "$chained" "$@"
    status=$?
fi
# Record the commit for opentraces: one spool line, then the import runs in the background.
{record_line(hook_command)}
exit $status
"""


def setup_git(repo: Path, *, dry_run: bool = False, remove: bool = False,
              hook_command: str | None = None) -> SetupReport:
    """Install (or with ``remove``, take out) the post-commit hook of the repository at ``repo``.

    Raises:
        UsageError: ``repo`` is not inside a git repository.
        Refused: the repository sets ``core.hooksPath``, or a hook file is in the way.
    """
    hook_command = hook_command or default_hook_command()
    hooks = _hooks_dir(repo, hook_command)
    ours, chained = hooks / HOOK_NAME, hooks / CHAINED_NAME
    script = hook_script(hook_command)
    actions: list[str] = []
    if remove:
        if not _is_ours(ours):
            actions.append(f"{ours}: no opentraces hook installed; nothing to change")
            return SetupReport("git", str(ours), False, None, actions, dry_run, remove)
        actions.append(f"delete the opentraces hook {ours}")
        if chained.exists():
            actions.append(f"put back your previous hook from {chained}")
        if not dry_run:
            ours.unlink()
            if chained.exists():
                os.replace(chained, ours)
        return SetupReport("git", str(ours), True, None, actions, dry_run, remove)

    if _is_ours(ours) and ours.read_text(encoding="utf-8") == script:
        actions.append(f"{ours}: already installed; nothing to change")
        return SetupReport("git", str(ours), False, None, actions, dry_run, remove)
    keep = ours.exists() and not _is_ours(ours)
    if keep and chained.exists():
        raise Refused(f"{chained} already exists, and {ours} is not an opentraces hook",
                           hint="Move one of them away, then run `opentraces setup git` again.")
    if keep:
        actions.append(f"keep your hook: rename {ours} to {chained}; ours runs it first")
    actions.append(f"{'update' if _is_ours(ours) else 'write'} the opentraces hook {ours}")
    if not dry_run:
        hooks.mkdir(parents=True, exist_ok=True)
        if keep:
            os.replace(ours, chained)
        _write_executable(ours, script)
    return SetupReport("git", str(ours), True, str(chained) if keep else None, actions,
                       dry_run, remove)


def _hooks_dir(repo: Path, hook_command: str) -> Path:
    from dulwich.errors import NotGitRepository
    from dulwich.repo import Repo

    try:
        with Repo.discover(str(repo)) as r:
            common = Path(r.commondir())
            config = r.get_config_stack()
            try:
                hooks_path = config.get((b"core",), b"hooksPath")
            except KeyError:
                hooks_path = None
    except NotGitRepository as e:
        raise UsageError(f"{repo} is not inside a git repository",
                         hint="Run it from a repository, or pass --repo PATH.") from e
    if hooks_path:
        raise Refused(
            f"this repository takes its hooks from core.hooksPath "
            f"({hooks_path.decode(errors='replace')}); opentraces does not write there",
            hint=f"Add this line to your post-commit hook instead: "
                 f"{record_line(hook_command)}")
    return common / "hooks"


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return HOOK_MARKER in fh.read(512)
    except (FileNotFoundError, IsADirectoryError):
        return False


def _write_executable(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.opentraces-tmp")
    with open(temp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    mode = temp.stat().st_mode
    temp.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(temp, path)

"""Install and remove the opentraces capture hooks in each agent's own configuration.

What is written, per agent (``home`` is the user's home folder):

- **Claude Code**, ``~/.claude/settings.json``: under ``hooks``, one matcher group per event in
  :data:`CLAUDE_EVENTS` (``PreToolUse``/``PostToolUse`` with matcher ``"*"``), each running
  ``opentraces-hook claude-code <Event>``.
- **Codex CLI**, ``~/.codex/hooks.json``: the same shape, which Codex reads from that file
  (``{"hooks": {"<Event>": [{"matcher": …, "hooks": [{"type": "command", "command": …,
  "timeout": 10}]}]}}``), for the events in :data:`CODEX_EVENTS`, running
  ``opentraces-hook codex-cli <Event>``. Codex fires ``Stop`` at the end of every turn and has
  no session-end event, so ``Stop`` is what starts the importer. Codex only runs hooks it has
  been told to trust (``/hooks`` in Codex) and, before 0.124, only with ``[features]
  codex_hooks = true`` in ``~/.codex/config.toml``; opentraces edits neither, and says so in
  the report's actions.
- **Pi** has no hook file: it is captured from its session files, and live capture comes from
  the opentraces Pi package, which Pi installs itself (``pi install``). Installing a Pi package
  runs its code with full access, so opentraces writes nothing there and returns the checklist.

Invariants:
- Idempotent: a run that would change nothing writes nothing (the file stays byte-identical).
- Every user hook and setting is kept. Our entries are recognised by their command (the
  program ``opentraces-hook``, wherever installed, or ``python -m opentraces.hooks``), so
  ``remove`` takes out exactly ours, from any event.
- Before any change the current file is copied to ``<file>.opentraces-backup-<UTC time>``
  beside it (an identical newest backup is reused). ``remove`` puts back the newest backup
  whose content equals the file without our entries, byte for byte; when nothing of the user's
  remains and no such backup exists (opentraces created the file), the file is deleted.
- A file that is not valid JSON is never touched: :class:`~opentraces.errors.ConfigError` names
  the file and line.
- Writes are temp file + fsync + rename in the file's real folder (a symlinked settings file
  stays a symlink), keeping the file's permissions.
- ``dry_run`` computes the same report and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from opentraces.errors import ConfigError, UsageError

__all__ = [
    "CLAUDE_EVENTS",
    "CODEX_EVENTS",
    "HOOK_PROGRAM",
    "SETUP_AGENTS",
    "SetupReport",
    "default_hook_command",
    "setup_agent",
]

HOOK_PROGRAM = "opentraces-hook"
SETUP_AGENTS = ("claude-code", "codex-cli", "pi")
CLAUDE_EVENTS = ("PreToolUse", "PostToolUse", "Stop", "SessionEnd", "PreCompact")
CODEX_EVENTS = ("SessionStart", "PreToolUse", "PostToolUse", "Stop")
#: Events whose groups take a tool-name matcher.
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse"})
HOOK_TIMEOUT_SECONDS = 10
BACKUP_TAG = ".opentraces-backup-"
PI_PACKAGE = "npm:opentraces-pi"


class SetupReport(msgspec.Struct, frozen=True):
    """What ``setup_agent`` did (or, with ``dry_run``, would do)."""

    agent: str
    path: str | None
    changed: bool
    backup_path: str | None
    actions: list[str]
    dry_run: bool = False
    remove: bool = False


class _Target(msgspec.Struct, frozen=True):
    relative: tuple[str, ...]
    events: tuple[str, ...]


TARGETS = {
    "claude-code": _Target((".claude", "settings.json"), CLAUDE_EVENTS),
    "codex-cli": _Target((".codex", "hooks.json"), CODEX_EVENTS),
}


def default_hook_command() -> str:
    """The hook program next to the running interpreter if installed there, else by name."""
    script = Path(sys.executable).parent / HOOK_PROGRAM
    return shlex.quote(str(script)) if script.exists() else HOOK_PROGRAM


def setup_agent(agent: str, home: Path, *, dry_run: bool = False, remove: bool = False,
                hook_command: str = HOOK_PROGRAM) -> SetupReport:
    """Install (or with ``remove``, take out) the opentraces hooks of one agent.

    Args:
        agent: ``claude-code``, ``codex-cli`` or ``pi``.
        home: the user's home folder (the agent's configuration lives below it).
        dry_run: report the actions, write nothing.
        remove: take our hooks out instead of installing them.
        hook_command: how the hook program is invoked (a shell word, quoted if needed).

    Raises:
        UsageError: an unknown agent.
        ConfigError: the agent's file exists but is not valid JSON, or has an unexpected shape.
    """
    if agent == "pi":
        return _pi_checklist(home, dry_run=dry_run, remove=remove)
    if agent not in TARGETS:
        raise UsageError(f"unknown agent {agent!r}; known: {', '.join(SETUP_AGENTS)}")
    target = TARGETS[agent]
    path = home.joinpath(*target.relative)
    raw, data = _load(path)
    actions: list[str] = []
    if remove:
        new = _without_ours(data, actions)
    else:
        new = _with_ours(data, agent, target.events, hook_command, actions)
        actions += _notes(agent, new)
    if new == data:
        actions.insert(0, f"{path}: nothing to change")
        return SetupReport(agent, str(path), False, None, actions, dry_run, remove)
    content = _removed_content(path, new, actions) if remove else _render(new, raw)
    if dry_run:
        return SetupReport(agent, str(path), True, None, actions, dry_run, remove)
    backup = _backup(path, raw) if raw is not None else None
    if backup is not None:
        actions.append(f"backed up the previous file to {backup}")
    if content is None:
        path.unlink()
    else:
        write_atomic(path, content)
    return SetupReport(agent, str(path), True, str(backup) if backup else None, actions,
                       dry_run, remove)


# ---------------------------------------------------------------------------------------------
# Reading and recognising our entries


def _load(path: Path) -> tuple[bytes | None, dict[str, Any]]:
    """The file's bytes (None if absent) and its JSON object ({} if absent or blank)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, {}
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        return raw, {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}); "
                          "opentraces changed nothing",
                          hint="Fix the file (or move it away), then run the command again.") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top, found "
                          f"{type(data).__name__}; opentraces changed nothing")
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ConfigError(f"{path}: \"hooks\" must be an object; opentraces changed nothing")
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise ConfigError(f"{path}: \"hooks.{event}\" must be a list; "
                              "opentraces changed nothing")
    return raw, data


def is_our_command(command: object) -> bool:
    """Whether a hook command runs the opentraces hook (however it was installed)."""
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    if not words:
        return False
    if os.path.basename(words[0]) == HOOK_PROGRAM:
        return True
    return "opentraces.hooks" in words[1:3] and words[words.index("opentraces.hooks") - 1] == "-m"


def _is_ours(hook: object) -> bool:
    return isinstance(hook, dict) and is_our_command(hook.get("command"))


def _strip(groups: list[Any]) -> tuple[list[Any], int]:
    """``groups`` without our hook entries (a group left empty goes too), and how many went."""
    kept: list[Any] = []
    removed = 0
    for group in groups:
        inner = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(inner, list):
            kept.append(group)
            continue
        mine = sum(1 for h in inner if _is_ours(h))
        removed += mine
        if not mine:
            kept.append(group)
        elif mine < len(inner):
            kept.append({**group, "hooks": [h for h in inner if not _is_ours(h)]})
    return kept, removed


# ---------------------------------------------------------------------------------------------
# Installing and removing


def _our_group(agent: str, event: str, hook_command: str) -> dict[str, Any]:
    group: dict[str, Any] = {"matcher": "*"} if event in TOOL_EVENTS else {}
    group["hooks"] = [{"type": "command", "command": f"{hook_command} {agent} {event}",
                       "timeout": HOOK_TIMEOUT_SECONDS}]
    return group


def _with_ours(data: dict[str, Any], agent: str, events: Sequence[str], hook_command: str,
               actions: list[str]) -> dict[str, Any]:
    hooks: dict[str, Any] = dict(data.get("hooks", {}))
    for event in list(hooks):
        if event not in events:
            kept, removed = _strip(hooks[event])
            if removed:
                hooks[event] = kept
                actions.append(f"remove the opentraces hook from {event} (no longer used)")
    for event in events:
        groups = hooks.get(event, [])
        wanted = _our_group(agent, event, hook_command)
        kept, removed = _strip(groups)
        if removed == 1 and wanted in groups:
            continue
        hooks[event] = [*kept, wanted]
        verb = "update" if removed else "add"
        others = f", keeping {len(kept)} other hook group(s)" if kept else ""
        actions.append(f"{verb} {event} hook: {wanted['hooks'][0]['command']}{others}")
    return {**data, "hooks": hooks} if hooks != data.get("hooks") else data


def _without_ours(data: dict[str, Any], actions: list[str]) -> dict[str, Any]:
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return data
    new_hooks = dict(hooks)
    for event, groups in hooks.items():
        kept, removed = _strip(groups)
        if not removed:
            continue
        actions.append(f"remove the opentraces hook from {event}")
        if kept:
            new_hooks[event] = kept
        else:
            del new_hooks[event]
    if new_hooks == hooks:
        return data
    new = dict(data)
    if new_hooks:
        new["hooks"] = new_hooks
    else:
        del new["hooks"]
    return new


def _notes(agent: str, data: dict[str, Any]) -> list[str]:
    if agent == "claude-code":
        if data.get("disableAllHooks") is True:
            return ["note: disableAllHooks is true in this file, so Claude Code runs no hooks "
                    "until it is turned off"]
        return []
    return ["note: Codex runs a new hook only after you trust it: open /hooks in Codex and "
            "trust the opentraces entries",
            "note: Codex before 0.124 also needs [features] codex_hooks = true in "
            "~/.codex/config.toml"]


def _normal(data: Any) -> Any:
    """``data`` without empty hook lists or an empty ``hooks`` object (to compare contents)."""
    if not isinstance(data, dict) or not isinstance(data.get("hooks"), dict):
        return data
    hooks = {k: v for k, v in data["hooks"].items() if v != []}
    rest = {k: v for k, v in data.items() if k != "hooks"}
    return {**rest, "hooks": hooks} if hooks else rest


def _removed_content(path: Path, new: dict[str, Any], actions: list[str]) -> bytes | None:
    """What the file holds once our hooks are out: a backup's exact bytes when one matches."""
    wanted = _normal(new)
    for backup in _backups(path):
        raw = backup.read_bytes()
        try:
            content = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if _normal(content) == wanted:
            actions.append(f"restore the file exactly as it was before setup ({backup.name})")
            return raw
    if wanted == {} and not path.is_symlink():
        actions.append(f"delete {path}: it holds nothing but the opentraces hooks")
        return None
    return _render(new, path.read_bytes())


# ---------------------------------------------------------------------------------------------
# Files


def _render(data: dict[str, Any], previous: bytes | None) -> bytes:
    """JSON text in the previous file's indentation (two spaces by default), newline-ended."""
    indent: str | int = 2
    newline = True
    if previous:
        text = previous.decode("utf-8", "replace")
        match = re.match(r"\s*\{[ \t]*\r?\n([ \t]+)\S", text)
        if match:
            indent = match.group(1)
        newline = text.endswith("\n")
    body = json.dumps(data, indent=indent, ensure_ascii=False)
    return (body + "\n" if newline else body).encode("utf-8")


def _backups(path: Path) -> list[Path]:
    """Our backups of ``path``, newest first."""
    return sorted(path.parent.glob(f"{path.name}{BACKUP_TAG}*"), reverse=True)


def _backup(path: Path, raw: bytes) -> Path:
    """Copy the current bytes beside the file (reusing an identical newest backup)."""
    existing = _backups(path)
    if existing and existing[0].read_bytes() == raw:
        return existing[0]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    for n in range(1000):
        candidate = path.with_name(f"{path.name}{BACKUP_TAG}{stamp}{f'-{n}' if n else ''}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         _mode(path) & 0o777)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        return candidate
    raise ConfigError(f"cannot find a free backup name for {path}")


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return 0o600


def write_atomic(path: Path, content: bytes) -> None:
    """Replace the file's content via temp + fsync + rename, in the file's real folder."""
    real = path.resolve() if path.is_symlink() else path
    real.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode(real) & 0o777
    temp = real.with_name(f".{real.name}.opentraces-tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, real)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------------------
# Pi


def _pi_checklist(home: Path, *, dry_run: bool, remove: bool) -> SetupReport:
    settings = home / ".pi" / "agent" / "settings.json"
    installed = _pi_package_listed(settings)
    sessions = home / ".pi" / "agent" / "sessions"
    if remove:
        actions = [f"run `pi remove {PI_PACKAGE}` to stop live capture from Pi"
                   if installed else "the opentraces Pi package is not listed in "
                   f"{settings}; nothing to remove",
                   "opentraces wrote nothing into Pi's settings, so it removes nothing there"]
    else:
        actions = [f"Pi sessions in {sessions} are imported from their files; "
                   "nothing needs installing for that",
                   f"the opentraces Pi package is listed in {settings}" if installed else
                   f"for live capture, run `pi install {PI_PACKAGE}` (Pi packages run with "
                   "full access, so opentraces leaves installing one to you)",
                   "`opentraces config tracking-mode` shows whether every project is captured "
                   "or only enrolled ones (`opentraces init --agent pi`)"]
    return SetupReport("pi", str(settings), False, None, actions, dry_run, remove)


def _pi_package_listed(settings: Path) -> bool:
    try:
        data = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    packages = data.get("packages", []) if isinstance(data, dict) else []
    if not isinstance(packages, list):
        return False
    sources = [p.get("source") if isinstance(p, dict) else p for p in packages]
    return any(isinstance(s, str) and "opentraces" in s for s in sources)

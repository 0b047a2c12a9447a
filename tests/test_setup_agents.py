"""Agent hook setup: idempotent, keeps the user's hooks, backs up, and removes exactly ours."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from opentraces import api
from opentraces.agent_setup import CLAUDE_EVENTS, CODEX_EVENTS, is_our_command
from opentraces.commands.main import cli
from opentraces.errors import ConfigError

HOOK = "opentraces-hook"

#: A user's own settings, written by hand: 4-space indent, unicode, a hook of their own.
USER_SETTINGS = """{
    "model": "opus",
    "env": {"GREETING": "héllo"},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh"}]}
        ],
        "Notification": [
            {"hooks": [{"type": "command", "command": "notify-send claude"}]}
        ]
    }
}
"""


@pytest.fixture
def home(isolated_home: Path) -> Path:
    """The user's home (the fixture's HOME): agents' settings live below it."""
    return isolated_home.parent


def claude_file(home: Path) -> Path:
    return home / ".claude" / "settings.json"


def write_user_settings(home: Path, text: str = USER_SETTINGS) -> Path:
    path = claude_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def commands_of(data: dict[str, Any], event: str) -> list[str]:
    return [h["command"] for g in data["hooks"].get(event, []) for h in g["hooks"]]


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.opentraces-backup-*"))


# ---------------------------------------------------------------------------------------------
# Claude Code


def test_fresh_install_writes_every_event(home: Path) -> None:
    report = api.setup_agent("claude-code", home, hook_command=HOOK)
    path = claude_file(home)
    assert (report.changed, report.path, report.backup_path) == (True, str(path), None)
    data = json.loads(path.read_text())
    assert list(data["hooks"]) == list(CLAUDE_EVENTS)
    for event in CLAUDE_EVENTS:
        assert commands_of(data, event) == [f"{HOOK} claude-code {event}"]
    assert data["hooks"]["PreToolUse"][0]["matcher"] == "*"
    assert "matcher" not in data["hooks"]["Stop"][0]
    assert data["hooks"]["Stop"][0]["hooks"][0]["timeout"] == 10
    assert len(report.actions) == len(CLAUDE_EVENTS)
    assert backups(path) == []


def test_second_run_changes_nothing(home: Path) -> None:
    write_user_settings(home)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    path = claude_file(home)
    before, stat = path.read_bytes(), path.stat()
    again = api.setup_agent("claude-code", home, hook_command=HOOK)
    assert (again.changed, again.backup_path) == (False, None)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert len(backups(path)) == 1


def test_user_hooks_and_settings_are_kept_and_backed_up(home: Path) -> None:
    path = write_user_settings(home)
    report = api.setup_agent("claude-code", home, hook_command=HOOK)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"] == "opus" and data["env"] == {"GREETING": "héllo"}
    assert commands_of(data, "PreToolUse") == ["~/bin/guard.sh", f"{HOOK} claude-code PreToolUse"]
    assert commands_of(data, "Notification") == ["notify-send claude"]
    assert report.backup_path is not None
    assert Path(report.backup_path).read_text(encoding="utf-8") == USER_SETTINGS
    assert path.read_text(encoding="utf-8").startswith('{\n    "model"'), "keeps the indent"
    assert "héllo" in path.read_text(encoding="utf-8")
    assert any("keeping 1 other hook group" in a for a in report.actions)


def test_remove_restores_the_users_file_byte_for_byte(home: Path) -> None:
    path = write_user_settings(home)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    report = api.setup_agent("claude-code", home, remove=True)
    assert report.changed
    assert path.read_text(encoding="utf-8") == USER_SETTINGS
    assert any("restore the file exactly" in a for a in report.actions)
    assert api.setup_agent("claude-code", home, remove=True).changed is False


def test_remove_deletes_a_file_that_only_held_our_hooks(home: Path) -> None:
    api.setup_agent("claude-code", home, hook_command=HOOK)
    report = api.setup_agent("claude-code", home, remove=True)
    assert report.changed and not claude_file(home).exists()
    assert report.backup_path is not None, "even a deletion keeps a backup"
    api.setup_agent("claude-code", home, hook_command=HOOK)
    api.setup_agent("claude-code", home, remove=True)
    assert not claude_file(home).exists()


def test_remove_keeps_settings_the_user_added_meanwhile(home: Path) -> None:
    path = write_user_settings(home)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    data = json.loads(path.read_text())
    data["theme"] = "dark"
    path.write_text(json.dumps(data, indent=2))
    api.setup_agent("claude-code", home, remove=True)
    left = json.loads(path.read_text())
    assert left["theme"] == "dark"
    assert commands_of(left, "PreToolUse") == ["~/bin/guard.sh"]
    assert not any(is_our_command(c) for e in left["hooks"] for c in commands_of(left, e))


def test_remove_takes_ours_out_of_a_mixed_group(home: Path) -> None:
    mixed = {"hooks": {"Stop": [{"hooks": [
        {"type": "command", "command": "say done"},
        {"type": "command", "command": "/opt/ot/bin/opentraces-hook claude-code Stop"}]}],
        "SessionEnd": [{"hooks": [{"type": "command",
                                   "command": "python3 -m opentraces.hooks claude-code X"}]}]}}
    path = write_user_settings(home, json.dumps(mixed))
    api.setup_agent("claude-code", home, remove=True)
    assert json.loads(path.read_text()) == {"hooks": {"Stop": [{"hooks": [
        {"type": "command", "command": "say done"}]}]}}


def test_a_new_hook_command_replaces_ours_without_duplicates(home: Path) -> None:
    api.setup_agent("claude-code", home, hook_command=HOOK)
    report = api.setup_agent("claude-code", home, hook_command="'/opt/o t/opentraces-hook'")
    assert report.changed
    data = json.loads(claude_file(home).read_text())
    assert commands_of(data, "Stop") == ["'/opt/o t/opentraces-hook' claude-code Stop"]
    edits = [a for a in report.actions if not a.startswith("backed up")]
    assert len(edits) == len(CLAUDE_EVENTS) and all(a.startswith("update ") for a in edits)


def test_dry_run_writes_nothing(home: Path) -> None:
    report = api.setup_agent("claude-code", home, dry_run=True, hook_command=HOOK)
    assert (report.changed, report.dry_run, report.backup_path) == (True, True, None)
    assert len(report.actions) == len(CLAUDE_EVENTS)
    assert not claude_file(home).exists()
    path = write_user_settings(home)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    before = path.read_bytes()
    report = api.setup_agent("claude-code", home, dry_run=True, remove=True)
    assert report.changed and path.read_bytes() == before
    assert len(backups(path)) == 1


def test_invalid_json_is_refused_with_file_and_line(home: Path) -> None:
    path = write_user_settings(home, '{\n  "model": "opus",\n  "hooks": {,}\n}\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3:\d+: invalid JSON"):
        api.setup_agent("claude-code", home, hook_command=HOOK)
    with pytest.raises(ConfigError):
        api.setup_agent("claude-code", home, remove=True)
    assert path.read_text() == '{\n  "model": "opus",\n  "hooks": {,}\n}\n'
    assert backups(path) == []


@pytest.mark.parametrize(("text", "message"), [
    ("[]", "expected a JSON object"),
    ('{"hooks": []}', '"hooks" must be an object'),
    ('{"hooks": {"Stop": {}}}', '"hooks.Stop" must be a list'),
])
def test_unexpected_shapes_are_refused(home: Path, text: str, message: str) -> None:
    write_user_settings(home, text)
    with pytest.raises(ConfigError, match=message):
        api.setup_agent("claude-code", home, hook_command=HOOK)


def test_a_symlinked_settings_file_stays_a_symlink(home: Path, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "claude-settings.json"
    real.write_text(USER_SETTINGS)
    claude_file(home).parent.mkdir(parents=True)
    claude_file(home).symlink_to(real)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    assert claude_file(home).is_symlink()
    assert HOOK in real.read_text()
    assert list(dotfiles.iterdir()) == [real], "backups go beside the link, not the target"
    api.setup_agent("claude-code", home, remove=True)
    assert claude_file(home).is_symlink() and real.read_text() == USER_SETTINGS


def test_file_permissions_are_kept(home: Path) -> None:
    path = write_user_settings(home)
    path.chmod(0o600)
    api.setup_agent("claude-code", home, hook_command=HOOK)
    assert path.stat().st_mode & 0o777 == 0o600


def test_disabled_hooks_are_pointed_out(home: Path) -> None:
    write_user_settings(home, '{"disableAllHooks": true}')
    report = api.setup_agent("claude-code", home, hook_command=HOOK)
    assert any("disableAllHooks" in a for a in report.actions)


def test_our_commands_are_recognised() -> None:
    assert is_our_command("opentraces-hook claude-code Stop")
    assert is_our_command("'/home/u/my venv/bin/opentraces-hook' codex-cli Stop")
    assert is_our_command("/usr/bin/python3 -m opentraces.hooks pi SessionEnd")
    assert not is_our_command("opentraces-hooked claude-code Stop")
    assert not is_our_command("echo opentraces-hook")
    assert not is_our_command("unbalanced 'quote")
    assert not is_our_command(None)


# ---------------------------------------------------------------------------------------------
# Codex CLI and Pi


def test_codex_hooks_json(home: Path) -> None:
    report = api.setup_agent("codex-cli", home, hook_command=HOOK)
    path = home / ".codex" / "hooks.json"
    assert report.path == str(path)
    data = json.loads(path.read_text())
    assert list(data) == ["hooks"] and list(data["hooks"]) == list(CODEX_EVENTS)
    assert data["hooks"]["PostToolUse"] == [{"matcher": "*", "hooks": [
        {"type": "command", "command": f"{HOOK} codex-cli PostToolUse", "timeout": 10}]}]
    assert any("/hooks" in a for a in report.actions), "tells the user to trust the hooks"
    before = path.read_bytes()
    assert api.setup_agent("codex-cli", home, hook_command=HOOK).changed is False
    assert path.read_bytes() == before
    api.setup_agent("codex-cli", home, remove=True)
    assert not path.exists()


def test_pi_writes_nothing_and_returns_a_checklist(home: Path) -> None:
    report = api.setup_agent("pi", home, hook_command=HOOK)
    assert (report.changed, report.backup_path) == (False, None)
    assert any("pi install" in a for a in report.actions)
    assert not (home / ".pi").exists()
    settings = home / ".pi" / "agent" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"packages": ["npm:other", {"source": "npm:opentraces-pi"}]}')
    listed = api.setup_agent("pi", home)
    assert any("is listed" in a for a in listed.actions)
    removal = api.setup_agent("pi", home, remove=True)
    assert any("pi remove" in a for a in removal.actions)
    assert settings.read_text() == '{"packages": ["npm:other", {"source": "npm:opentraces-pi"}]}'


def test_unknown_agent(home: Path) -> None:
    with pytest.raises(api.OpentracesError, match="unknown agent 'cursor'"):
        api.setup_agent("cursor", home)


# ---------------------------------------------------------------------------------------------
# The command


def test_setup_command_json_and_idempotence(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["setup", "claude-code", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["status"] == "ok" and body["schema_version"] == "opentraces.setup.v1"
    assert (body["agent"], body["changed"], body["path"]) == (
        "claude-code", True, str(claude_file(home)))
    hook = api.default_hook_command()
    assert commands_of(json.loads(claude_file(home).read_text()), "Stop") == [
        f"{hook} claude-code Stop"]
    again = json.loads(runner.invoke(cli, ["setup", "claude-code", "--json"]).output)
    assert again["changed"] is False


def test_setup_command_dry_run_and_remove_text(home: Path) -> None:
    runner = CliRunner()
    dry = runner.invoke(cli, ["setup", "codex-cli", "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0
    assert dry.output.startswith(f"codex-cli: {home / '.codex' / 'hooks.json'} would change\n")
    assert "Next: opentraces setup codex-cli\n" in dry.output
    assert not (home / ".codex").exists()
    runner.invoke(cli, ["setup", "codex-cli"], catch_exceptions=False)
    removed = runner.invoke(cli, ["setup", "codex-cli", "--remove"], catch_exceptions=False)
    assert removed.output.startswith(f"codex-cli: {home / '.codex' / 'hooks.json'} removed")
    pi = runner.invoke(cli, ["setup", "pi", "--json"], catch_exceptions=False)
    assert json.loads(pi.output)["changed"] is False


def test_setup_command_invalid_json_is_an_error_envelope(home: Path) -> None:
    path = write_user_settings(home, "{\n  oops\n}")
    result = CliRunner().invoke(cli, ["setup", "claude-code", "--json"])
    assert result.exit_code == 2
    body = json.loads(result.output)
    assert body["status"] == "error" and body["error"]["code"] == "config_error"
    assert body["error"]["message"].startswith(f"{path}:2:")
    assert path.read_text() == "{\n  oops\n}"


def test_setup_never_touches_the_real_home(home: Path) -> None:
    assert Path(os.environ["HOME"]) == home
    assert Path.home() == home

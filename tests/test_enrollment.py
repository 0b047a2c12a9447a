"""Tracking mode and project enrollment: folded from bucket events, idempotent to re-run."""

from __future__ import annotations

import datetime as dt
import inspect
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from opentraces import api
from opentraces import events as ev
from opentraces.commands.config import config
from opentraces.commands.enroll import init, remove
from opentraces.commands.main import cli
from opentraces.config import Settings
from opentraces.enrollment import BUCKET_STREAM, fold, project_key
from opentraces.errors import UsageError
from opentraces.hooks import EXCLUDE_MARKER

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def bucket_events(settings: Settings) -> list[ev.Event]:
    with api.open_workspace(settings, readonly=True) as ws:
        if not ws.store_exists:
            return []
        return [rec.event for rec in ws.log.read(BUCKET_STREAM)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "work" / "proj"
    (path / "src").mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------------------------
# Tracking mode


def test_tracking_mode_defaults_to_global_without_creating_a_store(settings: Settings) -> None:
    assert api.tracking_mode(settings) == "global"
    assert not settings.store.sqlite_path.exists()


def test_set_tracking_mode_appends_only_on_change(settings: Settings) -> None:
    assert api.set_tracking_mode(settings, "global").changed is False
    assert bucket_events(settings) == []
    result = api.set_tracking_mode(settings, "manual")
    assert (result.mode, result.previous, result.changed) == ("manual", "global", True)
    assert api.set_tracking_mode(settings, "manual").changed is False
    assert api.tracking_mode(settings) == "manual"
    assert [type(e) for e in bucket_events(settings)] == [ev.TrackingModeSet]


def test_unknown_tracking_mode_is_a_usage_error(settings: Settings) -> None:
    with pytest.raises(UsageError, match="unknown tracking mode 'sometimes'"):
        api.set_tracking_mode(settings, "sometimes")


# ---------------------------------------------------------------------------------------------
# Enroll and remove


def test_enroll_fresh_records_the_cutoff_once(settings: Settings, project: Path) -> None:
    first = api.enroll(settings, project, ["claude-code"], start_fresh=True, now=T0)
    assert first.changed and first.since == "2026-03-01T12:00:00.000Z"
    assert first.project == str(project.resolve())
    again = api.enroll(settings, project, ["claude-code"], start_fresh=True,
                       now=T0 + dt.timedelta(days=1))
    assert (again.changed, again.since) == (False, first.since)
    assert bucket_events(settings) == [ev.ProjectEnrolled(
        project=first.project, agents=["claude-code"], at="2026-03-01T12:00:00.000Z")]


def test_enroll_widens_but_never_narrows(settings: Settings, project: Path) -> None:
    api.enroll(settings, project, ["claude-code"], start_fresh=True, now=T0)
    wider = api.enroll(settings, project, ["codex-cli"], start_fresh=True, now=T0)
    assert (wider.changed, wider.agents, wider.since) == (
        True, ["claude-code", "codex-cli"], "2026-03-01T12:00:00.000Z")
    backfill = api.enroll(settings, project, ["pi"], start_fresh=False)
    assert (backfill.agents, backfill.since) == (["claude-code", "codex-cli", "pi"], None)
    every = api.enroll(settings, project, [], start_fresh=True)
    assert (every.changed, every.agents, every.since) == (True, [], None)
    assert api.enroll(settings, project, ["pi"], start_fresh=True).changed is False
    assert len(bucket_events(settings)) == 4


def test_enroll_rejects_unknown_agents(settings: Settings, project: Path) -> None:
    with pytest.raises(UsageError, match="unknown agent 'cursor'"):
        api.enroll(settings, project, ["cursor"], start_fresh=True)
    assert bucket_events(settings) == []


def test_remove_is_idempotent_and_enroll_again_restarts(settings: Settings,
                                                        project: Path) -> None:
    api.enroll(settings, project, [], start_fresh=False)
    removed = api.remove(settings, project, now=T0)
    assert (removed.changed, removed.was_enrolled) == (True, True)
    assert api.remove(settings, project).changed is False
    assert api.enrolled_projects(settings) == []
    back = api.enroll(settings, project, [], start_fresh=True, now=T0)
    assert back.changed and back.since is not None
    assert [type(e) for e in bucket_events(settings)] == [
        ev.ProjectEnrolled, ev.ProjectRemoved, ev.ProjectEnrolled]


def test_enrolled_projects_lists_current_enrollments(settings: Settings, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    api.enroll(settings, b, ["pi"], start_fresh=False)
    api.enroll(settings, a, [], start_fresh=False)
    api.remove(settings, b)
    assert [p.project for p in api.enrolled_projects(settings)] == [str(a.resolve())]


def test_project_keys_are_absolute_and_resolved(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    assert project_key("link") == str(real.resolve())
    assert project_key("missing/../gone") == str(tmp_path.resolve() / "gone")


# ---------------------------------------------------------------------------------------------
# should_capture


def test_global_mode_captures_everything_but_removed_and_excluded(
        settings: Settings, project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert api.should_capture(settings, str(other))
    assert api.should_capture(settings, None)
    api.remove(settings, project)
    assert not api.should_capture(settings, str(project))
    assert not api.should_capture(settings, str(project / "src"))
    assert api.should_capture(settings, str(other))


def test_manual_mode_captures_only_enrolled_projects(settings: Settings, project: Path,
                                                     tmp_path: Path) -> None:
    api.set_tracking_mode(settings, "manual")
    assert not api.should_capture(settings, str(project / "src"))
    assert not api.should_capture(settings, None)
    api.enroll(settings, project, [], start_fresh=False)
    assert api.should_capture(settings, str(project / "src"))
    assert api.should_capture(settings, str(project))
    assert not api.should_capture(settings, str(tmp_path / "work"))
    assert not api.should_capture(settings, str(project) + "-sibling")


def test_the_nearest_project_decides(settings: Settings, project: Path) -> None:
    api.set_tracking_mode(settings, "manual")
    api.enroll(settings, project, [], start_fresh=False)
    api.remove(settings, project / "src")
    assert api.should_capture(settings, str(project))
    assert not api.should_capture(settings, str(project / "src" / "deep"))


def test_the_exclusion_marker_wins_in_every_mode(settings: Settings, project: Path) -> None:
    api.enroll(settings, project, [], start_fresh=False)
    (project / EXCLUDE_MARKER).write_text("")
    assert not api.should_capture(settings, str(project / "src"))
    api.set_tracking_mode(settings, "manual")
    assert not api.should_capture(settings, str(project))


def test_agent_limited_and_fresh_enrollments(settings: Settings, project: Path) -> None:
    api.set_tracking_mode(settings, "manual")
    api.enroll(settings, project, ["codex-cli"], start_fresh=True, now=T0)
    state = api.enrollment_state(settings)
    cwd = str(project)
    assert api.should_capture(state, cwd, agent="codex-cli")
    assert not api.should_capture(state, cwd, agent="claude-code")
    assert not api.should_capture(state, cwd, started_at="2026-03-01T11:59:59Z")
    assert api.should_capture(state, cwd, started_at="2026-03-01T12:00:00.000Z")
    assert api.should_capture(state, cwd, started_at="2026-03-02T08:00:00+00:00")
    assert api.should_capture(state, cwd, started_at="not a time")
    api.set_tracking_mode(settings, "global")
    assert api.should_capture(settings, cwd, agent="claude-code")


def test_fold_ignores_other_bucket_events() -> None:
    state = fold([ev.RemoteConfigured(remote_kind="local", target="/x"),
                  ev.TrackingModeSet(mode="manual"),
                  ev.ProjectEnrolled(project="/p", agents=["pi"], at=None),
                  ev.TraceExcluded(trace_id="t", reason="r")])
    assert state.mode == "manual"
    assert state.projects["/p"] == api.ProjectState("/p", True, ["pi"], None)


# ---------------------------------------------------------------------------------------------
# Commands


def invoke(command: click.Command, args: list[str]) -> dict:
    """`opentraces <command> <args> --json` through the root command, as a user runs it."""
    result = CliRunner().invoke(cli, [command.name or "", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_init_and_remove_commands(settings: Settings, project: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    body = invoke(init, ["--agent", "claude-code", "--agent", "codex-cli"])
    assert body["status"] == "ok" and body["schema_version"] == "opentraces.init.v1"
    assert body["init"]["project"] == str(project.resolve())
    assert body["init"]["agents"] == ["claude-code", "codex-cli"]
    assert body["init"]["changed"] is True and body["init"]["since"]
    assert body["imported"] is None
    assert "Tracking mode is global" in body["next_steps"][0]
    assert invoke(init, ["--agent", "claude-code"])["init"]["changed"] is False

    gone = invoke(remove, [])
    assert gone["schema_version"] == "opentraces.remove.v1"
    assert gone["remove"] == {"project": str(project.resolve()), "changed": True,
                              "was_enrolled": True, "tracking_mode": "global"}
    assert invoke(remove, [])["remove"]["changed"] is False
    assert not api.should_capture(settings, str(project))


def test_init_import_existing(settings: Settings, project: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    body = invoke(init, ["--import-existing"])
    assert body["init"]["since"] is None and body["init"]["agents"] == []
    importer = getattr(api, "import_sessions", None)
    if importer and "project" in inspect.signature(importer).parameters:
        assert body["imported"] is not None
    else:
        assert body["imported"] is None
        assert body["next_command"] == "opentraces import"
        assert any("not imported by init" in step for step in body["next_steps"])


def test_init_text_output(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["init", "--agent", "pi"])
    assert result.exit_code == 0
    assert result.output.startswith(f"{project.resolve()} enrolled for pi (sessions from 20")


def test_init_unknown_agent_is_exit_2_with_an_envelope(project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["init", "--agent", "cursor", "--json"])
    assert result.exit_code == 2
    body = json.loads(result.output)
    assert body["status"] == "error"
    assert body["error"]["code"] == "usage_error"
    assert "unknown agent 'cursor'" in body["error"]["message"]


def test_config_tracking_mode_command(settings: Settings) -> None:
    shown = invoke(config, ["tracking-mode"])
    assert shown["schema_version"] == "opentraces.config.tracking_mode.v1"
    assert (shown["mode"], shown["changed"]) == ("global", False)
    assert not settings.store.sqlite_path.exists(), "showing the mode must not create a store"
    changed = invoke(config, ["tracking-mode", "manual"])
    assert (changed["mode"], changed["previous"], changed["changed"]) == ("manual", "global", True)
    assert invoke(config, ["tracking-mode", "manual"])["changed"] is False
    text = CliRunner().invoke(cli, ["config", "tracking-mode"]).output
    assert text == "tracking mode: manual\n"
    bad = CliRunner().invoke(cli, ["config", "tracking-mode", "sometimes"])
    assert bad.exit_code == 2

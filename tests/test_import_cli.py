"""`opentraces import` through the CLI: samples on a machine without agent history, the
standard agent folders under HOME, --since, and the spool filled by hooks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from opentraces.commands.main import cli
from tests.conftest import CORPUS


def run_json(*args: str, code: int = 0) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_samples_when_the_machine_has_no_history(isolated_home: Path) -> None:
    body = run_json("import", "--samples-when-empty")
    assert body["samples"] is True and body["traces_created"] == 4
    assert body["lines_rejected"] == 0
    manifest = run_json("bucket", "manifest")
    assert sorted(t["agent_name"] for t in manifest["traces"]) == [
        "claude-code", "codex-cli", "gemini-cli", "pi"]
    again = run_json("import", "--samples-when-empty")
    assert again["events_appended"] == 0 and again["sources_unchanged"] == 4


def test_standard_folders_are_found_and_samples_not_used(isolated_home: Path) -> None:
    home = Path(os.environ["HOME"])
    session = next((CORPUS / "claude-code" / "claude-code-log-real-projects"
                    / "-experiments-worktrees").glob("*.jsonl"))
    target = home / ".claude" / "projects" / "-work-demo" / session.name
    target.parent.mkdir(parents=True)
    shutil.copy(session, target)
    body = run_json("import", "--samples-when-empty")
    assert body["samples"] is False and body["traces_created"] == 1
    old = time.time() - 3 * 86400
    os.utime(target, (old, old))
    assert run_json("import", "--since", "1d")["sources_scanned"] == 0
    assert run_json("import", "--since", "7d")["sources_scanned"] == 1


def test_a_bad_since_is_a_usage_error(isolated_home: Path) -> None:
    body = run_json("import", "--since", "soon", code=2)
    assert body["error"]["code"] == "usage_error"


def test_import_from_the_spool_written_by_the_hook(isolated_home: Path, tmp_path: Path) -> None:
    session = CORPUS / "pi" / "pi-mono-fixtures"
    transcript = sorted(session.rglob("*.jsonl"))[0]
    payload = {"session_id": "x", "transcript_path": str(transcript), "cwd": str(tmp_path),
               "hook_event_name": "PostToolUse"}
    subprocess.run([sys.executable, "-m", "opentraces.hooks", "pi", "PostToolUse"],
                   input=json.dumps(payload), text=True, check=True, env=os.environ.copy())
    body = run_json("import", "--from-spool")
    assert body["traces_created"] == 1
    assert run_json("import", "--from-spool")["sources_scanned"] == 0  # the spool was drained


def test_a_session_end_hook_records_that_the_session_ended(isolated_home: Path) -> None:
    from opentraces import api, hooks
    from opentraces import events as ev
    from tests.conftest import REWOUND

    settings = api.settings_from_environment()
    payload = json.dumps({"session_id": REWOUND.stem, "transcript_path": str(REWOUND),
                          "cwd": "/experiments/ideas", "hook_event_name": "SessionEnd",
                          "reason": "prompt_input_exit"}).encode()
    turn = hooks.spool_line("claude-code", "Stop", payload, received_at="2026-01-01T10:00:00Z")
    end = hooks.spool_line("claude-code", "SessionEnd", payload,
                           received_at="2026-01-01T10:05:00Z")
    assert turn is not None and end is not None
    hooks.append_line(settings.home, "claude-code", turn)
    hooks.append_line(settings.home, "claude-code", end)
    assert run_json("import", "--from-spool")["traces_created"] == 1
    (row,) = run_json("bucket", "manifest")["traces"]
    assert row["lifecycle"] == "ended"

    def ends() -> list[ev.SessionEnded]:
        with api.open_workspace(settings) as ws:
            return [r.event for r in ws.log.read(ev.stream("trace", row["trace_id"]))
                    if isinstance(r.event, ev.SessionEnded)]

    assert [(e.reason, e.at) for e in ends()] == [("prompt_input_exit", "2026-01-01T10:05:00Z")]
    # the same line read again (a drain that did not happen): still one end
    hooks.append_line(settings.home, "claude-code", end)
    assert run_json("import", "--from-spool")["events_appended"] == 0
    assert len(ends()) == 1


def test_remove_also_stops_a_session_captured_before(isolated_home: Path,
                                                     tmp_path: Path) -> None:
    from opentraces import api

    settings = api.settings_from_environment()
    sample = next(s for s in api.sample_sources() if s.agent == "claude-code")
    live = tmp_path / Path(sample.path).name
    lines = Path(sample.path).read_bytes().splitlines(keepends=True)
    live.write_bytes(b"".join(lines[:4]))
    sources = api.import_sources(settings, [live], agents=["claude-code"])
    assert api.import_sessions(settings, sources).traces_created == 1
    api.remove(settings, Path("/home/sample/opentraces-demo"))
    live.write_bytes(b"".join(lines))
    later = api.import_sessions(settings, sources)
    assert later.events_appended == 0 and later.sources_skipped == 1

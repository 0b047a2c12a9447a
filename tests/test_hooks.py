"""The agent hook: one intact spool line per event, fail-open, light, and quick to return."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from opentraces import hooks

HOOK = [sys.executable, "-m", "opentraces.hooks"]
#: Modules the hook must never load (they cost start-up time the agent would wait for;
#: msgspec alone takes 25-45 ms of the 60 ms budget to import, see benchmarks/bench_hook.py).
HEAVY = ("eventsourcing", "click", "sqlite3", "blake3", "huggingface_hub", "whoosh", "dulwich",
         "msgspec")


def payload(session: str = "s-1", cwd: str = "/work/proj", **extra: Any) -> bytes:
    body = {"session_id": session, "transcript_path": f"/t/{session}.jsonl", "cwd": cwd,
            "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_input": {"command": "pytest -q"}, "tool_response": {"stdout": "ok"}}
    return json.dumps({**body, **extra}).encode()


def run(agent: str, event: str, data: bytes, **kwargs: Any) -> int:
    return hooks.main([agent, event], stdin=io.BytesIO(data), **kwargs)


def spool_lines(home: Path, agent: str = "claude-code") -> list[dict[str, Any]]:
    path = home / "spool" / f"{agent}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def errors(home: Path) -> list[dict[str, Any]]:
    path = home / "spool" / "errors.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---------------------------------------------------------------------------------------------
# One line per event


def test_each_invocation_appends_exactly_one_line(isolated_home: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(3):
        assert run("claude-code", "PostToolUse", payload(f"s-{n}")) == 0
        assert len(spool_lines(isolated_home)) == n + 1
    first = spool_lines(isolated_home)[0]
    assert first["v"] == 1
    assert (first["agent"], first["event"]) == ("claude-code", "PostToolUse")
    assert (first["session_id"], first["transcript_path"], first["cwd"]) == (
        "s-0", "/t/s-0.jsonl", "/work/proj")
    assert first["received_at"].endswith("Z")
    assert first["payload"]["tool_input"] == {"command": "pytest -q"}
    assert "session_id" not in first["payload"]
    assert capsys.readouterr() == ("", "")
    assert errors(isolated_home) == []


def test_large_bodies_are_replaced_by_their_size(isolated_home: Path) -> None:
    content = "x" * 20_000
    run("claude-code", "PostToolUse", payload(
        tool_name="Write", tool_input={"file_path": "/work/proj/a.py", "content": content},
        tool_response="y" * 50_000))
    line = spool_lines(isolated_home)[0]
    assert line["payload"]["tool_input"] == {
        "file_path": "/work/proj/a.py", "content": {"_omitted_bytes": len(content) + 2}}
    assert line["payload"]["tool_response"] == {"_omitted_bytes": 50_002}
    size = (isolated_home / "spool" / "claude-code.jsonl").stat().st_size
    assert size < 2 * hooks.FIELD_LIMIT


def test_many_medium_fields_keep_the_line_under_the_limit(isolated_home: Path) -> None:
    many = {f"k{i}": "z" * 4000 for i in range(40)}
    run("claude-code", "PostToolUse", payload(**many))
    line = spool_lines(isolated_home)[0]
    assert list(line["payload"]) == ["_omitted_bytes"]
    assert line["session_id"] == "s-1"


def test_a_lone_surrogate_does_not_lose_the_event(isolated_home: Path) -> None:
    data = payload().replace(b'"ok"', b'"half \\ud800 emoji"')
    run("claude-code", "PostToolUse", data)
    line = spool_lines(isolated_home)[0]
    assert line["payload"]["tool_response"]["stdout"] == "half \\ud800 emoji"


def test_codex_payload_with_null_transcript(isolated_home: Path) -> None:
    data = json.dumps({"session_id": "019a", "turn_id": "t1", "transcript_path": None,
                       "cwd": "/work/proj", "hook_event_name": "PreToolUse", "model": "gpt-5",
                       "tool_name": "Bash", "tool_input": {"command": "ls"}}).encode()
    run("codex-cli", "PreToolUse", data)
    line = spool_lines(isolated_home, "codex-cli")[0]
    assert line["transcript_path"] is None
    assert line["payload"]["turn_id"] == "t1"


# ---------------------------------------------------------------------------------------------
# Concurrency


def test_32_concurrent_hooks_write_32_intact_lines(isolated_home: Path) -> None:
    procs = []
    for n in range(32):
        # Lines of 3-40 KB: well past PIPE_BUF, so only O_APPEND + one write keeps them whole.
        data = payload(f"s-{n:02d}", filler="f" * (3000 + 1200 * n))
        proc = subprocess.Popen([*HOOK, "claude-code", "PostToolUse"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((proc, data))
    for proc, data in procs:
        out, err = proc.communicate(data, timeout=60)
        assert (proc.returncode, out, err) == (0, b"", b"")
    lines = spool_lines(isolated_home)
    assert len(lines) == 32
    assert sorted(line["session_id"] for line in lines) == [f"s-{n:02d}" for n in range(32)]
    for line in lines:
        n = int(line["session_id"][2:])
        assert line["payload"]["filler"] == ("f" * (3000 + 1200 * n)
                                             if 3002 + 1200 * n <= hooks.FIELD_LIMIT
                                             else {"_omitted_bytes": 3002 + 1200 * n})
    assert errors(isolated_home) == []


# ---------------------------------------------------------------------------------------------
# Fail-open


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (["claude-code", "PostToolUse"], b"this is not json", "payload is not JSON"),
    (["claude-code", "PostToolUse"], b"[1, 2]", "not an object"),
    (["claude-code", "PostToolUse"], b"", "no payload"),
    (["gemini-x", "PostToolUse"], b"{}", "unknown agent"),
    (["claude-code"], b"{}", "usage: opentraces-hook"),
], ids=["bad-json", "not-an-object", "empty", "unknown-agent", "missing-event"])
def test_bad_input_exits_0_silently_and_records_the_error(
        isolated_home: Path, argv: list[str], stdin: bytes, message: str) -> None:
    proc = subprocess.run([*HOOK, *argv], input=stdin, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    recorded = errors(isolated_home)
    assert len(recorded) == 1
    assert message in recorded[0]["message"]
    assert recorded[0]["argv"] == argv
    assert spool_lines(isolated_home) == []


def test_an_unwritable_spool_is_recorded_not_raised(isolated_home: Path) -> None:
    (isolated_home / "spool" / "claude-code.jsonl").mkdir(parents=True)
    proc = subprocess.run([*HOOK, "claude-code", "PostToolUse"], input=payload(),
                          capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert "cannot append" in errors(isolated_home)[0]["message"]


def test_no_home_at_all_still_exits_0(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {**os.environ, "OPENTRACES_HOME": str(blocker / "home")}
    proc = subprocess.run([*HOOK, "claude-code", "PostToolUse"], input=payload(), env=env,
                          capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_help_goes_to_stderr(isolated_home: Path) -> None:
    proc = subprocess.run([*HOOK, "--help"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "")
    assert proc.stderr.startswith("usage: opentraces-hook <agent> <event>")
    assert not (isolated_home / "spool").exists()


# ---------------------------------------------------------------------------------------------
# Light


PROBE = """
import io, json, sys
from opentraces import hooks
hooks.main(["claude-code", "Stop"], stdin=io.BytesIO(sys.argv[1].encode()),
           import_command=["true"])
print(json.dumps(sorted(sys.modules)))
"""


def test_the_hook_imports_nothing_heavy(isolated_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, payload().decode()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout)
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    assert len(spool_lines(isolated_home)) == 1


def test_the_hook_process_imports_nothing_heavy(isolated_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", *HOOK[1:], "claude-code",
                           "PostToolUse"], input=payload(), capture_output=True, timeout=60)
    assert proc.returncode == 0
    loaded = [line.rsplit(b"|", 1)[1].strip().decode() for line in proc.stderr.splitlines()
              if line.startswith(b"import time:") and b"self [us]" not in line]
    assert loaded, "no import log"
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


# ---------------------------------------------------------------------------------------------
# The importer is started detached, without waiting


SLOW_IMPORTER = """
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {os.getsid(0)}")
time.sleep(60)
"""


def _wait_for(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize(("agent", "event"), [("claude-code", "Stop"),
                                              ("claude-code", "SessionEnd"),
                                              ("codex-cli", "Stop")])
def test_a_session_end_starts_the_importer_detached(isolated_home: Path, tmp_path: Path,
                                                    agent: str, event: str) -> None:
    marker = tmp_path / "importer-started"
    began = time.perf_counter()
    assert run(agent, event, payload(),
               import_command=[sys.executable, "-c", SLOW_IMPORTER, str(marker)]) == 0
    elapsed = time.perf_counter() - began
    assert elapsed < 0.5, f"the hook waited {elapsed:.2f}s for the importer"
    pid, sid = map(int, _wait_for(marker).split())
    try:
        assert sid == pid, "the importer must lead its own session"
        assert pid != os.getpid()
    finally:
        os.kill(pid, signal.SIGTERM)
    assert len(spool_lines(isolated_home, agent)) == 1


def test_other_events_start_no_importer(isolated_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "importer-started"
    run("claude-code", "PostToolUse", payload(),
        import_command=[sys.executable, "-c", SLOW_IMPORTER, str(marker)])
    time.sleep(0.5)
    assert not marker.exists()


def test_the_importer_starts_even_if_the_payload_is_bad(isolated_home: Path,
                                                        tmp_path: Path) -> None:
    marker = tmp_path / "importer-started"
    run("claude-code", "Stop", b"{broken",
        import_command=[sys.executable, "-c", SLOW_IMPORTER, str(marker)])
    pid, _ = map(int, _wait_for(marker).split())
    os.kill(pid, signal.SIGTERM)
    assert len(errors(isolated_home)) == 1


# ---------------------------------------------------------------------------------------------
# Exclusion marker


def test_an_excluded_project_is_never_spooled(isolated_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "secret"
    (project / "src").mkdir(parents=True)
    (project / hooks.EXCLUDE_MARKER).write_text("")
    marker = tmp_path / "importer-started"
    run("claude-code", "Stop", payload(cwd=str(project / "src")),
        import_command=[sys.executable, "-c", SLOW_IMPORTER, str(marker)])
    time.sleep(0.3)
    assert spool_lines(isolated_home) == []
    assert not marker.exists()
    assert errors(isolated_home) == []


# ---------------------------------------------------------------------------------------------
# Reading and draining


def test_read_then_drain_keeps_lines_written_meanwhile(isolated_home: Path) -> None:
    for n in range(3):
        run("claude-code", "PostToolUse", payload(f"s-{n}"))
    run("codex-cli", "Stop", payload("c-1"), import_command=["true"])
    entries = hooks.read_spool(isolated_home)
    assert [(e["agent"], e["session_id"]) for e in entries] == [
        ("claude-code", "s-0"), ("claude-code", "s-1"), ("claude-code", "s-2"),
        ("codex-cli", "c-1")]
    marks = hooks.spool_marks(entries)
    assert marks["claude-code"][0] == 0

    run("claude-code", "PostToolUse", payload("s-late"))
    removed = hooks.drain_spool(isolated_home, marks)
    assert set(removed) == {"claude-code", "codex-cli"}

    left = hooks.read_spool(isolated_home)
    assert [e["session_id"] for e in left] == ["s-late"]
    assert left[0]["spool"]["generation"] == 1
    assert left[0]["spool"]["offset"] == 0


def test_a_stale_drain_removes_nothing(isolated_home: Path) -> None:
    run("claude-code", "PostToolUse", payload("s-0"))
    stale = hooks.spool_marks(hooks.read_spool(isolated_home))
    hooks.drain_spool(isolated_home, stale)
    run("claude-code", "PostToolUse", payload("s-1"))
    assert hooks.drain_spool(isolated_home, stale) == {}
    assert [e["session_id"] for e in hooks.read_spool(isolated_home)] == ["s-1"]


def test_partial_and_broken_lines(isolated_home: Path) -> None:
    run("claude-code", "PostToolUse", payload("s-0"))
    path = isolated_home / "spool" / "claude-code.jsonl"
    with path.open("ab") as f:
        f.write(b"garbage line\n[1]\n{\"half\": ")
    entries = hooks.read_spool(isolated_home)
    assert [e.get("session_id") for e in entries] == ["s-0", None, None]
    assert "spool_error" in entries[1]
    assert entries[2]["spool_error"] == "the line is not a JSON object"
    hooks.drain_spool(isolated_home, hooks.spool_marks(entries))
    assert path.read_bytes() == b"{\"half\": "
    with pytest.raises(ValueError, match="not the end of a line"):
        hooks.drain_spool(isolated_home, {"claude-code": (1, 3)})


def test_reading_an_absent_spool(isolated_home: Path) -> None:
    assert hooks.read_spool(isolated_home) == []
    assert hooks.drain_spool(isolated_home, {"claude-code": (0, 10)}) == {}
    assert not (isolated_home / "spool").exists()

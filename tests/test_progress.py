"""Long work shows a progress bar on a terminal, and nothing extra in --json mode."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings
from tests.helpers import session_events


def _run_with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (code, stdout, terminal text)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "opentraces", *args],
                            stdout=subprocess.PIPE, stderr=follower, env=os.environ.copy())
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate()
    os.close(leader)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def _populate(settings: Settings) -> None:
    for i in range(5):
        trace_id, events = session_events("codex-cli", f"bar-{i}", steps=40)
        api.append(settings, ev.stream("trace", trace_id), events, catch_up=False)


def test_rebuild_shows_a_bar_on_a_terminal(settings: Settings, isolated_home: Path) -> None:
    _populate(settings)
    code, out, tty = _run_with_tty_stderr(["rebuild"])
    assert code == 0
    assert "Rebuilding" in tty and "100%" in tty
    assert "bucket_manifest" in out


def test_json_mode_prints_one_envelope_and_no_bar(settings: Settings) -> None:
    _populate(settings)
    code, out, tty = _run_with_tty_stderr(["--json", "repair"])
    assert code == 0
    assert tty == ""
    body = json.loads(out)
    assert body["repair"]["projections_rebuilt"] == api.projection_names() == sorted(
        api.projection_names())

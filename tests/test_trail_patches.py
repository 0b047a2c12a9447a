"""Patch derivation from real corpus sessions, checked against the raw transcript JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import blake3
import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings
from opentraces.trail import trail_sync
from opentraces.trail.patches import read_hunks
from tests.conftest import CORPUS

CLAUDE = CORPUS / "claude-code/claude-code-viewer-mock/sample-project/" \
    "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"
CODEX = CORPUS / "codex/codemie-code/" \
    "rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-3724b5ddb799.jsonl"
PI = CORPUS / "pi/pi-mono-history/session.jsonl"


def _import(settings: Settings, agent: str, path: Path) -> dict[str, ev.PatchRecorded]:
    imported = api.import_sessions(settings, [api.ImportSource(agent=agent, path=str(path))])
    assert imported.trail is not None and imported.trail["patches_derived"] > 0  # on import
    report = trail_sync(settings)
    assert report.traces_scanned == 1 and report.patches_derived == 0  # nothing left to derive
    with api.open_workspace(settings) as ws:
        (stream_id,) = ws.log.stream_ids("trace")
        return {r.event.tool_call_id + "|" + (r.event.file_path or ""): r.event
                for r in ws.log.read(stream_id) if isinstance(r.event, ev.PatchRecorded)}


def _hash(lines: list[str]) -> str:
    return blake3.blake3("\n".join(lines).encode()).hexdigest()


def _records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record of a file (pi sometimes writes two on one line)."""
    decoder = json.JSONDecoder()
    out = []
    for line in path.read_text().splitlines():
        at = 0
        while at < len(line.strip()):
            record, end = decoder.raw_decode(line, at)
            out.append(record)
            at = end
    return out


def test_claude_code_edit_and_write(settings: Settings) -> None:
    patches = _import(settings, "claude-code", CLAUDE)
    uses: dict[str, dict[str, Any]] = {}
    checked = 0
    for rec in _records(CLAUDE):
        for block in rec.get("message", {}).get("content", []) or []:
            if isinstance(block, dict) and block.get("type") == "tool_use" \
                    and block["name"] in ("Edit", "Write", "MultiEdit"):
                uses[block["id"]] = block
        result = rec.get("toolUseResult")
        content = rec.get("message", {}).get("content")
        if not isinstance(result, dict) or not isinstance(content, list):
            continue
        call_id = next((b.get("tool_use_id") for b in content
                        if isinstance(b, dict) and b.get("type") == "tool_result"), None)
        if call_id not in uses:
            continue
        use = uses[call_id]
        patch = patches[f"{call_id}|{use['input']['file_path']}"]
        assert patch.tool_name == use["name"] and patch.path == use["input"]["file_path"]
        if result.get("structuredPatch"):
            added = [ln[1:] for h in result["structuredPatch"] for ln in h["lines"]
                     if ln.startswith("+")]
            first = next(h for h in result["structuredPatch"]
                         if any(ln.startswith("+") for ln in h["lines"]))
            offset = next(i for i, ln in enumerate(first["lines"]) if ln.startswith("+"))
            before = sum(1 for ln in first["lines"][:offset] if not ln.startswith("-"))
            assert patch.range is not None
            assert patch.range.start == first["newStart"] + before
        else:  # a new file: every line is authored
            added = use["input"]["content"].splitlines()
            assert patch.change == "create"
            assert patch.range == ev.LineRange(1, len(added))
        assert patch.authored_hash == _hash(added)
        assert patch.authored_lines == sum(1 for ln in added if ln.strip())
        if isinstance(result.get("originalFile"), str):
            assert patch.before is not None
            with api.open_workspace(settings) as ws:
                assert ws.blobs.get(patch.before.hash).decode() == result["originalFile"]
        checked += 1
    assert checked >= 20 and len(patches) >= checked


def test_codex_apply_patch(settings: Settings) -> None:
    patches = _import(settings, "codex-cli", CODEX)
    checked = 0
    for rec in _records(CODEX):
        payload = rec.get("payload", {})
        if payload.get("type") != "patch_apply_end":
            continue
        for path, change in payload["changes"].items():
            patch = patches[f"{payload['call_id']}|{path}"]
            added = [ln[1:] for ln in change["unified_diff"].splitlines()
                     if ln.startswith("+") and not ln.startswith("+++")]
            header = re.search(r"\+(\d+)", change["unified_diff"])
            assert header is not None
            assert patch.tool_name == "apply_patch" and patch.path == path
            assert patch.authored_hash == _hash(added)
            assert patch.range is not None and patch.range.start > int(header.group(1))
            checked += 1
    assert checked == 3 == len(patches)


def test_pi_edit(settings: Settings) -> None:
    patches = _import(settings, "pi", PI)
    calls: dict[str, dict[str, Any]] = {}
    checked = 0
    for rec in _records(PI):
        msg = rec.get("message", {})
        if msg.get("role") == "assistant":
            for block in msg.get("content", []):
                if block.get("type") == "toolCall" and block.get("name") == "edit":
                    calls[block["id"]] = block
        elif msg.get("role") == "toolResult" and msg.get("toolCallId") in calls \
                and not msg.get("isError"):
            args = calls[msg["toolCallId"]]["arguments"]
            patch = patches[f"{msg['toolCallId']}|{args['path']}"]
            diff = msg["details"]["diff"].splitlines()
            plus = [re.match(r"^\+ *(\d+) ?(.*)$", ln) for ln in diff if ln.startswith("+")]
            added = [m.group(2) for m in plus if m]
            assert patch.authored_hash == _hash(added)
            if plus:
                assert patch.range is not None and patch.range.start == int(plus[0].group(1))
            else:  # a pure deletion authors no line
                assert patch.range is None and patch.authored_lines == 0
            with api.open_workspace(settings) as ws:
                hunks = read_hunks(ws.blobs, patch.hunks.hash if patch.hunks else None)
            assert hunks.authored() == added
            checked += 1
    assert checked >= 5


def test_sync_twice_derives_nothing_new(settings: Settings) -> None:
    _import(settings, "pi", PI)
    with api.open_workspace(settings) as ws:
        head = ws.log.head()
    again = trail_sync(settings)
    assert again.patches_derived == 0 and again.anchors_recorded == 0
    assert again.patches_without_repo > 0  # the session's files are on another machine
    with api.open_workspace(settings) as ws:
        assert ws.log.head() == head


@pytest.mark.parametrize("path", [CLAUDE, CODEX, PI], ids=["claude", "codex", "pi"])
def test_corpus_files_exist(path: Path) -> None:
    assert path.is_file()


def test_a_conflict_after_an_earlier_batch_still_counts_every_patch(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patches written in batches; an import grows a trace between two batches."""
    from opentraces.store import EventLog
    from opentraces.trail import sync

    real_sync = sync.trail_sync
    # the imports derive nothing yet (a sync over no traces), so the next sync derives it all
    monkeypatch.setattr("opentraces.trail.trail_sync",
                        lambda target, **_: real_sync(target, trace_ids=[]))
    for agent, path in (("claude-code", CLAUDE), ("pi", PI)):
        api.import_sessions(settings, [api.ImportSource(agent=agent, path=str(path))])
    monkeypatch.setattr(sync, "WRITE_BATCH", 1)
    real_write = EventLog.write
    writes: list[int] = []

    def racing(self: EventLog, records: list[ev.Recorded]) -> None:
        writes.append(len(records))
        if len(writes) == 2:  # the first batch landed; now an import takes the next version
            first = records[0]
            late = ev.StepRecorded(step_index=99_999, role="user", content="a late line")
            real_write(self, [ev.Recorded(first.originator_id, first.originator_version, late)])
        return real_write(self, records)

    monkeypatch.setattr(EventLog, "write", racing)
    report = real_sync(settings)
    with api.open_workspace(settings) as ws:
        written = sum(isinstance(r.event, ev.PatchRecorded)
                      for stream_id in ws.log.stream_ids("trace") for r in ws.log.read(stream_id))
    assert len(writes) > 2 and written > 2
    assert report.patches_derived == written
    assert real_sync(settings).patches_derived == 0

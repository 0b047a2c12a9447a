"""Gemini CLI adapter: which corpus files are claimed (and that the unclaimed ones are exactly
those the module documents), the contract's invariants, counts recomputed independently from
the raw JSON, the one-line chat document, and an end-to-end import.

The corpus is read in place (``tests.conftest.CORPUS``); one-line copies of the chat documents
are written to ``tmp_path`` only (never into the repository).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.capture import adapter as adapter_for
from opentraces.capture.base import LineRef
from opentraces.capture.gemini import GeminiAdapter
from opentraces.capture.lines import complete_length
from opentraces.capture.parse import first_record, memory_context, parse_bytes
from tests.conftest import CORPUS
from tests.test_capture_codex import assert_resume_exact, check_invariants, folded_steps

GEMINI = CORPUS / "gemini"
FILES = sorted(p for p in GEMINI.rglob("*") if p.is_file())
ADAPTER = GeminiAdapter()
CLAIMED = {"jsonl_v040.jsonl"}
#: Documented as not captured: pretty-printed chat documents (many lines, no line is a JSON
#: value) and logs.json (a prompt log: a JSON array).
UNCLAIMED = {"large.json", "schema_drift.json", "small.json", "logs.json",
             "session-2025-12-01T21-45-5b959dae.json",
             "session-2026-01-16T11-01-file-ops-37b7abef.json"}
#: Chat documents with the session shape (sessionId, projectHash, messages).
DOCUMENTS = ["large.json", "small.json", "session-2025-12-01T21-45-5b959dae.json",
             "session-2026-01-16T11-01-file-ops-37b7abef.json"]


def by_name(name: str) -> Path:
    return next(p for p in FILES if p.name == name)


def parse(path: Path) -> Any:
    return parse_bytes(ADAPTER, path, path.read_bytes())


def raw_messages(path: Path) -> list[dict[str, Any]]:
    """The messages of a file, read with the stdlib: a document's list, or the JSONL lines
    that have a ``type``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)["messages"]
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if "type" in r]


def one_line(path: Path, folder: Path) -> Path:
    """A one-line copy of a chat document (in tmp), named the way Gemini CLI names them."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    name = path.name if path.name.startswith("session-") else f"session-{path.name}"
    out = folder / name
    out.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def expected_counts(messages: list[dict[str, Any]]) -> dict[str, Any]:
    agent = [m for m in messages if m["type"] in ("gemini", "model")]
    calls = [c["id"] for m in agent for c in m.get("toolCalls", [])]
    tokens = [m["tokens"] for m in agent if "tokens" in m]
    return {
        "user": sum(m["type"] == "user" for m in messages),
        "agent": len(agent),
        "system": sum(m["type"] in ("info", "error", "warning") for m in messages),
        "calls": sorted(calls),
        "input": sum(t["input"] - t.get("cached", 0) + t.get("tool", 0) for t in tokens),
        "output": sum(t["output"] + t.get("thoughts", 0) for t in tokens),
        "cached": sum(t.get("cached", 0) for t in tokens),
        "thought_steps": sum(bool(m.get("thoughts")) for m in agent),
    }


def actual_counts(events: list[ev.Event]) -> dict[str, Any]:
    steps = folded_steps(events)
    usage = [s["usage"] for s in steps.values() if s["usage"] is not None]
    return {
        "user": sum(s["role"] == "user" for s in steps.values()),
        "agent": sum(s["role"] == "agent" for s in steps.values()),
        "system": sum(s["role"] == "system" for s in steps.values()),
        "calls": sorted(c.tool_call_id for s in steps.values() for c in s["calls"]),
        "input": sum(u.input_tokens for u in usage),
        "output": sum(u.output_tokens for u in usage),
        "cached": sum(u.cache_read_tokens for u in usage),
        "thought_steps": sum(bool(s["reasoning"]) for s in steps.values()),
    }


def assert_complete(events: list[ev.Event]) -> None:
    checked = check_invariants(events)
    assert not checked.unanswered, checked.unanswered
    assert checked.orphans == 0
    assert checked.results == len(checked.calls)


# ---------------------------------------------------------------------------------------------
# Corpus files in place


def test_corpus_is_present_and_registered() -> None:
    assert {p.name for p in FILES} == CLAIMED | UNCLAIMED
    assert isinstance(adapter_for("gemini-cli"), GeminiAdapter)
    assert GeminiAdapter.agent == "gemini-cli"
    assert ADAPTER.default_roots(Path("/h")) == [Path("/h/.gemini/tmp")]


def test_claimed_files_are_exactly_the_documented_ones() -> None:
    claimed = {p.name for p in FILES if parse(p).ref is not None}
    assert claimed == CLAIMED
    assert [p.name for p in ADAPTER.discover(GEMINI)] == ["jsonl_v040.jsonl"]
    # all pretty-printed (logs.json too): no first line is a whole JSON value
    for name in UNCLAIMED:
        assert first_record(by_name(name).read_bytes()) is None, name
    # and logs.json, even on one line, is an array, which identify refuses
    logs = json.loads(by_name("logs.json").read_text(encoding="utf-8"))
    assert ADAPTER.identify(by_name("logs.json"), logs) is None


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parse_never_raises_and_keeps_the_contract(path: Path) -> None:
    parsed = parse(path)
    check_invariants(parsed.events)
    if path.name in CLAIMED:
        assert not parsed.rejected
        assert_complete(parsed.events)
        assert_resume_exact(ADAPTER, path)


def test_jsonl_counts_from_raw_json() -> None:
    path = by_name("jsonl_v040.jsonl")
    events = parse(path).events
    assert actual_counts(events) == expected_counts(raw_messages(path))
    sets = sum('"$set"' in line for line in path.read_text().splitlines())
    assert sum(isinstance(e, ev.MetadataRecorded) and e.record_type == "session_update"
               for e in events) == sets == 1
    usage = folded_steps(events)[2]["usage"]
    assert (usage.input_tokens, usage.cache_read_tokens) == (12069 - 11502, 11502)


def test_identify_refuses_other_agents_files() -> None:
    others = sorted(p for d in ("claude-code", "codex", "pi")
                    for p in (CORPUS / d).rglob("*.jsonl"))
    assert others
    for path in others:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        assert ADAPTER.identify(path, first_record(head[:complete_length(head)])) is None, path
    for first in ({"type": "session", "id": "x", "cwd": "/w"},
                  {"type": "user", "sessionId": "s", "projectHash": "h"},
                  {"timestamp": "t", "type": "session_meta", "payload": {"id": "x"}},
                  {"history": []}, [1], "text", None):
        assert ADAPTER.identify(Path("x.jsonl"), first) is None


# ---------------------------------------------------------------------------------------------
# One-line chat documents (made in tmp from the real ones)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_one_line_document_counts_from_raw_json(name: str, tmp_path: Path) -> None:
    path = one_line(by_name(name), tmp_path)
    parsed = parse(path)
    assert parsed.ref is not None and not parsed.rejected
    assert parsed.ref.session_id == json.loads(path.read_text())["sessionId"]
    assert_complete(parsed.events)
    assert actual_counts(parsed.events) == expected_counts(raw_messages(by_name(name)))


def test_discover_takes_one_line_documents_only(tmp_path: Path) -> None:
    chats = tmp_path / "hash" / "chats"
    chats.mkdir(parents=True)
    made = [one_line(by_name(n), chats) for n in DOCUMENTS]
    pretty = chats / "session-pretty.json"
    pretty.write_bytes(by_name("small.json").read_bytes())
    (chats / "session-unfinished.json").write_text('{"sessionId": "x"}')  # no newline yet
    assert list(ADAPTER.discover(tmp_path)) == sorted(made)


def test_info_and_model_messages(tmp_path: Path) -> None:
    events = parse(one_line(by_name("large.json"), tmp_path)).events
    steps = folded_steps(events)
    roles = [s["role"] for s in steps.values()]
    assert roles == ["user", "agent", "agent", "system", "agent", "user", "agent"]
    assert steps[3]["content"] == "Request cancelled."
    assert steps[4]["content"] == "Captured multiline output."
    assert steps[1]["reasoning"] == "Placeholder thoughts for schema coverage."


def test_repeated_message_extends_its_step() -> None:
    ref = ADAPTER.identify(Path("s.jsonl"), {"sessionId": "s", "projectHash": "h"})
    assert ref is not None
    parser = ADAPTER.parser(ref, memory_context())
    line = LineRef(1, 0)
    msg: dict[str, Any] = {"id": "a", "type": "gemini", "content": "Hel"}
    out = parser.feed({"sessionId": "s", "projectHash": "h"}, line)
    out += parser.feed(msg, line)
    call = {"id": "c1", "name": "ls", "args": {}, "status": "success",
            "result": [{"functionResponse": {"id": "c1", "response": {"error": "nope"}}}]}
    out += parser.feed(msg | {"content": "Hello", "toolCalls": [call]}, line)
    out += parser.feed(msg | {"content": "Hello", "toolCalls": [call]}, line)
    out += parser.feed({"id": "b", "type": "user", "content": 5}, line)
    out += parser.feed({"$rewindTo": "a"}, line)
    out += parser.feed([1], line)
    assert_complete(out)
    steps = folded_steps(out)
    assert steps[0]["content"] == "Hello" and len(steps[0]["calls"]) == 1
    result = next(e for e in out if isinstance(e, ev.ToolResultRecorded))
    assert result.is_error and result.content == "nope"
    assert [e.record_type for e in out if isinstance(e, ev.MetadataRecorded)] == \
        ["session", "message_repeat", "$rewindTo", "non_object"]


# ---------------------------------------------------------------------------------------------
# End to end


def test_import_end_to_end(settings, tmp_path: Path) -> None:
    sources = api.import_sources(settings, [GEMINI], agents=["gemini-cli"])
    # an explicit folder import takes *.jsonl files only
    assert [(s.agent, Path(s.path).name) for s in sources] == [("gemini-cli",
                                                                "jsonl_v040.jsonl")]
    doc = one_line(by_name("session-2025-12-01T21-45-5b959dae.json"), tmp_path)
    sources += api.import_sources(settings, [doc], agents=["gemini-cli"])
    report = api.import_sessions(settings, sources)
    assert report.traces_created == 2 and report.lines_rejected == 0

    raw = json.loads(doc.read_text())
    ref = ADAPTER.identify(doc, raw)
    assert ref is not None
    record = api.trace_get(settings, ref.trace_id)
    expected = expected_counts(raw["messages"])
    assert record.session_id == raw["sessionId"]
    assert len(record.steps) == expected["user"] + expected["agent"] + expected["system"]
    calls = [c for s in record.steps for c in s.tool_calls]
    assert sorted(c.tool_call_id for c in calls) == expected["calls"]
    observed = [o for s in record.steps for o in s.observations]
    assert len(observed) == len(calls) and not any(o.error == "no_result" for o in observed)

    again = api.import_sessions(settings, sources)
    assert again.events_appended == 0

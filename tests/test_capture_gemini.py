"""Gemini CLI adapter: which corpus files are claimed and which are refused (with the reasons
the module documents), the contract's invariants, counts recomputed independently from the raw
JSON, revisions of a message, and an end-to-end import of the real chat documents.

The corpus is read in place (``tests.conftest.CORPUS``); anything derived from it is written to
``tmp_path`` only (never into the repository). The importer's document bookkeeping (growth,
rewrites, half-written files) is tested in ``tests/test_import_documents.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.capture import adapter as adapter_for
from opentraces.capture.base import LineRef, is_document
from opentraces.capture.gemini import GeminiAdapter
from opentraces.capture.lines import complete_length
from opentraces.capture.parse import first_record, memory_context, parse_bytes, parse_document
from opentraces.record import TraceRecord
from tests.conftest import CORPUS
from tests.test_capture_codex import assert_resume_exact, check_invariants, folded_steps

GEMINI = CORPUS / "gemini"
FILES = sorted(p for p in GEMINI.rglob("*") if p.is_file())
ADAPTER = GeminiAdapter()
#: Chat documents with the session shape (sessionId, projectHash, messages).
DOCUMENTS = ["large.json", "small.json", "session-2025-12-01T21-45-5b959dae.json",
             "session-2026-01-16T11-01-file-ops-37b7abef.json"]
CLAIMED = {"jsonl_v040.jsonl", *DOCUMENTS}
#: Documented as refused: the prompt log and the older ``{"history": [...]}`` shape.
REFUSED = {"logs.json": "Gemini CLI prompt log (logs.json)",
           "schema_drift.json": 'older Gemini chat shape ({"history": [...]})'}


def by_name(name: str) -> Path:
    return next(p for p in FILES if p.name == name)


def parse(path: Path) -> Any:
    if is_document(ADAPTER, path):
        return parse_document(ADAPTER, path, path.read_bytes())
    return parse_bytes(ADAPTER, path, path.read_bytes())


def raw_messages(path: Path) -> list[dict[str, Any]]:
    """The messages of a file, read with the stdlib: a document's list, or the JSONL lines
    that have a ``type``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)["messages"]
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if "type" in r]


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


def record_counts(record: TraceRecord) -> dict[str, Any]:
    """The same counts, read from an assembled TraceRecord."""
    steps = record.steps
    return {
        "user": sum(s.role == "user" for s in steps),
        "agent": sum(s.role == "agent" for s in steps),
        "system": sum(s.role == "system" for s in steps),
        "calls": sorted(c.tool_call_id for s in steps for c in s.tool_calls),
        "input": record.metrics.total_input_tokens,
        "output": record.metrics.total_output_tokens,
        "cached": record.metrics.total_cache_read_tokens,
        "thought_steps": sum(bool(s.reasoning_content) for s in steps),
    }


def assert_complete(events: list[ev.Event]) -> None:
    checked = check_invariants(events)
    assert not checked.unanswered, checked.unanswered
    assert checked.orphans == 0
    assert checked.results == len(checked.calls)


# ---------------------------------------------------------------------------------------------
# Corpus files in place


def test_corpus_is_present_and_registered() -> None:
    assert {p.name for p in FILES} == CLAIMED | set(REFUSED)
    assert isinstance(adapter_for("gemini-cli"), GeminiAdapter)
    assert GeminiAdapter.agent == "gemini-cli"
    assert ADAPTER.default_roots(Path("/h")) == [Path("/h/.gemini/tmp")]


def test_claimed_and_refused_files_are_exactly_the_documented_ones() -> None:
    claimed = {p.name for p in FILES if parse(p).ref is not None}
    assert claimed == CLAIMED
    for name, reason in REFUSED.items():
        document = json.loads(by_name(name).read_text(encoding="utf-8"))
        assert ADAPTER.identify(by_name(name), document) is None
        refusal = ADAPTER.refusal(by_name(name), document)
        assert refusal is not None and refusal.startswith(reason), refusal
    # a session document is never refused, and JSON that is not Gemini's is not "its" file
    for name in DOCUMENTS:
        assert ADAPTER.refusal(by_name(name), json.loads(by_name(name).read_text())) is None
    for other in ({"name": "pkg", "version": "1.0.0"}, [1, 2], [], "text", None):
        assert ADAPTER.refusal(Path("package.json"), other) is None


def test_discover_takes_jsonl_and_chat_documents_only(tmp_path: Path) -> None:
    # on the corpus folder: what Gemini CLI itself writes (session-*.json), not the prompt log
    assert [p.name for p in ADAPTER.discover(GEMINI)] == [
        "jsonl_v040.jsonl", "session-2025-12-01T21-45-5b959dae.json",
        "session-2026-01-16T11-01-file-ops-37b7abef.json"]
    chats = tmp_path / "hash" / "chats"
    chats.mkdir(parents=True)
    (chats / "session-unfinished.json").write_text('{"sessionId": "x"')
    (tmp_path / "hash" / "logs.json").write_text("[]")
    assert [p.name for p in ADAPTER.discover(tmp_path)] == ["session-unfinished.json"]
    assert is_document(ADAPTER, chats / "session-unfinished.json")
    assert not is_document(ADAPTER, by_name("jsonl_v040.jsonl"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parse_never_raises_and_keeps_the_contract(path: Path) -> None:
    parsed = parse(path)
    check_invariants(parsed.events)
    assert not parsed.rejected
    if path.name in CLAIMED:
        assert_complete(parsed.events)
    if path.suffix == ".jsonl":
        assert_resume_exact(ADAPTER, path)


@pytest.mark.parametrize("name", ["jsonl_v040.jsonl", *DOCUMENTS])
def test_counts_from_raw_json(name: str) -> None:
    path = by_name(name)
    parsed = parse(path)
    assert actual_counts(parsed.events) == expected_counts(raw_messages(path))
    if path.suffix == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert parsed.ref.session_id == raw["sessionId"]
        assert parsed.end_offset == parsed.lines_read == len(raw["messages"])


def test_jsonl_details() -> None:
    path = by_name("jsonl_v040.jsonl")
    events = parse(path).events
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


def test_a_half_written_document_names_its_session(tmp_path: Path) -> None:
    data = by_name("session-2025-12-01T21-45-5b959dae.json").read_bytes()
    whole = json.loads(data)
    cut = tmp_path / "session-cut.json"
    for size in (len(data) // 2, data.index(b'"messages"') + 5):
        cut.write_bytes(data[:size])
        parsed = parse(cut)
        assert parsed.ref is not None and parsed.ref.session_id == whole["sessionId"]
        assert parsed.ref.extra["project_hash"] == whole["projectHash"]
        ((line, bad),) = parsed.rejected
        assert line.number == data[:size].rstrip().count(b"\n") + 1
        assert data[:size].startswith(bad.raw, line.offset) and not parsed.events
    # cut before its ids: nothing names the session
    assert ADAPTER.identify_partial(cut, data[:data.index(b'"projectHash"')]) is None
    # ids are taken from the header only, never from a message's text
    assert ADAPTER.identify_partial(cut, b'{"messages": [{"sessionId": "a", '
                                         b'"projectHash": "b"') is None


def test_info_and_model_messages() -> None:
    events = parse(by_name("large.json")).events
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


def test_a_revised_response_gains_its_thoughts_tokens_and_results() -> None:
    """Gemini CLI writes a response, then adds its thoughts, token counts and tool results to
    the same message: the revision extends the step instead of making a second one."""
    ref = ADAPTER.identify(Path("s.json"), {"sessionId": "s", "projectHash": "h"})
    assert ref is not None
    parser = ADAPTER.parser(ref, memory_context())
    line = LineRef(1, 0)
    call = {"id": "c1", "name": "read_file", "args": {"absolute_path": "/a"},
            "status": "executing"}
    first: dict[str, Any] = {"id": "m", "type": "gemini", "content": "", "toolCalls": [call]}
    out = parser.feed(first, line)
    assert [type(e).__name__ for e in out] == ["StepRecorded"]   # no result yet
    done = call | {"status": "success", "result": [
        {"functionResponse": {"id": "c1", "response": {"output": "text of /a"}}}]}
    tokens = {"input": 100, "output": 5, "cached": 40, "thoughts": 7, "tool": 0}
    revised = first | {"toolCalls": [done], "tokens": tokens,
                       "thoughts": [{"subject": "Plan", "description": "read it"}]}
    more = parser.feed(revised, line)
    assert [type(e).__name__ for e in more] == ["StepExtended", "ToolResultRecorded"]
    extended = more[0]
    assert isinstance(extended, ev.StepExtended)
    assert extended.tool_calls == [] and extended.reasoning_content == "Plan\nread it"
    assert extended.token_usage == ev.TokenUsage(input_tokens=60, output_tokens=12,
                                                 cache_read_tokens=40)
    assert parser.feed(revised, line)[0].record_type == "message_repeat"  # nothing new
    assert_complete(out + more)


# ---------------------------------------------------------------------------------------------
# End to end


def test_import_end_to_end(settings) -> None:
    sources = api.import_sources(settings, [GEMINI])
    # every corpus file is listed for Gemini (none taken by another agent's adapter)
    assert sorted((s.agent, Path(s.path).name) for s in sources) == sorted(
        ("gemini-cli", p.name) for p in FILES)
    report = api.import_sessions(settings, sources)
    assert report.traces_created == len(CLAIMED) and report.lines_rejected == 0
    assert sorted((Path(s.path).name, s.reason.split(":")[0]) for s in report.skipped) == \
        sorted((name, reason.split(":")[0]) for name, reason in REFUSED.items())
    assert report.lines_read == sum(len(raw_messages(by_name(n))) for n in DOCUMENTS) + \
        len(by_name("jsonl_v040.jsonl").read_text().splitlines())

    for name in sorted(CLAIMED):
        path = by_name(name)
        first = json.loads(path.read_text().splitlines()[0]) if path.suffix == ".jsonl" \
            else json.loads(path.read_text())
        record = api.trace_get(settings, ev.trace_id_for("gemini-cli", first["sessionId"]))
        expected = expected_counts(raw_messages(path))
        assert record.session_id == first["sessionId"]
        assert record_counts(record) == expected, name
        assert [s.step_index for s in record.steps] == list(range(len(record.steps)))
        observed = [o for s in record.steps for o in s.observations]
        assert len(observed) == len(expected["calls"])
        assert not any(o.error == "no_result" for o in observed), name
        assert record.metadata["rejected_lines"] == 0

    again = api.import_sessions(settings, sources)
    assert (again.events_appended, again.sources_unchanged) == (0, len(CLAIMED))

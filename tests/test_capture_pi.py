"""Pi adapter: the contract's invariants on every corpus file, counts recomputed independently
from the raw JSON of the genuine files (splitting the concatenated lines with the stdlib
``raw_decode``, not with ``lines.decode``), resume determinism, the v3 tree file, and synthetic
records for each mapping rule.

The corpus is read in place (``tests.conftest.CORPUS``); nothing is copied.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentraces import events as ev
from opentraces.capture import adapter as adapter_for
from opentraces.capture.base import LineRef
from opentraces.capture.lines import decode, iter_lines
from opentraces.capture.parse import memory_context, parse_bytes, parse_file
from opentraces.capture.pi import PiAdapter
from tests.conftest import CORPUS
from tests.test_capture_codex import (
    assert_resume_exact,
    check_invariants,
    failing_context,
    folded_steps,
    json_values,
    per_record,
)

PI = CORPUS / "pi"
FILES = sorted(PI.rglob("*.jsonl"))
GENUINE = sorted([*(PI / "pi-mono-fixtures").glob("*.jsonl"),
                  *(PI / "pi-mono-history").glob("*.jsonl")])
HISTORY = sorted((PI / "pi-mono-history").glob("*.jsonl"))
TREE = PI / "agent-sessions-stage0" / "small.jsonl"


def raw_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record of a file, two-per-line artifacts split with the stdlib."""
    out = []
    dec = json.JSONDecoder()
    for line in path.read_text(encoding="utf-8").splitlines():
        text, i = line.strip(), 0
        while i < len(text):
            value, i = dec.raw_decode(text, i)
            out.append(value)
            while i < len(text) and text[i].isspace():
                i += 1
    return out


def messages(raw: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [r["message"] for r in raw if r.get("type") == "message"
            and r["message"].get("role") == role]


def of(events: list[ev.Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def meta_types(events: list[ev.Event]) -> list[str]:
    return [e.record_type for e in of(events, ev.MetadataRecorded)]


# ---------------------------------------------------------------------------------------------
# Corpus: every file


def test_corpus_is_present() -> None:
    assert len(FILES) == 5 and len(GENUINE) == 4 and len(HISTORY) == 2 and TREE.is_file(), PI


def test_registry_resolves_pi() -> None:
    assert isinstance(adapter_for("pi"), PiAdapter)
    assert PiAdapter.agent == "pi"


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_file_parses_within_the_contract(path: Path) -> None:
    parsed = parse_file(PiAdapter(), path)
    assert parsed.ref is not None and parsed.ref.agent == "pi"
    assert parsed.rejected == []
    assert parsed.lines_read == len(path.read_bytes().splitlines())
    checked = check_invariants(parsed.events)
    assert checked.orphans == 0
    _, recs, _ = per_record(PiAdapter(), path)
    assert len(recs) == len(raw_records(path))
    for line, record, events in recs:
        assert events, f"line {line.number} ({record.get('type')}) produced nothing"


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_resume_from_any_line_is_exact(path: Path) -> None:
    assert_resume_exact(PiAdapter(), path)


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: p.name)
def test_two_records_on_one_line_are_both_recovered(path: Path) -> None:
    data = path.read_bytes()
    double = [(line, decode(raw)) for line, raw in iter_lines(data)]
    double = [(line, values) for line, values in double
              if isinstance(values, list) and len(values) == 2]
    assert len(double) == 1, "each history file has exactly one such line"
    (line, (first, second)), = double
    assert first["message"]["role"] == "assistant"
    _, recs, rejected = per_record(PiAdapter(), path, data)
    assert rejected == []
    on_line = [evs for ln, _, evs in recs if ln.number == line.number]
    assert len(on_line) == 2 and all(on_line)
    agent = on_line[0][0]
    assert isinstance(agent, ev.StepRecorded) and agent.role == "agent"
    assert agent.token_usage is not None
    assert agent.token_usage.output_tokens == first["message"]["usage"]["output"]
    if second["type"] == "compaction":  # compact.jsonl
        compaction = on_line[1][0]
        assert isinstance(compaction, ev.CompactionRecorded)
        assert compaction.pre_tokens == second["tokensBefore"] == 131140
        assert compaction.summary == second["summary"]
    else:  # session.jsonl: the next prompt, "ok"
        step = on_line[1][0]
        assert isinstance(step, ev.StepRecorded) and step.role == "user"
        assert step.content == "ok" and step.step_index == agent.step_index + 1


# ---------------------------------------------------------------------------------------------
# Corpus: counts recomputed from the raw JSON of the genuine files


@pytest.mark.parametrize("path", GENUINE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_genuine_counts_match_the_raw_messages(path: Path) -> None:
    raw = raw_records(path)
    events = parse_file(PiAdapter(), path).events
    steps = folded_steps(events)
    agent = [s for s in steps.values() if s["role"] == "agent"]
    users = [s for s in steps.values() if s["role"] == "user"]
    assistant = messages(raw, "assistant")
    bash = messages(raw, "bashExecution")
    # one agent step per assistant message, one user step per prompt or `!` command
    assert len(agent) == len(assistant)
    assert len(users) == len(messages(raw, "user")) + len(bash)
    assert not [s for s in steps.values() if s["role"] == "system"]
    # tool calls: every toolCall block, in order, with its arguments
    blocks = [b for m in assistant for b in m["content"] if b.get("type") == "toolCall"]
    calls = [c for s in agent for c in s["calls"]]
    assert [(c.tool_call_id, c.tool_name) for c in calls] == \
        [(b["id"], b["name"]) for b in blocks]
    for call, block in zip(calls, blocks, strict=True):
        if call.input_blob is None:
            assert call.input == block["arguments"]
    # results: every toolResult, on the step of its call; bash runs pair with their own call
    results = of(events, ev.ToolResultRecorded)
    tool_results = messages(raw, "toolResult")
    bash_results = [r for r in results if r.tool_call_id.startswith("bash-execution:")]
    assert [r.tool_call_id for r in results if r not in bash_results] == \
        [m["toolCallId"] for m in tool_results]
    assert len(bash_results) == len(bash)
    assert sum(r.is_error for r in results if r not in bash_results) == \
        sum(m["isError"] for m in tool_results)
    assert [r.is_error for r in bash_results] == [b["exitCode"] != 0 or b["cancelled"]
                                                  for b in bash]
    for result, msg in zip([r for r in results if r not in bash_results], tool_results,
                           strict=True):
        text = "\n".join(b["text"] for b in msg["content"] if b["type"] == "text")
        assert result.output_chars == len(text) and text.startswith(result.content)
    # calls with no result (aborted turns) are left unanswered, never invented
    answered = {m["toolCallId"] for m in tool_results}
    assert check_invariants(events).unanswered == {b["id"] for b in blocks} - answered
    # usage and cost: summed over steps exactly as over the raw messages
    for key, field in (("input", "input_tokens"), ("output", "output_tokens"),
                       ("cacheRead", "cache_read_tokens"), ("cacheWrite", "cache_write_tokens")):
        assert sum(getattr(s["usage"], field) for s in agent) == \
            sum(m["usage"][key] for m in assistant)
    assert math.isclose(sum(s["cost"] for s in agent),
                        sum(m["usage"]["cost"]["total"] for m in assistant), rel_tol=1e-12)
    assert [s["model"] for s in agent] == [m["model"] for m in assistant]
    # thinking: text in reasoning_content, signatures opaque in blobs
    thinking = [b for m in assistant for b in m["content"] if b.get("type") == "thinking"]
    assert sum(len(s["reasoning"]) > 0 for s in agent) == \
        sum(any(b.get("type") == "thinking" and b["thinking"] for b in m["content"])
            for m in assistant)
    assert meta_types(events).count("thinking_signature") == \
        sum(1 for b in thinking if b.get("thinkingSignature"))
    # compactions, model changes, thinking-level changes
    compactions = [r for r in raw if r["type"] == "compaction"]
    assert [(c.pre_tokens, c.summary) for c in of(events, ev.CompactionRecorded)] == \
        [(r["tokensBefore"], r["summary"]) for r in compactions]
    models = [r["modelId"] for r in raw if r["type"] == "model_change"]
    header = [raw[0]["modelId"]] if raw[0].get("modelId") else []
    assert [i.model for i in of(events, ev.SessionInfo) if i.model] == header + models
    assert meta_types(events).count("thinking_level_change") == \
        sum(r["type"] == "thinking_level_change" for r in raw)
    stops = [m for m in assistant if m["stopReason"] not in ("stop", "toolUse")
             or m.get("errorMessage")]
    assert meta_types(events).count("assistant_stop") == len(stops)


def test_genuine_session_facts() -> None:
    path = PI / "pi-mono-fixtures" / "before-compaction.jsonl"
    raw = raw_records(path)
    events = parse_file(PiAdapter(), path).events
    info = of(events, ev.SessionInfo)[0]
    assert info.cwd == raw[0]["cwd"] and info.model == "claude-opus-4-5"
    header = next(e for e in of(events, ev.MetadataRecorded) if e.record_type == "session")
    assert header.data["branched_from_session_id"] == "d97339c6-6c10-4827-846b-9ff1d9c3dc37"
    assert header.data["provider"] == "anthropic"
    ref = PiAdapter().identify(path, raw[0])
    assert ref is not None and ref.session_id == raw[0]["id"] and ref.extra["cwd"] == info.cwd
    # the first bash run, typed by the user
    first = next(s for s in folded_steps(events).values() if s["calls"] and s["role"] == "user")
    assert first["content"] == "!ls" and first["calls"][0].input == {"command": "ls"}


def test_half_typed_commands_are_not_skills() -> None:
    """large-session.jsonl: `/mode`, `/them`, `/the` were sent as prompts and aborted; pi
    never ran them, so they are noted, not counted as skills."""
    events = parse_file(PiAdapter(), PI / "pi-mono-fixtures" / "large-session.jsonl").events
    assert of(events, ev.SkillInvoked) == []
    noted = [e.data["command"] for e in of(events, ev.MetadataRecorded)
             if e.record_type == "slash_text"]
    assert noted == ["mode", "them", "them", "the"]


def test_tree_file_keeps_ids_and_parents() -> None:
    events = parse_file(PiAdapter(), TREE).events
    raw = raw_records(TREE)
    steps = of(events, ev.StepRecorded)
    entries = [r for r in raw if r["type"] == "message"]
    assert [(s.source_uuid, s.source_parent_uuid) for s in steps] == \
        [(r["id"], r["parentId"]) for r in entries]
    # model_change -> thinking_level_change -> user: no step above the first prompt
    assert [s.parent_step for s in steps] == [None, 0, 1, 2]
    compactions = of(events, ev.CompactionRecorded)
    assert [(c.boundary_uuid, c.logical_parent_uuid, c.step_index, c.pre_tokens)
            for c in compactions] == [("c139a627", "22a2720e", 2, 19),
                                      ("2c19d326", "4a666296", 4, 19)]
    kept = [e.data for e in of(events, ev.MetadataRecorded) if e.record_type == "compaction"]
    assert kept[0]["firstKeptEntryId"] == "f7c7091e" and kept[0]["fromHook"] is False
    assert [i.model for i in of(events, ev.SessionInfo) if i.model] == ["pi-fixture-model"]
    ref = PiAdapter().identify(TREE, raw[0])
    assert ref is not None and ref.extra["format_version"] == 3


# ---------------------------------------------------------------------------------------------
# Synthetic records

TS = "2025-12-09T00:53:29.825Z"
HEADER = {"type": "session", "id": "ffae836b-9420-4060-ac13-7745215f90ff", "timestamp": TS,
          "cwd": "/w", "provider": "anthropic", "modelId": "m0", "thinkingLevel": "off"}


def msg(role: str, **fields: Any) -> dict[str, Any]:
    return {"type": "message", "timestamp": TS, "message": {"role": role, **fields}}


def answer(*blocks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"api": "anthropic-messages", "provider": "anthropic", "model": "m1",
            "usage": {"input": 1, "output": 2, "cacheRead": 3, "cacheWrite": 4,
                      "cost": {"total": 0.5}}, "stopReason": "toolUse"}
    return msg("assistant", content=list(blocks), **(base | fields))


def run(*records: Any, raw_line: bytes = b"") -> list[ev.Event]:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in [HEADER, *records]) + raw_line
    path = Path("2025-12-09T00-53-29-825Z_ffae836b-9420-4060-ac13-7745215f90ff.jsonl")
    parsed = parse_bytes(PiAdapter(), path, data)
    assert parsed.ref is not None and parsed.rejected == []
    _, recs, _ = per_record(PiAdapter(), path, data)
    assert all(evs for _, _, evs in recs)
    check_invariants(parsed.events)
    return parsed.events


def test_assistant_message_is_one_step() -> None:
    events = run(msg("user", content="hi"),
                 answer({"type": "thinking", "thinking": "hmm", "thinkingSignature": "SIG"},
                        {"type": "text", "text": "reading"},
                        {"type": "toolCall", "id": "t1", "name": "read",
                         "arguments": {"path": "a"}},
                        {"type": "toolCall", "id": "t2", "name": "bash",
                         "partialJson": '{"command": "l'}, responseId="resp_1"),
                 msg("toolResult", toolCallId="t1", toolName="read",
                     content=[{"type": "text", "text": "A"},
                              {"type": "image", "data": base64.b64encode(b"PNG").decode(),
                               "mimeType": "image/png"}],
                     details={"diff": "x"}, isError=False),
                 msg("toolResult", toolCallId="t2", toolName="bash",
                     content=[{"type": "text", "text": "boom"}], isError=True))
    (user, agent) = of(events, ev.StepRecorded)
    assert user.content == "hi" and agent.content == "reading"
    assert agent.reasoning_content == "hmm" and agent.message_id == "resp_1"
    assert agent.token_usage == ev.TokenUsage(input_tokens=1, output_tokens=2,
                                              cache_read_tokens=3, cache_write_tokens=4)
    assert agent.cost_usd == 0.5 and agent.model == "m1"
    assert [(c.tool_call_id, c.input) for c in agent.tool_calls] == [
        ("t1", {"path": "a"}), ("t2", {"raw": '{"command": "l'})]
    results = of(events, ev.ToolResultRecorded)
    assert [(r.step_index, r.content, r.is_error) for r in results] == [(1, "A", False),
                                                                       (1, "boom", True)]
    assert results[0].detail["details"] == {"diff": "x"}
    assert results[0].detail["images"][0]["size"] == 3
    sig = [e.data for e in of(events, ev.MetadataRecorded) if e.record_type ==
           "thinking_signature"]
    assert sig == [{"blob": sig[0]["blob"], "size": 3, "step_index": 1}]
    assert "SIG" not in json.dumps([e.data for e in of(events, ev.MetadataRecorded)])


def test_user_images_and_bash_execution() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    events = run(msg("user", content=[{"type": "text", "text": "see"},
                                      {"type": "image", "data": png, "mimeType": "image/png"}]),
                 msg("bashExecution", command="false", output="", exitCode=1, cancelled=False,
                     truncated=False),
                 msg("bashExecution", command="sleep 9", output="", exitCode=None,
                     cancelled=True, truncated=False))
    steps = of(events, ev.StepRecorded)
    assert steps[0].images[0].size == 4 and steps[0].images[0].media_type == "image/png"
    assert [(s.role, s.content, s.tool_calls[0].tool_call_id) for s in steps[1:]] == [
        ("user", "!false", "bash-execution:1"), ("user", "!sleep 9", "bash-execution:2")]
    assert [r.is_error for r in of(events, ev.ToolResultRecorded)] == [True, True]


def test_orphan_result_and_unknown_records() -> None:
    events = run(msg("toolResult", toolCallId="nope", content=[{"type": "text", "text": "x"}]),
                 {"type": "custom", "customType": "ext", "data": {"a": 1}},
                 {"type": "custom_message", "customType": "ext", "content": "hello",
                  "display": True},
                 {"type": "branch_summary", "summary": "s", "fromId": "abc"},
                 {"type": "label", "targetId": "abc", "label": "checkpoint"},
                 {"type": "session_info", "name": "My session"},
                 {"type": "thinking_level_change", "thinkingLevel": "high"},
                 {"type": "future"}, msg("compactionSummary", summary="s"),
                 {"type": "message", "message": "not a dict"}, [1], None, "x",
                 {"no": "type"}, msg("user", content=[{"type": "text", "text": "/skill:x go"}]))
    assert of(events, ev.ToolResultRecorded) == []
    kinds = meta_types(events)
    for expected in ("tool_result_orphan", "custom", "custom_message", "branch_summary",
                     "label", "session_info", "thinking_level_change", "future",
                     "message:compactionSummary", "message:invalid", "non_object", "unknown",
                     "slash_text"):
        assert expected in kinds, expected
    assert [i.title for i in of(events, ev.SessionInfo) if i.title] == ["My session"]
    assert of(events, ev.SkillInvoked) == []


def test_model_change_and_error_stop() -> None:
    events = run({"type": "model_change", "provider": "openai", "modelId": "gpt-5"},
                 msg("user", content="hi"),
                 answer(stopReason="error", errorMessage="400 bad", usage={}, model=None))
    assert [i.model for i in of(events, ev.SessionInfo) if i.model] == ["m0", "gpt-5"]
    agent = of(events, ev.StepRecorded)[1]
    assert agent.model == "gpt-5" and agent.content == "" and agent.tool_calls == []
    stop = [e.data for e in of(events, ev.MetadataRecorded) if e.record_type ==
            "assistant_stop"]
    assert stop == [{"step_index": 1, "stop_reason": "error", "error_message": "400 bad"}]


def test_a_failure_inside_a_record_leaves_no_gap() -> None:
    ad = PiAdapter()
    ctx = failing_context(ValueError("odd shape"), "application/octet-stream")  # signatures
    parser = ad.parser(ad.identify(Path("x.jsonl"), HEADER), ctx)  # type: ignore[arg-type]
    records = [HEADER, msg("user", content="hi"),
               answer({"type": "thinking", "thinking": "t", "thinkingSignature": "S"},
                      {"type": "toolCall", "id": "t1", "name": "read", "arguments": {}}),
               msg("toolResult", toolCallId="t1", content=[{"type": "text", "text": "x"}]),
               answer({"type": "text", "text": "done"})]
    out: list[ev.Event] = []
    for n, r in enumerate(records, start=1):
        out += parser.feed(r, LineRef(number=n, offset=n))
    assert meta_types(out).count("tool_result_orphan") == 1  # its call was never recorded
    check_invariants(out, errors=1)
    assert [(s.step_index, s.content) for s in of(out, ev.StepRecorded)] == [(0, "hi"),
                                                                            (1, "done")]


def test_a_blob_store_failure_propagates() -> None:
    ad = PiAdapter()
    ctx = failing_context(OSError("disk full"), "image/png")
    parser = ad.parser(ad.identify(Path("x.jsonl"), HEADER), ctx)  # type: ignore[arg-type]
    image = {"type": "image", "data": base64.b64encode(b"PNG").decode(), "mimeType": "image/png"}
    with pytest.raises(OSError, match="disk full"):
        parser.feed(msg("user", content=[image]), LineRef(1, 0))


def test_concatenated_records_in_a_synthetic_line() -> None:
    line = (json.dumps(answer({"type": "text", "text": "a"}, stopReason="stop"))
            + json.dumps({"type": "compaction", "summary": "S", "firstKeptEntryIndex": 3,
                          "tokensBefore": 99})).encode() + b"\n"
    events = run(msg("user", content="hi"), raw_line=line)
    assert [type(e).__name__ for e in events if not isinstance(e, ev.MetadataRecorded)][-2:] \
        == ["StepRecorded", "CompactionRecorded"]
    assert of(events, ev.CompactionRecorded)[0].step_index == 2


def test_identify_and_discover(tmp_path: Path) -> None:
    ad = PiAdapter()
    assert ad.default_roots(tmp_path) == [tmp_path / ".pi" / "agent" / "sessions"]
    assert ad.identify(Path("a.jsonl"), None) is None
    assert ad.identify(Path("a.jsonl"), {"type": "session"}) is None
    assert ad.identify(Path("a.jsonl"), {"type": "session_meta", "payload": {"id": "x"}}) is None
    assert ad.identify(Path("a.jsonl"), {"type": "user"}) is None
    folder = tmp_path / "--Users-me-proj--"
    folder.mkdir()
    for name in ("2025-12-09T01_b.jsonl", "2025-12-09T00_a.jsonl", "notes.txt"):
        (folder / name).write_text("")
    assert list(ad.discover(tmp_path)) == [folder / "2025-12-09T00_a.jsonl",
                                           folder / "2025-12-09T01_b.jsonl"]


ENTRY_TYPES = ["session", "message", "model_change", "thinking_level_change", "compaction",
               "branch_summary", "custom", "custom_message", "label", "session_info", "x"]
ROLES = ["user", "assistant", "toolResult", "bashExecution", "custom", "y"]
KEYS = ["id", "parentId", "timestamp", "cwd", "modelId", "summary", "tokensBefore", "fromHook",
        "name", "label", "targetId", "message"]
MESSAGE_KEYS = ["content", "usage", "model", "stopReason", "errorMessage", "toolCallId",
                "toolName", "details", "isError", "command", "output", "exitCode", "cancelled",
                "responseId"]
blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "thinking", "toolCall", "image", 3])},
    optional={k: json_values for k in ("text", "thinking", "thinkingSignature", "id", "name",
                                       "arguments", "partialJson", "data", "mimeType")})
pi_messages = st.builds(
    lambda role, fields, content: {"role": role, **fields, **({"content": content}
                                                              if content is not None else {})},
    st.sampled_from(ROLES), st.dictionaries(st.sampled_from(MESSAGE_KEYS), json_values,
                                            max_size=5),
    st.none() | st.text(max_size=10) | st.lists(blocks, max_size=4))
entries = st.builds(
    lambda kind, fields, message: {"type": kind, **fields} | (
        {"message": message} if kind == "message" else {}),
    st.sampled_from(ENTRY_TYPES), st.dictionaries(st.sampled_from(KEYS), json_values,
                                                  max_size=4), pi_messages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries | json_values, max_size=12))
def test_arbitrary_records_never_break_the_contract(stream: list[Any]) -> None:
    ad = PiAdapter()
    parser = ad.parser(ad.identify(Path("x.jsonl"), HEADER), memory_context())  # type: ignore[arg-type]
    out: list[ev.Event] = []
    for n, value in enumerate([HEADER, *stream], start=1):
        events = parser.feed(value, LineRef(number=n, offset=n * 10))
        assert events
        out += events
    check_invariants(out)


def test_counts_of_roles_and_types_in_the_genuine_files() -> None:
    """The raw tallies PROVENANCE.md reports, so a changed corpus is noticed."""
    tallies = {p.name: Counter(r["message"]["role"] if r["type"] == "message" else r["type"]
                               for r in raw_records(p)) for p in GENUINE}
    assert tallies["before-compaction.jsonl"]["assistant"] == 484
    assert tallies["large-session.jsonl"]["toolResult"] == 373
    assert tallies["compact.jsonl"]["compaction"] == 2
    assert tallies["session.jsonl"]["compaction"] == 1

"""Codex CLI adapter: the contract's invariants on every corpus file, counts recomputed
independently from the raw JSON of the genuine files, resume determinism, and synthetic records
for each mapping rule (duplicates, injected context, tools, usage, compaction, odd input).

The corpus is read in place (``tests.conftest.CORPUS``); nothing is copied.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentraces import events as ev
from opentraces.capture import adapter as adapter_for
from opentraces.capture.base import INLINE_CHARS, Adapter, Context, LineRef
from opentraces.capture.codex import CodexAdapter
from opentraces.capture.codex_rollout import is_injected
from opentraces.capture.lines import Rejected, decode, iter_lines
from opentraces.capture.parse import first_record, memory_context, parse_bytes, parse_file
from tests.conftest import CORPUS

CODEX = CORPUS / "codex"
FILES = sorted(CODEX.rglob("*.jsonl"))
GENUINE = sorted((CODEX / "codemie-code").glob("*.jsonl"))
FULL = next((p for p in GENUINE if "019e1625" in p.name), None)  # 0.125.0, complete rollout
DESKTOP = next((p for p in GENUINE if "019e1695" in p.name), None)  # 0.128, filtered


# ---------------------------------------------------------------------------------------------
# Shared checks (also used by tests/test_capture_pi.py)


def per_record(adapter: Adapter, path: Path, data: bytes | None = None
               ) -> tuple[Any, list[tuple[LineRef, Any, list[ev.Event]]], list[Rejected]]:
    """Feed a file record by record, keeping which events each decoded record produced."""
    data = path.read_bytes() if data is None else data
    ref = adapter.identify(path, first_record(data))
    out: list[tuple[LineRef, Any, list[ev.Event]]] = []
    rejected: list[Rejected] = []
    if ref is None:
        return None, out, rejected
    parser = adapter.parser(ref, memory_context())
    for line, raw in iter_lines(data):
        values = decode(raw)
        if isinstance(values, Rejected):
            rejected.append(values)
            continue
        for value in values:
            out.append((line, value, parser.feed(value, line)))
    return ref, out, rejected


class Checked(msgspec.Struct):
    steps: int = 0
    calls: dict[str, int] = {}
    results: int = 0
    orphans: int = 0
    unanswered: set[str] = set()


def check_invariants(events: list[ev.Event], *, errors: int = 0) -> Checked:
    """The contract: dense steps in order, references to existing steps, results on the step
    holding their call, orphans explicit, no "no_result", everything storable; ``errors`` is how
    many adapter_error records are expected (none, except where a test provokes one)."""
    c = Checked(calls={}, unanswered=set())
    for e in events:
        # storable as the store stores it (msgpack, strict: no fallback), and stable through it
        packed = msgspec.msgpack.encode(e)
        assert msgspec.msgpack.encode(msgspec.msgpack.decode(packed, type=ev.AnyEvent)) == packed
        if isinstance(e, ev.StepRecorded):
            assert e.step_index == c.steps, f"step {e.step_index} where {c.steps} was due"
            c.steps += 1
            assert e.role in ("user", "agent", "system")
            for call in e.tool_calls:
                c.calls[call.tool_call_id] = e.step_index
                c.unanswered.add(call.tool_call_id)
        elif isinstance(e, ev.StepExtended):
            assert 0 <= e.step_index < c.steps
            for call in e.tool_calls:
                c.calls[call.tool_call_id] = e.step_index
                c.unanswered.add(call.tool_call_id)
        elif isinstance(e, ev.ToolResultRecorded):
            assert 0 <= e.step_index < c.steps
            assert c.calls.get(e.tool_call_id) == e.step_index, e.tool_call_id
            assert not e.no_result
            assert e.output_chars >= len(e.content)
            assert (e.content_blob is not None) == (e.output_chars > len(e.content))
            c.results += 1
            c.unanswered.discard(e.tool_call_id)
        elif isinstance(e, ev.SkillInvoked | ev.SubagentLinked):
            assert 0 <= e.step_index < c.steps
        elif isinstance(e, ev.CompactionRecorded):
            assert 0 <= e.step_index <= c.steps
        elif isinstance(e, ev.MetadataRecorded):
            if e.record_type == "adapter_error":
                errors -= 1
                assert errors >= 0, e.data
            if e.record_type == "tool_result_orphan":
                c.orphans += 1
        else:
            assert isinstance(e, ev.SessionInfo | ev.UsageTotalsRecorded | ev.SessionEnded), e
    assert errors == 0, "fewer adapter_error records than expected"
    return c


def folded_steps(events: list[ev.Event]) -> dict[int, dict[str, Any]]:
    """Steps with their extensions applied (text appended, usage replaced)."""
    steps: dict[int, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, ev.StepRecorded):
            steps[e.step_index] = {"role": e.role, "content": e.content,
                                   "reasoning": e.reasoning_content or "",
                                   "calls": list(e.tool_calls), "usage": e.token_usage,
                                   "cost": e.cost_usd, "model": e.model, "images": list(e.images),
                                   "event": e}
        elif isinstance(e, ev.StepExtended):
            s = steps[e.step_index]
            s["content"] += e.content
            s["reasoning"] += e.reasoning_content or ""
            s["calls"] += e.tool_calls
            s["images"] += e.images
            if e.token_usage is not None:
                s["usage"] = e.token_usage
    return steps


def assert_resume_exact(adapter: Adapter, path: Path, points: int = 12) -> None:
    """Importing from any line start gives exactly the events a full import gives there, and a
    file read while growing (cut mid-line) adds up to the full import."""
    data = path.read_bytes()
    ref, recs, _ = per_record(adapter, path, data)
    if ref is None:
        return
    full = parse_bytes(adapter, path, data).events
    assert full == [e for _, _, evs in recs for e in evs]
    offsets = sorted({line.offset for line, _, _ in recs})
    for off in offsets[:: max(1, len(offsets) // points)]:
        tail = parse_bytes(adapter, path, data, resume=off).events
        assert tail == [e for line, _, evs in recs if line.offset >= off for e in evs]
    for cut in (len(data) // 3, len(data) // 2 + 7, len(data) - 1):
        head = parse_bytes(adapter, path, data[:cut])
        rest = parse_bytes(adapter, path, data, resume=head.end_offset)
        assert head.events + rest.events == full


# ---------------------------------------------------------------------------------------------
# Corpus: every file


def test_corpus_is_present() -> None:
    assert len(FILES) >= 5 and FULL is not None and DESKTOP is not None, CODEX


def test_registry_resolves_codex() -> None:
    assert isinstance(adapter_for("codex-cli"), CodexAdapter)
    assert CodexAdapter.agent == "codex-cli"


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_file_parses_within_the_contract(path: Path) -> None:
    parsed = parse_file(CodexAdapter(), path)
    if path.name == "schema_drift.jsonl":
        # a drifted catalogue with no session_meta envelope: not claimed, not parsed
        assert parsed.ref is None and parsed.events == []
        return
    assert parsed.ref is not None and parsed.ref.agent == "codex-cli"
    assert parsed.rejected == []
    check_invariants(parsed.events)
    _, recs, _ = per_record(CodexAdapter(), path)
    assert recs, path
    for line, record, events in recs:
        assert events, f"line {line.number} ({record.get('type')}) produced nothing"


@pytest.mark.parametrize("path", [p for p in FILES if p.name != "schema_drift.jsonl"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_resume_from_any_line_is_exact(path: Path) -> None:
    assert_resume_exact(CodexAdapter(), path)


# ---------------------------------------------------------------------------------------------
# Corpus: counts recomputed from the raw JSON of the genuine files

AGENT_SIDE = {"reasoning", "function_call", "custom_tool_call", "web_search_call"}


def _raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _items(raw: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["payload"] for r in raw if r["type"] == "response_item"
            and r["payload"].get("type") == kind]


def _events(raw: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["payload"] for r in raw if r["type"] == "event_msg"
            and r["payload"].get("type") == kind]


@pytest.mark.parametrize("path", GENUINE, ids=lambda p: p.name[:40])
def test_genuine_tool_calls_and_results_match_the_raw_items(path: Path) -> None:
    raw = _raw(path)
    events = parse_file(CodexAdapter(), path).events
    steps = folded_steps(events)
    calls = [c for s in steps.values() for c in s["calls"]]
    raw_calls = [i for i in (r["payload"] for r in raw if r["type"] == "response_item")
                 if i.get("type") in ("function_call", "custom_tool_call")]
    searches = _items(raw, "web_search_call")
    named = [c for c in calls if c.tool_name != "web_search"]
    assert [(c.tool_call_id, c.tool_name) for c in named] == \
        [(i["call_id"], (i.get("namespace") or "") + i["name"]) for i in raw_calls]
    assert len(calls) == len(raw_calls) + len(searches)
    for call, item in zip(named, raw_calls, strict=True):
        if item["type"] == "function_call":
            assert call.input == json.loads(item["arguments"])
        else:
            assert call.input == {"patch": item["input"]}
    # every output pairs with its call; output_chars is the full length
    results = [e for e in events if isinstance(e, ev.ToolResultRecorded)]
    outputs = [i for i in (r["payload"] for r in raw if r["type"] == "response_item")
               if i.get("type") in ("function_call_output", "custom_tool_call_output")]
    from_outputs = [r for r in results if "event" not in r.detail]
    assert [r.tool_call_id for r in from_outputs] == [o["call_id"] for o in outputs]
    for result, out in zip(from_outputs, outputs, strict=True):
        text = out["output"]
        if out["type"] == "custom_tool_call_output":
            text = json.loads(text)["output"]
        assert result.output_chars == len(text)
        assert text.startswith(result.content)
    # execution facts: one more result per *_end event, errors from the exit code
    ends = _events(raw, "exec_command_end") + _events(raw, "patch_apply_end")
    from_ends = [r for r in results if r.detail.get("event") in ("exec_command_end",
                                                                 "patch_apply_end")]
    assert sorted(r.tool_call_id for r in from_ends) == sorted(e["call_id"] for e in ends)
    failed = {e["call_id"] for e in ends
              if e.get("exit_code", 0) != 0 or e.get("success") is False}
    assert {r.tool_call_id for r in from_ends if r.is_error} == failed
    searched = {c.tool_call_id for c in calls if c.tool_name == "web_search"}
    assert sorted(r.tool_call_id for r in results if r.tool_call_id in searched) == \
        sorted(e["call_id"] for e in _events(raw, "web_search_end"))
    assert len(results) == len(outputs) + len(ends) + len(_events(raw, "web_search_end"))
    assert check_invariants(events).orphans == 0


@pytest.mark.parametrize("path", GENUINE, ids=lambda p: p.name[:40])
def test_genuine_steps_match_the_raw_messages(path: Path) -> None:
    raw = _raw(path)
    events = parse_file(CodexAdapter(), path).events
    steps = folded_steps(events)
    # user prompts: typed parts of response_item user messages, plus event_msg user_message
    # texts that no response_item mirrors (the Desktop file keeps only the events)
    typed = [p["text"] for m in _items(raw, "message") if m["role"] == "user"
             for p in m["content"] if not (p["text"].startswith("<")
                                           or p["text"].startswith("# AGENTS.md"))]
    said = [e["message"] for e in _events(raw, "user_message")]
    expected = Counter(typed) + Counter(t for t in said if t not in typed)
    assert Counter(s["content"] for s in steps.values() if s["role"] == "user") == expected
    # agent steps: one per run of agent-side items (event_msg duplicates add nothing)
    runs, inside = 0, False
    for r in raw:
        p = r["payload"]
        if r["type"] == "response_item":
            agent = p["type"] in AGENT_SIDE or (p["type"] == "message"
                                                and p["role"] == "assistant")
            runs += agent and not inside
            inside = agent
        elif r["type"] == "event_msg" and p["type"] in ("user_message", "task_started"):
            inside = inside and p["type"] == "user_message" and p["message"] in typed
        elif r["type"] == "turn_context":
            inside = False
    agent_steps = [s for s in steps.values() if s["role"] == "agent"]
    assert len(agent_steps) == runs
    said_by_agent = [p["text"] for m in _items(raw, "message") if m["role"] == "assistant"
                     for p in m["content"]]
    assert "\n\n".join(s["content"] for s in agent_steps if s["content"]) == \
        "\n\n".join(said_by_agent)
    # encrypted reasoning: kept opaque, one blob each, never decoded into text
    secrets = [i["encrypted_content"] for i in _items(raw, "reasoning")
               if i.get("encrypted_content")]
    opaque = [e for e in events if isinstance(e, ev.MetadataRecorded)
              and e.record_type == "encrypted_reasoning"]
    assert [e.data["size"] for e in opaque] == [len(s) for s in secrets]
    assert all(steps[e.data["step_index"]]["role"] == "agent" for e in opaque)
    assert not any(s[:40] in (st["reasoning"] + st["content"]) for s in secrets
                   for st in steps.values())
    # the injected context is recorded, as system steps
    system = [s for s in steps.values() if s["role"] == "system"]
    n_dev = sum(1 for m in _items(raw, "message") if m["role"] == "developer")
    assert len(system) == n_dev + sum(
        1 for m in _items(raw, "message") if m["role"] == "user"
        and any(p["text"].startswith(("<", "# AGENTS.md")) for p in m["content"]))


@pytest.mark.parametrize("path", GENUINE, ids=lambda p: p.name[:40])
def test_genuine_token_usage_matches_the_raw_totals(path: Path) -> None:
    raw = _raw(path)
    events = parse_file(CodexAdapter(), path).events
    counts = [e["info"] for e in _events(raw, "token_count") if e.get("info")]
    totals = [e for e in events if isinstance(e, ev.UsageTotalsRecorded)]
    if not counts:  # the filtered Desktop file has no token_count at all
        assert totals == []
        return
    final = counts[-1]["total_token_usage"]
    # OpenAI counts cached tokens inside input_tokens; the store counts them apart.
    assert totals[-1].usage == ev.TokenUsage(
        input_tokens=final["input_tokens"] - final["cached_input_tokens"],
        output_tokens=final["output_tokens"], cache_read_tokens=final["cached_input_tokens"])
    distinct = [c for i, c in enumerate(counts)
                if i == 0 or c["total_token_usage"] != counts[i - 1]["total_token_usage"]]
    assert len(totals) == len(distinct)
    # step usage: each change's last_token_usage counted once, so the steps add up to it
    steps = folded_steps(events).values()
    summed = [sum(s["usage"].input_tokens for s in steps if s["usage"]),
              sum(s["usage"].output_tokens for s in steps if s["usage"]),
              sum(s["usage"].cache_read_tokens for s in steps if s["usage"])]
    lasts = [sum(c["last_token_usage"][k] for c in distinct)
             for k in ("input_tokens", "output_tokens", "cached_input_tokens")]
    lasts[0] -= lasts[2]  # uncached input only
    assert summed == lasts
    assert summed == [final["input_tokens"] - final["cached_input_tokens"],
                      final["output_tokens"], final["cached_input_tokens"]]
    assert all(s["role"] == "agent" for s in steps if s["usage"])


def test_genuine_session_facts() -> None:
    assert FULL is not None
    events = parse_file(CodexAdapter(), FULL).events
    raw = _raw(FULL)
    meta = raw[0]["payload"]
    info = [e for e in events if isinstance(e, ev.SessionInfo)]
    assert info[0].cwd == meta["cwd"] and info[0].agent_version == "0.125.0"
    assert info[0].git_commit == meta["git"]["commit_hash"]
    assert info[0].git_branch == meta["git"]["branch"]
    assert info[0].repository_url == meta["git"]["repository_url"]
    assert info[0].system_prompt == meta["base_instructions"]["text"]  # whole, 21k chars
    assert [i.model for i in info if i.model] == ["gpt-5.5"]  # once, though 2 turn_contexts
    agent = [e for e in events if isinstance(e, ev.StepRecorded) and e.role == "agent"]
    assert {e.model for e in agent} == {"gpt-5.5"}
    ref = CodexAdapter().identify(FULL, raw[0])
    assert ref is not None and ref.session_id == meta["id"] and not ref.is_subagent
    assert ref.extra["cwd"] == meta["cwd"]
    dups = [e for e in events if isinstance(e, ev.MetadataRecorded)
            and e.record_type in ("user_message:duplicate", "event_msg:agent_message")]
    assert len(dups) == len(_events(raw, "user_message")) + len(_events(raw, "agent_message"))


# ---------------------------------------------------------------------------------------------
# Synthetic records: one rule each

TS = "2026-05-11T08:27:17.490Z"
SID = "019e1625-789d-76c0-80ab-3724b5ddb799"


def rec(kind: str, payload: Any, ts: str = TS) -> dict[str, Any]:
    return {"timestamp": ts, "type": kind, "payload": payload}


def meta(**extra: Any) -> dict[str, Any]:
    return rec("session_meta", {"id": SID, "cwd": "/w", "cli_version": "0.125.0", **extra})


def item(kind: str, **fields: Any) -> dict[str, Any]:
    return rec("response_item", {"type": kind, **fields})


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return rec("event_msg", {"type": kind, **fields})


def user(*texts: str) -> dict[str, Any]:
    return item("message", role="user", content=[{"type": "input_text", "text": t}
                                                 for t in texts])


def say(text: str) -> dict[str, Any]:
    return item("message", role="assistant", content=[{"type": "output_text", "text": text}])


def call(call_id: str, args: Any = "{}", name: str = "exec_command") -> dict[str, Any]:
    return item("function_call", name=name, arguments=args, call_id=call_id)


def output(call_id: str, text: Any, kind: str = "function_call_output") -> dict[str, Any]:
    return item(kind, call_id=call_id, output=text)


def run(*records: Any, name: str = f"rollout-2026-05-11T11-26-55-{SID}.jsonl") -> list[ev.Event]:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    parsed = parse_bytes(CodexAdapter(), Path(name), data)
    assert parsed.ref is not None
    _, recs, _ = per_record(CodexAdapter(), Path(name), data)
    assert all(evs for _, _, evs in recs)
    check_invariants(parsed.events)
    return parsed.events


def of(events: list[ev.Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def meta_types(events: list[ev.Event]) -> list[str]:
    return [e.record_type for e in of(events, ev.MetadataRecorded)]


def test_user_prompt_counted_once_whichever_copy_comes_first() -> None:
    a = run(meta(), user("hello there"), event("user_message", message="hello there"), say("hi"))
    b = run(meta(), event("user_message", message="hello there"), user("hello there"), say("hi"))
    for events in (a, b):
        steps = of(events, ev.StepRecorded)
        assert [(s.role, s.content) for s in steps] == [("user", "hello there"), ("agent", "hi")]
        assert meta_types(events).count("user_message:duplicate") == 1


def test_user_message_event_alone_makes_the_step() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    events = run(meta(), event("user_message", message="look", images=[
        f"data:image/png;base64,{png}"], local_images=["/tmp/a.png"]), say("seen"))
    steps = of(events, ev.StepRecorded)
    assert [(s.role, s.content) for s in steps] == [("user", "look"), ("agent", "seen")]
    assert steps[0].images[0].size == len(b"\x89PNG fake")
    assert steps[0].images[0].media_type == "image/png"
    local = [e for e in of(events, ev.MetadataRecorded) if e.record_type == "user_message"]
    assert local[0].data == {"step_index": 0, "local_images": ["/tmp/a.png"]}


def test_images_of_a_duplicate_are_added_to_the_step_the_event_made() -> None:
    events = run(meta(), event("user_message", message="see", images=[],
                               local_images=["/tmp/a.png"]),
                 item("message", role="user", content=[
                     {"type": "input_text", "text": "see"},
                     {"type": "input_image", "image_url": "data:image/png;base64,aGk="}]))
    steps = folded_steps(events)
    assert len(steps) == 1 and steps[0]["content"] == "see"
    assert [b.size for b in steps[0]["images"]] == [2]


def failing_context(error: Exception, media_type: str) -> Context:
    def put(data: bytes, media: str) -> ev.BlobRef:
        if media == media_type:
            raise error
        return ev.BlobRef(hash="h", size=len(data), media_type=media)
    return Context(put)


def test_a_failure_inside_a_record_leaves_no_gap() -> None:
    """A shape error raised after the step was begun (simulated in the blob call that follows
    it) makes the record an adapter_error, and the next step takes the same index: dense
    indexes, no call on a phantom step."""
    ad = CodexAdapter()
    ctx = failing_context(ValueError("odd shape"), "application/octet-stream")
    parser = ad.parser(ad.identify(Path("x.jsonl"), meta()), ctx)  # type: ignore[arg-type]
    out: list[ev.Event] = []
    for n, r in enumerate([meta(), user("go"), item("reasoning", summary=[],
                                                    encrypted_content="gAAAA"),
                           call("c1"), output("c1", "ok")], start=1):
        out += parser.feed(r, LineRef(number=n, offset=n))
    check_invariants(out, errors=1)
    assert [(s.step_index, s.role) for s in of(out, ev.StepRecorded)] == [(0, "user"),
                                                                         (1, "agent")]
    assert of(out, ev.ToolResultRecorded)[0].step_index == 1


def test_a_blob_store_failure_propagates() -> None:
    """Not a property of the line: the import must stop before checkpointing past it."""
    ad = CodexAdapter()
    ctx = failing_context(OSError("disk full"), "application/octet-stream")
    parser = ad.parser(ad.identify(Path("x.jsonl"), meta()), ctx)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        parser.feed(item("reasoning", summary=[], encrypted_content="gAAAA"), LineRef(1, 0))


def test_a_new_prompt_with_the_same_words_is_not_a_duplicate() -> None:
    events = run(meta(), user("again"), event("user_message", message="again"), say("ok"),
                 event("user_message", message="again"), user("again"), say("ok"))
    assert [s.role for s in of(events, ev.StepRecorded)] == ["user", "agent", "user", "agent"]


def test_injected_context_is_a_system_step() -> None:
    events = run(meta(),
                 item("message", role="developer",
                      content=[{"type": "input_text", "text": "<permissions instructions>x"
                                                              "</permissions instructions>"}]),
                 user("# AGENTS.md instructions for /w\n\n<INSTRUCTIONS>a</INSTRUCTIONS>",
                      "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"),
                 user("<environment_context><cwd>/w</cwd></environment_context>", "fix it"),
                 say("done"))
    steps = of(events, ev.StepRecorded)
    assert [(s.role, s.agent_role) for s in steps] == [
        ("system", "developer"), ("system", "meta"), ("system", "meta"), ("user", None),
        ("agent", None)]
    assert steps[3].content == "fix it"
    assert is_injected("<turn_aborted>\nThe user interrupted.\n</turn_aborted>")
    assert not is_injected("<div> is not closed")
    assert not is_injected("please fix <b>this</b>")


def test_agent_items_of_one_response_form_one_step() -> None:
    events = run(meta(), rec("turn_context", {"model": "gpt-5.5", "cwd": "/w"}), user("go"),
                 item("reasoning", summary=[{"type": "summary_text", "text": "think"}],
                      content=None, encrypted_content="gAAAAsecret"),
                 say("working"), call("c1", '{"cmd": "ls"}'),
                 item("custom_tool_call", call_id="c2", name="apply_patch",
                      input="*** Begin Patch\n*** End Patch\n", status="completed"),
                 output("c1", "Process exited with code 0\nOutput:\na\n"),
                 output("c2", json.dumps({"output": "Success.", "metadata": {"exit_code": 0}}),
                        kind="custom_tool_call_output"),
                 item("reasoning", summary=[], encrypted_content="gAAAAother"), say("done"))
    steps = folded_steps(events)
    assert [s["role"] for s in steps.values()] == ["user", "agent", "agent"]
    first = steps[1]
    assert first["reasoning"] == "think" and first["content"] == "working"
    assert first["model"] == "gpt-5.5"
    assert [(c.tool_call_id, c.tool_name, c.input) for c in first["calls"]] == [
        ("c1", "exec_command", {"cmd": "ls"}),
        ("c2", "apply_patch", {"patch": "*** Begin Patch\n*** End Patch\n"})]
    results = of(events, ev.ToolResultRecorded)
    assert [(r.step_index, r.content, r.detail) for r in results] == [
        (1, "Process exited with code 0\nOutput:\na\n", {"exit_code": 0}),
        (1, "Success.", {"exit_code": 0})]
    opaque = [e.data for e in of(events, ev.MetadataRecorded)
              if e.record_type == "encrypted_reasoning"]
    assert [(d["size"], d["step_index"]) for d in opaque] == [(11, 1), (10, 2)]
    assert "secret" not in json.dumps([msgspec.to_builtins(e) for e in events])


def test_exit_codes_make_errors_and_end_events_add_detail() -> None:
    events = run(meta(), user("go"), call("c1"), call("c2"),
                 output("c1", "Chunk ID: 1\nProcess exited with code 2\nOutput:\nboom"),
                 output("c2", "Chunk ID: 2\nProcess running with session ID 7\nOutput:\n"),
                 event("exec_command_end", call_id="c2", exit_code=1, status="failed",
                       duration={"secs": 1, "nanos": 500000000}, command=["ls"],
                       aggregated_output="x" * 10, parsed_cmd=[{"type": "list_files"}]),
                 item("custom_tool_call", call_id="p1", name="apply_patch", input="p"),
                 event("patch_apply_end", call_id="p1", success=False, stderr="bad"),
                 output("p1", json.dumps({"output": "bad", "metadata": {"exit_code": 1}}),
                        kind="custom_tool_call_output"))
    results = {(r.tool_call_id, "event" in r.detail): r
               for r in of(events, ev.ToolResultRecorded)}
    assert results[("c1", False)].is_error and results[("c1", False)].detail == {"exit_code": 2}
    assert not results[("c2", False)].is_error
    end = results[("c2", True)]
    assert end.is_error and end.content == "" and end.detail["duration"] == 1.5
    assert end.detail["aggregated_output_chars"] == 10 and end.detail["exit_code"] == 1
    assert "aggregated_output" not in end.detail
    assert results[("p1", True)].is_error and results[("p1", False)].is_error


@pytest.mark.parametrize(("arguments", "expected"), [
    ('{"a": 1}', {"a": 1}), ("not json", {"raw": "not json"}), ("[1, 2]", {"value": [1, 2]}),
    (None, {}), ("", {}), ({"already": "object"}, {"already": "object"}), (7, {"value": 7})])
def test_function_arguments_decode(arguments: Any, expected: dict[str, Any]) -> None:
    events = run(meta(), user("go"), call("c1", arguments))
    calls = folded_steps(events)[1]["calls"]
    assert calls[0].input == expected


def test_long_inputs_and_outputs_go_to_blobs() -> None:
    big = "y" * (INLINE_CHARS * 3)
    events = run(meta(), user("go"), call("c1", json.dumps({"cmd": big})),
                 output("c1", big + "tail"))
    tool = folded_steps(events)[1]["calls"][0]
    assert tool.input_blob is not None and len(tool.input["cmd"]) < len(big)
    result = of(events, ev.ToolResultRecorded)[0]
    assert result.output_chars == len(big) + 4 and result.content_blob is not None
    assert len(result.content) == INLINE_CHARS


def test_output_without_its_call_is_an_explicit_orphan() -> None:
    events = run(meta(), user("go"), output("nope", "lost output"),
                 event("exec_command_end", call_id="nope2", exit_code=0))
    assert of(events, ev.ToolResultRecorded) == []
    orphans = [e.data for e in of(events, ev.MetadataRecorded)
               if e.record_type == "tool_result_orphan"]
    assert [(o["call_id"], o["content"]) for o in orphans] == [("nope", "lost output"),
                                                               ("nope2", "")]


def test_structured_outputs() -> None:
    events = run(meta(), user("go"), call("c1"), call("c2"),
                 output("c1", [{"type": "input_text", "text": "a.txt"},
                               {"type": "input_image",
                                "image_url": "data:image/png;base64,aGk="}]),
                 output("c2", {"type": "input_text", "text": "b.txt"}))
    results = of(events, ev.ToolResultRecorded)
    assert [r.content for r in results] == ["a.txt", "b.txt"]
    assert results[0].detail["images"][0]["size"] == 2


def test_web_search_pairs_with_its_end_event_in_either_order() -> None:
    action = {"type": "search", "query": "q1", "queries": ["q1"]}
    before = run(meta(), user("go"), event("web_search_end", call_id="ws_1", query="q1",
                                           action=action),
                 item("web_search_call", status="completed", action=action))
    after = run(meta(), user("go"), item("web_search_call", status="completed", action=action),
                event("web_search_end", call_id="ws_9", query="q1", action=action))
    for events, expected in ((before, "ws_1"), (after, "web_search@3")):
        calls = folded_steps(events)[1]["calls"]
        assert [(c.tool_call_id, c.tool_name, c.input["query"]) for c in calls] == [
            (expected, "web_search", "q1")]
        assert [r.tool_call_id for r in of(events, ev.ToolResultRecorded)] == [expected]


def test_token_counts_totals_and_step_usage() -> None:
    def tc(total: tuple[int, int, int], last: tuple[int, int, int]) -> dict[str, Any]:
        keys = ("input_tokens", "output_tokens", "cached_input_tokens")
        return event("token_count", info={"total_token_usage": dict(zip(keys, total,
                                                                        strict=True)),
                                          "last_token_usage": dict(zip(keys, last, strict=True))},
                     rate_limits=None)
    events = run(meta(), event("token_count", info=None, rate_limits=None), tc((1, 1, 0),
                                                                               (1, 1, 0)),
                 user("go"), call("c1"), tc((11, 3, 4), (10, 2, 4)), tc((11, 3, 4), (10, 2, 4)),
                 output("c1", "x"), say("a"), tc((31, 4, 9), (20, 1, 5)), say("b"),
                 tc((36, 5, 9), (5, 1, 0)))
    totals = of(events, ev.UsageTotalsRecorded)
    assert [t.usage.input_tokens for t in totals] == [1, 7, 22, 27]  # cached ones apart
    steps = folded_steps(events)
    assert [(s["role"], s["usage"]) for s in steps.values()] == [
        ("user", None),
        ("agent", ev.TokenUsage(input_tokens=6, output_tokens=2, cache_read_tokens=4)),
        ("agent", ev.TokenUsage(input_tokens=20, output_tokens=2, cache_read_tokens=5))]
    assert meta_types(events).count("event_msg:token_count") == 2  # null info, repeat


def test_compaction() -> None:
    events = run(meta(), user("go"), say("a"),
                 rec("compacted", {"message": "summary text",
                                   "replacement_history": [{"type": "message"}] * 3}),
                 event("context_compacted"), user("more"))
    (compaction,) = of(events, ev.CompactionRecorded)
    assert compaction.summary == "summary text" and compaction.step_index == 2
    history = [e.data for e in of(events, ev.MetadataRecorded) if e.record_type == "compacted"]
    assert history[0]["replacement_history"]["items"] == 3
    assert "event_msg:context_compacted" in meta_types(events)
    assert [s.role for s in of(events, ev.StepRecorded)] == ["user", "agent", "user"]


def test_slash_commands() -> None:
    events = run(meta(), user("/review the diff"), say("ok"), user("/Users/me/file.py broke"),
                 say("ok"), user("/init"))
    assert [(s.step_index, s.skill, s.via) for s in of(events, ev.SkillInvoked)] == [
        (0, "review", "slash"), (4, "init", "slash")]


def test_session_meta_of_a_subagent_and_model_changes() -> None:
    source = {"subagent": {"thread_spawn": {"parent_thread_id": "parent-1", "depth": 1,
                                            "agent_role": "explorer"}}}
    first = meta(source=source, base_instructions={"text": "SYSTEM"},
                 git={"commit_hash": "abc", "branch": "main", "repository_url": "u"})
    events = run(first, rec("turn_context", {"model": "m1"}), rec("turn_context",
                                                                  {"model": "m1"}),
                 rec("turn_context", {"model": "m2", "cwd": "/other"}),
                 event("thread_name_updated", thread_name="Fix bug"))
    info = of(events, ev.SessionInfo)
    assert info[0].parent_session_id == "parent-1" and info[0].agent_type == "explorer"
    assert info[0].system_prompt == "SYSTEM" and info[0].git_commit == "abc"
    assert [(i.model, i.cwd) for i in info[1:3]] == [("m1", None), ("m2", "/other")]
    assert info[-1].title == "Fix bug"
    ref = CodexAdapter().identify(Path("x.jsonl"), first)
    assert ref is not None and ref.parent_session_id == "parent-1" and ref.is_subagent


def test_unknown_and_odd_records_become_metadata() -> None:
    events = run(meta(), rec("world_state", {"full": True}), rec("brand_new", {"x": 1}),
                 item("ghost_snapshot", ghost_commit={"id": "g"}), item("future_item", a=1),
                 event("future_event", b=2), rec("event_msg", "not a dict"),
                 rec("response_item", None), [1, 2], "text", 3,
                 {"no": "type"}, item("message", role="user", content="plain string"),
                 item("message", role="critic", content=[{"type": "input_text", "text": "hm"}]))
    kinds = meta_types(events)
    for expected in ("world_state", "brand_new", "response_item:ghost_snapshot",
                     "response_item:future_item", "event_msg:future_event", "event_msg",
                     "response_item", "non_object", "unknown"):
        assert expected in kinds, expected
    steps = of(events, ev.StepRecorded)
    assert [(s.role, s.content, s.agent_role) for s in steps] == [
        ("user", "plain string", None), ("system", "hm", "critic")]


def test_values_the_store_cannot_hold_are_made_storable() -> None:
    deep: Any = "bottom"
    for _ in range(500):
        deep = [deep]
    huge = 2**70
    events = run(meta(), user("go"), call("c1", json.dumps({"n": huge, "deep": deep})),
                 output("c1", "x"), event("exec_command_end", call_id="c1", exit_code=huge,
                                          parsed_cmd=deep),
                 event("token_count", info={"total_token_usage": {"input_tokens": huge},
                                            "last_token_usage": {"input_tokens": "lots"}}),
                 event("future", payload=deep, big=-huge))
    tool = folded_steps(events)[1]["calls"][0]
    assert tool.input["n"] == str(huge)
    totals = of(events, ev.UsageTotalsRecorded)
    assert totals[0].usage.input_tokens == 2**63 - 1


def test_identify_and_discover(tmp_path: Path) -> None:
    ad = CodexAdapter()
    assert ad.default_roots(tmp_path) == [tmp_path / ".codex" / "sessions"]
    assert ad.identify(Path("a.jsonl"), None) is None
    assert ad.identify(Path("a.jsonl"), {"type": "session", "id": "x"}) is None  # pi
    assert ad.identify(Path("a.jsonl"), {"type": "user", "uuid": "x"}) is None  # claude
    assert ad.identify(Path("a.jsonl"), [1]) is None
    named = ad.identify(Path(f"rollout-2026-01-01T00-00-00-{SID}.jsonl"),
                        rec("session_meta", {"cwd": "/w"}))
    assert named is not None and named.session_id == SID
    assert ad.identify(Path("nameless.jsonl"), rec("session_meta", {"cwd": "/w"})) is None
    legacy = ad.identify(Path(f"rollout-x-{SID}.jsonl"), {"id": "old-1", "timestamp": TS})
    assert legacy is not None and legacy.session_id == "old-1"
    assert ad.identify(Path("other.jsonl"), {"id": "old-1", "timestamp": TS}) is None
    day = tmp_path / "2026" / "05" / "11"
    day.mkdir(parents=True)
    for name in ("rollout-b.jsonl", "rollout-a.jsonl", "notes.jsonl", "rollout-c.json"):
        (day / name).write_text("")
    (tmp_path / "rollout-z.jsonl").write_text("")
    (tmp_path / "copied.jsonl").write_text(json.dumps(meta()) + "\n")  # a renamed rollout
    (tmp_path / "pi.jsonl").write_text(json.dumps({"type": "session", "id": "x"}) + "\n")
    found = list(ad.discover(tmp_path))
    assert found == [day / "rollout-a.jsonl", day / "rollout-b.jsonl",
                     tmp_path / "copied.jsonl", tmp_path / "rollout-z.jsonl"]
    assert list(ad.discover(day / "notes.jsonl")) == [day / "notes.jsonl"]
    # the corpus folder: the two genuine rollouts and the two enveloped catalogues
    assert [p.name for p in ad.discover(CODEX)] == [
        "large.jsonl", "small.jsonl", *(p.name for p in GENUINE)]


def test_legacy_layout_is_read() -> None:
    events = run({"id": "old-1", "timestamp": TS, "instructions": "SYS"},
                 {"record_type": "state"},
                 {"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "hi"}]},
                 {"type": "function_call", "name": "shell", "arguments": '{"command": ["ls"]}',
                  "call_id": "c1"},
                 {"type": "function_call_output", "call_id": "c1",
                  "output": json.dumps({"output": "a\n", "metadata": {"exit_code": 0}})},
                 name="rollout-2025-05-01T00-00-00-x.jsonl")
    assert of(events, ev.SessionInfo)[0].system_prompt == "SYS"
    assert [s.role for s in of(events, ev.StepRecorded)] == ["user", "agent"]
    assert of(events, ev.ToolResultRecorded)[0].content == "a\n"
    assert "state" in meta_types(events)


# ---------------------------------------------------------------------------------------------
# Robustness: arbitrary values where the format has structure

# what lines.decode can hand over: its stdlib fallback also yields huge integers, NaN, Infinity
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.integers(-(2**80), 2**80)
    | st.floats() | st.text(max_size=30), lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
KEYS = ["type", "role", "content", "call_id", "id", "name", "arguments", "input", "output",
        "summary", "encrypted_content", "info", "message", "images", "action", "query", "status",
        "exit_code", "duration", "changes", "success", "result", "model", "cwd", "git",
        "base_instructions", "replacement_history", "results", "item", "namespace", "tools",
        "author", "source", "parent_thread_id", "total_token_usage", "last_token_usage",
        "thread_name", "local_images", "phase", "invocation"]
PAYLOAD_TYPES = ["message", "reasoning", "function_call", "custom_tool_call", "web_search_call",
                 "function_call_output", "custom_tool_call_output", "user_message",
                 "token_count", "exec_command_end", "patch_apply_end", "mcp_tool_call_end",
                 "web_search_end", "agent_message", "tool_search_call", "tool_search_output",
                 "image_generation_call", "local_shell_call", "task_started", "x"]
records = st.builds(
    lambda kind, ptype, fields, wrap: rec(kind, {"type": ptype, **fields} if wrap else fields),
    st.sampled_from(["session_meta", "turn_context", "response_item", "event_msg", "compacted",
                     "world_state"]),
    st.sampled_from(PAYLOAD_TYPES),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6), st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records | json_values, max_size=12))
def test_arbitrary_records_never_break_the_contract(stream: list[Any]) -> None:
    ad = CodexAdapter()
    parser = ad.parser(ad.identify(Path("x.jsonl"), meta()), memory_context())  # type: ignore[arg-type]
    out: list[ev.Event] = []
    for n, value in enumerate([meta(), *stream], start=1):
        events = parser.feed(value, LineRef(number=n, offset=n * 10))
        assert events
        out += events
    check_invariants(out)


def test_mutated_genuine_records_never_break_the_contract() -> None:
    """Each distinct record shape of the genuine rollout, with every field in turn replaced
    by values of the wrong type."""
    assert FULL is not None
    raw = _raw(FULL)
    shapes: dict[tuple[str, str], dict[str, Any]] = {}
    for r in raw:
        shapes.setdefault((r["type"], str(r["payload"].get("type"))), r)
    ad = CodexAdapter()
    parser = ad.parser(ad.identify(FULL, raw[0]), memory_context())  # type: ignore[arg-type]
    out: list[ev.Event] = []
    n = 0
    for r in shapes.values():
        for key in r["payload"]:
            for bad in (None, 0, -1, "", "x", [], [None], {}, {"k": None}, True):
                mutated = dict(r, payload=dict(r["payload"], **{key: bad}))
                n += 1
                events = parser.feed(mutated, LineRef(number=n, offset=n))
                assert events
                out += events
    check_invariants(out)

"""The Claude Code adapter against the real corpus, read in place from shared/corpus/claude-code.

Invariants are checked for every file; exact counts for a representative set are compared with
counts taken from the raw JSON by ``tests.corpus_counts`` (which shares no code with the adapter).
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opentraces.capture import adapter as registered_adapter
from opentraces.capture.base import INLINE_CHARS, LineRef, SessionRef
from opentraces.capture.claude_code import ClaudeCodeAdapter
from opentraces.capture.lines import Rejected, decode, iter_lines
from opentraces.capture.parse import Parsed, first_record, memory_context, parse_bytes, parse_file
from opentraces.events import (
    CompactionRecorded,
    Event,
    MetadataRecorded,
    SessionInfo,
    SkillInvoked,
    StepExtended,
    StepRecorded,
    SubagentLinked,
    TokenUsage,
    ToolCall,
    ToolResultRecorded,
    topic_of,
    trace_id_for,
)
from opentraces.store import decode_event, encode_event
from tests.conftest import CORPUS
from tests.corpus_counts import claude_counts, records

ROOT = CORPUS / "claude-code"
ADAPTER = ClaudeCodeAdapter()
FILES = sorted(ROOT.rglob("*.jsonl")) if ROOT.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason=f"corpus not found at {ROOT}")

REAL = ROOT / "claude-code-log-real-projects"
SAMPLE = REAL / "-Users-dain-workspace-claude-code-log-sample"
CODERABBIT = REAL / "-Users-dain-workspace-coderabbit-review-helper"
WORKTREES = REAL / "-experiments-worktrees"
SPOTTER = ROOT / "spotter-transcripts"
MOCK = ROOT / "claude-code-viewer-mock" / "sample-project"
CODEMIE = ROOT / "codemie-code"

V1_SUMMARIES = SAMPLE / "fe869ecb-c176-478f-9734-7e4b8ef12cff.jsonl"
V2_MAIN = CODERABBIT / "cb2e607c-c758-415a-8b45-c49e4631906a.jsonl"
V2_AGENTS = sorted(p for p in CODERABBIT.glob("agent-*.jsonl")
                   if V2_MAIN.stem in p.read_text(encoding="utf-8"))
V2114 = WORKTREES / "ef958aa1-0e93-49f0-bb71-150f63befcd1.jsonl"
V2114_AGENTS = sorted((WORKTREES / V2114.stem / "subagents").glob("agent-*.jsonl"))
INLINE_SIDECHAINS = MOCK / "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"
COMPACTED_20 = CODEMIE / "session-624a4a58.jsonl"
COMPACTED_21 = SPOTTER / "258c7280-ae70-4798-800f-63464d01a85d.jsonl"
IMAGES = SAMPLE / "0d3a8e6f-290f-4105-a327-a2496e5e2a83.jsonl"
SPOTTER_SUBAGENT = SPOTTER / "258c7280-ae70-4798-800f-63464d01a85d" / "subagents" \
    / "agent-a881341.jsonl"
REPRESENTATIVE = [V1_SUMMARIES, V2_MAIN, *V2_AGENTS, V2114, *V2114_AGENTS, INLINE_SIDECHAINS,
                  COMPACTED_20, COMPACTED_21, SPOTTER_SUBAGENT, IMAGES,
                  SPOTTER / "tool_heavy.jsonl", MOCK / "5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl"]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def parsed(path: Path) -> Parsed:
    return parse_file(ADAPTER, path)


def per_line(path: Path) -> list[tuple[LineRef, Any, list[Event]]]:
    """What each decoded value of a file produced, fed the way parse_bytes feeds them."""
    data = path.read_bytes()
    ref = ADAPTER.identify(path, first_record(data))
    assert ref is not None
    parser = ADAPTER.parser(ref, memory_context())
    out = []
    for line, raw in iter_lines(data):
        values = decode(raw)
        assert not isinstance(values, Rejected), (line, values)
        out.extend((line, value, parser.feed(value, line)) for value in values)
    return out


def steps_of(events: list[Event]) -> dict[int, StepRecorded]:
    return {e.step_index: e for e in events if isinstance(e, StepRecorded)}


def calls_by_step(events: list[Event]) -> dict[int, list[ToolCall]]:
    calls: dict[int, list[ToolCall]] = {}
    for e in events:
        if isinstance(e, StepRecorded | StepExtended):
            calls.setdefault(e.step_index, []).extend(e.tool_calls)
    return calls


def folded_usage(events: list[Event]) -> dict[str, int]:
    """Token totals after applying StepExtended's replace-the-usage rule."""
    usage: dict[int, TokenUsage | None] = {}
    for e in events:
        # StepRecorded sets the usage; a StepExtended that carries one replaces it.
        if isinstance(e, StepRecorded) or (isinstance(e, StepExtended)
                                            and e.token_usage is not None):
            usage[e.step_index] = e.token_usage
    fields = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return {f: sum(getattr(u, f) for u in usage.values() if u is not None) for f in fields}


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# ---------------------------------------------------------------------------------------------
# Invariants, every file


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_invariants(path: Path) -> None:
    result = parsed(path)
    assert result.ref is not None and not result.rejected
    steps = 0
    known_calls: dict[str, int] = {}
    for e in result.events:
        if isinstance(e, StepRecorded):
            assert e.step_index == steps, "step indexes are dense, from 0, in file order"
            steps += 1
        elif isinstance(e, StepExtended | ToolResultRecorded | SkillInvoked | SubagentLinked):
            assert 0 <= e.step_index < steps, f"{e} names a step not yet recorded"
        elif isinstance(e, CompactionRecorded):
            assert 0 <= e.step_index <= steps
        if isinstance(e, StepRecorded | StepExtended):
            known_calls.update((c.tool_call_id, e.step_index) for c in e.tool_calls)
        if isinstance(e, ToolResultRecorded):
            assert known_calls.get(e.tool_call_id) == e.step_index, "result on its call's step"
            assert not e.no_result
        # Every event survives the store's codec unchanged.
        assert decode_event(topic_of(e), encode_event(e), rel(path)) == e

    raw = claude_counts(path)
    orphans = [e for e in result.events
               if isinstance(e, MetadataRecorded) and e.record_type == "tool_result_orphan"]
    assert len(of(result.events, ToolResultRecorded)) + len(orphans) == raw.tool_results
    for orphan in orphans:
        # Only calls and results without ids (the trimmed catalogue) can't be paired.
        assert orphan.data["tool_use_id"] not in known_calls or not orphan.data["tool_use_id"]


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_every_line_yields_events_and_resume_is_exact(path: Path) -> None:
    lines = per_line(path)
    assert len(lines) == len(records(path))
    silent = [(line.number, value.get("type") if isinstance(value, dict) else value)
              for line, value, events in lines if not events]
    assert not silent, "every decodable line produces at least one event"
    # Resuming at any line start gives exactly the events a full pass gives for the rest.
    full = [e for _, _, events in lines for e in events]
    assert parsed(path).events == full
    for line, _, _ in lines[1::max(1, len(lines) // 3)]:
        before = sum(len(events) for ln, _, events in lines if ln.offset < line.offset)
        resumed = parse_bytes(ADAPTER, path, path.read_bytes(), resume=line.offset)
        assert resumed.events == full[before:]


def test_whole_corpus_totals() -> None:
    totals = {"files": 0, "steps": 0, "events": 0}
    for path in FILES:
        events = parsed(path).events
        totals["files"] += 1
        totals["events"] += len(events)
        totals["steps"] += len(of(events, StepRecorded))
    assert totals["files"] == len(FILES) > 100
    assert totals["steps"] > 2000 and totals["events"] > totals["steps"]


# ---------------------------------------------------------------------------------------------
# Counts against the raw JSON, representative files


@pytest.mark.parametrize("path", REPRESENTATIVE, ids=rel)
def test_counts_match_raw_json(path: Path) -> None:
    raw = claude_counts(path)
    events = parsed(path).events
    agent_steps = [e for e in of(events, StepRecorded) if e.role == "agent"]
    assert len(agent_steps) == raw.assistant_messages
    calls = [c for cs in calls_by_step(events).values() for c in cs]
    assert len(calls) == raw.tool_uses
    assert {c.tool_call_id for c in calls} == raw.tool_use_ids
    assert len(of(events, ToolResultRecorded)) == raw.tool_results
    assert folded_usage(events) == raw.tokens
    assert len(of(events, CompactionRecorded)) == raw.compact_boundaries
    assert sum(len(e.images) for e in of(events, StepRecorded)) == raw.images
    summaries = [e for e in of(events, StepRecorded) if e.agent_role == "compact_summary"]
    assert len(summaries) == raw.compact_summaries
    sidechain = [e for e in of(events, StepRecorded) if e.is_sidechain]
    assert bool(sidechain) == bool(raw.sidechain_lines)


def test_representative_set_covers_the_brief() -> None:
    assert len(V2_AGENTS) >= 3 and len(V2114_AGENTS) == 6
    assert claude_counts(V1_SUMMARIES).records > 100
    assert claude_counts(IMAGES).images > 0
    assert claude_counts(COMPACTED_20).compact_boundaries == 1
    assert claude_counts(INLINE_SIDECHAINS).sidechain_lines > 400


# ---------------------------------------------------------------------------------------------
# Files and identities


def test_registry_default_roots_and_discover(tmp_path: Path) -> None:
    assert isinstance(registered_adapter("claude-code"), ClaudeCodeAdapter)
    assert ADAPTER.default_roots(tmp_path) == [tmp_path / ".claude" / "projects"]
    found = list(ADAPTER.discover(ROOT))
    assert found == sorted(found) and set(found) == set(FILES)
    assert SPOTTER_SUBAGENT in found and not any(p.name.endswith(".meta.json") for p in found)
    assert list(ADAPTER.discover(tmp_path / "missing")) == []


def test_identify_main_and_empty_files() -> None:
    ref = parsed(V2_MAIN).ref
    assert ref == SessionRef(agent="claude-code", session_id=V2_MAIN.stem, path=V2_MAIN)
    empty = SAMPLE / "4fe49c7c-ff82-4ac7-b3f2-79c22036bd58.jsonl"
    assert empty.stat().st_size == 0
    result = parsed(empty)
    assert result.ref is not None and result.ref.session_id == empty.stem and not result.events


def test_identify_refuses_other_formats(tmp_path: Path) -> None:
    for first in ({"timestamp": "t", "type": "session_meta", "payload": {"id": "x"}},  # codex
                  {"type": "session", "id": "x", "cwd": "/w"},  # pi
                  {"sessionId": "g", "projectHash": "h", "kind": "main"},  # gemini jsonl
                  [1, 2], "text"):
        assert ADAPTER.identify(tmp_path / "x.jsonl", first) is None
    other = CORPUS / "codex" / "codemie-code"
    for path in sorted(other.glob("*.jsonl"))[:1]:
        assert parse_file(ADAPTER, path).ref is None


def test_identify_subagent_files() -> None:
    agent = V2_AGENTS[0]
    ref = parsed(agent).ref
    agent_id = agent.stem.removeprefix("agent-")
    assert ref is not None and ref.is_subagent
    assert ref.parent_session_id == V2_MAIN.stem
    assert ref.session_id == f"{V2_MAIN.stem}/agent-{agent_id}"

    for path in V2114_AGENTS:
        ref = parsed(path).ref
        meta = json.loads(path.with_name(f"{path.stem}.meta.json").read_text())
        assert ref is not None and ref.parent_session_id == V2114.stem
        assert ref.extra["agentType"] == meta["agentType"]
        assert ref.extra["description"] == meta["description"]
        info = of(parsed(path).events, SessionInfo)[0]
        assert (info.parent_session_id, info.agent_type, info.description) == \
            (V2114.stem, meta["agentType"], meta["description"])

    # The subagents/ folder wins over a record's sessionId (here a trimmed placeholder).
    stage0 = ROOT / "agent-sessions-stage0" / "subagent"
    path = next(stage0.rglob("agent-*.jsonl"))
    ref = parsed(path).ref
    assert ref is not None and ref.parent_session_id == path.parent.parent.name


# ---------------------------------------------------------------------------------------------
# Behaviour on real files


def test_session_info_and_titles() -> None:
    infos = of(parsed(V2114).events, SessionInfo)
    first = infos[0]
    assert first.cwd and first.agent_version == "2.1.114" and first.git_branch
    assert any(i.model for i in infos)
    assert all(i.model != "<synthetic>" for i in infos)
    titles = [i.title for i in of(parsed(V1_SUMMARIES).events, SessionInfo) if i.title]
    summaries = [r["summary"] for r in records(V1_SUMMARIES) if r.get("type") == "summary"]
    assert titles and set(titles) <= set(summaries)
    # A custom title outranks the AI title that comes later in the catalogue file.
    small = ROOT / "agent-sessions-stage0" / "small.jsonl"
    titles = [i.title for i in of(parsed(small).events, SessionInfo) if i.title]
    custom = next(r["customTitle"] for r in records(small) if r.get("type") == "custom-title")
    assert titles[-1] == custom


def test_one_step_per_message_and_text_separators() -> None:
    events = parsed(V2114).events
    raw = [r for r in records(V2114) if r.get("type") == "assistant"]
    by_id: dict[str, list[str]] = {}
    for r in raw:
        for block in r["message"]["content"]:
            if block.get("type") == "text" and block["text"]:
                by_id.setdefault(r["message"]["id"], []).append(block["text"])
    text: dict[int, str] = {}
    message_of: dict[int, str] = {}
    for e in events:
        if isinstance(e, StepRecorded) and e.role == "agent":
            text[e.step_index] = e.content
            message_of[e.step_index] = e.message_id or ""
        elif isinstance(e, StepExtended):
            text[e.step_index] += e.content
    for step, content in text.items():
        assert content == "\n\n".join(by_id.get(message_of[step], []))
    # Interleaved parallel calls: results sit between lines of one message, one step still.
    interleaved = [e for e in events if isinstance(e, StepExtended) and e.tool_calls]
    assert interleaved


def test_tool_results_blobs_and_detail() -> None:
    events = parsed(V2_MAIN).events
    results = of(events, ToolResultRecorded)
    # Outputs longer than the inline limit: the spotter sessions have several.
    long_results = [r for path in sorted(SPOTTER.glob("*.jsonl"))
                    for r in of(parsed(path).events, ToolResultRecorded)]
    big = [r for r in long_results if r.output_chars > INLINE_CHARS]
    assert big and all(r.content_blob is not None and len(r.content) == INLINE_CHARS
                       and r.content_blob.size >= r.output_chars for r in big)
    capped = [r for r in results if "blob" in r.detail]
    assert capped and all(len(json.dumps(r.detail)) < 2 * INLINE_CHARS for r in capped)
    assert any(r.is_error for r in results)
    task = next(r for r in results if r.detail.get("agentId"))
    assert task.detail["status"] == "completed"
    calls = [c for cs in calls_by_step(events).values() for c in cs]
    blobbed = [c for c in calls if c.input_blob is not None]
    for call in blobbed:
        assert len(json.dumps(call.input)) <= INLINE_CHARS
    assert all(c.input == json.loads(json.dumps(c.input)) for c in calls)


def test_subagent_links_point_at_the_agent_files() -> None:
    def trace_of(path: Path) -> str:
        ref = parsed(path).ref
        assert ref is not None
        return ref.trace_id

    links = of(parsed(V2114).events, SubagentLinked)
    assert {link.child_trace_id for link in links} == {trace_of(p) for p in V2114_AGENTS}
    calls = calls_by_step(parsed(V2114).events)
    for link in links:
        assert link.tool_call_id in {c.tool_call_id for c in calls[link.step_index]
                                     if c.tool_name in ("Task", "Agent")}

    links = of(parsed(V2_MAIN).events, SubagentLinked)
    assert links and {link.child_trace_id for link in links} <= {trace_of(p) for p in V2_AGENTS}
    # 2.1.x: agent_progress names the agent before the result does; one link per agent.
    links = of(parsed(COMPACTED_21).events, SubagentLinked)
    assert [link.child_trace_id for link in links] == [trace_of(SPOTTER_SUBAGENT)]
    assert trace_of(SPOTTER_SUBAGENT) == trace_id_for(
        "claude-code", f"{COMPACTED_21.stem}/agent-a881341")


def test_inline_sidechains_link_to_the_calling_step() -> None:
    events = parsed(INLINE_SIDECHAINS).events
    calls = calls_by_step(events)
    sidechain = [e for e in of(events, StepRecorded) if e.is_sidechain]
    assert len(sidechain) > 100
    assert all(e.call_type == "subagent" and e.parent_step is not None for e in sidechain)
    roots = [e for e in sidechain if e.role == "user" and e.source_parent_uuid is None]
    assert len(roots) == 5
    for root in roots:
        prompts = [c.input.get("prompt") for c in calls[root.parent_step]
                   if c.tool_name == "Task"]
        assert root.content in prompts
    main = [e for e in of(events, StepRecorded) if not e.is_sidechain]
    assert all(e.parent_step is None and e.call_type is None for e in main)


def test_warmup_agent_files() -> None:
    warm = [p for p in V2_AGENTS if records(p)[0].get("message", {}).get("content") == "Warmup"]
    assert warm
    for path in warm:
        steps = of(parsed(path).events, StepRecorded)
        assert steps and all(s.call_type == "warmup" and s.is_sidechain for s in steps)
    real = CODERABBIT / "agent-ea02459f.jsonl"
    steps = of(parsed(real).events, StepRecorded)
    assert steps and all(s.call_type == "subagent" for s in steps)


@pytest.mark.parametrize("path", [COMPACTED_20, COMPACTED_21], ids=rel)
def test_compaction(path: Path) -> None:
    events = parsed(path).events
    boundary = next(r for r in records(path) if r.get("subtype") == "compact_boundary")
    (compaction,) = of(events, CompactionRecorded)
    assert compaction.boundary_uuid == boundary["uuid"]
    assert compaction.logical_parent_uuid == boundary["logicalParentUuid"]
    assert compaction.trigger == boundary["compactMetadata"]["trigger"]
    assert compaction.pre_tokens == boundary["compactMetadata"]["preTokens"]
    summary = steps_of(events)[compaction.step_index]
    assert (summary.role, summary.agent_role) == ("system", "compact_summary")
    assert summary.content.startswith("This session is being continued")


def test_meta_lines_are_system_steps() -> None:
    path = REAL / "-Users-dain-workspace-JSSoundRecorder" \
        / "7acd37a8-2745-4b58-a8a9-46164b22ad9e.jsonl"
    meta_uuids = {r["uuid"] for r in records(path) if r.get("isMeta")}
    steps = [e for e in of(parsed(path).events, StepRecorded) if e.source_uuid in meta_uuids]
    assert steps and all((s.role, s.agent_role) == ("system", "meta") for s in steps)


def test_skills() -> None:
    slash = of(parsed(INLINE_SIDECHAINS).events, SkillInvoked)
    assert [(s.skill, s.via) for s in slash] == [("orchestrator", "slash")]
    tool = of(parsed(CODEMIE / "session-3fe1b6bc.jsonl").events, SkillInvoked)
    assert ("bmad:core:workflows:party-mode", "tool") in {(s.skill, s.via) for s in tool}


def test_images_are_blobs() -> None:
    images = [(b["source"]["media_type"], len(base64.b64decode(b["source"]["data"])))
              for r in records(IMAGES) if r.get("type") == "user"
              and isinstance(r["message"]["content"], list)
              for b in r["message"]["content"] if b.get("type") == "image"]
    refs = [i for e in of(parsed(IMAGES).events, StepRecorded) for i in e.images]
    assert [(i.media_type, i.size) for i in refs] == images


def test_progress_metadata_stays_tiny() -> None:
    progress = [e for e in parsed(COMPACTED_21).events
                if isinstance(e, MetadataRecorded) and e.record_type == "progress"]
    assert len(progress) > 1000
    assert all(set(e.data) <= {"type", "toolUseID", "parentToolUseID", "agentId"}
               for e in progress)
    assert max(len(encode_event(e)) for e in progress) < 400


# ---------------------------------------------------------------------------------------------
# Hostile shapes never raise


def feed_all(values: list[Any]) -> list[list[Event]]:
    ref = SessionRef(agent="claude-code", session_id="s", path=Path("s.jsonl"))
    parser = ADAPTER.parser(ref, memory_context())
    out = [parser.feed(v, LineRef(number=i + 1, offset=i)) for i, v in enumerate(values)]
    for events in out:
        for e in events:
            assert decode_event(topic_of(e), encode_event(e), "fuzz") == e
    return out


def test_odd_shapes_become_metadata() -> None:
    huge = 2**70
    out = feed_all([
        [1, 2], "text", None, {}, {"type": 5}, {"type": "brand-new", "x": "y" * 10_000},
        {"type": "assistant", "message": "not a dict"},
        {"type": "assistant", "message": {"id": "m", "content": [1, None, {"type": "x"}],
                                          "usage": {"input_tokens": "many",
                                                    "output_tokens": huge}}},
        {"type": "assistant", "message": {"id": "m", "content": [
            {"type": "tool_use", "id": 7, "name": None, "input": [huge, "\ud800"]}]}},
        {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "z",
                                                  "content": {"a": 1}}]},
         "toolUseResult": "Error: boom"},
        {"type": "user", "message": {"content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "not base64!"}}]}},
        {"type": "user", "message": {"content": 3}},
        {"type": "system", "subtype": "compact_boundary", "compactMetadata": "x"},
        {"type": "progress", "data": [1]},
        {"type": "summary", "summary": ["not", "text"]},
        {"type": "user", "isSidechain": True, "parentUuid": 3, "uuid": [],
         "message": {"content": "Warmup"}},
    ])
    assert all(out), "every value yields an event"
    step = out[7][0]
    assert isinstance(step, StepRecorded) and step.token_usage == TokenUsage(
        output_tokens=2**63 - 1)
    assert isinstance(out[8][0], StepExtended)
    assert out[8][0].tool_calls[0].input == {"value": [str(huge), "\\ud800"]}
    assert isinstance(out[9][0], MetadataRecorded) and out[9][0].record_type == \
        "tool_result_orphan"
    assert out[9][0].data["detail"] == {"value": "Error: boom"}
    assert out[10][0].images[0].media_type == "text/plain"
    assert isinstance(out[12][0], CompactionRecorded)
    assert len(encode_event(out[5][0])) < 1000


_KEYS = ["type", "message", "content", "id", "uuid", "parentUuid", "isSidechain", "isMeta",
         "toolUseResult", "usage", "tool_use_id", "input", "name", "source", "data", "subtype",
         "compactMetadata", "agentId", "requestId", "text", "thinking", "summary", "cwd",
         "timestamp", "isCompactSummary", "parentToolUseID"]
_TYPES = ["assistant", "user", "system", "progress", "summary", "tool_use", "tool_result",
          "text", "image", "thinking", "compact_boundary", "agent_progress", "base64"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False) | st.sampled_from(_TYPES) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS), children, max_size=6),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_json_values, min_size=1, max_size=8))
def test_fuzzed_records_never_raise(values: list[Any]) -> None:
    assert all(feed_all(values))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_records_never_raise(data: st.DataObject) -> None:
    sample = _sample_records()
    values = []
    for record in data.draw(st.lists(st.sampled_from(sample), min_size=1, max_size=6)):
        record = json.loads(json.dumps(record))
        target = record
        for _ in range(data.draw(st.integers(0, 2))):
            nested = [k for k, v in target.items() if isinstance(v, dict)]
            if not nested:
                break
            target = target[data.draw(st.sampled_from(sorted(nested)))]
        if target:
            key = data.draw(st.sampled_from(sorted(target)))
            target[key] = data.draw(_json_values)
        values.append(record)
    assert all(feed_all(values))


@cache
def _sample_records() -> list[dict[str, Any]]:
    """One record per (type, subtype, first block type) seen in a few varied files."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in (V2114, INLINE_SIDECHAINS, COMPACTED_21, ROOT / "agent-sessions-stage0"
                 / "small.jsonl", IMAGES):
        for record in records(path):
            message = record.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            first = content[0].get("type") if isinstance(content, list) and content \
                and isinstance(content[0], dict) else type(content).__name__
            key = (record.get("type"), record.get("subtype"), first)
            if key not in seen and len(json.dumps(record)) < 20_000:
                seen[key] = record
    return list(seen.values())


def test_tool_use_result_copies_of_the_output_are_kept_once() -> None:
    """A toolUseResult string that repeats the output is replaced by a marker, and only then."""
    import re

    numbers = re.compile("(?m)^ *\\d+[\t\u2192]")
    raw_results: dict[str, tuple[str, dict]] = {}
    for line in COMPACTED_21.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        blocks = (record.get("message") or {}).get("content")
        if isinstance(blocks, list) and isinstance(record.get("toolUseResult"), dict):
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_result" \
                        and isinstance(block.get("content"), str):
                    raw_results[block["tool_use_id"]] = (block["content"], record["toolUseResult"])
    marked = 0
    for result in of(parsed(COMPACTED_21).events, ToolResultRecorded):
        output, original = raw_results.get(result.tool_call_id, ("", {}))
        for key, value in result.detail.items():
            inner = value.items() if isinstance(value, dict) and "same_as" not in value \
                else [(None, value)]
            for sub, item in inner:
                if not (isinstance(item, dict) and "same_as" in item):
                    continue
                marked += 1
                copy = original[key] if sub is None else original[key][sub]
                expected = output if item["same_as"] == "content" \
                    else numbers.sub("", output)
                assert copy in (expected, expected[:-1]), result.tool_call_id
    assert marked > 10

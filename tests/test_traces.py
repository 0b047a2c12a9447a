"""The traces projection and `trace get`: events in, TraceRecords out, through real SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from opentraces import api
from opentraces import events as ev
from opentraces.capture import ADAPTERS
from opentraces.commands.main import cli
from opentraces.config import Settings
from opentraces.errors import MaintenanceNeeded
from opentraces.projections.traces import Traces
from opentraces.record import Observation, TraceRecord, decode_jsonl_line
from opentraces.store import EventLog
from tests.conftest import CORPUS, REPO

AGENT = ev.AgentInfo(name="claude-code", version="2.1.3")
T0 = "2026-01-02T03:04:05Z"


def started(trace_id: str, session_id: str = "sess-1", **kw: object) -> ev.SessionStarted:
    return ev.SessionStarted(trace_id=trace_id, session_id=session_id, agent=AGENT, at=T0,
                             **kw)  # type: ignore[arg-type]


def put(settings: Settings, trace_id: str, events: list[ev.Event], *,
        catch_up: bool = True) -> None:
    api.append(settings, ev.stream("trace", trace_id), events, catch_up=catch_up)


def call(call_id: str, name: str = "Bash", **inp: object) -> ev.ToolCall:
    return ev.ToolCall(tool_call_id=call_id, tool_name=name, input=dict(inp))


def usage(i: int = 0, o: int = 0, cr: int = 0, cw: int = 0) -> ev.TokenUsage:
    return ev.TokenUsage(input_tokens=i, output_tokens=o, cache_read_tokens=cr,
                         cache_write_tokens=cw)


def a_session(settings: Settings, trace_id: str = "t-main") -> TraceRecord:
    """A user prompt, an agent response written over three lines, results, a usage report."""
    put(settings, trace_id, [
        started(trace_id, cwd="/work/shop", source_path="/logs/s.jsonl"),
        ev.SessionInfo(agent_version="2.1.4", model="claude-x", git_branch="main",
                       repository_url="git@github.com:acme/shop.git", system_prompt="Be brief."),
        ev.SourceSegmentRead(path="/logs/s.jsonl", generation=0, start_offset=0,
                             end_offset=500, line_count=5),
        ev.StepRecorded(step_index=0, role="user", content="Fix checkout\nplease",
                        at="2026-01-02T03:04:06Z"),
        ev.StepRecorded(step_index=1, role="agent", message_id="msg_1", content="Looking.",
                        model="claude-x", token_usage=usage(100, 3, 50, 10), cost_usd=0.01,
                        at="2026-01-02T03:04:07Z"),
        ev.StepExtended(step_index=1, reasoning_content="think", tool_calls=[call("c1", cmd="ls")],
                        token_usage=usage(100, 8, 50, 10)),
        ev.StepExtended(step_index=1, content="\n\nRunning tests.",
                        tool_calls=[call("c2", cmd="pytest"), call("c3", cmd="sleep 9")],
                        token_usage=usage(100, 20, 50, 10)),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c1", content="",
                              detail={"status": "started"}),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c1", content="app.py",
                              detail={"status": "completed", "duration_ms": 12}),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c1", content="app.py (again)"),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c2", content="1 failed",
                              is_error=False),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c2", content="",
                              is_error=True, detail={"exit_code": 1, "duration": 1.5}),
        ev.StepRecorded(step_index=2, role="agent", content="Done.", model="claude-x",
                        token_usage=usage(200, 5, 150, 0), cost_usd=0.02,
                        at="2026-01-02T03:05:07Z"),
        ev.SkillInvoked(step_index=2, skill="tdd", via="Skill"),
        ev.CompactionRecorded(step_index=2, boundary_uuid="b1", logical_parent_uuid="u9",
                              trigger="auto", pre_tokens=1000),
        ev.SessionEnded(reason="stop"),
    ])
    return api.trace_get(settings, trace_id)


# ---------------------------------------------------------------------------------------------
# Merge rules


def test_step_extended_appends_and_replaces_usage(settings: Settings) -> None:
    r = a_session(settings)
    user, agent, _done = r.steps
    assert [s.step_index for s in r.steps] == [0, 1, 2]
    assert agent.content == "Looking.\n\nRunning tests." and agent.reasoning_content == "think"
    assert [c.tool_call_id for c in agent.tool_calls] == ["c1", "c2", "c3"]
    assert agent.tool_calls[0].input == {"cmd": "ls"}
    assert (agent.token_usage.input_tokens, agent.token_usage.output_tokens) == (100, 20)
    assert agent.system_prompt_hash in r.system_prompts
    assert r.system_prompts[agent.system_prompt_hash] == "Be brief."
    assert user.system_prompt_hash is None and user.timestamp == "2026-01-02T03:04:06Z"


def test_tool_results_merge_first_content_details_and_error(settings: Settings) -> None:
    obs = {o.source_call_id: o for o in a_session(settings).steps[1].observations}
    assert obs["c1"].content == "app.py" and obs["c1"].error is None  # first non-empty wins
    assert obs["c1"].output_summary == "app.py"
    assert obs["c2"].content == "1 failed" and obs["c2"].error == "tool_error"  # OR-ed
    calls = {c.tool_call_id: c for c in api.trace_get(settings, "t-main").steps[1].tool_calls}
    assert calls["c1"].duration_ms == 12  # from the merged details; "completed" replaced
    assert calls["c2"].duration_ms == 1500  # "duration" is in seconds (Codex exec end)


def test_a_call_without_result_gets_a_no_result_observation(settings: Settings) -> None:
    obs = a_session(settings).steps[1].observations
    assert [o.source_call_id for o in obs] == ["c1", "c2", "c3"]
    assert obs[2] == Observation(source_call_id="c3", error="no_result")


def test_a_result_for_an_unknown_call_is_kept_on_its_step(settings: Settings) -> None:
    put(settings, "t-orphan", [
        started("t-orphan"), ev.StepRecorded(step_index=0, role="agent"),
        ev.ToolResultRecorded(step_index=0, tool_call_id="ghost", content="out")])
    (step,) = api.trace_get(settings, "t-orphan").steps
    assert [(o.source_call_id, o.content) for o in step.observations] == [("ghost", "out")]


def test_session_info_later_non_null_values_win(settings: Settings) -> None:
    put(settings, "t-info", [
        started("t-info"),
        ev.SessionInfo(model="m1", git_branch="main", git_commit="a" * 40, title="first"),
        ev.SessionInfo(model="m2", git_branch=None, title=None, agent_version="9.9")])
    r = api.trace_get(settings, "t-info")
    assert (r.agent.model, r.agent.version) == ("m2", "9.9")
    assert r.environment.vcs.branch == "main" and r.environment.vcs.type == "git"
    assert r.task.base_commit == "a" * 40 and r.metadata["title"] == "first"


def test_agent_reported_totals_win_and_the_last_report_counts(settings: Settings) -> None:
    put(settings, "t-totals", [
        started("t-totals"),
        ev.StepRecorded(step_index=0, role="agent", token_usage=usage(5, 5), cost_usd=1.0),
        ev.UsageTotalsRecorded(usage=usage(10, 1, 90, 0), cost_usd=0.5),
        ev.UsageTotalsRecorded(usage=usage(20, 2, 80, 0), cost_usd=0.75)])
    m = api.trace_get(settings, "t-totals").metrics
    assert (m.total_input_tokens, m.total_output_tokens, m.total_cache_read_tokens) == (20, 2, 80)
    assert m.cache_hit_rate == 0.8 and m.estimated_cost_usd == 0.75
    assert api.trace_get(settings, "t-totals").metadata["token_usage_source"] == "agent_reported"


def test_without_reports_metrics_sum_the_steps(settings: Settings) -> None:
    r = a_session(settings)
    m = r.metrics
    assert m.total_steps == 3
    assert (m.total_input_tokens, m.total_output_tokens) == (300, 25)
    assert (m.total_cache_read_tokens, m.total_cache_creation_tokens) == (200, 10)
    assert m.cache_hit_rate == round(200 / 510, 6)
    assert m.estimated_cost_usd == 0.03 and m.total_duration_s == 61.0
    assert r.metadata["token_usage_source"] == "step_sum"


def test_record_header_task_and_metadata(settings: Settings) -> None:
    r = a_session(settings)
    assert (r.trace_id, r.session_id, r.agent.name, r.agent.version) == (
        "t-main", "sess-1", "claude-code", "2.1.4")
    assert r.task.description == "Fix checkout\nplease" and r.task.source == "user_prompt"
    assert (r.task.repository, r.task.repository_url) == (
        "acme/shop", "git@github.com:acme/shop.git")
    assert (r.timestamp_start, r.timestamp_end) == ("2026-01-02T03:04:06Z",
                                                    "2026-01-02T03:05:07Z")
    assert r.metadata["source_paths"] == ["/logs/s.jsonl"]
    assert r.metadata["skills"] == [{"step_index": 2, "skill": "tdd", "via": "Skill"}]
    assert r.metadata["compactions"][0]["boundary_uuid"] == "b1"
    assert r.metadata["rejected_lines"] == 0 and r.metadata["ended"] is True
    assert r.metadata["end_reason"] == "stop" and r.metadata["cwd"] == "/work/shop"
    assert r.outcome.committed is False and r.lifecycle == "provisional"


def test_long_text_is_restored_from_its_blob(settings: Settings) -> None:
    whole = "x" * 5000 + " end"
    ref = api.put_blob(settings, whole.encode(), "text/plain")
    put(settings, "t-blob", [
        started("t-blob"),
        ev.StepRecorded(step_index=0, role="agent", content=whole[:4000], content_blob=ref,
                        tool_calls=[call("c1")]),
        ev.ToolResultRecorded(step_index=0, tool_call_id="c1", content=whole[:4000],
                              content_blob=ref)])
    (step,) = api.trace_get(settings, "t-blob").steps
    assert step.content == whole and step.observations[0].content == whole


# ---------------------------------------------------------------------------------------------
# Rewritten source files


def test_a_rewritten_file_restarts_the_record(settings: Settings) -> None:
    seg = {"path": "/logs/a.jsonl", "line_count": 1}
    put(settings, "t-gen", [
        started("t-gen"),
        ev.SourceSegmentRead(generation=0, start_offset=0, end_offset=100, **seg),
        ev.StepRecorded(step_index=0, role="user", content="old prompt"),
        ev.StepRecorded(step_index=1, role="agent", content="old answer",
                        tool_calls=[call("c1")], token_usage=usage(7, 7)),
        ev.ToolResultRecorded(step_index=1, tool_call_id="c1", content="old out"),
        ev.SourceLineRejected(path="/logs/a.jsonl", generation=0, line_number=3, offset=90,
                              reason="bad json"),
        ev.UsageTotalsRecorded(usage=usage(50, 50)),
        # The file grew: a segment from a later offset adds, it does not restart.
        ev.SourceSegmentRead(generation=0, start_offset=100, end_offset=150, **seg),
        ev.StepRecorded(step_index=2, role="user", content="more"),
    ])
    assert len(api.trace_get(settings, "t-gen").steps) == 3
    put(settings, "t-gen", [
        ev.SourceSegmentRead(generation=1, start_offset=0, end_offset=40, **seg),
        ev.StepRecorded(step_index=0, role="user", content="new prompt"),
        ev.StepRecorded(step_index=1, role="agent", content="new answer",
                        tool_calls=[call("c1")])])
    r = api.trace_get(settings, "t-gen")
    assert [s.content for s in r.steps] == ["new prompt", "new answer"]
    assert r.steps[1].observations[0].error == "no_result"  # the old result went too
    assert r.metadata["rejected_lines"] == 0 and r.generation_index == 1
    assert r.metrics.total_input_tokens == 0 and r.metadata["token_usage_source"] == "step_sum"
    assert r.task.description == "new prompt"


def test_a_restart_inside_one_page_drops_the_rows_buffered_before_it(
        settings: Settings, tmp_path: Path) -> None:
    seg = {"path": "/logs/c.jsonl", "line_count": 1}
    put(settings, "t-page", [  # one append, one page: step and result rows are buffered
        started("t-page"),
        ev.SourceSegmentRead(generation=0, start_offset=0, end_offset=100, **seg),
        ev.StepRecorded(step_index=0, role="agent", content="old", tool_calls=[call("c1")]),
        ev.StepExtended(step_index=0, content=" answer"),
        ev.ToolResultRecorded(step_index=0, tool_call_id="c1", content="old out"),
        ev.SourceSegmentRead(generation=1, start_offset=0, end_offset=40, **seg),
        ev.StepExtended(step_index=0, content="new", tool_calls=[call("c1")]),
        ev.ToolResultRecorded(step_index=0, tool_call_id="c1", content="new out")])
    r = api.trace_get(settings, "t-page")
    assert [s.content for s in r.steps] == ["new"]
    assert r.steps[0].observations[0].content == "new out"
    # The same log applied one event per page leaves the same rows.
    digest = api.rebuild(settings, ["traces"]).projections["traces"]["digest"]
    single = Traces(tmp_path / "single")
    with EventLog(settings.store) as log:
        for rec in log.page(after=0):
            single.apply_page([rec])
    single.close()
    assert single.digest() == digest


def test_a_repeated_generation_does_not_restart(settings: Settings) -> None:
    seg = {"path": "/logs/b.jsonl", "line_count": 1, "start_offset": 0, "end_offset": 10}
    put(settings, "t-same", [started("t-same"), ev.SourceSegmentRead(generation=2, **seg),
                             ev.StepRecorded(step_index=0, role="user", content="kept"),
                             ev.SourceSegmentRead(generation=2, **seg)])
    assert [s.content for s in api.trace_get(settings, "t-same").steps] == ["kept"]


# ---------------------------------------------------------------------------------------------
# Trail: committed only from anchors


def _patch(trace_id: str, patch_id: str) -> ev.PatchRecorded:
    return ev.PatchRecorded(patch_id=patch_id, trace_id=trace_id, step_index=1,
                            tool_call_id="c1", tool_name="Edit", path="src/app.py",
                            range=ev.LineRange(1, 3))


def _anchor(anchor_id: str, trace_id: str, patch_id: str, commit: str,
            tier: str = "exact_range_hash") -> ev.AnchorRecorded:
    return ev.AnchorRecorded(anchor_id=anchor_id, patch_id=patch_id, trace_id=trace_id,
                             repo_key="r1", commit=commit, path="src/app.py",
                             evidence_tier=tier, evidence_firmness="firm_observed",
                             at="2026-01-03T00:00:00Z")


def test_committed_only_when_an_anchor_links_the_traces_own_patch(settings: Settings) -> None:
    put(settings, "t-anch", [started("t-anch"), _patch("t-anch", "pA")])
    put(settings, "t-free", [started("t-free", "sess-2"), _patch("t-free", "pB")])
    api.append(settings, "repo:r1", [
        _anchor("a1", "t-anch", "pA", "c" * 40),
        # Unrelated anchors: another trace's patch, and a patch id the trace does not have.
        _anchor("a2", "t-other", "pZ", "d" * 40),
        _anchor("a3", "t-free", "pA", "e" * 40),
    ])
    free = api.trace_get(settings, "t-free")
    assert free.outcome.committed is False and free.outcome.commit_sha is None
    assert free.lifecycle == "provisional" and free.git_links == []
    assert free.patches[0].anchor is None
    anchored = api.trace_get(settings, "t-anch")
    assert anchored.outcome.committed is True and anchored.outcome.commit_sha == "c" * 40
    assert anchored.lifecycle == "final"
    (patch,) = anchored.patches
    assert patch.anchor is not None and patch.anchor.commit_sha == "c" * 40
    assert (patch.file_path, patch.step_index, patch.tool_call_id) == ("src/app.py", 1, "c1")
    assert [(g.revision, g.tier) for g in anchored.git_links] == [("c" * 40, "tool_emitted")]


def test_a_later_anchor_supersedes_an_earlier_commit(settings: Settings) -> None:
    put(settings, "t-amend", [started("t-amend"), _patch("t-amend", "pA")])
    api.append(settings, "repo:r1", [_anchor("a1", "t-amend", "pA", "1" * 40),
                                     _anchor("a2", "t-amend", "pA", "2" * 40, "structural")])
    r = api.trace_get(settings, "t-amend")
    assert r.outcome.commit_sha == "2" * 40
    assert r.patches[0].superseded_by == ["1" * 40]
    assert [(g.revision, g.tier) for g in r.git_links] == [
        ("1" * 40, "tool_emitted"), ("2" * 40, "tool_emitted_with_divergence")]


# ---------------------------------------------------------------------------------------------
# Sub-agents


def test_subagent_link_sets_the_trajectory_ref_of_the_calling_step(settings: Settings) -> None:
    child = ev.trace_id_for("claude-code", "child-session")
    put(settings, "t-parent", [
        started("t-parent"),
        ev.StepRecorded(step_index=0, role="user", content="go"),
        ev.StepRecorded(step_index=1, role="agent", tool_calls=[call("task1", "Task")]),
        ev.SubagentLinked(step_index=1, tool_call_id="task1", child_trace_id=child)])
    put(settings, child, [
        started(child, "child-session", parent_trace_id="t-parent", parent_step_index=1),
        ev.StepRecorded(step_index=0, role="user", content="Warmup", is_sidechain=True,
                        call_type="subagent", parent_step=1)])
    parent = api.trace_get(settings, "t-parent")
    assert [s.subagent_trajectory_ref for s in parent.steps] == [None, child]
    assert parent.metadata["subagents"] == [
        {"step_index": 1, "tool_call_id": "task1", "trace_id": child}]
    sub = api.trace_get(settings, child)
    assert sub.metadata["parent_trace_id"] == "t-parent"
    assert (sub.steps[0].call_type, sub.steps[0].parent_step) == ("subagent", 1)
    assert sub.task.description == "Warmup"  # all sidechain: its first prompt is the task


# ---------------------------------------------------------------------------------------------
# Lookup, freshness, errors


def test_unique_prefix_and_errors(settings: Settings) -> None:
    for tid in ("abc111", "abc222", "abd333"):
        put(settings, tid, [started(tid, tid)])
    assert api.trace_get(settings, "abd").trace_id == "abd333"
    assert api.trace_get(settings, "abc111").trace_id == "abc111"
    with pytest.raises(api.AmbiguousTrace) as amb:
        api.trace_get(settings, "abc")
    assert amb.value.candidates == ["abc111", "abc222"]
    assert amb.value.code == "ambiguous_trace" and amb.value.exit_code == 2
    assert amb.value.message == "2 traces start with 'abc': abc111, abc222"
    with pytest.raises(api.TraceNotFound) as missing:
        api.trace_get(settings, "zzz")
    assert missing.value.code == "trace_not_found"
    assert missing.value.next_command == "opentraces bucket manifest"


def test_a_lagging_view_answers_and_says_it_is_stale(settings: Settings) -> None:
    put(settings, "t-lag", [started("t-lag"), ev.StepRecorded(step_index=0, role="user")])
    put(settings, "t-lag", [ev.StepRecorded(step_index=1, role="agent")], catch_up=False)
    put(settings, "t-new", [started("t-new")], catch_up=False)
    view = api.trace_view(settings, "t-lag")
    assert view.stale and (view.position, view.head) == (2, 4)
    assert len(view.record.steps) == 1  # as the view was built; reads never write
    with pytest.raises(api.TraceNotFound) as e:
        api.trace_get(settings, "t-new")
    assert e.value.next_command == "opentraces repair"
    body = json.loads(invoke("get", "t-lag", "--json"))
    assert body["freshness"] == {"stale": True, "position": 2, "head": 4}
    assert body["next_command"] == "opentraces repair"
    assert body["next_steps"] == [
        "The traces view is 2 events behind the log; `opentraces repair` adds them."]
    assert api.status(settings).projections["traces"]["position"] == 2
    api.repair(settings)
    assert not api.trace_view(settings, "t-lag").stale


def test_a_missing_view_needs_maintenance(settings: Settings) -> None:
    put(settings, "t-miss", [started("t-miss")], catch_up=False)
    with pytest.raises(MaintenanceNeeded) as e:
        api.trace_get(settings, "t-miss")
    assert e.value.next_command == "opentraces repair" and e.value.exit_code == 3
    assert not (settings.projections_dir / "traces").exists()


def test_an_empty_store_has_no_traces(settings: Settings) -> None:
    with pytest.raises(api.TraceNotFound):
        api.trace_get(settings, "abc")
    assert not settings.home.exists()


# ---------------------------------------------------------------------------------------------
# The record as data: JSONL, hashing, rebuilds


def test_jsonl_line_round_trips(settings: Settings) -> None:
    r = a_session(settings)
    line = r.to_jsonl_line()
    assert "\n" not in line
    assert msgspec.json.decode(line, type=TraceRecord) == r == decode_jsonl_line(line)
    body = json.loads(line)
    assert list(body)[:4] == ["schema_version", "trace_id", "session_id", "content_hash"]
    assert body["schema_version"] == "0.9.0" and body["attribution"] is None
    assert list(body["steps"][1]["token_usage"]) == [
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "prefix_reuse_tokens"]


def test_content_hash_ignores_the_trace_id_and_follows_content(settings: Settings) -> None:
    r = a_session(settings)
    assert r.content_hash == r.compute_content_hash()
    renamed = msgspec.structs.replace(r, trace_id="elsewhere")
    assert renamed.compute_content_hash() == r.content_hash
    changed = msgspec.structs.replace(r, session_id="other")
    assert changed.compute_content_hash() != r.content_hash


def test_rebuild_twice_gives_equal_digests_and_replay_is_a_no_op(settings: Settings) -> None:
    first_record = a_session(settings)
    a_session(settings, "t-second")
    first = api.rebuild(settings, ["traces"]).projections["traces"]
    second = api.rebuild(settings, ["traces"]).projections["traces"]
    assert first["digest"] == second["digest"] and first["events_applied"] > 0
    assert api.trace_get(settings, "t-main") == first_record
    with api.open_workspace(settings) as ws:
        live = ws.runner().open("traces")
        with EventLog(settings.store) as log:
            assert live.apply_page(log.page(after=0)) == 0
        live.close()
        assert live.digest() == second["digest"]


# ---------------------------------------------------------------------------------------------
# The command


def invoke(*args: str, code: int = 0) -> str:
    """`opentraces trace <args>` through the root command, as a user runs it."""
    result = CliRunner().invoke(cli, ["trace", *args])
    assert result.exit_code == code, result.output + result.stderr
    return result.stdout


def test_trace_get_text(settings: Settings) -> None:
    a_session(settings)
    assert invoke("get", "t-ma") == (
        "trace t-main  session sess-1\n"
        "agent: claude-code 2.1.4  model claude-x\n"
        "task: Fix checkout\n"
        "time: 2026-01-02T03:04:06Z .. 2026-01-02T03:05:07Z\n"
        "steps: 3, tool calls: 3 (1 without result)\n"
        "tokens: in 300, out 25, cache read 200, cache write 10, cost $0.0300\n"
        "committed: no\n")


def test_trace_get_json_envelope_and_formats(settings: Settings) -> None:
    record = a_session(settings)
    body = json.loads(invoke("get", "t-main", "--json"))
    assert body["status"] == "ok" and body["schema_version"] == "opentraces.trace.record.v1"
    assert body["record"] == json.loads(record.to_jsonl_line())
    assert body["freshness"] == {"stale": False, "position": 16, "head": 16}
    assert body["next_command"] is None and body["next_steps"] == []
    assert invoke("get", "t-main", "--format", "jsonl") == record.to_jsonl_line() + "\n"
    assert json.loads(invoke("get", "t-main", "--format", "json")) == body["record"]


def test_trace_get_errors_through_the_cli(settings: Settings) -> None:
    for tid in ("abc111", "abc222"):
        put(settings, tid, [started(tid, tid)])
    result = CliRunner().invoke(cli, ["--json", "trace", "get", "abc"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["status"] == "error" and body["error"]["code"] == "ambiguous_trace"
    result = CliRunner().invoke(cli, ["trace", "get", "nope"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "Error: no trace matches 'nope'"


# ---------------------------------------------------------------------------------------------
# Real transcripts


CORPUS_FILES = {
    "claude-code": ["claude-code/spotter-transcripts/short.jsonl",
                    "claude-code/spotter-transcripts/tool_heavy.jsonl",
                    "claude-code/spotter-transcripts/subagent.jsonl"],
    "codex-cli": ["codex/agent-sessions-stage0/small.jsonl"],
    "pi": ["pi/pi-mono-history/compact.jsonl"],
}


def _adapter_written(agent: str) -> bool:
    module = ADAPTERS[agent].partition(":")[0].removeprefix("opentraces.")
    return (REPO / "opentraces" / (module.replace(".", "/") + ".py")).exists()


@pytest.mark.skipif(not (REPO / "opentraces" / "capture" / "claude_code.py").exists(),
                    reason="opentraces/capture/claude_code.py (the Claude Code adapter) is not "
                           "written yet")
def test_records_from_real_transcripts(settings: Settings) -> None:
    if not hasattr(api, "import_sessions"):
        pytest.skip("api.import_sessions (the importer) is not available yet")
    sources = [api.ImportSource(agent=agent, path=str(CORPUS / rel))
               for agent, files in CORPUS_FILES.items()
               if _adapter_written(agent) for rel in files if (CORPUS / rel).exists()]
    api.import_sessions(settings, sources)
    with api.open_workspace(settings, readonly=True) as ws:
        ids = ws.runner().open("traces").resolve("")
    assert ids
    for trace_id in ids:
        r = api.trace_get(settings, trace_id)
        assert decode_jsonl_line(r.to_jsonl_line()) == r
        assert [s.step_index for s in r.steps] == sorted({s.step_index for s in r.steps})
        assert r.metrics.total_steps == len(r.steps)
        assert r.outcome.committed is False  # no anchors were recorded
        for s in r.steps:
            assert [o.source_call_id for o in s.observations][:len(s.tool_calls)] == [
                c.tool_call_id for c in s.tool_calls]
        rate = r.metrics.cache_hit_rate
        assert rate is None or 0.0 <= rate <= 1.0
    digests = [api.rebuild(settings, ["traces"]).projections["traces"]["digest"]
               for _ in range(2)]
    assert digests[0] == digests[1]


def test_text_blocks_of_one_response_are_joined_once(settings: Settings, tmp_path: Path) -> None:
    """Claude Code writes one block per line; the record shows them with one blank line."""

    def line(uuid: str, parent: str | None, block: dict) -> str:
        return json.dumps({"type": "assistant", "uuid": uuid, "parentUuid": parent,
                            "sessionId": "s", "timestamp": "2026-01-01T00:00:00Z",
                            "message": {"id": "msg_1", "role": "assistant", "model": "m",
                                        "content": [block]}}) + "\n"

    path = tmp_path / "11111111-2222-4333-8444-555555555555.jsonl"
    path.write_text(line("a", None, {"type": "thinking", "thinking": "Think 1"})
                    + line("b", "a", {"type": "thinking", "thinking": "Think 2"})
                    + line("c", "b", {"type": "text", "text": "First"})
                    + line("d", "c", {"type": "text", "text": "Second"}))
    api.import_sessions(settings, api.import_sources(settings, [path], agents=["claude-code"]))
    (row,) = api.bucket_manifest(settings).traces
    (step,) = api.trace_get(settings, row["trace_id"]).steps
    assert step.content == "First\n\nSecond"
    assert step.reasoning_content == "Think 1\n\nThink 2"

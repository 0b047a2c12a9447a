"""Trace addresses, step and range views, cards, maps, change bursts and slices.

Real transcripts from the corpus are imported through the real importer into a real store;
what the views say is checked against the raw JSONL read independently here. The one trace
built from events is the one that needs a Git repository beside it (built with dulwich).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from opentraces import api
from opentraces import events as ev
from opentraces.commands.main import cli
from opentraces.config import Settings
from opentraces.record import TraceRecord
from opentraces.trace_map import bursts, instructions, trace_card, trace_map, trace_slice
from opentraces.tracing import (
    LAST,
    BadAddress,
    StepOutOfRange,
    parse_address,
    trace_range,
    trace_step,
)
from tests.conftest import CORPUS

#: Claude Code 2.0.5: 24 Edit/Write lines, git commits in Bash output, edits in a sibling repo.
TOKENIZER = CORPUS / ("claude-code/claude-code-log-real-projects/"
                      "-Users-dain-workspace-danieldemmel-me-next/"
                      "9e953218-585f-4692-89df-9e0747a31c68.jsonl")
#: Claude Code: a short session whose trace id starts like TOKENIZER's.
PRIVATE = CORPUS / ("claude-code/codemie-code/claude/-tmp-private/"
                    "4c2ddfdc-b619-4525-8d03-1950fb1b0257.jsonl")
#: Pi: 55 user messages, edit/write calls with absolute paths, commits in bash output.
PI_REFACTOR = CORPUS / "pi/pi-mono-fixtures/before-compaction.jsonl"
#: Codex CLI: apply_patch calls naming repo-relative paths.
CODEX = CORPUS / "codex/codemie-code/rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-3724b5ddb799.jsonl"  # noqa: E501


def load(settings: Settings, agent: str, path: Path) -> TraceRecord:
    api.import_sessions(settings, [api.ImportSource(agent=agent, path=str(path))])
    with api.open_workspace(settings, readonly=True) as ws:
        (trace_id,) = [t for t in ws.runner().open("traces").resolve("")
                       if str(path) in api.trace_get(ws, t).metadata["source_paths"]]
    return api.trace_get(settings, trace_id)


def raw_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def flat(text: str) -> str:
    return " ".join(text.split())


def run(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(cli, ["--json", *args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------
# Addresses


def test_parse_address_forms() -> None:
    assert parse_address(" 3f2a ").kind == "trace"
    assert (parse_address("3f2a:12").start, parse_address("3f2a:12").end) == (12, 12)
    assert parse_address("3f2a:12").kind == "step"
    assert (parse_address("3f2a:last").start, parse_address("3f2a:last").kind) == (LAST, "step")
    ranged = parse_address("3f2a:4-9")
    assert (ranged.trace, ranged.start, ranged.end, ranged.kind) == ("3f2a", 4, 9, "range")
    assert (parse_address("3f2a:5-last").end, parse_address("3f2a:5-last").kind) == (LAST,
                                                                                       "range")
    for bad, says in [("", "a trace id (or the start of one) is required"),
                      (":3", "starts with no trace id"),
                      ("3f2a:", "give a step number, 'last' or a range A-B"),
                      ("3f2a:x", "give a step number, 'last' or a range A-B"),
                      ("3f2a:1:2", "give a step number"),
                      ("3f2a:-1", "give a step number"),
                      ("3f2a:last-4", "'last' can only end a range"),
                      ("3f2a:9-3", "reversed; give the lower step first (3-9)")]:
        with pytest.raises(BadAddress) as e:
            parse_address(bad)
        assert says in e.value.message and e.value.code == "bad_address"
        assert e.value.exit_code == 2


def test_every_address_form_on_a_real_trace(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    last = record.steps[-1].step_index
    assert last == len(record.steps) - 1 == 111
    assert api.trace_get(settings, tid[:6]) == record  # a unique prefix
    assert api.trace_get(settings, f"{tid[:6]}:7") == record  # any address names its trace

    view = trace_step(settings, f"{tid[:8]}:19")
    assert view.trace_id == tid and view.step == record.steps[19]
    assert view.context_node_id == record.steps[19].context_node_id
    assert (view.stale, view.position) == (False, view.head)
    assert trace_step(settings, f"{tid}:last").step == record.steps[-1]

    part = trace_range(settings, f"{tid}:60-63")
    assert (part.start, part.end, part.steps) == (60, 63, record.steps[60:64])
    assert trace_range(settings, f"{tid}:110-last").steps == record.steps[110:]
    assert trace_range(settings, tid).steps == record.steps

    with pytest.raises(StepOutOfRange) as e:
        trace_step(settings, f"{tid}:112")
    assert e.value.message == f"step 112 is out of range: trace {tid} has steps 0 to 111"
    assert e.value.code == "step_out_of_range" and e.value.exit_code == 2
    with pytest.raises(StepOutOfRange, match="step 500 is out of range"):
        trace_range(settings, f"{tid}:100-500")
    with pytest.raises(BadAddress, match="names a range, not one step"):
        trace_step(settings, f"{tid}:1-2")
    with pytest.raises(BadAddress, match="malformed"):
        trace_step(settings, f"{tid}:one")


def test_an_ambiguous_prefix_is_refused_for_steps_too(settings: Settings) -> None:
    first = load(settings, "claude-code", TOKENIZER)
    second = load(settings, "claude-code", PRIVATE)
    assert first.trace_id[:2] == second.trace_id[:2] != first.trace_id[:3]
    with pytest.raises(api.AmbiguousTrace) as e:
        trace_step(settings, f"{first.trace_id[:2]}:3")
    assert e.value.candidates == sorted([first.trace_id, second.trace_id])
    assert trace_step(settings, f"{second.trace_id[:3]}:3").trace_id == second.trace_id


# ---------------------------------------------------------------------------------------------
# Sections and instructions against the raw transcripts


def raw_claude_instructions(path: Path) -> list[str]:
    """User prompts of a Claude Code file: main-chain user lines with text, minus the IDE's
    "opened file" blocks, minus harness echoes."""
    said = []
    for r in raw_lines(path):
        if r.get("type") != "user" or r.get("isMeta") or r.get("isSidechain"):
            continue
        content = r["message"]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if any(b.get("type") == "tool_result" for b in blocks):
            continue
        texts = [b["text"] for b in blocks if b.get("type") == "text"
                 and not b["text"].lstrip().startswith("<ide_")]
        text = "\n\n".join(texts).strip()
        if text and not text.startswith(("<command-name>", "<local-command", "[Request")):
            said.append(text)
    return said


def test_sections_are_the_user_instructions_of_the_raw_transcript(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    expected = raw_claude_instructions(TOKENIZER)
    assert len(expected) == 11
    said = instructions(record)
    assert [flat(t) for _, t in said] == [flat(t) for t in expected]
    m = trace_map(record)
    assert [s["step"] for s in m["sections"]] == [i for i, _ in said]
    assert m["facets"]["user_instructions"] == 11
    assert m["sections"][3] == {"step": 6, "end_step": 33, "preview": flat(expected[3])}
    assert m["sections"][-1]["end_step"] == 111

    pi = load(settings, "pi", PI_REFACTOR)
    raw_pi = [r for r in raw_lines(PI_REFACTOR)
              if r.get("type") == "message" and r["message"].get("role") == "user"]
    assert len(instructions(pi)) == len(raw_pi) == 55
    assert len(trace_map(pi)["sections"]) == 55


def test_landmarks_of_a_real_trace(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    marks = trace_map(record)["landmarks"]
    kinds: dict[str, list[int]] = {}
    for mark in marks:
        kinds.setdefault(mark["type"], []).append(mark["step"])
        # a step's context-tree node, or a range address for a burst of edits
        assert mark["node_id"] == record.steps[mark["step"]].context_node_id \
            or mark["node_id"].startswith(f"{record.trace_id}:{mark['step']}-")
    assert kinds["first_prompt"] == [0]
    assert kinds["user_instruction"] == [2, 4, 6, 34, 40, 46, 51, 60, 77, 101]
    assert kinds["commit"] == [19, 71, 91, 99, 108, 110]
    assert kinds["edits"] == [13, 29, 37, 44, 58, 63, 81, 104]
    errors = [s.step_index for s in record.steps
              if any(o.error == "tool_error" for o in s.observations)]
    assert kinds["error"] == errors and len(errors) == 10
    assert [m["step"] for m in marks] == sorted(m["step"] for m in marks)


# ---------------------------------------------------------------------------------------------
# Bursts


def raw_edits(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(cwd, [(tool_use_id, file_path)] of the Edit/Write/MultiEdit calls that did not fail)."""
    calls, failed, cwd = [], set(), ""
    for r in raw_lines(path):
        cwd = r.get("cwd", cwd)
        content = (r.get("message") or {}).get("content")
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "tool_use" and block["name"] in ("Edit", "Write",
                                                                      "MultiEdit"):
                calls.append((block["id"], block["input"]["file_path"]))
            if block.get("type") == "tool_result" and block.get("is_error"):
                failed.add(block["tool_use_id"])
    return cwd, [(i, p) for i, p in dict(calls).items() if i not in failed]


def test_bursts_of_a_real_claude_session(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    found = bursts(record, commit_lookup=True)
    # Read off the transcript: edits cluster at these steps (failed edits at 27, 35, 53, 68,
    # 78, 102 and 105 changed nothing); user prompts at 34, 40, 51, 60, 77, 101 split them.
    assert [b["step_range"] for b in found] == [
        [13, 14], [29, 29], [37, 37], [44, 44], [58, 58], [63, 70], [81, 88], [104, 107]]
    cwd, edits = raw_edits(TOKENIZER)
    assert cwd == "/Users/dain/workspace/danieldemmel.me-next"
    assert [(p["tool_call_id"], p["step_index"]) for b in found for p in b["patches"]] == [
        (i, next(s.step_index for s in record.steps for c in s.tool_calls
                 if c.tool_call_id == i)) for i, _ in edits]
    files = [path.removeprefix(cwd + "/") for _, path in edits]
    assert [f for b in found for p in b["patches"] for f in p["files"]] == files
    sibling = "/Users/dain/workspace/online-llm-tokenizer/"
    assert found[0]["unique_files"] == {sibling + "README.md": 1, sibling + "index.html": 1}
    assert found[5]["unique_files"] == {sibling + "index.html": 3, sibling + "tokenizer.js": 1}
    assert found[7]["unique_files"] == {"next.config.js": 1, sibling + "index.html": 1}
    assert found[5]["node_id"] == f"{record.trace_id}:63-70"
    # Commits printed by `git commit` in Bash output after each burst.
    raw = TOKENIZER.read_text(encoding="utf-8")
    shas = [(b["burst_commit_sha"], b["intent"]["commit_subject"]) for b in found]
    assert shas == [
        ("030d80d", "Add tokenizer application files and comprehensive README"),
        (None, None), (None, None), (None, None), (None, None),
        ("acf21f1", "Fix relative paths for submodule deployment"),
        ("42b4429", "Add dynamic base tag and favicon for standalone deployment"),
        ("ef55c7b", "Remove dynamic base tag - use simple relative paths")]
    for sha, subject in shas:
        assert sha is None or f"[main {sha}] {subject}" in raw
    assert {b["commit_source"] for b in found} == {"tool_output", None}
    assert all(b["intent"]["burst_commit_sha"] == b["burst_commit_sha"] for b in found)
    spec = found[1]["intent"]["most_substantive_spec"]
    assert spec == {"text": raw_claude_instructions(TOKENIZER)[3], "step": 6}


def test_no_commit_lookup_reads_no_outputs(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    quiet = bursts(record, commit_lookup=False)
    assert [b["burst_commit_sha"] for b in quiet] == [None] * 8
    assert [b["step_range"] for b in quiet] == [b["step_range"] for b in bursts(record)]
    # A wider gap joins 13-14 and 29; the prompt at 34 still splits 29 from 37.
    assert [b["step_range"] for b in bursts(record, gap=20, commit_lookup=False)][:2] == [
        [13, 29], [37, 37]]
    with pytest.raises(api.OpentracesError, match="0 or more"):
        bursts(record, gap=-1)


def test_intent_of_a_real_pi_burst(settings: Settings) -> None:
    record = load(settings, "pi", PI_REFACTOR)
    (burst,) = [b for b in bursts(record) if b["step_range"][0] == 35]
    said = {i: t for i, t in instructions(record)}
    assert burst["step_range"] == [35, 43]
    assert burst["intent"]["trigger"] == {"text": "ok, this looks amazing, start implementing",
                                          "step": 31}
    assert burst["intent"]["most_substantive_spec"] == {"text": said[23], "step": 23}
    assert said[23] == "how do we set things on the agentsession? all i see is getters"
    assert [x["step"] for x in burst["intent"]["spec_chain"]] == [23, 31]
    assert burst["burst_commit_sha"] == "3f30550"
    assert burst["intent"]["commit_subject"] == \
        "WP1: Create bash-executor.ts with unified bash execution"
    assert "[refactor 3f30550] WP1: Create bash-executor.ts" in PI_REFACTOR.read_text()
    assert burst["unique_files"] == {  # absolute paths under the cwd, made repo-relative
        "packages/coding-agent/src/core/bash-executor.ts": 1,
        "packages/coding-agent/src/core/index.ts": 2,
        "packages/coding-agent/docs/refactor.md": 1,
        "packages/coding-agent/src/core/agent-session.ts": 1}
    assert [p["tool_name"] for p in burst["patches"]] == ["write", "write", "edit", "write",
                                                          "edit"]


def test_codex_apply_patch_paths_stay_repo_relative(settings: Settings) -> None:
    record = load(settings, "codex-cli", CODEX)
    found = bursts(record, commit_lookup=False)
    names = [f for b in found for f in b["unique_files"]]
    assert names and all(not f.startswith("/") for f in names)
    assert "src/agents/plugins/codemie-code.plugin.ts" in names
    patches = [p for b in found for p in b["patches"]]
    assert [p["tool_name"] for p in patches] == ["apply_patch"] * 3


# ---------------------------------------------------------------------------------------------
# A trace whose commit lives in a real repository at its working folder


def git_repo(root: Path) -> tuple[str, dict[str, bytes]]:
    """A repository with one commit (fixed author and time); returns its sha and a snapshot of
    every file under .git, to prove nothing was written there."""
    from dulwich.repo import Repo

    repo = Repo.init(str(root), mkdir=True)
    (root / "app.py").write_text("print('hi')\n")
    tree = repo.get_worktree()
    tree.stage([b"app.py"])
    sha = tree.commit(message=b"Add the app\n\nWith a body line.\n", author=b"A <a@example.com>",
                      committer=b"A <a@example.com>", commit_timestamp=0, author_timestamp=0,
                      commit_timezone=0, author_timezone=0)
    repo.close()
    snapshot = {str(p): p.read_bytes() for p in (root / ".git").rglob("*") if p.is_file()}
    return sha.decode("ascii"), snapshot


def test_commit_resolved_read_only_and_paths_collapsed(settings: Settings,
                                                        tmp_path: Path) -> None:
    from dulwich.repo import Repo

    root = tmp_path / "shop"
    sha, before = git_repo(root)
    tid = "t-commit"
    call = lambda i, name, **inp: ev.ToolCall(tool_call_id=i, tool_name=name,  # noqa: E731
                                              input=dict(inp))
    api.append(settings, ev.stream("trace", tid), [
        ev.SessionStarted(trace_id=tid, session_id="s", cwd=str(root),
                          agent=ev.AgentInfo(name="claude-code")),
        ev.StepRecorded(step_index=0, role="user", content="Write the app and its test, "
                        "keeping the output short and plain please"),
        ev.StepRecorded(step_index=1, role="agent", tool_calls=[
            call("e1", "Edit", file_path=str(root / "app.py"), old_string="a", new_string="b")]),
        ev.StepRecorded(step_index=2, role="agent", tool_calls=[
            call("e2", "MultiEdit", file_path="./app.py", edits=[{}, {}])]),
        ev.StepRecorded(step_index=3, role="agent", tool_calls=[
            call("e3", "Write", file_path="app.py", content="x")]),
        ev.ToolResultRecorded(step_index=3, tool_call_id="e3", content="denied", is_error=True),
        ev.StepRecorded(step_index=4, role="user", content="ok, go ahead and commit"),
        ev.StepRecorded(step_index=5, role="agent", tool_calls=[
            call("b1", "Bash", command="git add -A && git commit -m 'Add the app'")]),
        ev.ToolResultRecorded(step_index=5, tool_call_id="b1",
                              content=f"[main (root-commit) {sha[:7]}] Add the app\n 1 file"),
    ])
    record = api.trace_get(settings, tid)
    (burst,) = bursts(record)
    assert burst["step_range"] == [1, 2]  # the failed Write at 3 changed nothing
    assert burst["unique_files"] == {"app.py": 3}  # absolute, ./ and plain: one file
    assert [p["files"] for p in burst["patches"]] == [{"app.py": 1}, {"app.py": 2}]
    assert burst["burst_commit_sha"] == sha  # resolved from the short sha in the output
    intent = burst["intent"]
    assert (intent["commit_subject"], intent["commit_body"]) == ("Add the app",
                                                                 "With a body line.")
    assert intent["trigger"] == {"text": "ok, go ahead and commit", "step": 4}
    assert intent["most_substantive_spec"]["step"] == 0
    after = {str(p): p.read_bytes() for p in (root / ".git").rglob("*") if p.is_file()}
    assert after == before
    # Offline: the short sha as printed, no repository opened.
    assert bursts(record, commit_lookup=False)[0]["burst_commit_sha"] is None
    # Another repository, without that commit: the short sha and subject as printed.
    Repo.init(str(tmp_path / "other"), mkdir=True).close()
    (other,) = bursts(record, repo=tmp_path / "other")
    assert (other["burst_commit_sha"], other["intent"]["commit_subject"]) == (sha[:7],
                                                                              "Add the app")
    assert other["intent"]["commit_body"] is None
    (tmp_path / "plain").mkdir()
    with pytest.raises(api.OpentracesError, match="not in a Git repository"):
        bursts(record, repo=tmp_path / "plain")


# ---------------------------------------------------------------------------------------------
# Map scope, card, slices


def test_map_candidate_scope_and_handoff(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    whole = trace_map(record)
    assert whole["scope"] == {"from_step": 0, "to_step": 111, "step_count": 112,
                              "candidate": None}
    focused = trace_map(record, candidate="19")
    assert focused["scope"]["from_step"] == 6 and focused["scope"]["to_step"] == 33
    assert [s["step"] for s in focused["sections"]] == [6]
    assert all(6 <= m["step"] <= 33 for m in focused["landmarks"])
    assert focused["handoff"] == {
        "command": f"opentraces trace slice {tid} --from-step 6 --to-step 33",
        "from_step": 6, "to_step": 33}
    assert trace_map(record, candidate=f"{tid}:38-41")["scope"]["from_step"] == 34
    assert trace_map(record, candidate=f"{tid[:5]}:last")["scope"]["from_step"] == 101
    with pytest.raises(api.OpentracesError, match="another trace"):
        trace_map(record, candidate="ffff:3")
    with pytest.raises(StepOutOfRange):
        trace_map(record, candidate="300")


def test_card(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    card = trace_card(settings, record.trace_id[:7])
    assert card["trace_id"] == record.trace_id
    assert card["headline"].startswith("I have @public/tokenizer.css")
    assert (card["committed"], card["commit_sha"]) == (False, None)  # nothing anchored
    assert card["outcome"] == "committed_unanchored"
    assert card["commits_seen"] == ["030d80d", "acf21f1", "42b4429", "d6cbb36", "ef55c7b",
                                    "2564804"]
    assert card["key_files"][0] == "/Users/dain/workspace/online-llm-tokenizer/index.html"
    assert "next.config.js" in card["key_files"] and "vercel.json" in card["key_files"]
    assert [s["step"] for s in card["key_steps"]][:5] == [0, 2, 4, 6, 19]
    assert card["refs"]["last_step"] == f"{record.trace_id}:last"
    assert card["agent"] == {"name": "claude-code", "version": "2.0.5",
                             "model": "claude-sonnet-4-5-20250929"}


def test_slices_in_each_mode(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    ranged = trace_slice(record, from_step=60, to_step=63)
    (one,) = ranged["slices"]
    assert ranged["mode"] == "range" and one["slice_id"] == f"{tid}:60-63"
    assert [s["step_index"] for s in one["steps"]] == [60, 61, 62, 63]
    assert one["steps"][1] == api.to_builtins(record.steps[61])
    assert one["refs"]["address"] == f"{tid}:60-63"
    assert trace_slice(record, from_step=110)["slices"][0]["end_step_index"] == 111
    around = trace_slice(record, around_step=1, radius=3)
    assert around["mode"] == "around"
    assert (around["slices"][0]["start_step_index"], around["slices"][0]["end_step_index"]) \
        == (0, 4)
    assert trace_slice(record, around_step=50)["slices"][0]["end_step_index"] == 55
    templated = trace_slice(record, template="bursts")
    assert templated["mode"] == "bursts"
    assert [(s["start_step_index"], s["end_step_index"]) for s in templated["slices"]] == [
        tuple(b["step_range"]) for b in bursts(record, commit_lookup=False)]
    assert templated["slices"][0]["refs"]["files"][0].endswith("README.md")
    assert trace_slice(record, template="bursts") == templated  # deterministic
    for bad in ({}, {"from_step": 1, "around_step": 3}, {"radius": 2, "from_step": 1},
                {"template": "sections"}, {"around_step": 500}, {"from_step": 9, "to_step": 3}):
        with pytest.raises(api.OpentracesError):
            trace_slice(record, **bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The commands


def test_cli_envelopes(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    step = run("trace", "get", f"{tid[:6]}:19")
    assert step["schema_version"] == "opentraces.trace.step.v1" and step["status"] == "ok"
    assert step["trace_id"] == tid and step["step"] == api.to_builtins(record.steps[19])
    assert step["context_node_id"] == record.steps[19].context_node_id
    assert step["context_node_id"].startswith("ctxn_") and step["freshness"]["stale"] is False
    steps = run("trace", "get", f"{tid}:60-last")
    assert steps["schema_version"] == "opentraces.trace.steps.v1"
    assert (steps["start_step_index"], steps["end_step_index"]) == (60, 111)
    assert len(steps["steps"]) == 52
    card = run("trace", "get", tid, "--card")
    assert card["schema_version"] == "opentraces.trace.get.v1"
    assert card["card"] == api.trace_card(settings, tid)
    mapped = run("trace", "map", tid, "--bursts", "--no-commit-lookup")
    assert mapped["schema_version"] == "opentraces.trace.map.v1"
    assert mapped["burst_gap"] == api.BURST_GAP
    assert mapped["bursts"] == bursts(record, commit_lookup=False)
    assert mapped["landmarks"] == trace_map(record)["landmarks"]
    assert mapped["next_command"] == mapped["handoff"]["command"]
    got = run("trace", "get", tid, "--bursts")
    assert got["schema_version"] == "opentraces.trace.map.v1"
    assert got["bursts"][0]["burst_commit_sha"] == "030d80d"
    focused = run("trace", "map", f"{tid}:19")
    assert focused["scope"]["candidate"] == "19" and focused["scope"]["from_step"] == 6
    sliced = run("trace", "slice", tid, "--template", "bursts")
    assert sliced["schema_version"] == "opentraces.trace.slice.v1"
    assert sliced["slices"] == trace_slice(record, template="bursts")["slices"]
    assert run("trace", "slice", f"{tid}:last")["slices"][0]["slice_id"] == f"{tid}:111-111"
    around = run("trace", "slice", tid, "--around-step", "5", "--radius", "2")
    assert around["slices"][0]["slice_id"] == f"{tid}:3-7"


def test_cli_errors(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    out = run("trace", "get", f"{tid}:112", code=2)
    assert out["error"]["code"] == "step_out_of_range"
    assert out["error"]["message"] == f"step 112 is out of range: trace {tid} has steps 0 to 111"
    assert run("trace", "get", f"{tid}:x", code=2)["error"]["code"] == "bad_address"
    for combo in (["--waste", "--bursts"], ["--run-intel", "--waste"],
                  ["--bursts", "--run-intel"]):
        body = run("trace", "get", tid, *combo, code=2)
        assert body["error"]["code"] == "usage_error" and "cannot be combined" in \
            body["error"]["message"]
        assert run("trace", "map", tid, *combo, code=2)["status"] == "error"
    assert run("trace", "get", f"{tid}:3", "--card", code=2)["error"]["code"] == "usage_error"
    assert run("trace", "slice", tid, code=2)["error"]["message"].startswith(
        "choose one slice mode")
    text = CliRunner().invoke(cli, ["trace", "get", tid, "--waste", "--bursts"])
    assert text.exit_code == 2 and "cannot be combined" in text.stderr


def test_cli_text_is_short(settings: Settings) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    tid = record.trace_id
    result = CliRunner().invoke(cli, ["trace", "get", f"{tid}:19"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"trace {tid}  step 19  agent  2025-10-04T00:02:00.508Z",
        "  Bash git commit -m \"$(cat <<'EOF' Add tokenizer application file… -> "
        "[main 030d80d] Add tokenizer application files and comprehe…"]
    mapped = CliRunner().invoke(cli, ["trace", "map", tid], catch_exceptions=False).stdout
    assert mapped.splitlines()[0] == (f"trace {tid}  claude-code  112 steps, 11 instructions, "
                                      "17 edits to 5 files, 10 errors, 6 commits")
    assert mapped.splitlines()[-1] == (f"Next: opentraces trace slice {tid} --from-step 0 "
                                       "--to-step 111")


# ---------------------------------------------------------------------------------------------
# Trace intelligence through both commands


@pytest.mark.parametrize(("flag", "schema"), [("--waste", "opentraces.context_waste.v2"),
                                              ("--run-intel", "opentraces.run_intel.v1")])
def test_intel_payloads_are_the_same_bytes_from_get_and_map(settings: Settings, flag: str,
                                                            schema: str) -> None:
    record = load(settings, "claude-code", TOKENIZER)
    outs = [CliRunner().invoke(cli, ["--json", "trace", verb, record.trace_id, flag],
                               catch_exceptions=False).stdout for verb in ("get", "map")]
    assert outs[0] == outs[1]
    body = json.loads(outs[0])
    assert body["schema_version"] == schema and body["status"] == "ok"
    made = (api.context_waste if flag == "--waste" else api.run_intel)(record)
    assert {k: body[k] for k in made} == json.loads(json.dumps(made))
    assert set(body) == {*made, "status", "schema_version", "next_command", "next_steps"}

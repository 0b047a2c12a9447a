"""The context tree on the real corpus: expected counts come from the raw JSON, read here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opentraces import api, context
from opentraces import events as ev
from opentraces.capture.claude_code import ClaudeCodeAdapter
from opentraces.config import Settings
from opentraces.errors import Refused
from opentraces.projections.context_tree import ContextTree, context_node_id
from opentraces.tracing import StepOutOfRange, trace_get
from tests.conftest import CORPUS, REWOUND

CLAUDE = CORPUS / "claude-code"
SPOTTER = CLAUDE / "spotter-transcripts"
#: compact_boundary whose logicalParentUuid names a line in the file.
COMPACTED = SPOTTER / "258c7280-ae70-4798-800f-63464d01a85d.jsonl"
#: compact_boundary whose logicalParentUuid names a line that is not in the file.
COMPACTED_DANGLING = SPOTTER / "4d5611e5-241a-462a-8d15-5122611a9569.jsonl"
#: 1.0.x inline sidechains (Task sub-agents written into the main file).
INLINE_SIDECHAINS = (CLAUDE / "claude-code-viewer-mock" / "sample-project"
                     / "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl")
PI_COMPACTED = CORPUS / "pi" / "pi-mono-history" / "compact.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file, line by line (a line may hold two run together)."""
    decoder = json.JSONDecoder()
    out = []
    for raw in path.read_bytes().splitlines():
        text, at = raw.decode("utf-8", "replace").strip(), 0
        while at < len(text):
            try:
                value, at = decoder.raw_decode(text, at)
            except ValueError:
                break
            if isinstance(value, dict):
                out.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
    return out


def import_files(settings: Settings, *paths: Path) -> None:
    api.import_sessions(settings, api.import_sources(settings, list(paths)))


def trace_of(path: Path) -> str:
    records = load(path)
    ref = ClaudeCodeAdapter().identify(path, records[0] if records else None)
    assert ref is not None
    return ref.trace_id


# ---------------------------------------------------------------------------------------------
# The independent reading of a Claude Code file


def step_lines(records: list[dict[str, Any]]) -> list[int]:
    """Lines that start a step: an assistant line with a new message id, a user line with
    text or an image (a line of tool results only is not a step)."""
    seen: set[str] = set()
    out = []
    for n, r in enumerate(records):
        message = r.get("message")
        if not isinstance(message, dict):
            continue
        if r.get("type") == "assistant":
            key = message.get("id") or r.get("requestId")
            if key in seen:
                continue
            if key:
                seen.add(key)
            out.append(n)
        elif r.get("type") == "user":
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) \
                else content if isinstance(content, list) else []
            if any(isinstance(b, dict) and ((b.get("type") == "text" and b.get("text"))
                                            or b.get("type") == "image") for b in blocks):
                out.append(n)
    return out


def parent_line(records: list[dict[str, Any]], n: int, by_uuid: dict[str, int]) -> int | None:
    r = records[n]
    parent = r.get("parentUuid")
    if parent is None and r.get("subtype") == "compact_boundary":
        logical = r.get("logicalParentUuid")
        if logical in by_uuid:
            return by_uuid[logical]
        earlier = [m for m in by_uuid.values() if m < n]  # dangling: the line before it
        return max(earlier) if earlier else None
    return by_uuid.get(parent) if parent else None


def chain(records: list[dict[str, Any]], n: int) -> list[int]:
    by_uuid = {r["uuid"]: m for m, r in enumerate(records) if isinstance(r.get("uuid"), str)}
    out: list[int] = []
    current: int | None = n
    while current is not None and current not in out:
        out.append(current)
        current = parent_line(records, current, by_uuid)
    return out


def active_steps(records: list[dict[str, Any]], sub: bool) -> list[int]:
    """Step lines on the chain of the file's last main-chain line."""
    lines = [n for n, r in enumerate(records)
             if r.get("uuid") and (sub or r.get("isSidechain") is not True)]
    if not lines:
        return []
    on = set(chain(records, lines[-1]))
    return [n for n in step_lines(records) if n in on]


def messages_from(records: list[dict[str, Any]], start: int | None, before: int) -> int:
    """Messages of the chain from line ``start`` back to a compaction boundary: step lines,
    and the results (written before line ``before``) of the calls those responses made.
    Parallel results hang from their own call line, off the chain, yet the model gets them."""
    by_uuid = {r["uuid"]: m for m, r in enumerate(records) if isinstance(r.get("uuid"), str)}
    starts = set(step_lines(records))
    count, responses = 0, set()
    current = start
    while current is not None:
        r = records[current]
        if r.get("subtype") == "compact_boundary":
            break
        count += current in starts
        if r.get("type") == "assistant":
            responses.add(r["message"].get("id") or r.get("requestId"))
        current = by_uuid.get(r.get("parentUuid") or "")
    calls = {b.get("id") for r in records[:before] if r.get("type") == "assistant"
             and (r["message"].get("id") or r.get("requestId")) in responses
             for b in (r["message"].get("content") or []) if isinstance(b, dict)
             and b.get("type") == "tool_use"}
    results = {b.get("tool_use_id") for r in records[:before] if r.get("type") == "user"
               for b in ((r.get("message") or {}).get("content") or [])
               if isinstance(b, dict) and b.get("type") == "tool_result"}
    return count + len(calls & results)


def messages_before(records: list[dict[str, Any]], n: int) -> int:
    """What the model had before the step starting at line ``n``."""
    by_uuid = {r["uuid"]: m for m, r in enumerate(records) if isinstance(r.get("uuid"), str)}
    return messages_from(records, by_uuid.get(records[n].get("parentUuid") or ""), n)


# ---------------------------------------------------------------------------------------------
# Nodes and the active path


def test_nodes_and_active_path_match_the_transcripts(settings: Settings) -> None:
    files = sorted(p for p in CLAUDE.rglob("*.jsonl")
                   if "agent-sessions-stage0" not in p.parts and p.stat().st_size)
    import_files(settings, *files)
    by_trace: dict[str, list[Path]] = {}
    for path in files:
        by_trace.setdefault(trace_of(path), []).append(path)
    checked = suffix_only = rewound = 0
    for trace_id, paths in by_trace.items():
        if len(paths) > 1:  # two files with one session id are one trace: no file to compare
            continue
        records = load(paths[0])
        sub = paths[0].name.startswith("agent-")
        info = context.ctx_info(settings, trace_id)["traces"][0]
        assert info["node_count"] == len(step_lines(records)), paths[0]
        expected = len(active_steps(records, sub))
        dangling = any(r.get("parentUuid") and r["parentUuid"] not in
                       {x.get("uuid") for x in records} for r in records)
        if dangling:
            # Lines hang from lines of another file: the events do not carry the uuids of
            # lines that are not steps, so such a parent reads like one of this file.
            assert info["active_path_length"] >= expected, paths[0]
            suffix_only += 1
        else:
            assert info["active_path_length"] == expected, paths[0]
            checked += 1
        rewound += info["branches"].get("rewind", 0) > 0
    assert checked >= 100 and suffix_only == 5 and rewound >= 1


def test_a_rewind_is_a_sibling_branch(settings: Settings) -> None:
    import_files(settings, REWOUND)
    records = load(REWOUND)
    tree = context.ctx_tree(settings, trace_of(REWOUND))
    rewinds = [n for n in tree["nodes"] if n["branch_type"] == "rewind"]
    assert len(rewinds) == 1
    # Raw: two user prompts name the same parent line; the later one is the rewind.
    prompts: dict[str, list[str]] = {}
    for r in records:
        if r.get("type") == "user" and r.get("uuid") and isinstance(
                (r.get("message") or {}).get("content"), str):
            prompts.setdefault(r["parentUuid"], []).append(r["uuid"])
    resubmitted = [uuids for uuids in prompts.values() if len(uuids) > 1]
    assert [rewinds[0]["transcript_uuid"]] == [u[-1] for u in resubmitted]
    first = next(n for n in tree["nodes"] if n["transcript_uuid"] == resubmitted[0][0])
    assert first["parent_node_id"] == rewinds[0]["parent_node_id"]
    assert not first["on_active_path"] and rewinds[0]["on_active_path"]


# ---------------------------------------------------------------------------------------------
# Per-step truth


@pytest.mark.parametrize("path", [COMPACTED, REWOUND, SPOTTER / "tool_heavy.jsonl"])
def test_step_messages_are_what_the_chain_holds_before_the_step(settings: Settings,
                                                                path: Path) -> None:
    import_files(settings, path)
    records = load(path)
    trace_id = trace_of(path)
    lines = step_lines(records)
    previous = -1
    active = [n["step_index"] for n in context.ctx_tree(settings, trace_id)["nodes"]
              if n["on_active_path"]]
    for step in active:
        view = context.ctx_step(settings, trace_id, step)
        assert view["saw"]["messages"] == messages_before(records, lines[step]), step
        assert all(m["step_index"] < step for m in view["messages"])
        if view["branch_type"] == "compaction":
            assert view["saw"]["messages"] < previous
        else:
            assert view["saw"]["messages"] >= previous  # grows along the path
        previous = view["saw"]["messages"]


def test_reads_and_writes_respect_step_and_range(settings: Settings) -> None:
    import_files(settings, SPOTTER / "tool_heavy.jsonl")
    trace_id = trace_of(SPOTTER / "tool_heavy.jsonl")
    view = context.ctx_step(settings, trace_id, 6)
    reads = context.ctx_reads(settings, trace_id, step=6)["reads"]
    writes = context.ctx_writes(settings, trace_id, step=6)["writes"]
    assert {r["role"] for r in reads} <= {"user", "system", "tool"} and reads
    assert {w["role"] for w in writes} == {"agent"}
    hashes = {m["content_hash"] for m in view["messages"]}
    assert {r["content_hash"] for r in reads if r["kind"] != "ext"} <= hashes
    ranged = context.ctx_reads(settings, trace_id, first=3, last=5)["reads"]
    assert ranged and {r["step_index"] for r in ranged} <= {3, 4, 5}
    whole = context.ctx_writes(settings, trace_id)["writes"]
    assert len(whole) > len(writes)
    with pytest.raises(api.OpentracesError):
        context.ctx_reads(settings, trace_id, step=3, first=1)


# ---------------------------------------------------------------------------------------------
# Compactions and sub-agents


def boundary_count(path: Path) -> int:
    return sum(r.get("subtype") == "compact_boundary" for r in load(path))


@pytest.mark.parametrize("path", [COMPACTED, COMPACTED_DANGLING])
def test_a_compaction_forks_from_the_step_before_it(settings: Settings, path: Path) -> None:
    import_files(settings, path)
    records = load(path)
    trace_id = trace_of(path)
    [row] = context.ctx_compactions(settings, trace_id)["compactions"]
    boundary = next(n for n, r in enumerate(records) if r.get("subtype") == "compact_boundary")
    lines = step_lines(records)
    before = max(i for i, n in enumerate(lines) if n < boundary)
    after = before + 1  # the summary is the first step after the boundary
    assert records[lines[after]].get("isCompactSummary") is True
    assert row["form"] == "boundary" and row["step_index"] == after
    assert row["trigger"] == records[boundary]["compactMetadata"]["trigger"]
    assert row["dropped"]["tokens_estimate"] == records[boundary]["compactMetadata"]["preTokens"]
    summary = context.ctx_step(settings, trace_id, after)
    assert summary["branch_type"] == "compaction" and summary["saw"]["messages"] == 0
    assert summary["parent_node_id"] == context.ctx_step(settings, trace_id, before)["node_id"]
    # What it dropped: the chain up to the boundary's logical parent (or the line before it).
    assert row["dropped"]["messages"] == messages_from(
        records, parent_line(records, boundary, {r["uuid"]: m for m, r in enumerate(records)
                                                 if isinstance(r.get("uuid"), str)}), boundary)
    assert context.ctx_step(settings, trace_id, after + 1)["saw"]["messages"] == 1


def test_every_compaction_in_the_corpus_is_found(settings: Settings) -> None:
    files = [p for p in CORPUS.rglob("*.jsonl") if p.stat().st_size]
    import_files(settings, *files)
    expected = 0
    for path in files:
        for r in load(path):
            expected += r.get("subtype") == "compact_boundary"  # Claude Code 2.x
            expected += r.get("type") in ("compaction", "compacted")  # pi, Codex
    found = [c for t in context.ctx_list(settings)["traces"]
             for c in context.ctx_compactions(settings, t["trace_id"])["compactions"]]
    assert expected >= 10 and len(found) == expected
    forms = {c["form"] for c in found}
    assert forms == {"boundary", "summary"}
    assert all(c["dropped"]["messages"] is not None for c in found if c["node_id"])


def test_a_summary_compaction_starts_from_its_summary(settings: Settings) -> None:
    import_files(settings, PI_COMPACTED)
    [trace] = context.ctx_list(settings)["traces"]
    # The second compaction shares its line with a message (two objects run together).
    first, second = context.ctx_compactions(settings, trace["trace_id"])["compactions"]
    row = first
    assert row["form"] == "summary" and row["kept"] == "unknown" and row["summary_chars"] > 0
    assert second["node_id"] is None and second["dropped"]["messages"] > 0  # nothing after it
    view = context.ctx_step(settings, trace["trace_id"], row["step_index"])
    assert view["saw"]["messages"] == 1 and view["messages"][0]["kind"] == "summary"
    assert view["layers"]["messages"]["capture_method"] == "reconstructed"
    assert view["layers"]["messages"]["completeness"] == "partial"
    first = context.ctx_step(settings, trace["trace_id"], 1)
    assert first["layers"]["messages"]["capture_method"] == "transcript"


def test_inline_sidechains_fork_from_their_task_call(settings: Settings) -> None:
    import_files(settings, INLINE_SIDECHAINS)
    records = load(INLINE_SIDECHAINS)
    roots = [r for r in records if r.get("isSidechain") is True and r.get("parentUuid") is None
             and (r.get("message") or {}).get("content") != "Warmup"]
    tree = context.ctx_tree(settings, trace_of(INLINE_SIDECHAINS))
    forks = [n for n in tree["nodes"] if n["branch_type"] == "subagent"]
    assert len(forks) == len(roots) > 0
    by_id = {n["node_id"]: n for n in tree["nodes"]}
    for fork in forks:
        caller = context.ctx_resume(settings, fork["parent_node_id"])
        assert not by_id[fork["parent_node_id"]]["is_sidechain"]
        view = context.ctx_step(settings, tree["trace_id"], fork["step_index"])
        assert view["saw"]["messages"] == 0  # a sub-agent starts from its own prompt
        assert caller["step_index"] == by_id[fork["parent_node_id"]]["step_index"]


def test_a_subagent_file_links_both_ways(settings: Settings) -> None:
    parent = SPOTTER / "8463c716-a2ea-4c14-9efa-87158ebd9f20.jsonl"
    child = next((SPOTTER / parent.stem / "subagents").glob("agent-a7be*.jsonl"))
    import_files(settings, parent, child)
    child_id = trace_of(child)
    tree = context.ctx_tree(settings, trace_of(parent))
    assert child_id in tree["subagent_session_ids"]
    link = next(s for s in tree["subagents"] if s["trace_id"] == child_id)
    records = load(parent)
    lines = step_lines(records)
    call_line = next(r for r in records if r.get("type") == "assistant" and any(
        isinstance(b, dict) and b.get("id") == link["tool_call_id"]
        for b in r["message"].get("content") or []))
    calls = [n for n in lines if records[n].get("type") == "assistant"
             and records[n]["message"].get("id") == call_line["message"]["id"]]
    child_tree = context.ctx_tree(settings, child_id)
    assert child_tree["parent"] == {"trace_id": tree["trace_id"],
                                    "step_index": link["step_index"],
                                    "node_id": link["node_id"]}
    assert len(child_tree["nodes"]) == len(step_lines(load(child)))
    assert [lines.index(n) for n in calls] == [link["step_index"]]


# ---------------------------------------------------------------------------------------------
# Node ids, layers, diff, resolve, errors


def test_node_ids_are_computable_and_resolve(settings: Settings) -> None:
    import_files(settings, REWOUND)
    trace_id = trace_of(REWOUND)
    records = load(REWOUND)
    tree = context.ctx_tree(settings, trace_id)
    for node, line in zip(tree["nodes"], step_lines(records), strict=True):
        assert node["transcript_uuid"] == records[line]["uuid"]
        assert node["node_id"] == context_node_id(trace_id, node["step_index"], node[
            "transcript_uuid"])
    uri = f"ot://context-node/{tree['active_leaf_id']}"
    resolved = context.ctx_resolve(settings, uri)
    assert resolved["object"]["node_id"] == tree["active_leaf_id"]
    with pytest.raises(context.ContextNodeNotFound):
        context.ctx_show(settings, "ctxn_000000000000000000000000")
    with pytest.raises(StepOutOfRange):
        context.ctx_step(settings, trace_id, 10_000)


def test_layers_are_shared_and_diff_per_layer(settings: Settings) -> None:
    import_files(settings, REWOUND)
    trace_id = trace_of(REWOUND)
    tree = context.ctx_tree(settings, trace_id)
    rewind = next(n for n in tree["nodes"] if n["branch_type"] == "rewind")
    sibling = next(n for n in tree["nodes"] if n["parent_node_id"] == rewind["parent_node_id"]
                   and n["node_id"] != rewind["node_id"])
    a = context.ctx_show(settings, sibling["node_id"])
    b = context.ctx_show(settings, rewind["node_id"])
    # Siblings had the same context: one shared messages layer.
    assert a["layers"]["messages"]["layer_id"] == b["layers"]["messages"]["layer_id"]
    later = context.ctx_show(settings, tree["active_leaf_id"])
    diff = context.ctx_diff(settings, rewind["node_id"], tree["active_leaf_id"])
    added = diff["layers"]["messages"]["added"]
    assert len(added) == len(later["messages"]) - len(b["messages"]) + sum(
        m["parts"] - 1 for m in later["messages"] if m["step_index"] >= rewind["step_index"])
    assert diff["layers"]["messages"]["removed"] == []
    only = context.ctx_diff(settings, a["node_id"], b["node_id"], layer="runtime_state")
    assert list(only["layers"]) == ["runtime_state"]
    with pytest.raises(api.OpentracesError):
        context.ctx_diff(settings, a["node_id"], b["node_id"], layer="bogus")


def test_rebuild_and_incremental_import_give_the_same_view(settings: Settings,
                                                           tmp_path: Path) -> None:
    lines = COMPACTED.read_bytes().splitlines(keepends=True)
    copy = tmp_path / "proj" / COMPACTED.name
    copy.parent.mkdir()
    copy.write_bytes(b"".join(lines[:900]))
    import_files(settings, copy)
    copy.write_bytes(b"".join(lines))
    import_files(settings, copy)
    with api.open_workspace(settings, readonly=True) as ws:
        grown = ws.runner().states()[ContextTree.name].digest
    rebuilt = api.rebuild(settings, [ContextTree.name]).projections[ContextTree.name]
    assert grown is not None and rebuilt["digest"] == grown


# ---------------------------------------------------------------------------------------------
# Resume and prune


def steps_of(settings: Settings, trace_id: str) -> list[tuple[str, str | None]]:
    return [(s.role, s.content) for s in trace_get(settings, trace_id).steps]


def test_prune_writes_a_session_that_reimports_as_the_steps_before_the_cut(
        settings: Settings, claude_copy: Path) -> None:
    import_files(settings, claude_copy)
    trace_id = trace_of(claude_copy)
    tree = context.ctx_tree(settings, trace_id)
    # Cut on the abandoned branch: the new session holds that branch, not the active one.
    node = next(n for n in tree["nodes"] if not n["on_active_path"] and n["role"] == "agent"
                and n["step_index"] > 5)
    dry = context.ctx_prune(settings, node["node_id"], claude_copy)
    assert dry["dry_run"] and not Path(dry["output"]).exists()
    done = context.ctx_prune(settings, node["node_id"], claude_copy, write=True)
    out = Path(done["output"])
    assert out.exists() and out.parent == claude_copy.parent and done["lines_kept"] > 0
    with pytest.raises(Refused):
        context.ctx_prune(settings, node["node_id"], claude_copy, write=True)
    assert all(json.loads(line)["sessionId"] == done["session_id"]
               for line in out.read_text().splitlines() if "sessionId" in json.loads(line))
    import_files(settings, out)
    original = steps_of(settings, trace_id)
    path = [n["step_index"] for n in tree["nodes"]
            if n["node_id"] in _ancestors(tree, node["node_id"])]
    assert steps_of(settings, trace_of(out)) == [original[i] for i in sorted(path)]


def _ancestors(tree: dict[str, Any], node_id: str) -> set[str]:
    by_id = {n["node_id"]: n for n in tree["nodes"]}
    out: set[str] = set()
    current = by_id[node_id]["parent_node_id"]
    while current is not None:
        out.add(current)
        current = by_id[current]["parent_node_id"]
    return out


def test_resume_session_file_for_trace_get(settings: Settings, claude_copy: Path) -> None:
    import_files(settings, claude_copy)
    trace_id = trace_of(claude_copy)
    dry = context.resume_session_file(settings, f"{trace_id}:5", dry_run=True)
    assert not Path(dry["session_file"]).exists()
    assert dry["command"].endswith(f"claude --resume {dry['session_id']}")
    done = context.resume_session_file(settings, f"{trace_id[:8]}:5")
    assert Path(done["session_file"]).exists() and done["written"]
    import_files(settings, Path(done["session_file"]))
    assert len(steps_of(settings, trace_of(Path(done["session_file"])))) == 5
    resume = context.ctx_resume(settings, done["node_id"])
    assert len(resume["messages"]) == context.ctx_step(settings, trace_id, 5)["saw"]["messages"]
    assert resume["env"]["cwd"] and resume["tool_registry"]["capture_method"] == "reconstructed"


# ---------------------------------------------------------------------------------------------
# Anchors


def test_anchor_for_step_picks_the_nearest_anchored_patch(settings: Settings) -> None:
    trace_id = "t-anchored"
    steps: list[ev.Event] = [ev.SessionStarted(trace_id=trace_id, session_id="s",
                                               agent=ev.AgentInfo(name="claude-code"))]
    steps += [ev.StepRecorded(step_index=i, role="agent" if i % 2 else "user",
                              content=f"step {i}") for i in range(8)]
    patches = [ev.PatchRecorded(patch_id=f"p{i}", trace_id=trace_id, step_index=i,
                                tool_call_id=f"c{i}", tool_name="Edit", path="a.py")
               for i in (1, 5)]
    api.append(settings, ev.stream("trace", trace_id), [*steps, *patches])
    with pytest.raises(context.NoAnchor) as caught:
        context.ctx_anchor_for_step(settings, trace_id, 3)
    assert caught.value.exit_code == 3
    anchors = [ev.AnchorRecorded(anchor_id=f"a{i}", patch_id=f"p{i}", trace_id=trace_id,
                                 repo_key="r", commit=f"{i}" * 40, path="a.py",
                                 evidence_tier="exact", evidence_firmness="firm")
               for i in (1, 5)]
    api.append(settings, ev.stream("repo", "r"), anchors)
    assert context.ctx_anchor_for_step(settings, trace_id, 4)["commit"] == "5" * 40
    tie = context.ctx_anchor_for_step(settings, trace_id, 3)
    assert tie["commit"] == "1" * 40 and tie["distance"] == 2
    assert tie["node_id"] == context_node_id(trace_id, 3, None)

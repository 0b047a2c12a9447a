"""The `ctx` commands and `trace get <t>:<n> --resume` on real corpus files.

Expected values come from the raw transcripts (read with the helpers of
``tests/test_context_tree.py``), not from the library the commands call. Every command runs
through the root command, as a user runs it (its error path maps errors to exit codes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from opentraces import api
from opentraces import events as ev
from opentraces.commands.main import cli
from opentraces.config import Settings
from tests.conftest import CORPUS
from tests.test_context_tree import (
    COMPACTED,
    REWOUND,
    SPOTTER,
    chain,
    import_files,
    load,
    messages_before,
    step_lines,
    trace_of,
)

TOOL_HEAVY = SPOTTER / "tool_heavy.jsonl"
PI = CORPUS / "pi" / "pi-mono-history" / "session.jsonl"


def invoke(*args: str) -> Result:
    """`opentraces ctx <args>`."""
    return CliRunner().invoke(cli, ["ctx", *args])


def run(*args: str) -> dict[str, Any]:
    """`ctx <args> --json`, which must succeed: the envelope."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "ok", body
    return body


def fail(*args: str, code: int) -> dict[str, Any]:
    """`opentraces --json ctx <args>`, which must fail with ``code``: the error envelope."""
    result = CliRunner().invoke(cli, ["--json", "ctx", *args])
    assert result.exit_code == code, result.output
    body = json.loads(result.stdout)
    assert body["schema_version"] == "opentraces.error.v1"
    return body


def text(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def step_uuids(path: Path) -> list[str]:
    records = load(path)
    return [records[n]["uuid"] for n in step_lines(records)]


# ---------------------------------------------------------------------------------------------
# Traces: list, info, tree, compactions


def test_list_info_and_tree(settings: Settings) -> None:
    import_files(settings, REWOUND, COMPACTED)
    rewound, compacted = trace_of(REWOUND), trace_of(COMPACTED)
    listed = run("list")
    assert listed["schema_version"] == "opentraces.ctx.info.v2" and listed["stale"] is False
    assert listed["next_command"] is None and listed["next_steps"] == []
    rows = {t["trace_id"]: t for t in listed["traces"]}
    assert set(rows) == {rewound, compacted}
    assert rows[rewound]["node_count"] == len(step_lines(load(REWOUND)))
    assert rows[compacted]["compactions"] == sum(r.get("subtype") == "compact_boundary"
                                                 for r in load(COMPACTED)) == 1
    info = run("info", rewound[:8])  # a prefix names the trace
    assert info["schema_version"] == "opentraces.ctx.info.v2"
    assert info["traces"] == [rows[rewound]] and info["next_command"] is None

    tree = run("tree", rewound[:8])
    assert tree["schema_version"] == "opentraces.context_tree.v1"
    assert [n["transcript_uuid"] for n in tree["nodes"]] == step_uuids(REWOUND)
    [rewind] = [n for n in tree["nodes"] if n["branch_type"] == "rewind"]
    leaf = next(n for n in tree["nodes"] if n["node_id"] == tree["active_leaf_id"])
    assert rewind["on_active_path"] and leaf["on_active_path"]

    table = text("list").splitlines()
    assert table[0].split() == ["trace", "agent", "nodes", "active", "compactions",
                                "subagents", "branches"]
    assert {line.split()[0] for line in table[1:]} == {rewound, compacted}
    drawn = text("tree", rewound).splitlines()
    assert drawn[0] == (f"trace {rewound}  {len(tree['nodes'])} nodes, "
                        f"{rows[rewound]['active_path_length']} on the active path (*)")
    # The abandoned prompt is drawn as a branch off the step both prompts hang from; the
    # rewind continues the active path in the first column.
    parent = next(n for n in tree["nodes"] if n["node_id"] == rewind["parent_node_id"])
    fork = drawn.index(f"  ├─ branch from step {parent['step_index']}:")
    assert drawn[fork + 1].startswith("  │ ") and rewind["node_id"] not in drawn[fork + 1]
    assert any(line.startswith("*") and rewind["node_id"] in line for line in drawn[fork:])
    assert "compaction" in text("tree", compacted)


def test_compactions(settings: Settings) -> None:
    import_files(settings, COMPACTED)
    boundary = next(r for r in load(COMPACTED) if r.get("subtype") == "compact_boundary")
    body = run("compactions", trace_of(COMPACTED))
    assert body["schema_version"] == "opentraces.ctx.compactions.v1"
    [row] = body["compactions"]
    assert row["form"] == "boundary" and row["boundary_uuid"] == boundary["uuid"]
    assert row["trigger"] == boundary["compactMetadata"]["trigger"]
    assert row["pre_tokens"] == boundary["compactMetadata"]["preTokens"]
    lines = text("compactions", trace_of(COMPACTED)).splitlines()
    assert lines[0].endswith("1 compactions") and lines[2].split()[:2] == ["0", "boundary"]


# ---------------------------------------------------------------------------------------------
# One node: step, show, resolve, reads, writes, diff, resume


def test_step_show_and_resolve(settings: Settings) -> None:
    import_files(settings, TOOL_HEAVY)
    trace_id = trace_of(TOOL_HEAVY)
    records = load(TOOL_HEAVY)
    lines = step_lines(records)
    view = run("step", trace_id[:6], "6")
    assert view["schema_version"] == "opentraces.ctx.view.v1" and view["view"] == "step"
    assert view["saw"]["messages"] == messages_before(records, lines[6])
    assert view["step_index"] == 6 and set(view["layers"]) == {
        "system", "messages", "tool_registry", "runtime_state"}
    shown = run("show", view["node_id"])
    assert {k: shown[k] for k in view} == view
    uri = f"ot://context-node/{view['node_id']}"
    assert run("show", uri)["node_id"] == view["node_id"]
    resolved = run("resolve", uri)
    assert resolved["schema_version"] == "opentraces.ctx.resolve.v1"
    assert resolved["uri"] == uri and resolved["kind"] == "context_node"
    assert resolved["object"] == {k: shown[k] for k in resolved["object"]}
    said = text("step", trace_id, "6").splitlines()
    assert said[0].startswith(f"node {view['node_id']}  trace {trace_id}  step 6")
    assert said[1].startswith(f"saw: {view['saw']['messages']} messages")
    assert text("resolve", uri).splitlines()[0] == f"{uri} is a context node"


def test_reads_and_writes(settings: Settings) -> None:
    import_files(settings, TOOL_HEAVY)
    trace_id = trace_of(TOOL_HEAVY)
    records = load(TOOL_HEAVY)
    lines = step_lines(records)
    reads = run("reads", trace_id, "--step", "6")
    assert reads["schema_version"] == "opentraces.context_reads.v1"
    assert reads["step"] == 6 and reads["range"] is None
    # Before step 6: the prompts and tool results on its chain, no model output.
    assert {"user", "tool"} <= {r["role"] for r in reads["reads"]} <= {"user", "system", "tool"}
    before = {records[n]["uuid"] for n in lines[:6]}
    assert {r["uuid"] for r in reads["reads"]} <= before
    ranged = run("writes", trace_id, "--from-step", "2", "--to-step", "8")
    assert ranged["schema_version"] == "opentraces.context_writes.v1"
    assert ranged["range"] == [2, 8] and {w["role"] for w in ranged["writes"]} == {"agent"}
    # Every step of this file is on the active path: the writes are its responses in 2..8.
    expected = [n for n in range(2, 9) if records[lines[n]]["type"] == "assistant"]
    assert sorted({w["step_index"] for w in ranged["writes"]}) == expected == [2, 8]
    assert text("reads", trace_id, "--step", "6").splitlines()[0] == (
        f"trace {trace_id}  {len(reads['reads'])} reads (before step 6)")
    both = fail("reads", trace_id, "--step", "6", "--from-step", "2", code=2)
    assert both["error"]["code"] == "usage_error"


def test_diff_between_rewind_siblings_and_later(settings: Settings) -> None:
    import_files(settings, REWOUND)
    tree = run("tree", trace_of(REWOUND))
    rewind = next(n for n in tree["nodes"] if n["branch_type"] == "rewind")
    sibling = next(n for n in tree["nodes"] if n["parent_node_id"] == rewind["parent_node_id"]
                   and n["node_id"] != rewind["node_id"])
    same = run("diff", sibling["node_id"], rewind["node_id"])
    assert same["schema_version"] == "opentraces.ctx.diff.v1"
    assert same["a"] == sibling["node_id"] and same["b"] == rewind["node_id"]
    assert same["layers"]["messages"] == {"added": [], "removed": [], "changed": []}
    later = run("diff", rewind["node_id"], tree["active_leaf_id"], "--layer", "messages")
    assert list(later["layers"]) == ["messages"]
    added = later["layers"]["messages"]["added"]
    assert added and later["layers"]["messages"]["removed"] == []
    assert all(m["step_index"] >= rewind["step_index"] for m in added)
    shown = text("diff", rewind["node_id"], tree["active_leaf_id"], "--layer", "messages")
    assert shown.splitlines()[1] == f"messages: +{len(added)} -0 ~0"
    bogus = invoke(*["diff", "a", "b", "--layer", "bogus"])
    assert bogus.exit_code == 2 and "bogus" in bogus.stderr


def test_resume_packet(settings: Settings) -> None:
    import_files(settings, TOOL_HEAVY)
    trace_id = trace_of(TOOL_HEAVY)
    records = load(TOOL_HEAVY)
    node = run("step", trace_id, "6")
    packet = run("resume", node["node_id"])
    assert packet["schema_version"] == "opentraces.context_resume.v1"
    assert (packet["trace_id"], packet["step_index"]) == (trace_id, 6)
    assert len(packet["messages"]) == node["saw"]["messages"]
    assert packet["env"]["cwd"] == records[step_lines(records)[6]]["cwd"]
    first = next(r for r in records if r.get("type") == "user")
    assert packet["messages"][0]["content"] == first["message"]["content"]
    said = text("resume", node["node_id"]).splitlines()
    assert said[0] == f"resume trace {trace_id} before step 6 ({node['node_id']})"


# ---------------------------------------------------------------------------------------------
# Prune and trace get --resume: files beside a copy of the session


def test_prune_dry_run_writes_nothing_and_write_never_overwrites(
        settings: Settings, claude_copy: Path) -> None:
    import_files(settings, claude_copy)
    records = load(claude_copy)
    lines = step_lines(records)
    node = run("step", trace_of(claude_copy), "7")
    folder = sorted(claude_copy.parent.iterdir())
    dry = run("prune", node["node_id"], "--source-jsonl", str(claude_copy))
    assert dry["schema_version"] == "opentraces.ctx.prune.v1"
    assert dry["dry_run"] and not dry["written"] and sorted(claude_copy.parent.iterdir()) == folder
    assert dry["next_command"].endswith(" --write") and node["node_id"] in dry["next_command"]
    assert text("prune", node["node_id"], "--source-jsonl", str(claude_copy)).startswith(
        "would write (dry run) ")

    done = invoke("prune", node["node_id"], "--source-jsonl", str(claude_copy), "--write",
                  "--json")
    body = json.loads(done.stdout)
    out = Path(body["output"])
    assert done.exit_code == 0 and body["written"] and out.parent == claude_copy.parent
    assert body["next_command"] == f"claude --resume {body['session_id']}"
    # The file is the chain the step hangs from, in file order.
    kept = [json.loads(line)["uuid"] for line in out.read_text().splitlines()]
    assert kept == [records[n]["uuid"] for n in sorted(chain(records, lines[7])[1:])]
    assert body["lines_kept"] == len(kept)

    written = out.read_bytes()
    again = fail("prune", node["node_id"], "--source-jsonl", str(claude_copy), "--write", code=2)
    assert again["status"] == "refused" and "never overwrites" in again["error"]["message"]
    assert out.read_bytes() == written
    bad = invoke(*["prune", node["node_id"], "--source-jsonl", str(claude_copy),
                                   "--to-session", "../elsewhere", "--write"])
    assert bad.exit_code == 2 and not (claude_copy.parent.parent / "elsewhere.jsonl").exists()
    named = run("prune", node["node_id"], "--source-jsonl", str(claude_copy), "--write",
                "--to-session", "mine")
    assert Path(named["output"]) == claude_copy.with_name("mine.jsonl")
    assert Path(named["output"]).read_bytes().replace(b'"mine"', b"") == written.replace(
        f'"{body["session_id"]}"'.encode(), b"")


def resume(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--json", "trace", "get", *args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_trace_get_resume(settings: Settings, claude_copy: Path) -> None:
    import_files(settings, claude_copy)
    trace_id = trace_of(claude_copy)
    records = load(claude_copy)
    lines = step_lines(records)
    before = sorted(claude_copy.parent.iterdir())
    dry = resume(f"{trace_id[:8]}:5", "--resume", "--dry-run")
    assert dry["schema_version"] == "opentraces.trace.resume.v1"
    assert dry["dry_run"] and not dry["written"] and sorted(claude_copy.parent.iterdir()) == before
    assert dry["command"] == (f"cd {records[lines[5]]['cwd']} && claude --resume "
                              f"{dry['session_id']}")
    assert dry["next_command"] == f"opentraces trace get {trace_id}:5 --resume"
    said = CliRunner().invoke(cli, ["trace", "get", f"{trace_id}:5", "--resume", "--dry-run"])
    assert said.exit_code == 0 and f"then resume it with: {dry['command']}" in said.stdout

    done = CliRunner().invoke(cli, ["trace", "get", f"{trace_id}:5", "--resume"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[-1] == f"Next: {dry['command']}"
    cut = Path(dry["session_file"])
    assert cut.exists()
    import_files(settings, cut)
    on_chain = set(chain(records, lines[5])[1:])
    assert len(api.trace_get(settings, trace_of(cut)).steps) == len(
        [n for n in lines if n in on_chain])
    again = resume(f"{trace_id}:5", "--resume", code=2)
    assert again["status"] == "refused"


def test_trace_get_resume_usage_errors(settings: Settings) -> None:
    import_files(settings, REWOUND, PI)
    trace_id = trace_of(REWOUND)
    for flag in ("--card", "--bursts", "--waste", "--run-intel"):
        body = resume(f"{trace_id}:5", "--resume", flag, code=2)
        assert body["error"]["code"] == "usage_error"
        assert "cannot be combined" in body["error"]["message"]
    assert resume(trace_id, "--resume", code=2)["error"]["code"] == "bad_address"
    assert resume(f"{trace_id}:2-4", "--resume", code=2)["error"]["code"] == "bad_address"
    assert resume(f"{trace_id}:5", "--dry-run", code=2)["error"]["code"] == "usage_error"
    [pi] = [t["trace_id"] for t in run("list")["traces"] if t["agent"] == "pi"]
    body = resume(f"{pi}:1", "--resume", "--dry-run", code=2)
    assert "Claude Code" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Anchors, errors, a lagging view


def test_anchor_for_step(settings: Settings) -> None:
    import_files(settings, REWOUND)
    trace_id = trace_of(REWOUND)
    body = fail("anchor-for-step", trace_id, "3", code=3)
    assert body["error"]["code"] == "no_anchor"
    said = CliRunner().invoke(cli, ["ctx", "anchor-for-step", trace_id, "3"])
    assert said.exit_code == 3 and said.stderr.startswith("Error: no commit is anchored")
    patched = "t-anchored"
    api.append(settings, ev.stream("trace", patched), [
        ev.SessionStarted(trace_id=patched, session_id="s", agent=ev.AgentInfo(name="claude-code")),
        *[ev.StepRecorded(step_index=i, role="agent", content=f"step {i}") for i in range(6)],
        ev.PatchRecorded(patch_id="p4", trace_id=patched, step_index=4, tool_call_id="c4",
                         tool_name="Edit", path="a.py")])
    api.append(settings, ev.stream("repo", "r"), [
        ev.AnchorRecorded(anchor_id="a4", patch_id="p4", trace_id=patched, repo_key="r",
                          commit="4" * 40, path="a.py", evidence_tier="exact",
                          evidence_firmness="firm")])
    found = run("anchor-for-step", patched, "1")
    assert found["schema_version"] == "opentraces.ctx.anchor.v1"
    assert (found["commit"], found["patch_step_index"], found["distance"]) == ("4" * 40, 4, 3)
    assert text("anchor-for-step", patched, "1").splitlines()[0] == (
        f"trace {patched} step 1: commit {'4' * 40}")


def test_unknown_names_are_usage_errors(settings: Settings) -> None:
    import_files(settings, REWOUND)
    assert fail("info", "zzzz", code=2)["error"]["code"] == "trace_not_found"
    assert fail("show", "ctxn_000000000000000000000000", code=2)["error"]["code"] == \
        "context_node_not_found"
    assert fail("step", trace_of(REWOUND), "999", code=2)["error"]["code"] == \
        "step_out_of_range"
    assert fail("resolve", "ctxn_x", code=2)["error"]["code"] == "usage_error"


def test_a_lagging_view_points_at_repair(settings: Settings) -> None:
    import_files(settings, REWOUND)
    trace_id = trace_of(REWOUND)
    api.append(settings, ev.stream("trace", trace_id),
               [ev.StepRecorded(step_index=999, role="user", content="later")], catch_up=False)
    result = invoke("info", trace_id, "--json")
    body = json.loads(result.stdout)
    assert body["stale"] is True and body["next_command"] == "opentraces repair"
    assert body["next_steps"] and "opentraces repair" in body["next_steps"][0]
    assert text("tree", trace_id).splitlines()[-1] == "Next: opentraces repair"
    api.repair(settings)
    assert run("info", trace_id)["stale"] is False

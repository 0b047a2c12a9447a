"""Trace Intelligence on real transcripts: context waste, run signals, compare, and the CLI.

Every step index asserted here was checked against the raw transcript (the line that made the
step, its tool call and its result). The corpus files are imported once per module into a
private home; the records come from ``api.trace_get`` like any reader's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from opentraces import api
from opentraces.config import Settings, load_settings
from opentraces.context_waste import context_waste
from opentraces.record import TraceRecord
from opentraces.run_signals import is_approval, resteer_lead, run_intel
from opentraces.trace_compare import compare, quality
from tests.conftest import CORPUS

CC = "claude-code/claude-code-log-real-projects"
FILES = {
    "pi_large": "pi/pi-mono-fixtures/large-session.jsonl",
    "pi_compact": "pi/pi-mono-history/compact.jsonl",
    "pi_session": "pi/pi-mono-history/session.jsonl",
    "pi_before": "pi/pi-mono-fixtures/before-compaction.jsonl",
    "cc_624": "claude-code/codemie-code/session-624a4a58.jsonl",
    "cc_f852": f"{CC}/-Users-dain-workspace-danieldemmel-me-next/"
               "f852ad25-1024-47da-964e-5eaae5bd6e6a.jsonl",
    "cc_9e95": f"{CC}/-Users-dain-workspace-danieldemmel-me-next/"
               "9e953218-585f-4692-89df-9e0747a31c68.jsonl",
    "cc_37f8": f"{CC}/-Users-dain-workspace-claude-code-log-sample/"
               "37f83ec9-f2ea-42a9-925e-0d5c105cb6e8.jsonl",
    "cc_7acd": f"{CC}/-Users-dain-workspace-JSSoundRecorder/"
               "7acd37a8-2745-4b58-a8a9-46164b22ad9e.jsonl",
    "cc_ea02": f"{CC}/-Users-dain-workspace-coderabbit-review-helper/agent-ea02459f.jsonl",
    "cc_fe5e": "claude-code/claude-code-viewer-mock/sample-project/"
               "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl",
    "cc_4d56": "claude-code/spotter-transcripts/4d5611e5-241a-462a-8d15-5122611a9569.jsonl",
    "cc_a289": "claude-code/spotter-transcripts/4d5611e5-241a-462a-8d15-5122611a9569/"
               "subagents/agent-a2898e3.jsonl",
    "cc_beads": "claude-code/spotter-transcripts/subagent.jsonl",
    "codex": "codex/codemie-code/rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-"
             "3724b5ddb799.jsonl",
}


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("intel")
    settings = load_settings(root / ".opentraces", user_home=root)
    paths = [CORPUS / rel for rel in FILES.values()]
    api.import_sessions(settings, api.import_sources(settings, paths))
    return settings


@pytest.fixture(scope="module")
def records(corpus_home: Settings) -> dict[str, TraceRecord]:
    manifest = api.bucket_manifest(corpus_home)
    by_source: dict[str, TraceRecord] = {}
    for row in manifest.traces:
        record = api.trace_get(corpus_home, row["trace_id"])
        by_source[record.metadata["source_paths"][0]] = record
    return {key: by_source[str(CORPUS / rel)] for key, rel in FILES.items()}


def signals(record: TraceRecord, kind: str) -> list[dict[str, Any]]:
    return [s for s in run_intel(record)["signals"] if s["kind"] == kind]


def at(items: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    return [i for i in items if i["step_index"] == step]


def findings(record: TraceRecord, pattern: str) -> list[dict[str, Any]]:
    return [f for f in context_waste(record)["findings"] if f["pattern"] == pattern]


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------
# Context waste


def test_large_output_is_measured_on_the_whole_output(records: dict[str, TraceRecord]) -> None:
    # agent-ea02459f line 3: five Reads; extract-coderabbit-feedback.py came back whole (58,050
    # characters, kept in a blob and restored by trace_get); README.md (9,881) did not count.
    found = findings(records["cc_ea02"], "large_output")
    assert [(f["step_index"], f["evidence"]["output_chars"], f["severity"]) for f in found] \
        == [(2, 58050, "high")]
    assert found[0]["evidence"]["target"].endswith("extract-coderabbit-feedback.py")
    assert found[0]["finding_id"].startswith("cw_")
    assert found[0]["node_id"] == records["cc_ea02"].steps[2].context_node_id  # the tree's node


def test_an_output_just_under_the_threshold_is_not_large(records: dict[str, TraceRecord]) -> None:
    # session-624a4a58 step 4: four parallel Reads of 16,640, 19,623, 11,957 and 5,989
    # characters; only the first two reach 12,000.
    record = records["cc_624"]
    step = next(s for s in record.steps if s.step_index == 4)
    sizes = {o.source_call_id: len(o.content or "") for o in step.observations}
    assert sorted(sizes.values()) == [5989, 11957, 16640, 19623]
    flagged = {f["evidence"]["tool_call_id"] for f in at(findings(record, "large_output"), 4)}
    assert flagged == {c for c, n in sizes.items() if n >= 12000}


def test_one_file_read_again_and_again(records: dict[str, TraceRecord]) -> None:
    # 4d5611e5: assets/js/app.js is Read at steps 59, 60, 83, 84, 85, 87 within 5 minutes and
    # never edited in between; the finding sits on the third read.
    found = [f for f in findings(records["cc_4d56"], "repeated_file_read")
             if f["evidence"]["path"].endswith("/assets/js/app.js")]
    assert len(found) == 1
    f = found[0]
    assert f["step_index"] == 83
    assert f["evidence"]["step_indexes"] == [59, 60, 83, 84, 85, 87]
    assert (f["confidence"], f["severity"], f["evidence"]["edited_at_steps"]) == ("high", "high",
                                                                                   [])


def test_codex_sed_reads_of_one_file_count_and_edits_lower_confidence(
        records: dict[str, TraceRecord]) -> None:
    # Codex rollout: `sed -n '330,400p' src/agents/plugins/codemie-code.plugin.ts` (step 24),
    # then 250,340 (26), 70,150 (30), 150,210 (32) and `nl -ba … | sed -n` (67); an
    # apply_patch changed the file in between.
    found = [f for f in findings(records["codex"], "repeated_file_read")
             if f["evidence"]["path"].endswith("src/agents/plugins/codemie-code.plugin.ts")]
    assert [(f["step_index"], f["evidence"]["step_indexes"]) for f in found] \
        == [(30, [24, 26, 30, 32, 67])]
    assert found[0]["evidence"]["ranges"][:2] == ["sed -n 330,400p", "sed -n 250,340p"]
    assert found[0]["confidence"] == "medium" and found[0]["evidence"]["edited_at_steps"]


def test_reads_spread_over_more_than_the_window_are_not_waste(
        records: dict[str, TraceRecord]) -> None:
    # pi session.jsonl reads docs/hooks.md at steps 11, 81, 155 and 210: 18, 34 and 47
    # minutes after the first, so no three of them fall within 20 minutes.
    # session-624a4a58 reads metrics-processor.ts at steps 4, 51, 52: two within the window.
    for key, name in (("pi_session", "docs/hooks.md"), ("cc_624", "metrics-processor.ts")):
        paths = [f["evidence"]["path"] for f in findings(records[key], "repeated_file_read")]
        assert not [p for p in paths if p.endswith(name)], key


def test_a_burst_of_searches(records: dict[str, TraceRecord]) -> None:
    # agent-a2898e3 (a sub-agent): Grep and Glob calls, 16 in 39 seconds from step 2 on.
    found = findings(records["cc_a289"], "repeated_search")
    assert [(f["step_index"], f["evidence"]["search_count"]) for f in found] == [(2, 16)]
    assert found[0]["evidence"]["tool_names"] == ["Bash", "Glob", "Grep"]
    # Codex: `rg …` commands through exec_command, 17 in 8.2 minutes.
    codex = findings(records["codex"], "repeated_search")
    assert [(f["step_index"], f["evidence"]["search_count"], f["evidence"]["tool_names"])
            for f in codex] == [(16, 17, ["exec_command"])]


def test_a_few_searches_are_not_waste(records: dict[str, TraceRecord]) -> None:
    # 9e953218 searches four times (Glob at 42, Grep at 56, 67, 96): fewer than five.
    assert findings(records["cc_9e95"], "repeated_search") == []


def test_summary_counts_the_findings(records: dict[str, TraceRecord]) -> None:
    for record in records.values():
        payload = context_waste(record)
        summary = payload["summary"]
        assert summary["context_waste_count"] == len(payload["findings"]) == sum(
            summary[f"{p}_count"] for p in ("large_output", "repeated_file_read",
                                             "repeated_search"))
        assert payload["fidelity"] == "record" and payload["limitations"]
        assert payload["thresholds"]["large_output_chars"] == 12000


# ---------------------------------------------------------------------------------------------
# Run signals: failures and recoveries


def test_a_structured_failure_and_its_recovery(records: dict[str, TraceRecord]) -> None:
    # before-compaction line 86: `npm run check` result with isError true (step 44); line 100:
    # the same command succeeds (step 52).
    record = records["pi_before"]
    failure = at(signals(record, "failure"), 44)
    assert len(failure) == 1 and failure[0]["confidence"] == "high"
    assert failure[0]["evidence"]["source"] == "tool_error"
    recovery = at(signals(record, "recovery"), 52)
    assert len(recovery) == 1
    assert recovery[0]["evidence"]["action"] == "shell:npm run check"
    assert recovery[0]["evidence"]["failed_step_indexes"] == [44]


def test_a_failed_edit_recovered_by_the_next_edit_of_the_file(
        records: dict[str, TraceRecord]) -> None:
    # 9e953218: Edit of next.config.js fails with "String to replace not found" (step 27),
    # the next Edit of that file succeeds (step 29).
    record = records["cc_9e95"]
    assert at(signals(record, "failure"), 27)[0]["matched_text"].startswith(
        "<tool_use_error>String to replace not found")
    recovery = at(signals(record, "recovery"), 29)
    assert recovery[0]["evidence"]["failed_step_indexes"] == [27]


def test_recovery_needs_an_uncleared_failure(records: dict[str, TraceRecord]) -> None:
    for record in records.values():
        open_failures: dict[str, int] = {}
        for s in run_intel(record)["signals"]:
            action = s["evidence"].get("action")
            if s["kind"] == "failure":
                open_failures[action] = open_failures.get(action, 0) + 1
            elif s["kind"] == "recovery":
                assert open_failures.pop(action, 0) == s["evidence"]["failures_cleared"] > 0


def test_failure_text_in_an_unflagged_shell_output(records: dict[str, TraceRecord]) -> None:
    # 37f83ec9 step 50: `git diff HEAD~1 … | grep …` printed "fatal: ambiguous argument" but
    # the pipeline's status (grep's) was not an error.
    failure = at(signals(records["cc_37f8"], "failure"), 50)
    assert len(failure) == 1
    assert (failure[0]["evidence"]["source"], failure[0]["confidence"]) == ("output_text", "low")
    assert failure[0]["matched_text"].startswith("fatal: ambiguous argument")


def test_grep_without_matches_is_not_a_failure(records: dict[str, TraceRecord]) -> None:
    # pi session.jsonl step 25: `grep -A 30 "export interface MarkdownTheme" …` → "(no
    # output)\n\nCommand exited with code 1", flagged as an error by pi.
    record = records["pi_session"]
    step = next(s for s in record.steps if s.step_index == 25)
    assert step.observations[0].error == "tool_error"
    assert at(signals(record, "failure"), 25) == []


def test_a_refused_tool_call_is_not_a_failure(records: dict[str, TraceRecord]) -> None:
    # 37f83ec9 step 21 (Write) and f852ad25 step 4 (ExitPlanMode): "The user doesn't want to
    # proceed with this tool use."
    assert at(signals(records["cc_37f8"], "failure"), 21) == []
    assert at(signals(records["cc_f852"], "failure"), 4) == []


# ---------------------------------------------------------------------------------------------
# Run signals: loops


def test_one_loop_signal_per_repeated_command(records: dict[str, TraceRecord]) -> None:
    # fe5e1c67 steps 162-165: `npm run build` four times, each failing, nothing edited.
    loops = [s for s in signals(records["cc_fe5e"], "loop") if s["matched_text"] == "npm run build"]
    assert len(loops) == 1
    loop = loops[0]
    assert loop["step_index"] == 164
    assert loop["evidence"]["repeat_count"] == 4
    assert loop["evidence"]["step_indexes"] == [162, 163, 164, 165]
    assert (loop["confidence"], loop["evidence"]["failed_runs"]) == ("high", 4)


def test_a_command_run_many_times_is_still_one_signal(records: dict[str, TraceRecord]) -> None:
    loops = signals(records["pi_compact"], "loop")
    texts = [s["matched_text"] for s in loops]
    assert len(texts) == len(set(texts))
    check = [s for s in loops if s["matched_text"] == "npm run check 2>&1"]
    assert len(check) == 1 and check[0]["evidence"]["repeat_count"] >= 30


# ---------------------------------------------------------------------------------------------
# Run signals: resteers

RESTEERS = [
    ("pi_large", 188, "no", "no, that's not it"),
    ("pi_compact", 449, "stop", "stop commiting everything"),
    ("cc_624", 18, "don't", "don't create separate documents"),
    ("pi_compact", 401, "that's wrong", "this is not how it works"),
]


@pytest.mark.parametrize(("key", "step", "rule", "text"), RESTEERS)
def test_corrections_are_resteers(records: dict[str, TraceRecord], key: str, step: int,
                                  rule: str, text: str) -> None:
    found = at(signals(records[key], "resteer"), step)
    assert len(found) == 1
    assert found[0]["evidence"]["rule"] == rule
    assert found[0]["evidence"]["text"].startswith(text)


def test_the_message_after_an_interruption_is_a_resteer(records: dict[str, TraceRecord]) -> None:
    # f852ad25 step 5 is "[Request interrupted by user for tool use]", step 6 the new direction.
    found = at(signals(records["cc_f852"], "resteer"), 6)
    assert [(s["evidence"]["trigger"], s["confidence"]) for s in found] == [("interrupt", "high")]
    assert at(signals(records["cc_f852"], "resteer"), 5) == []


def test_a_refusal_with_instructions_is_a_resteer(records: dict[str, TraceRecord]) -> None:
    # 7acd37a8 step 16: a Bash call refused with "The user provided the following reason for
    # the rejection:  use pnpm".
    found = at(signals(records["cc_7acd"], "resteer"), 16)
    assert [(s["evidence"]["trigger"], s["matched_text"]) for s in found] \
        == [("tool_rejection", "use pnpm")]


NOT_RESTEERS = [
    ("pi_compact", 487),  # "don't we load all entries on session manager construction?"
    ("pi_compact", 324),  # "can you adjust the full-compaction example to use … instead?"
    ("pi_compact", 480),  # "loadSessionFromEntries is kind of a bad name for this no? …"
    ("cc_37f8", 94),  # "Oh no, we lost the session navigation section …"
    ("pi_session", 247), ("pi_session", 253), ("pi_session", 255),  # "ok"
    ("pi_session", 93), ("pi_session", 200),  # "yes"
    ("pi_large", 112), ("pi_large", 131),  # "continue"
    ("pi_session", 249),  # "write a little poem instead,"
]


@pytest.mark.parametrize(("key", "step"), NOT_RESTEERS)
def test_approvals_and_ordinary_sentences_are_not_resteers(
        records: dict[str, TraceRecord], key: str, step: int) -> None:
    record = records[key]
    assert next(s for s in record.steps if s.step_index == step).role == "user"
    assert at(signals(record, "resteer"), step) == []


APPROVALS = ["ok", "OK", "ok.", "Ok!", "yes", "Yes!", "y", "go", "continue", "Continue.",
             "lgtm", "LGTM 👍", "sure", "yep", "proceed", "go ahead", "yes please",
             "sounds good", "looks good to me", "ok, continue", "perfect, thanks!"]


@pytest.mark.parametrize("text", APPROVALS)
def test_an_approval_never_resteers_even_after_an_interruption(
        records: dict[str, TraceRecord], text: str) -> None:
    # subagent.jsonl: step 10 "[Request interrupted by user]", step 11 "create the beads" (a
    # resteer). Put an approval in its place: it must not be one.
    record = records["cc_beads"]
    assert [s["step_index"] for s in signals(record, "resteer")] == [11]
    steps = [msgspec.structs.replace(s, content=text) if s.step_index == 11 else s
             for s in record.steps]
    approved = msgspec.structs.replace(record, steps=steps)
    assert is_approval(text) and resteer_lead(text) is None
    assert signals(approved, "resteer") == []


def test_correction_words_in_the_middle_of_a_sentence_are_no_lead(
        records: dict[str, TraceRecord]) -> None:
    prompts = [s.content or "" for r in records.values() for s in r.steps if s.role == "user"]
    middle = [p for p in prompts if " instead" in p or " no " in p]
    assert len(middle) >= 5
    for text in middle:
        lead = resteer_lead(text)
        assert lead is None or not any(w in lead[1].lower() for w in ("instead", " no ")), text


# ---------------------------------------------------------------------------------------------
# Determinism and compare


def test_payloads_are_byte_identical_across_calls(records: dict[str, TraceRecord],
                                                 corpus_home: Settings) -> None:
    for record in records.values():
        again = api.trace_get(corpus_home, record.trace_id)
        assert dumps(context_waste(record)) == dumps(context_waste(again))
        assert dumps(run_intel(record)) == dumps(run_intel(again))
    a, b = records["pi_before"], records["cc_9e95"]
    assert dumps(compare(a, b)) == dumps(compare(a, b))


def test_compare_gives_b_against_a(records: dict[str, TraceRecord]) -> None:
    from opentraces.trace_map import BURST_GAP, bursts

    a, b = records["pi_before"], records["cc_fe5e"]
    payload = compare(a, b)
    assert (payload["trace_a"], payload["trace_b"]) == (a.trace_id, b.trace_id)
    assert payload["fidelity"] == {"a": "record", "b": "record"}
    delta = payload["delta"]
    steps = delta["metrics"]["total_steps"]
    assert steps == {"a": a.metrics.total_steps, "b": b.metrics.total_steps,
                     "delta": b.metrics.total_steps - a.metrics.total_steps}
    counts_a, counts_b = run_intel(a)["counts"], run_intel(b)["counts"]
    assert delta["signals"]["loop"] == {"a": counts_a["loop"], "b": counts_b["loop"],
                                        "delta": counts_b["loop"] - counts_a["loop"]}
    assert delta["bursts"]["gap"] == BURST_GAP
    assert (delta["bursts"]["a"], delta["bursts"]["b"]) == (
        len(bursts(a, gap=BURST_GAP, commit_lookup=False)),
        len(bursts(b, gap=BURST_GAP, commit_lookup=False)))
    assert set(delta["quality"]) == {"reliability", "autonomy", "efficiency", "overall"}
    assert "quality" not in compare(a, b, no_quality=True)["delta"]


def test_a_trace_compared_with_itself_has_no_delta(records: dict[str, TraceRecord]) -> None:
    record = records["pi_compact"]
    delta = compare(record, record)["delta"]
    for group in ("metrics", "signals", "waste", "errors", "quality"):
        for name, triple in delta[group].items():
            assert triple["delta"] in (0, 0.0, None), (group, name)


def test_quality_follows_its_formulas(records: dict[str, TraceRecord]) -> None:
    record = records["cc_fe5e"]
    counts = run_intel(record)["counts"]
    waste = context_waste(record)["summary"]["context_waste_count"]
    calls = sum(len(s.tool_calls) for s in record.steps if s.role == "agent")
    scores = quality(record)
    unrecovered = max(0, counts["failure"] - counts["recovery"])
    assert scores["reliability"] == round(100 * (1 - unrecovered / calls), 1)
    assert scores["efficiency"] == max(0, 100 - 10 * (waste + counts["loop"]))


# ---------------------------------------------------------------------------------------------
# The command


@pytest.fixture
def cli_home(corpus_home: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("OPENTRACES_HOME", str(corpus_home.home))
    yield corpus_home


def compare_cli(*args: str) -> Any:
    """`opentraces trace compare …`, run the way a user runs it (through the root command)."""
    from opentraces.commands.main import cli

    return CliRunner().invoke(cli, ["trace", "compare", *args])


def test_trace_compare_json(records: dict[str, TraceRecord], cli_home: Settings) -> None:
    a, b = records["pi_before"], records["cc_fe5e"]
    result = compare_cli(a.trace_id[:12], b.trace_id, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert (body["status"], body["schema_version"]) == ("ok", "opentraces.trace_compare.v1")
    expected = json.loads(json.dumps(compare(a, b)))
    assert {k: body[k] for k in expected} == expected
    assert (body["next_command"], body["next_steps"]) == (None, [])
    plain = compare_cli(a.trace_id, b.trace_id, "--json", "--no-quality")
    assert "quality" not in json.loads(plain.output)["delta"]


def test_trace_compare_text_and_unknown_trace(records: dict[str, TraceRecord],
                                              cli_home: Settings) -> None:
    a, b = records["pi_before"], records["cc_fe5e"]
    result = compare_cli(a.trace_id, b.trace_id)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].split()[:3] == ["trace", a.trace_id[:12], b.trace_id[:12]]
    row = next(ln for ln in lines if ln.startswith("metrics.total_steps"))
    assert row.split()[1:] == [str(a.metrics.total_steps), str(b.metrics.total_steps),
                               str(b.metrics.total_steps - a.metrics.total_steps)]
    missing = compare_cli("ffffffffffff", b.trace_id, "--json")
    assert missing.exit_code == 2
    assert json.loads(missing.output)["error"]["code"] == "trace_not_found"

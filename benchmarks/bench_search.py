"""Search index: build throughput and `trace query` latency.

(a) Build on the 200-session benchmark corpus (``gen_claude_sessions.py``, 200 × 200 lines,
    or ``--corpus DIR``): import it (not timed), then ``search.index_rebuild``: documents/s,
    events/s and transcript MB/s, index size.
(b) Build on ``--traces`` synthetic traces (default 10,000; ~12 steps each: prompts, agent text,
    Bash/Read/Edit/Grep calls with results of realistic size, patches, some skills), appended
    with ``api.append(..., catch_up=False)``: documents/s, MB/s of indexed event text, size.
(c) Query latency on the (b) index, over a fixed mix of queries (words, AND/OR, phrases,
    facets, listing, time sort, a second page): through the API (``search.trace_query``, one
    call per query, goal p50 ≤ 50 ms) and as a CLI process (``opentraces trace query … --json``,
    goal p50 ≤ 300 ms).

    .venv/bin/python benchmarks/bench_search.py                    # ~12 min
    .venv/bin/python benchmarks/bench_search.py --traces 1000 --sessions 20 --no-record  # smoke
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common  # first: isolates HOME / OPENTRACES_HOME
import gen_claude_sessions as gen

API_GOAL_MS = 50.0
CLI_GOAL_MS = 300.0
CLI_RATIO_TARGET = 5.0  # CLI query p50 / `python -c pass`, both with compiled bytecode
T0 = 1767225600  # 2026-01-01T00:00:00Z


def _index_size(settings: Any) -> int:
    return common.dir_size((settings.projections_dir / "search_index").resolve())


def build(settings: Any, raw_bytes: int) -> dict[str, Any]:
    from opentraces import search

    began = time.perf_counter()
    report = search.index_rebuild(settings)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "docs": report.doc_count, "events": report.head,
            "raw_bytes": raw_bytes, "index_bytes": _index_size(settings)}


# -- (a) the benchmark corpus -----------------------------------------------------------------


def corpus_build(sessions: int, entries: int, corpus: Path | None) -> dict[str, Any]:
    from opentraces import api

    if corpus is None:
        corpus = common.fresh_dir("corpus")
        gen.generate(corpus, sessions, entries, seed=1)
    files = sorted(corpus.glob("*/*.jsonl"))
    raw = sum(p.stat().st_size for p in files)
    settings = common.sqlite_settings(common.fresh_dir("home-corpus"))
    api.import_sessions(settings, api.import_sources(settings, [corpus],
                                                     agents=["claude-code"]))
    return build(settings, raw) | {"files": len(files)}


# -- (b) synthetic traces ---------------------------------------------------------------------


def _words(rng: random.Random, n: int) -> str:
    return gen._sentence(rng, n, n + 6)


def synthetic_events(i: int, turns: int) -> tuple[str, list[Any], int]:
    """(trace id, events, bytes of text) of synthetic trace ``i``."""
    from opentraces import events as ev

    rng = random.Random(i)
    session = f"synthetic-{i:06d}"
    trace_id = ev.trace_id_for("claude-code", session)
    project = f"/home/dev/proj-{i % 50}"
    start = T0 + i * 600

    def at(offset: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + offset))

    out: list[Any] = [
        ev.SessionStarted(trace_id=trace_id, session_id=session,
                          agent=ev.AgentInfo(name=("claude-code", "codex-cli", "pi")[i % 3]),
                          cwd=project, at=at(0)),
        ev.SessionInfo(model=("claude-opus-4-6", "gpt-5.5", "claude-sonnet-4-5")[i % 3],
                       git_branch="main", at=at(0)),
        ev.SourceSegmentRead(path=f"{project}/{session}.jsonl", generation=0, start_offset=0,
                             end_offset=1000, line_count=10),
    ]
    text = 0
    step = 0
    for turn in range(turns):
        ask = rng.choice(gen.USER_ASKS).format(
            t=_words(rng, 3), f=f"src/{rng.choice(gen.NOUNS)}_{rng.choice(gen.NOUNS)}.py",
            n=rng.choice(gen.NOUNS), n2=rng.choice(gen.NOUNS), n3=rng.choice(gen.NOUNS),
            v=rng.choice(gen.VERBS), v2=rng.choice(gen.VERBS), a=rng.choice(gen.ADJS),
            a2=rng.choice(gen.ADJS), m=rng.choice(gen.NOUNS))
        prompt = ask + " " + gen._prose(rng, rng.randint(0, 4))
        out.append(ev.StepRecorded(step_index=step, role="user", content=prompt,
                                   at=at(turn * 60)))
        text += len(prompt)
        step += 1
        calls = []
        for c in range(rng.randint(1, 3)):
            name = f"src/{rng.choice(gen.NOUNS)}/{rng.choice(gen.NOUNS)}.py"
            kind = rng.choice(("Bash", "Read", "Edit", "Grep"))
            inp: dict[str, Any] = {
                "Bash": {"command": f"pytest tests/test_{rng.choice(gen.NOUNS)}.py -q"},
                "Read": {"file_path": f"{project}/{name}"},
                "Edit": {"file_path": f"{project}/{name}", "old_string": _words(rng, 8),
                         "new_string": _words(rng, 9)},
                "Grep": {"pattern": f"def {rng.choice(gen.VERBS)}_", "path": project},
            }[kind]
            calls.append(ev.ToolCall(tool_call_id=f"{session}-{step}-{c}", tool_name=kind,
                                     input=inp))
        reply = f"{rng.choice(gen.OPENERS)} {gen._prose(rng, rng.randint(1, 5))}"
        out.append(ev.StepRecorded(step_index=step, role="agent", content=reply,
                                   model="claude-opus-4-6", tool_calls=calls,
                                   at=at(turn * 60 + 5)))
        text += len(reply)
        for call in calls:
            if call.tool_name == "Read":
                body = gen._module(rng, call.input["file_path"], rng.randint(1500, 6000))
            elif call.tool_name == "Bash":
                body = gen._pytest_output(rng, [call.input["command"].split()[1]],
                                          rng.randint(3, 20), rng.random() < 0.3)
            else:
                body = _words(rng, 20)
            failed = call.tool_name == "Bash" and rng.random() < 0.2
            out.append(ev.ToolResultRecorded(step_index=step, tool_call_id=call.tool_call_id,
                                             content=body, output_chars=len(body),
                                             is_error=failed, at=at(turn * 60 + 20)))
            text += len(body)
            if call.tool_name == "Edit":
                out.append(ev.PatchRecorded(
                    patch_id=f"{call.tool_call_id}-p", trace_id=trace_id, step_index=step,
                    tool_call_id=call.tool_call_id, tool_name="Edit",
                    path=call.input["file_path"]))
        if turn == 0 and i % 10 == 0:
            out.append(ev.SkillInvoked(step_index=step, skill=f"skill-{i % 7}", via="tool",
                                       at=at(turn * 60 + 6)))
        step += 1
        done = f"{rng.choice(gen.OPENERS)} {gen._prose(rng, rng.randint(1, 3))}"
        out.append(ev.StepRecorded(step_index=step, role="agent", content=done,
                                   model="claude-opus-4-6", at=at(turn * 60 + 40)))
        text += len(done)
        step += 1
    out.append(ev.SessionEnded(reason="stop", at=at(turns * 60)))
    return trace_id, out, text


def synthetic_build(traces: int, turns: int) -> tuple[Any, dict[str, Any]]:
    from opentraces import api
    from opentraces import events as ev

    settings = common.sqlite_settings(common.fresh_dir("home-synthetic"))
    text = 0
    began = time.perf_counter()
    with api.open_workspace(settings) as ws:
        for i in range(traces):
            trace_id, events, size = synthetic_events(i, turns)
            api.append(ws, ev.stream("trace", trace_id), events, catch_up=False)
            text += size
    generated = time.perf_counter() - began
    return settings, build(settings, text) | {"traces": traces, "append_seconds": generated}


# -- (c) query latency ------------------------------------------------------------------------

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("checkpoint", {}),
    ("flaky CI investigate", {}),
    ("refactor code path", {}),
    ('"error handling"', {}),
    ("incremental OR benchmark", {}),
    ("tenant quota", {"lex": True}),
    ("pytest", {"tool": "bash"}),
    ("journal", {"files": "*.py"}),
    ("ledger", {"facets": {"agent": "pi"}}),
    ("", {"skill": "skill-3"}),
    ("", {"since": "2026-02-01"}),
    ("watcher", {"sort": "time"}),
    ("docs", {"project": "/home/dev/proj-7"}),
    ("prompt NOT snapshot", {}),
    ("test", {}),
]


def api_latency(settings: Any, repeats: int) -> dict[str, Any]:
    from opentraces import search

    per: dict[str, list[float]] = {}
    totals: dict[str, int] = {}
    for terms, options in QUERIES:  # warm-up: page cache, first imports
        search.trace_query(settings, terms, **options)
    for _ in range(repeats):
        for terms, options in QUERIES:
            began = time.perf_counter()
            result = search.trace_query(settings, terms, **options)
            per.setdefault(_label(terms, options), []).append(time.perf_counter() - began)
            totals[_label(terms, options)] = result.total
        first = search.trace_query(settings, "test", limit=20)
        began = time.perf_counter()
        search.trace_query(settings, "test", limit=20, page_token=first.next_page_token)
        per.setdefault("test (page 2)", []).append(time.perf_counter() - began)
        totals["test (page 2)"] = first.total
    every = [s for runs in per.values() for s in runs]
    return {"all": every, "per": per, "totals": totals}


def _label(terms: str, options: dict[str, Any]) -> str:
    extra = " ".join(f"--{k} {v}" if k != "lex" else "--lex" for k, v in options.items())
    return " ".join(x for x in (terms, extra) if x) or "(listing)"




def _query_process(settings: Any) -> tuple[list[str], str]:
    """The argv prefix that runs `trace query` as a process, and how it is run."""
    return [str(common.venv_script("opentraces")), "trace", "query"], "`opentraces trace query`"


def cli_latency(settings: Any, runs: int) -> dict[str, Any]:
    """Each query run twice, alternately: with Python's bytecode cache, as an installed package
    has it (written under the scratch folder, not into the source tree), and without it, every
    module compiled from source (``PYTHONDONTWRITEBYTECODE=1``, as in some sandboxes)."""
    cached = common.compiled_env() | {"OPENTRACES_HOME": str(settings.home)}
    uncached = common.isolated_env() | {"OPENTRACES_HOME": str(settings.home),
                                        "PYTHONDONTWRITEBYTECODE": "1"}
    picks = [["flaky", "CI", "investigate"], ["pytest", "--tool", "bash"],
             ["journal", "--files", "*.py"], ["--skill", "skill-3"], ['"error handling"']]
    prefix, how = _query_process(settings)
    seconds: dict[str, list[float]] = {"cached": [], "uncached": [], "floor": []}
    for n in range(runs + 3):
        argv = [*prefix, *picks[n % len(picks)], "--json"]
        for name, variant in (("cached", cached), ("uncached", uncached)):
            began = time.perf_counter()
            subprocess.run(argv, env=variant, stdout=subprocess.DEVNULL, check=True)
            if n >= 3:  # after three warm-ups
                seconds[name].append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=cached, check=True)
        if n >= 3:
            seconds["floor"].append(time.perf_counter() - began)
    return {"seconds": seconds["cached"], "uncached": seconds["uncached"],
            "floor": seconds["floor"], "how": how}


# -- report -----------------------------------------------------------------------------------


def _build_row(name: str, r: dict[str, Any]) -> tuple[str, ...]:
    return (name, common.fmt_int(r["events"]), common.fmt_int(r["docs"]),
            f"{r['seconds']:.1f} s", common.fmt_int(r["docs"] / r["seconds"]),
            common.fmt_int(r["events"] / r["seconds"]),
            f"{r['raw_bytes'] / 1e6 / r['seconds']:.2f} MB/s ({r['raw_bytes'] / 1e6:.0f} MB)",
            f"{1e3 * r['seconds'] / r['docs']:.2f} ms", common.fmt_bytes(r["index_bytes"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--corpus", type=Path, help="reuse generated transcripts")
    parser.add_argument("--traces", type=int, default=10000)
    parser.add_argument("--turns", type=int, default=4, help="user turns per synthetic trace")
    parser.add_argument("--repeats", type=int, default=10, help="API runs of each query")
    parser.add_argument("--cli-runs", type=int, default=30)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    a = corpus_build(args.sessions, args.entries, args.corpus)
    print(f"(a) corpus: {a}", file=sys.stderr)
    settings, b = synthetic_build(args.traces, args.turns)
    print(f"(b) synthetic: {b}", file=sys.stderr)
    api_runs = api_latency(settings, args.repeats)
    cli_runs = cli_latency(settings, args.cli_runs)

    api_ms = common.summary_ms(api_runs["all"])
    cli_ms = common.summary_ms(cli_runs["seconds"])
    raw_ms = common.summary_ms(cli_runs["uncached"])
    floor_ms = common.summary_ms(cli_runs["floor"])
    cli_ratio = common.summary_ms(cli_runs["seconds"])["median"] / floor_ms["median"]
    per_rows = []
    for label, runs in api_runs["per"].items():
        ms = common.summary_ms(runs)
        per_rows.append((f"`{label}`", common.fmt_int(api_runs["totals"][label]),
                         f"{ms['median']:.1f} ms", f"{ms['p95']:.1f} ms"))

    def verdict(ok: bool) -> str:
        return "**PASS**" if ok else "**FAIL**"

    body = f"""\
Build = `search.index_rebuild` (all events read from the log; a document per trace, holding all
its text, and one per step; a first build writes the later half of the traces' documents in a
second process, as segments the first commits after its own, once per index); MB/s
are of the transcript bytes for (a) and of the event text (prompts, agent text, tool results
before the index's caps) for (b). Synthetic traces: {args.turns} user
turns of ~3 steps each (1-3 Bash/Read/Edit/Grep calls with results of 0.2-6 KB), appended with
`api.append(..., catch_up=False)` in {b['append_seconds']:.0f} s (not in the figures).

{common.table(["corpus", "events", "documents", "build", "docs/s", "events/s", "MB/s",
               "per doc", "index size"],
              [_build_row(f"(a) {a['files']} Claude Code sessions × {args.entries} lines", a),
               _build_row(f"(b) {b['traces']:,} synthetic traces", b)])}

Query latency on the (b) index ({b['docs']:,} documents: {b['traces']:,} traces and their steps),
first page of 20. A query matches, counts and ranks traces on the traces index
(`opentraces.ranking`: sets of document numbers read from whoosh's postings, whoosh's BM25F),
then picks the best matching step of each of the 20 traces shown from the steps index.

{common.table(["path", "runs", "median", "p95", "min", "max", "goal"],
              [("API `search.trace_query`", len(api_runs["all"]), f"{api_ms['median']:.1f} ms",
                f"{api_ms['p95']:.1f} ms", f"{api_ms['min']:.1f} ms", f"{api_ms['max']:.1f} ms",
                f"p50 ≤ {API_GOAL_MS:.0f} ms {verdict(api_ms['median'] <= API_GOAL_MS)}"),
               (f"CLI process: {cli_runs['how']}, bytecode cached", len(cli_runs["seconds"]),
                f"{cli_ms['median']:.1f} ms", f"{cli_ms['p95']:.1f} ms",
                f"{cli_ms['min']:.1f} ms", f"{cli_ms['max']:.1f} ms",
                f"p50 ≤ {CLI_GOAL_MS:.0f} ms {verdict(cli_ms['median'] <= CLI_GOAL_MS)}"),
               ("CLI process, no bytecode cache (every module compiled on start)",
                len(cli_runs["uncached"]), f"{raw_ms['median']:.1f} ms",
                f"{raw_ms['p95']:.1f} ms", f"{raw_ms['min']:.1f} ms", f"{raw_ms['max']:.1f} ms",
                "(for comparison)"),
               ("`python -c pass` (interpreter floor), bytecode cached", len(cli_runs["floor"]),
                f"{floor_ms['median']:.1f} ms", f"{floor_ms['p95']:.1f} ms",
                f"{floor_ms['min']:.1f} ms", f"{floor_ms['max']:.1f} ms", "")])}

CLI query / interpreter floor, same run: **{cli_ratio:.2f}×** (target ≤ {CLI_RATIO_TARGET:.0f}×)
{verdict(cli_ratio <= CLI_RATIO_TARGET)}.

The CLI runs alternate one query of five (`flaky CI investigate`, `pytest --tool bash`,
`journal --files *.py`, `--skill skill-3`, `"error handling"`) between two environments: with
bytecode compiled beforehand by `python -m compileall` into a private cache, as an installed
package has it (the goal's row), and without it, as
under `PYTHONDONTWRITEBYTECODE=1`, where every module is compiled from source at each start.

Per query through the API ({args.repeats} runs each; `total` = traces matched):

{common.table(["query", "total", "median", "p95"], per_rows)}
"""
    common.write_results("search", f"Search index: build and query ({b['traces']:,} traces)",
                         body, record=not args.no_record)
    print(f"API p50 {statistics.median(api_runs['all']) * 1e3:.1f} ms, "
          f"CLI p50 {statistics.median(cli_runs['seconds']) * 1e3:.1f} ms "
          f"({cli_ratio:.2f}x python -c pass)")


if __name__ == "__main__":
    main()

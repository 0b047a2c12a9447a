"""`opentraces-hook claude-code PostToolUse` wall time: what an agent waits for on each tool call.

Runs the hook as a fresh process with a realistic Claude Code PostToolUse payload (a Bash call
with ~6 KB of output, which the hook trims) on stdin: 3 warm-ups, then N timed runs; reports
p50 and p95 against the 60 ms budget, next to the interpreter floor, the cost of the hook's own
imports, and (for comparison) of msgspec, which the hook leaves out for that reason. Uses the
installed ``opentraces-hook`` script next to ``sys.executable`` when there is one, else
``python -m opentraces.hooks``. Also times, in-process, the detached start of the importer that
a Stop event adds.

    .venv/bin/python benchmarks/bench_hook.py [--runs 100] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import common

BUDGET_MS = 60.0
RATIO_TARGET = 2.0  # p50 / `python -c pass`, both with compiled bytecode
WARMUPS = 3


def realistic_payload() -> bytes:
    output = "\n".join(f"tests/test_module_{i:03d}.py::test_case PASSED" for i in range(140))
    return json.dumps({
        "session_id": "5a3e0c1e-0000-4000-8000-0000000000a1",
        "transcript_path": str(common.BENCH_HOME / ".claude" / "projects" / "-work-proj"
                               / "5a3e0c1e-0000-4000-8000-0000000000a1.jsonl"),
        "cwd": "/work/proj",
        "permission_mode": "default",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "pytest -q tests", "description": "Run the test suite"},
        "tool_response": {"stdout": output, "stderr": "", "interrupted": False,
                          "isImage": False},
        "tool_use_id": "toolu_01ABCDEF0123456789",
    }).encode()


def time_runs(argv: list[str], runs: int, stdin: bytes | None = None) -> list[float]:
    env = common.compiled_env()
    for _ in range(WARMUPS):
        subprocess.run(argv, env=env, input=stdin, stdout=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, env=env, input=stdin, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - began)
    return times


def spawn_cost(runs: int = 20) -> dict[str, float]:
    """In-process: starting the detached importer (here `true`) as a Stop event does."""
    from opentraces import hooks

    home = common.fresh_dir("spawn")
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        hooks.spawn_detached(["true"], home)
        times.append(time.perf_counter() - began)
    return common.summary_ms(times)


def row(label: str, seconds: list[float]) -> tuple[str, ...]:
    s = common.summary_ms(seconds)
    return (label, f"{s['median']:.1f} ms", f"{common.percentile(seconds, 95) * 1e3:.1f} ms",
            f"{s['min']:.1f} ms", f"{s['max']:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    script = common.venv_script("opentraces-hook")
    if script.exists():
        argv, how = [str(script)], f"`{script.name}` (console script)"
    else:
        argv, how = [sys.executable, "-m", "opentraces.hooks"], "`python -m opentraces.hooks`"
    payload = realistic_payload()
    hook = time_runs([*argv, "claude-code", "PostToolUse"], args.runs, payload)
    floor = time_runs([sys.executable, "-c", "pass"], args.runs)
    imports = time_runs([sys.executable, "-c", "import json, opentraces.hooks"], args.runs)
    msgspec = time_runs([sys.executable, "-c", "import msgspec, opentraces.config"], args.runs)
    spool = common.BENCH_HOME / ".opentraces" / "spool"
    lines = (spool / "claude-code.jsonl").read_bytes().splitlines()
    errors = spool / "errors.jsonl"
    p50 = common.summary_ms(hook)["median"]
    verdict = "PASS" if p50 <= BUDGET_MS else "FAIL"
    ratio = p50 / common.summary_ms(floor)["median"]
    ratio_verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"
    spawn = spawn_cost()
    error_count = len(errors.read_text().splitlines()) if errors.exists() else 0

    body = f"""\
{how} as a fresh process fed a {len(payload):,}-byte Claude Code PostToolUse payload on stdin,
{WARMUPS} warm-ups then {args.runs} timed runs (wall time of `subprocess.run`). Each run appends
one line (here {len(lines[-1]):,} bytes after trimming) to the spool with `O_APPEND`, one write
and `fsync`. Every process runs with bytecode compiled beforehand by `python -m compileall`
into a private cache, as an installed package has it.

{common.table(["command", "p50", "p95", "min", "max"], [
    row("hook, PostToolUse", hook),
    row("`python -c pass` (interpreter floor)", floor),
    row("`python -c 'import json, opentraces.hooks'` (the hook's imports)", imports),
    row("`python -c 'import msgspec, opentraces.config'` (not used)", msgspec),
])}

Ratio to the interpreter floor, same run: **{ratio:.2f}×** (target ≤ {RATIO_TARGET:.0f}×) →
**{ratio_verdict}**.

Budget: p50 ≤ {BUDGET_MS:.0f} ms → **{verdict}** ({p50:.1f} ms). Spool lines written:
{len(lines):,}; hook errors recorded: {error_count}.

A Stop or SessionEnd event also starts the importer detached; that start (`Popen` with a new
session, stdio on /dev/null, not waited for) costs p50 {spawn['median']:.1f} ms,
max {spawn['max']:.1f} ms, measured in-process.
"""
    common.write_results("hook", "`opentraces-hook` per-event cost", body,
                         record=not args.no_record)
    print(f"{verdict}: p50 {p50:.1f} ms (budget {BUDGET_MS:.0f} ms)")
    print(f"{ratio_verdict}: {ratio:.2f}x python -c pass (target {RATIO_TARGET:.0f}x)")


if __name__ == "__main__":
    main()

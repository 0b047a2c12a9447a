"""Full rebuild throughput: ``opentraces.api.rebuild`` (all projections) over a large log.

Generates ``--events`` synthetic small events (default 1,000,000: 5,000 traces × 200 events,
each trace SessionStarted + StepRecorded with ~200-byte content + a PatchRecorded every tenth
position + SessionEnded) with batched ``EventLog.write`` at explicit versions, then times a full
rebuild. Generation and rebuild run in separate child processes so that each phase's peak RSS
is its own.

    .venv/bin/python benchmarks/bench_rebuild.py [--events 1000000] [--twice] [--no-record]
    .venv/bin/python benchmarks/bench_rebuild.py --events 20000 --no-record   # smoke check
    .venv/bin/python benchmarks/bench_rebuild.py --events 100000 --profile    # cProfile top 25
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

from opentraces import api
from opentraces import events as ev
from opentraces.events import Recorded
from opentraces.store import EventLog

EVENTS_PER_TRACE = 200
WRITE_BATCH = 5000
CONTENT = ("Refactor the parser so that partial trailing lines wait for the next read; "
           "keep the byte offset of the last complete line and add a test for the case "
           "where the file is truncated and rewritten. ")  # ~200 bytes
TARGET_RATE = 20_000  # events/s a full rebuild should reach on a 2-core machine


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def trace_records(t: int, count: int) -> list[Recorded]:
    """The ``count`` events of synthetic trace number ``t``."""
    session = f"session-{t:06d}"
    tid = ev.trace_id_for("claude_code", session)
    name = ev.stream("trace", tid)
    out = [Recorded(name, 0, ev.SessionStarted(
        trace_id=tid, session_id=session, at="2026-01-02T03:04:05Z",
        agent=ev.AgentInfo(name="claude_code", version="2.0.1", model="claude-sonnet-4"),
        cwd=f"/home/dev/projects/proj-{t % 40}", git_branch="main"))]
    step = 0
    for v in range(1, count):
        if v == count - 1 and count > 2:
            out.append(Recorded(name, v, ev.SessionEnded(reason="stop", at="2026-01-02T04:00:00Z")))
        elif v % 10 == 5:
            out.append(Recorded(name, v, ev.PatchRecorded(
                patch_id=f"{tid}-p{v}", trace_id=tid, step_index=step, tool_call_id=f"call-{v}",
                tool_name="Edit", path=f"src/module_{v % 7}.py", range=ev.LineRange(v, v + 4),
                authored_hash=ev.stable_id(tid, v))))
        else:
            role = "user" if step % 2 == 0 else "assistant"
            out.append(Recorded(name, v, ev.StepRecorded(
                step_index=step, role=role, content=f"{CONTENT}#{step}",
                model=None if role == "user" else "claude-sonnet-4",
                at="2026-01-02T03:05:00Z")))
            step += 1
    return out


def generate(home: Path, events: int, per_trace: int) -> dict[str, Any]:
    settings = common.sqlite_settings(home)
    traces, rest = divmod(events, per_trace)
    sizes = [per_trace] * traces + ([rest] if rest else [])
    began = time.perf_counter()
    written = 0
    build_seconds = 0.0
    with EventLog.open(settings.store) as log:
        pending: list[Recorded] = []
        for t, size in enumerate(sizes):
            t0 = time.perf_counter()
            pending.extend(trace_records(t, size))
            build_seconds += time.perf_counter() - t0
            if len(pending) >= WRITE_BATCH:
                written += len(log.write(pending))
                pending = []
                if written % 100_000 < WRITE_BATCH:
                    print(f"  generated {written:,} events", file=sys.stderr, flush=True)
        if pending:
            written += len(log.write(pending))
        count = log.count()
    seconds = time.perf_counter() - began
    return {"events": written, "count": count, "traces": len(sizes), "seconds": seconds,
            "build_seconds": build_seconds, "peak_rss": peak_rss_bytes()}


def rebuild(home: Path, profile: bool) -> dict[str, Any]:
    settings = common.sqlite_settings(home)
    done = [0, time.perf_counter()]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 100_000 < n:
            rate = done[0] / (time.perf_counter() - done[1])
            print(f"  rebuilt {done[0]:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began = time.perf_counter()
    report = api.rebuild(settings, progress=progress)
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.disable()
        common.print_profile(profiler, 25)
    return {"seconds": seconds, "report": api.to_builtins(report),
            "peak_rss": peak_rss_bytes()}


def child(phase: str, home: Path, events: int, per_trace: int = EVENTS_PER_TRACE,
          profile: bool = False) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its last stdout line is the JSON result."""
    argv = [sys.executable, __file__, "--phase", phase, "--home", str(home),
            "--events", str(events), "--per-trace", str(per_trace)]
    argv += ["--profile"] if profile else []
    proc = subprocess.run(argv, env=common.isolated_env(), stdout=subprocess.PIPE, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def store_sizes(home: Path) -> dict[str, int]:
    bucket = home / "bucket"
    return {"events_sqlite": sum(p.stat().st_size for p in bucket.glob("events.sqlite*")),
            "projections": common.dir_size(home / "projections")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-trace", type=int, default=EVENTS_PER_TRACE,
                        help="events per trace (fewer means more traces in the manifest)")
    parser.add_argument("--twice", action="store_true",
                        help="rebuild a second time and compare projection digests")
    parser.add_argument("--profile", action="store_true",
                        help="run the rebuild under cProfile (top functions on stderr)")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--phase", choices=["generate", "rebuild"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "generate":
        print(json.dumps(generate(args.home, args.events, args.per_trace)))
        return
    if args.phase == "rebuild":
        print(json.dumps(rebuild(args.home, args.profile)))
        return

    home = common.fresh_dir("rebuild")
    print(f"generating {args.events:,} events under {home} ...", flush=True)
    gen = child("generate", home, args.events, args.per_trace)
    sizes_before = store_sizes(home)
    print(f"  {gen['events']:,} events in {gen['seconds']:.1f} s", flush=True)
    print("rebuilding all projections ...", flush=True)
    first = child("rebuild", home, args.events, profile=args.profile)
    sizes = store_sizes(home)
    second = None
    if args.twice:
        print("rebuilding again ...", flush=True)
        second = child("rebuild", home, args.events)

    rate = gen["count"] / first["seconds"]
    verdict = "PASS" if rate >= TARGET_RATE else "FAIL"
    per_proj = [(f"`{name}`", common.fmt_int(r["events_applied"]), f"{r['seconds']:.1f} s",
                 f"`{(r['digest'] or '-')[:16]}`") for name, r in
                first["report"]["projections"].items()]
    rows = [
        ("events in the log", common.fmt_int(gen["count"])),
        ("traces", common.fmt_int(gen["traces"])),
        ("generation (batched `EventLog.write`, "
         f"{WRITE_BATCH:,}/batch)", f"{gen['seconds']:.1f} s "
                                    f"({common.fmt_int(gen['events'] / gen['seconds'])} events/s;"
                                    f" {gen['build_seconds']:.1f} s of it building the Structs)"),
        ("generation peak RSS", common.fmt_bytes(gen["peak_rss"])),
        ("**full rebuild** (`opentraces.api.rebuild`, all projections)",
         f"**{first['seconds']:.1f} s**"),
        ("**rebuild throughput**", f"**{common.fmt_int(rate)} events/s**"),
        ("rebuild peak RSS", common.fmt_bytes(first["peak_rss"])),
        ("event store on disk (`events.sqlite` + WAL)",
         f"{common.fmt_bytes(sizes_before['events_sqlite'])} "
         f"({sizes_before['events_sqlite'] / gen['count']:.0f} B/event)"),
        ("projections on disk after rebuild", common.fmt_bytes(sizes["projections"])),
    ]
    if second is not None:
        same = all(second["report"]["projections"][n]["digest"] == r["digest"]
                   for n, r in first["report"]["projections"].items())
        rows.append(("second rebuild", f"{second['seconds']:.1f} s; digests "
                                       f"{'equal' if same else '**differ**'}"))
    body = f"""\
{common.table(["", ""], rows)}

Per projection (time inside `apply_page`, i.e. handlers + commits; the rest is reading and
decoding the log, `finish` (rendering `manifest.json`) and sealing the digest):

{common.table(["projection", "events applied", "apply time", "digest"], per_proj)}

Target: ≥ {TARGET_RATE:,} events/s → **{verdict}**.
"""
    section = "rebuild" if args.per_trace == EVENTS_PER_TRACE else f"rebuild-{args.per_trace}pt"
    title = (f"Full rebuild of {common.fmt_int(gen['count'])} events "
             f"({common.fmt_int(gen['traces'])} traces × {args.per_trace})")
    common.write_results(section, title, body, record=not args.no_record and not args.profile)
    print(f"{verdict}: {rate:,.0f} events/s (target {TARGET_RATE:,})")


if __name__ == "__main__":
    main()

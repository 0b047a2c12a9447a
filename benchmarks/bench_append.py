"""Append throughput of the event log: single appends and batched writes.

(a) one ``EventLog.append`` call per event (each reads the stream's last version, then commits
    one transaction) → events/s and per-append p50/p99 latency;
(b) batched ``EventLog.write`` (explicit versions, the capture path) and ``EventLog.append``
    with batches of 100 and 1,000 events → events/s;
(c) ``opentraces.api.append`` of one event with the projection catch-up a command does.

Events are ``StepRecorded`` with ~200 bytes of content, spread over several ``trace:`` streams.
SQLite always; PostgreSQL too when reachable (fresh schema, dropped afterwards).

    .venv/bin/python benchmarks/bench_append.py [--single 5000] [--batched 50000]
        [--pg-url URL | --no-pg] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

import common

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings, StoreConfig, postgres_from_url
from opentraces.events import Recorded
from opentraces.store import EventLog, pg_connect

STREAMS = 20
CONTENT = ("Refactor the parser so that partial trailing lines wait for the next read; "
           "keep the byte offset of the last complete line and add a test for the case "
           "where the file is truncated and rewritten. ")  # ~200 bytes


def step(i: int) -> ev.StepRecorded:
    role = "user" if i % 2 == 0 else "assistant"
    return ev.StepRecorded(step_index=i, role=role, content=f"{CONTENT}#{i}",
                           model=None if role == "user" else "claude-sonnet-4",
                           at="2026-01-02T03:04:05Z")


def bench_single(log: EventLog, n: int, prefix: str) -> dict[str, Any]:
    """``n`` appends of one event each, round-robin over STREAMS streams."""
    streams = [ev.stream("trace", f"{prefix}-single-{s}") for s in range(STREAMS)]
    lat = []
    began = time.perf_counter()
    for i in range(n):
        event = step(i // STREAMS)
        t0 = time.perf_counter()
        log.append(streams[i % STREAMS], [event])
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - began
    return {"events": n, "seconds": total, "rate": n / total,
            "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": common.percentile(lat, 99) * 1e3,
            "max_ms": max(lat) * 1e3}


def bench_write(log: EventLog, total: int, batch: int, prefix: str) -> dict[str, Any]:
    """``EventLog.write`` in batches of ``batch`` events, each batch one stream's next slice."""
    per_stream = max(batch, total // STREAMS)
    versions = dict.fromkeys(range(STREAMS), 0)
    batches = []
    done = 0
    s = 0
    while done < total:
        size = min(batch, total - done)
        name = ev.stream("trace", f"{prefix}-write{batch}-{s}")
        v = versions[s]
        batches.append([Recorded(name, v + k, step(v + k)) for k in range(size)])
        versions[s] = v + size
        if versions[s] >= per_stream:
            s = (s + 1) % STREAMS
        done += size
    began = time.perf_counter()
    for records in batches:
        log.write(records)
    seconds = time.perf_counter() - began
    return {"events": total, "batch": batch, "seconds": seconds, "rate": total / seconds,
            "per_batch_ms": seconds / len(batches) * 1e3}


def bench_append_batched(log: EventLog, total: int, batch: int, prefix: str) -> dict[str, Any]:
    """``EventLog.append`` of ``batch`` events at a time, round-robin over STREAMS streams."""
    streams = [ev.stream("trace", f"{prefix}-append{batch}-{s}") for s in range(STREAMS)]
    payloads = []
    for i in range(0, total, batch):
        payloads.append([step(i + k) for k in range(min(batch, total - i))])
    began = time.perf_counter()
    for i, events in enumerate(payloads):
        log.append(streams[i % STREAMS], events)
    seconds = time.perf_counter() - began
    return {"events": total, "batch": batch, "seconds": seconds, "rate": total / seconds,
            "per_batch_ms": seconds / len(payloads) * 1e3}


def bench_api_append(settings: Settings, n: int, traces: int) -> dict[str, Any]:
    """``api.append`` (open, append one event, catch projections up, close) ``n`` times.

    The store first holds ``traces`` small sessions, so the manifest has that many rows.
    """
    with api.open_workspace(settings) as ws:
        for t in range(traces):
            tid = ev.trace_id_for("bench", f"seed-{t}")
            ws.log.write([Recorded(f"trace:{tid}", 0, ev.SessionStarted(
                trace_id=tid, session_id=f"seed-{t}", agent=ev.AgentInfo(name="bench"),
                cwd="/work/proj"))] + [Recorded(f"trace:{tid}", k, step(k)) for k in
                                       range(1, 10)])
        ws.runner().catch_up()
    lat = []
    began = time.perf_counter()
    for i in range(n):
        tid = ev.trace_id_for("bench", f"seed-{i % traces}")
        t0 = time.perf_counter()
        api.append(settings, f"trace:{tid}", [step(100 + i)])
        lat.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - began
    return {"events": n, "traces": traces, "seconds": seconds, "rate": n / seconds,
            "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": common.percentile(lat, 99) * 1e3}


def run_backend(label: str, config: StoreConfig, single: int,
                batched: int) -> dict[str, Any]:
    prefix = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"label": label}
    with EventLog.open(config) as log:
        log.append(ev.stream("trace", f"{prefix}-warm"), [step(i) for i in range(50)])
        print(f"[{label}] single appends x{single} ...", flush=True)
        out["single"] = bench_single(log, single, prefix)
        out["write"] = []
        for batch in (100, 1000):
            print(f"[{label}] write, batches of {batch} x{batched} events ...", flush=True)
            out["write"].append(bench_write(log, batched, batch, prefix))
        out["append"] = []
        for batch in (100, 1000):
            print(f"[{label}] append, batches of {batch} x{batched} events ...", flush=True)
            out["append"].append(bench_append_batched(log, batched, batch, prefix))
        out["count"] = log.count()
    return out


def pg_available(url: str) -> str | None:
    try:
        import psycopg
    except ImportError as e:
        return f"psycopg not installed ({e})"
    try:
        with pg_connect(postgres_from_url(url)):
            return None
    except psycopg.Error as e:
        return f"unreachable ({str(e).strip().splitlines()[0]})"


def drop_schema(url: str, schema: str) -> None:
    from psycopg import sql

    with pg_connect(postgres_from_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def report(results: list[dict[str, Any]], api_result: dict[str, Any] | None,
           pg_note: str) -> str:
    single_rows = [(r["label"], f"{common.fmt_int(r['single']['events'])}",
                    f"{common.fmt_int(r['single']['rate'])}",
                    f"{r['single']['p50_ms']:.2f} ms", f"{r['single']['p99_ms']:.2f} ms",
                    f"{r['single']['max_ms']:.1f} ms") for r in results]
    batch_rows = []
    for r in results:
        for kind in ("write", "append"):
            for b in r[kind]:
                batch_rows.append((r["label"], f"`EventLog.{kind}`", f"{b['batch']:,}",
                                   common.fmt_int(b["events"]), common.fmt_int(b["rate"]),
                                   f"{b['per_batch_ms']:.1f} ms"))
    text = f"""\
Events: `StepRecorded` with ~200 bytes of content (~{len(ev_bytes())} bytes msgpack),
round-robin over {STREAMS} `trace:` streams. SQLite store: WAL, `synchronous=FULL`,
`BEGIN IMMEDIATE` (every call that returns is durable: one fsync'd commit per call).

### (a) one `EventLog.append` per event

{common.table(["backend", "events", "events/s", "p50 latency", "p99 latency", "max"],
              single_rows)}

### (b) batched

{common.table(["backend", "call", "batch", "events", "events/s", "per batch"], batch_rows)}

`write` stores records at given versions (the capture path); `append` first reads the
stream's last version, then writes at the next ones.
"""
    if api_result:
        text += f"""
### (c) `opentraces.api.append` of one event, with projection catch-up (SQLite)

Store pre-filled with {api_result['traces']} small traces; each call opens the workspace,
appends one event, catches the bucket manifest up (one page: rows + `manifest.json` rewrite)
and closes.

{common.table(["calls", "calls/s", "p50 latency", "p99 latency"],
              [(api_result['events'], f"{api_result['rate']:.1f}",
                f"{api_result['p50_ms']:.1f} ms", f"{api_result['p99_ms']:.1f} ms")])}
"""
    text += f"\nPostgreSQL: {pg_note}\n"
    return text


def ev_bytes() -> bytes:
    from opentraces.store import encode_event

    return encode_event(step(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=5000, help="single appends (a)")
    parser.add_argument("--batched", type=int, default=50_000,
                        help="events per batched configuration (b)")
    parser.add_argument("--api-calls", type=int, default=300, help="api.append calls (c)")
    parser.add_argument("--pg-url", default=os.environ.get("OPENTRACES_TEST_POSTGRES_URL",
                                                           common.DEFAULT_PG_URL))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    home = common.fresh_dir("append")
    settings = common.sqlite_settings(home)
    results = [run_backend("SQLite", settings.store, args.single, args.batched)]

    api_result = None
    if args.api_calls:
        print(f"[SQLite] api.append x{args.api_calls} ...", flush=True)
        api_result = bench_api_append(common.sqlite_settings(common.fresh_dir("api")),
                                      args.api_calls, traces=200)

    if args.no_pg:
        pg_note = "not run (`--no-pg`)."
    elif problem := pg_available(args.pg_url):
        pg_note = f"skipped: {problem}."
        print(f"PostgreSQL {pg_note}")
    else:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        pg = postgres_from_url(args.pg_url) | {"schema": schema}
        try:
            results.append(run_backend("PostgreSQL", StoreConfig(backend="postgres", postgres=pg),
                                       args.single, args.batched))
        finally:
            drop_schema(args.pg_url, schema)
        redacted = args.pg_url.split("@")[-1]
        pg_note = (f"server at `{redacted}` on this machine (same 2 cores), fresh schema "
                   f"`{schema}`, dropped afterwards.")

    common.write_results("append", "Append throughput", report(results, api_result, pg_note),
                         record=not args.no_record)


if __name__ == "__main__":
    main()

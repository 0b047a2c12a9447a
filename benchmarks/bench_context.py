"""Context tree: projection rebuild time and layer de-duplication on the benchmark corpus.

Generates the import benchmark's corpus (``gen_claude_sessions.py``, default 200 sessions × 200
lines; or reuses ``--corpus DIR``), imports it once, then rebuilds the ``context_tree``
projection alone ``--runs`` times (default 3) and the ``traces`` projection alone as often, for
scale, reporting medians:

- rebuild wall time and the time inside ``apply_page`` (what every import pays when the
  projection is eager), events applied and events/s; both digests must be equal on every run;
- the layers: nodes, stored layer rows and bytes, and the bytes every node's layers would take
  stored whole (the messages layer as its full item list); the ratio is the de-duplication.

    .venv/bin/python benchmarks/bench_context.py                      # ~1-2 min
    .venv/bin/python benchmarks/bench_context.py --sessions 20 --no-record   # smoke check
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import common  # first: isolates HOME / OPENTRACES_HOME
import gen_claude_sessions

from opentraces import api
from opentraces.projections.context_tree import ContextTree

REFERENCE = (200, 200)


def rebuild(settings: Any, name: str, runs: int) -> dict[str, Any]:
    walls, applies, digests = [], [], set()
    events = 0
    for _ in range(runs):
        began = time.perf_counter()
        result = api.rebuild(settings, [name]).projections[name]
        walls.append(time.perf_counter() - began)
        applies.append(result["seconds"])
        digests.add(result["digest"])
        events = result["events_applied"]
    return {"wall": statistics.median(walls), "apply": statistics.median(applies),
            "events": events, "digests_equal": len(digests) == 1, "walls": walls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=REFERENCE[0])
    parser.add_argument("--entries", type=int, default=REFERENCE[1], help="lines per session")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", type=Path, help="reuse these transcript files")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    corpus = args.corpus
    if corpus is None:
        corpus = common.fresh_dir("corpus-context")
        gen_claude_sessions.generate(corpus, args.sessions, args.entries, args.seed)
    raw = sum(p.stat().st_size for p in corpus.rglob("*.jsonl"))
    settings = common.sqlite_settings(common.fresh_dir("store-context"))
    print(f"importing {corpus} ({common.fmt_bytes(raw)}) ...", flush=True)
    began = time.perf_counter()
    report = api.import_sessions(settings, api.import_sources(settings, [corpus],
                                                               agents=["claude-code"]))
    imported = time.perf_counter() - began
    print(f"  {report.events_appended:,} events in {imported:.1f} s", flush=True)

    ctx = rebuild(settings, ContextTree.name, args.runs)
    traces = rebuild(settings, "traces", args.runs)
    with api.open_workspace(settings, readonly=True) as ws:
        proj = ws.runner().open(ContextTree.name)
        assert proj is not None
        stats = proj.layer_stats()  # type: ignore[attr-defined]
        size = common.dir_size(proj.path.parent)
    ratio = stats["logical_bytes"] / stats["stored_bytes"] if stats["stored_bytes"] else 0.0

    rows = [
        ("corpus", f"{args.sessions} sessions × {args.entries} lines, "
                   f"{common.fmt_bytes(raw)}" if args.corpus is None else str(corpus)),
        ("events in the log", common.fmt_int(ctx["events"])),
        ("**`context_tree` rebuild** (wall, median)", f"**{ctx['wall']:.2f} s**"),
        ("`context_tree` time in `apply_page`", f"{ctx['apply']:.2f} s "
         f"({common.fmt_int(ctx['events'] / ctx['apply'])} events/s)"),
        ("`traces` rebuild (wall / in `apply_page`), for scale",
         f"{traces['wall']:.2f} s / {traces['apply']:.2f} s"),
        ("digests equal across runs", "yes" if ctx["digests_equal"] and traces["digests_equal"]
         else "**no**"),
        ("nodes (one per step)", common.fmt_int(stats["nodes"])),
        ("layer rows stored", common.fmt_int(stats["layer_rows"])),
        ("layer bytes stored", common.fmt_bytes(stats["stored_bytes"])),
        ("layer bytes if every node stored its layers whole",
         common.fmt_bytes(stats["logical_bytes"])),
        ("**layer de-duplication ratio**", f"**{ratio:.1f}×**"),
        ("`context_tree` on disk", common.fmt_bytes(size)),
    ]
    body = f"""\
{common.table(["", ""], rows)}

Runs (wall, s): context tree {", ".join(f"{w:.2f}" for w in ctx["walls"])}; traces
{", ".join(f"{w:.2f}" for w in traces["walls"])}. The import took {imported:.1f} s with every
registered projection eager.

Stored whole, a node's messages layer is its full list of item hashes, so the whole-storage size
grows with the square of a session's length; stored as parent layer + added hashes it grows
linearly. Runtime and system layers are shared by every node whose facts are equal.
"""
    common.write_results("context", "Context tree: rebuild and layer de-duplication", body,
                         record=not args.no_record)


if __name__ == "__main__":
    main()

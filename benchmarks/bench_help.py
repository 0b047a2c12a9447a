"""`opentraces --help` wall time, and which heavy packages it imports.

Runs the installed console script (next to ``sys.executable``) as a fresh process: 3 warm-ups,
then N timed runs; reports median, p95 and min against the 120 ms budget. Then runs it once
under ``python -X importtime`` and reports the slowest imports and whether any of the packages
that must stay lazy were loaded.

    .venv/bin/python benchmarks/bench_help.py [--runs 30] [--no-record]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import common

BUDGET_MS = 120.0
RATIO_TARGET = 3.0  # median / `python -c pass`, both with compiled bytecode
WARMUPS = 3
#: Packages --help must not import (the first four), and one that it may.
WATCHED = ("huggingface_hub", "whoosh", "dulwich", "psycopg", "eventsourcing")
MUST_NOT = ("huggingface_hub", "whoosh", "dulwich", "psycopg", "eventsourcing.postgres")


def time_runs(argv: list[str], runs: int, warmups: int = WARMUPS) -> list[float]:
    env = common.compiled_env()
    for _ in range(warmups):
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - began)
    return times


def import_times(argv: list[str]) -> list[tuple[str, int, int, int]]:
    """(module, self µs, cumulative µs, depth) for every import ``argv`` performs."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=common.compiled_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((name.strip(), int(self_us), int(cum_us), depth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    script = common.venv_script("opentraces")
    if not script.exists():
        sys.exit(f"{script} not found: install the project into this venv first")

    help_times = time_runs([str(script), "--help"], args.runs)
    help_ms = common.summary_ms(help_times)
    floor_ms = common.summary_ms(time_runs([sys.executable, "-c", "pass"], args.runs))
    click_ms = common.summary_ms(time_runs([sys.executable, "-c", "import click"], args.runs))
    verdict = "PASS" if help_ms["median"] <= BUDGET_MS else "FAIL"
    ratio = help_ms["median"] / floor_ms["median"]
    ratio_verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"

    imports = import_times([str(script), "--help"])
    loaded = {name for name, *_ in imports}
    total_us = sum(s for _, s, _, _ in imports)
    top = sorted((r for r in imports if r[3] <= 1), key=lambda r: -r[2])[:10]

    def present(pkg: str) -> bool:
        return any(n == pkg or n.startswith(pkg + ".") for n in loaded)

    watched_rows = [(f"`{p}`", "**imported**" if present(p) else "not imported",
                     "must not" if p in MUST_NOT else "may (lazy preferred)")
                    for p in WATCHED]
    watched_rows.append(("`eventsourcing.postgres`",
                         "**imported**" if present("eventsourcing.postgres") else "not imported",
                         "must not"))
    bad = [p for p in MUST_NOT if present(p)]

    body = f"""\
`{script.name} --help` as a fresh process, {WARMUPS} warm-ups then {args.runs} timed runs
(wall time of `subprocess.run`, output discarded), every process with bytecode compiled
beforehand by `python -m compileall` into a private cache, as an installed package has it.

{common.table(["command", "median", "p95", "min", "max"], [
    ("`opentraces --help`", *(f"{help_ms[k]:.1f} ms" for k in ("median", "p95", "min", "max"))),
    ("`python -c pass` (interpreter floor)",
     *(f"{floor_ms[k]:.1f} ms" for k in ("median", "p95", "min", "max"))),
    ("`python -c 'import click'`",
     *(f"{click_ms[k]:.1f} ms" for k in ("median", "p95", "min", "max"))),
])}

Budget: median ≤ {BUDGET_MS:.0f} ms → **{verdict}** ({help_ms["median"]:.1f} ms).
Ratio to the interpreter floor, same run: **{ratio:.2f}×** (target ≤ {RATIO_TARGET:.0f}×) →
**{ratio_verdict}**.

`python -X importtime {script.name} --help`: {len(imports)} modules imported,
{total_us / 1e3:.1f} ms of import time in total. Slowest imports at the top two levels
(cumulative; level 1 is imported by a level-0 module):

{common.table(["module", "level", "cumulative", "self"],
              [(f"`{n}`", d, f"{c / 1e3:.1f} ms", f"{s / 1e3:.1f} ms")
               for n, s, c, d in top])}

(`__editable___opentraces_…_finder` is the editable install's import hook, loaded by `site`;
a wheel install does not have it.)

Heavy packages:

{common.table(["package", "by --help", "rule"], watched_rows)}

Forbidden imports found: {", ".join(bad) if bad else "none"}.
"""
    common.write_results("help", "`opentraces --help` start-up", body,
                         record=not args.no_record)
    print(f"{verdict}: median {help_ms['median']:.1f} ms (budget {BUDGET_MS:.0f} ms)")
    print(f"{ratio_verdict}: {ratio:.2f}x python -c pass (target {RATIO_TARGET:.0f}x)")
    if bad:
        print(f"FAIL: --help imported {', '.join(bad)}")


if __name__ == "__main__":
    main()

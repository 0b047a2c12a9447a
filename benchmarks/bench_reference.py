"""Side by side with the independent 0.4.x implementation: ingest, index, ingest + index.

Installs ``opentraces==0.4.13`` (an older, independent implementation with the same import
name) into a venv of its own under the scratch folder, kept between runs at
``<scratch>/opentraces-reference-0.4.13`` (``--ref-venv DIR`` to use another), and runs it
offline on the same generated Claude Code sessions as this project:

- the sessions (``gen_claude_sessions.py``, ``--sessions`` × ``--entries``) are rewritten to
  one git project (their ``cwd`` and file paths point at a repository made here) and placed where
  Claude Code keeps them, ``~/.claude/projects/<project>/``, in a fresh HOME for every run;
- reference: ``opentraces init --agent claude-code --import-existing`` in the project (ingest),
  then ``opentraces trace index rebuild --json`` (index);
- this project: ``opentraces import --agent claude-code --json`` (ingest), then
  ``opentraces trace index rebuild --json`` (index);

each a separate process timed by wall clock, ``--runs`` rounds (default 3) alternating the two
tools and flipping which goes first each round; medians are reported with the ratios
reference / ours (goal: ingest + index ≥ 10× faster, stretch 50×).

Offline: ``HF_HUB_OFFLINE=1``, ``OPENTRACES_DISABLE_VERSION_CHECK=1``, and every proxy variable
pointed at an unroutable address, so any attempt to reach the network fails at once.

    .venv/bin/python benchmarks/bench_reference.py                       # ~5 min
    .venv/bin/python benchmarks/bench_reference.py --sessions 10 --runs 1 --no-record  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common  # first: isolates HOME / OPENTRACES_HOME
import gen_claude_sessions as gen

REFERENCE = "opentraces==0.4.13"
GOAL, STRETCH = 10.0, 50.0
OFFLINE = {"HF_HUB_OFFLINE": "1", "OPENTRACES_DISABLE_VERSION_CHECK": "1",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}


def reference_venv(folder: Path | None) -> Path:
    """The reference tool's venv, created and installed when missing; its ``bin`` folder."""
    venv = folder or Path(os.environ.get("OPENTRACES_BENCH_TMP") or "/tmp") / \
        "opentraces-reference-0.4.13"
    script = venv / "bin" / "opentraces"
    if not script.exists():
        print(f"installing {REFERENCE} into {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", REFERENCE],
                              stdout=subprocess.DEVNULL)
        if done.returncode != 0 or not script.exists():
            sys.exit(f"could not install {REFERENCE} into {venv} (exit {done.returncode})")
    return venv / "bin"


def version(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "python"), "-c",
                          "from importlib.metadata import version; print(version('opentraces'))"],
                         capture_output=True, text=True, check=True, cwd="/")
    return out.stdout.strip()  # (not from the repository: its egg-info would answer)


def place_sessions(corpus: Path, home: Path) -> tuple[Path, int]:
    """A git project under ``home`` and every generated session moved into it, in Claude
    Code's folder for that project; (project, bytes written)."""
    from dulwich import porcelain

    project = home / "work" / "shop"
    project.mkdir(parents=True)
    porcelain.init(str(project))
    (project / "README.md").write_text("shop\n")
    porcelain.add(str(project), [str(project / "README.md")])
    porcelain.commit(str(project), message=b"init", author=b"Bench <bench@example.invalid>",
                     committer=b"Bench <bench@example.invalid>")
    folder = home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(project))
    folder.mkdir(parents=True)
    size = 0
    for path in sorted(corpus.glob("*/*.jsonl")):
        text = re.sub(r"/home/dev/proj-\d+", str(project), path.read_text(encoding="utf-8"))
        (folder / path.name).write_text(text, encoding="utf-8")
        size += len(text.encode())
    return project, size


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, Any]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    start = done.stdout.find("{")  # the reference prints a banner before its JSON
    try:
        return seconds, json.JSONDecoder().raw_decode(done.stdout[start:])[0]
    except ValueError:
        return seconds, None


def run_once(tool: str, bin_dir: Path, corpus: Path) -> dict[str, Any]:
    home = common.fresh_dir(f"{tool}-home")
    project, size = place_sessions(corpus, home)
    env = common.isolated_env() | OFFLINE | {"HOME": str(home),
                                             "OPENTRACES_HOME": str(home / ".opentraces")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both tools start as installed packages do
    script = str(bin_dir / "opentraces")
    if tool == "reference":
        ingest, report = timed([script, "init", "--agent", "claude-code", "--import-existing"],
                               env, project)
        imported = report.get("imported_existing") if isinstance(report, dict) else None
        index, built = timed([script, "trace", "index", "rebuild", "--json"], env, project)
        units = ((built or {}).get("search_snapshot") or {}).get("trace_count")
        what = f"{units} traces" if units is not None else "?"
    else:
        ingest, report = timed([script, "import", "--agent", "claude-code", "--json"], env,
                               project)
        imported = report.get("traces_created") if isinstance(report, dict) else None
        index, built = timed([script, "trace", "index", "rebuild", "--json"], env, project)
        docs = (built or {}).get("doc_count")
        what = f"{docs} documents" if docs is not None else "?"
    shutil.rmtree(home, ignore_errors=True)
    return {"ingest": ingest, "index": index, "total": ingest + index, "imported": imported,
            "indexed": what, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ref-venv", type=Path, default=None)
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    ref_bin = reference_venv(args.ref_venv)
    ours_bin = Path(sys.executable).parent
    corpus = common.fresh_dir("corpus")
    gen.generate(corpus, args.sessions, args.entries, seed=1)
    tools = {"reference": ref_bin, "ours": ours_bin}
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": []}
    for n in range(args.runs):
        order = ["ours", "reference"] if n % 2 == 0 else ["reference", "ours"]
        for tool in order:
            runs[tool].append(run_once(tool, tools[tool], corpus))
            r = runs[tool][-1]
            print(f"round {n + 1} {tool}: ingest {r['ingest']:.2f} s, index {r['index']:.2f} s",
                  file=sys.stderr)

    med = {tool: {k: statistics.median(r[k] for r in rs) for k in ("ingest", "index", "total")}
           for tool, rs in runs.items()}
    ratio = {k: med["reference"][k] / med["ours"][k] for k in ("ingest", "index", "total")}
    verdict = ("PASS (stretch met)" if ratio["total"] >= STRETCH else
               "PASS" if ratio["total"] >= GOAL else "FAIL")
    last = {tool: rs[-1] for tool, rs in runs.items()}
    mb = last["ours"]["bytes"] / 2**20
    body = f"""\
{args.sessions} generated Claude Code sessions × {args.entries} lines ({mb:.1f} MB) in one git
project, {args.runs} rounds alternating the tools (the first tool flips each round), each step
a fresh process in a fresh HOME, offline; medians of wall time. Reference: `{REFERENCE}`
(installed version {version(ref_bin)}) in its own venv.

{common.table(["step", "reference 0.4.13", "this project", "reference / ours"], [
    ("ingest", f"{med['reference']['ingest']:.2f} s", f"{med['ours']['ingest']:.2f} s",
     f"{ratio['ingest']:.1f}×"),
    ("index", f"{med['reference']['index']:.2f} s", f"{med['ours']['index']:.2f} s",
     f"{ratio['index']:.1f}×"),
    ("ingest + index", f"{med['reference']['total']:.2f} s", f"{med['ours']['total']:.2f} s",
     f"**{ratio['total']:.1f}×**"),
])}

Goal: ingest + index ≥ {GOAL:.0f}× faster than the reference (stretch {STRETCH:.0f}×) →
**{verdict}**.

What each built (last round): reference imported {last['reference']['imported']} sessions and
indexed {last['reference']['indexed']}; this project imported {last['ours']['imported']} sessions
and indexed {last['ours']['indexed']} (a document per trace and per step). The two indexes differ
in kind (the reference keeps a SQLite search snapshot of traces), so the ratio compares the time
each tool takes from transcripts to a searchable store, not equal work.

Commands: reference `opentraces init --agent claude-code --import-existing` (run in the project)
then `opentraces trace index rebuild --json`; ours `opentraces import --agent claude-code --json`
then `opentraces trace index rebuild --json`.
"""
    common.write_results("reference", "Side by side with opentraces 0.4.13", body,
                         record=not args.no_record)
    print(f"{verdict}: ingest {ratio['ingest']:.1f}x, index {ratio['index']:.1f}x, "
          f"ingest + index {ratio['total']:.1f}x")


if __name__ == "__main__":
    main()

"""Side by side with the independent 0.4.x implementation: ingest, index, ingest + index.

Installs ``opentraces==0.4.13`` (an older, independent implementation with the same import
name) into a venv of its own, kept between runs at
``$OPENTRACES_BENCH_TMP`` (else the system temp folder) ``/opentraces-bench-ref-venv-0.4.13``
(``--ref-venv DIR`` to use another), and runs both tools on the same generated Claude Code
sessions:

- the sessions (``gen_claude_sessions.py``, ``--sessions`` × ``--entries``, seed 1) are
  rewritten to one git project (their ``cwd`` and file paths point at a repository made here)
  and placed where Claude Code keeps them, ``~/.claude/projects/<project>/``, in a fresh HOME
  (with a fresh project) for every run of either tool;
- reference: ``opentraces init --agent claude-code --import-existing`` run in the project
  (ingest: its documented way to import a project's existing Claude Code sessions; it also
  enrolls the project), then ``opentraces trace index rebuild --json`` (index: it builds the
  search snapshot, which neither ``init`` nor ``trace index refresh`` does);
- this project: ``opentraces import --agent claude-code --json`` (ingest), then
  ``opentraces trace index refresh --json`` (index: what the import left to index; a small
  import indexes inline, a large one leaves it to this step);

each step a separate process timed by wall clock (CPU time of the process and its children
alongside), ``--runs`` rounds (default 3) alternating the two tools and flipping which goes
first each round; medians are reported with the ratios reference / ours (goal: ingest + index
≥ 10× faster, stretch 50×), and what each tool built (sessions, documents or traces).

Offline and contained: each tool gets its own ``HOME`` (and ``OPENTRACES_HOME``, ``TMPDIR``)
under the scratch folder; ``HF_HUB_OFFLINE=1``, ``OPENTRACES_DISABLE_VERSION_CHECK=1``, and
every proxy variable points at ``127.0.0.1:9`` (refused at once) with ``NO_PROXY`` empty, so
any attempt to reach the network fails fast instead of waiting. (The reference's ``init`` tries
to download an optional helper binary; the attempt is refused and it carries on without it.)
Both tools run with compiled bytecode, as installed packages do: the reference's venv is
compiled at install, ours goes through ``common.compiled_env``.

    .venv/bin/python benchmarks/bench_reference.py                       # ~2-3 min
    .venv/bin/python benchmarks/bench_reference.py --sessions 10 --runs 1 --no-record  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # first: isolates HOME / OPENTRACES_HOME
import gen_claude_sessions as gen

REF_VERSION = "0.4.13"
REFERENCE = f"opentraces=={REF_VERSION}"
GOAL, STRETCH = 10.0, 50.0
STEPS = ("ingest", "index", "total")
DEAD_PROXY = "http://127.0.0.1:9"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "OPENTRACES_DISABLE_VERSION_CHECK": "1",
    "HTTP_PROXY": DEAD_PROXY,
    "HTTPS_PROXY": DEAD_PROXY,
    "ALL_PROXY": DEAD_PROXY,
    "http_proxy": DEAD_PROXY,
    "https_proxy": DEAD_PROXY,
    "all_proxy": DEAD_PROXY,
    "NO_PROXY": "",
    "no_proxy": "",
    "GIT_TERMINAL_PROMPT": "0",
}
AUTHOR = b"Bench <bench@example.invalid>"


# -- the reference venv -----------------------------------------------------------------------


def default_venv() -> Path:
    base = os.environ.get("OPENTRACES_BENCH_TMP") or tempfile.gettempdir()
    return Path(base) / f"opentraces-bench-ref-venv-{REF_VERSION}"


def installed_version(venv: Path) -> str | None:
    """The ``opentraces`` version installed in ``venv`` (asked from outside the repository,
    whose own metadata would answer otherwise), or None."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "opentraces").exists() or not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('opentraces'))"],
        capture_output=True,
        text=True,
        cwd="/",
        env=common.isolated_env(),
    )
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def reference_venv(folder: Path | None) -> tuple[Path, str]:
    """The reference tool's venv (created and installed when missing or not at
    ``REF_VERSION``) and the version installed in it."""
    venv = (folder or default_venv()).resolve()
    found = installed_version(venv)
    if found == REF_VERSION:
        return venv, found
    is_venv = (venv / "pyvenv.cfg").exists() and (venv / "bin" / "python").exists()
    if not is_venv and venv.exists() and any(venv.iterdir()):
        sys.exit(f"{venv} exists and is not a venv; pass an empty or new folder to --ref-venv")
    print(f"installing {REFERENCE} into {venv} …", file=sys.stderr)
    if not is_venv:
        base = Path(getattr(sys, "_base_executable", sys.executable))
        made = subprocess.run([str(base), "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"could not create a venv at {venv}:\n{made.stderr[-2000:]}")
    env = common.isolated_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # pip compiles the installed modules
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            REFERENCE,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    found = installed_version(venv)
    if done.returncode != 0 or found is None:
        sys.exit(
            f"could not install {REFERENCE} into {venv} (pip exit {done.returncode}):\n"
            f"{done.stderr[-2000:]}"
        )
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if found != REF_VERSION:
        print(f"warning: {venv} has opentraces {found}, not {REF_VERSION}", file=sys.stderr)
    return venv, found


# -- one run ----------------------------------------------------------------------------------


def place_sessions(corpus: Path, home: Path) -> tuple[Path, int, int]:
    """A git project under ``home`` and every generated session rewritten into it, in Claude
    Code's folder for that project: (project, sessions, bytes written)."""
    from dulwich import porcelain

    project = home / "work" / "shop"
    project.mkdir(parents=True)
    porcelain.init(str(project))
    (project / "README.md").write_text("shop\n")
    porcelain.add(str(project), [str(project / "README.md")])
    porcelain.commit(str(project), message=b"init", author=AUTHOR, committer=AUTHOR)
    folder = home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(project))
    folder.mkdir(parents=True)
    count = size = 0
    for path in sorted(corpus.glob("*/*.jsonl")):
        text = re.sub(r"/home/dev/proj-\d+", str(project), path.read_text(encoding="utf-8"))
        data = text.encode("utf-8")
        (folder / path.name).write_bytes(data)
        count += 1
        size += len(data)
    return project, count, size


def last_json(text: str) -> dict[str, Any] | None:
    """The last JSON object printed at the start of a line (the reference prints human lines
    before its JSON)."""
    found = None
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^\{", text, re.M):
        try:
            value = decoder.raw_decode(text, m.start())[0]
        except ValueError:
            continue
        if isinstance(value, dict):
            found = value
    return found


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of the process and its children, its JSON report)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(
            f"{' '.join(argv)} failed (exit {done.returncode}) in {cwd}:\n"
            f"{done.stdout[-1000:]}\n{done.stderr[-2000:]}"
        )
    return seconds, cpu, last_json(done.stdout)


def tool_env(tool: str, home: Path) -> dict[str, str]:
    env = common.compiled_env() if tool == "ours" else common.isolated_env()
    if tool == "reference":
        env.pop("PYTHONPYCACHEPREFIX", None)  # its venv holds its own compiled bytecode
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    tmp = home / "tmp"
    tmp.mkdir(exist_ok=True)
    return (
        env
        | OFFLINE
        | {
            "HOME": str(home),
            "OPENTRACES_HOME": str(home / ".opentraces"),
            "TMPDIR": str(tmp),
        }
    )


def run_once(tool: str, script: Path, corpus: Path) -> dict[str, Any]:
    """Ingest then index with one tool in a fresh HOME and project; the figures."""
    home = common.fresh_dir(f"{tool}-home")
    project, sessions, size = place_sessions(corpus, home)
    env = tool_env(tool, home)
    if tool == "reference":
        ingest = [str(script), "--json", "init", "--agent", "claude-code", "--import-existing"]
        index = [str(script), "trace", "index", "rebuild", "--json"]
    else:
        ingest = [str(script), "import", "--agent", "claude-code", "--json"]
        index = [str(script), "trace", "index", "refresh", "--json"]
    ingest_s, ingest_cpu, imported = timed(ingest, env, project)
    index_s, index_cpu, built = timed(index, env, project)
    imported, built = imported or {}, built or {}
    if tool == "reference":
        found = imported.get("existing_session_count")
        got = imported.get("imported_existing")
        errors = imported.get("import_errors")
        units = (built.get("search_snapshot") or {}).get("trace_count")
        indexed = f"{units:,} traces" if isinstance(units, int) else "?"
    else:
        found = imported.get("sources_scanned")
        got = imported.get("traces_created")
        errors = imported.get("lines_rejected")
        docs, applied = built.get("doc_count"), built.get("events_applied")
        indexed = f"{docs:,} documents" if isinstance(docs, int) else "?"
        if isinstance(applied, int):
            indexed += f" ({applied:,} events applied by this step)"
    shutil.rmtree(home, ignore_errors=True)
    return {
        "ingest": ingest_s,
        "index": index_s,
        "total": ingest_s + index_s,
        "ingest_cpu": ingest_cpu,
        "index_cpu": index_cpu,
        "total_cpu": ingest_cpu + index_cpu,
        "placed": sessions,
        "bytes": size,
        "found": found,
        "imported": got,
        "errors": errors,
        "indexed": indexed,
    }


def warm_up(scripts: dict[str, Path]) -> None:
    """One untimed start of each tool (page cache, first-import costs)."""
    for tool, script in scripts.items():
        home = common.fresh_dir(f"{tool}-warm")
        subprocess.run(
            [str(script), "--help"],
            env=tool_env(tool, home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------


def verdict(ratio: float) -> str:
    return "PASS (stretch met)" if ratio >= STRETCH else "PASS" if ratio >= GOAL else "FAIL"


def report(
    args: argparse.Namespace, version: str, runs: dict[str, list[dict[str, Any]]]
) -> tuple[str, dict[str, float]]:
    med = {
        tool: {
            k: statistics.median(r[k] for r in rs) for k in (*STEPS, *(f"{s}_cpu" for s in STEPS))
        }
        for tool, rs in runs.items()
    }
    ratio = {k: med["reference"][k] / max(med["ours"][k], 1e-9) for k in STEPS}
    cpu_ratio = {
        k: med["reference"][f"{k}_cpu"] / max(med["ours"][f"{k}_cpu"], 1e-9) for k in STEPS
    }
    last = {tool: rs[-1] for tool, rs in runs.items()}
    mb = last["ours"]["bytes"] / 2**20
    names = {"ingest": "ingest", "index": "index", "total": "**ingest + index**"}
    rows = [
        (
            names[k],
            f"{med['reference'][k]:.2f} s",
            f"{med['ours'][k]:.2f} s",
            f"**{ratio[k]:.1f}×**" if k == "total" else f"{ratio[k]:.1f}×",
            f"{med['reference'][f'{k}_cpu']:.2f} s / {med['ours'][f'{k}_cpu']:.2f} s",
            f"{cpu_ratio[k]:.1f}×",
        )
        for k in STEPS
    ]
    per_run = [
        (n + 1, tool, f"{r['ingest']:.2f} s", f"{r['index']:.2f} s", f"{r['total']:.2f} s")
        for tool, rs in runs.items()
        for n, r in enumerate(rs)
    ]
    built = [
        (
            "reference 0.4.13",
            last["reference"]["placed"],
            last["reference"]["found"],
            f"{last['reference']['imported']} ({last['reference']['errors']} errors)",
            last["reference"]["indexed"],
        ),
        (
            "this project",
            last["ours"]["placed"],
            last["ours"]["found"],
            f"{last['ours']['imported']} ({last['ours']['errors']} lines rejected)",
            last["ours"]["indexed"],
        ),
    ]
    notes = []
    for tool, r in last.items():
        if r["imported"] != r["placed"]:
            notes.append(
                f"\n- {tool} imported {r['imported']} of the {r['placed']} sessions placed."
            )
    body = f"""\
{args.sessions} generated Claude Code sessions × {args.entries} lines ({mb:.1f} MB) in one git
project, {args.runs} round(s) alternating the tools (the first tool flips each round); every
step a fresh process, every run a fresh HOME and project; offline; medians. Reference:
`{REFERENCE}` (installed: {version}) in its own venv.

{
        common.table(
            [
                "step",
                "reference 0.4.13",
                "this project",
                "reference / ours",
                "CPU reference / ours",
                "CPU ratio",
            ],
            rows,
        )
    }

Goal: ingest + index ≥ {GOAL:.0f}× faster than the reference (stretch {STRETCH:.0f}×) →
**{verdict(ratio["total"])}** ({ratio["total"]:.1f}×).

What each built (last round):

{common.table(["tool", "sessions placed", "sessions found", "imported", "indexed"], built)}
{"".join(notes)}

The two indexes differ in kind (the reference builds a SQLite search snapshot with one row per
trace; this project a full-text index with a document per trace and per step), so the ratio
compares the time each tool takes from transcripts to a searchable store, not equal work.

Commands (cwd: the project): reference `opentraces --json init --agent claude-code
--import-existing`, then `opentraces trace index rebuild --json`; ours `opentraces import
--agent claude-code --json`, then `opentraces trace index refresh --json`.

Each run (wall time):

{common.table(["round", "tool", "ingest", "index", "ingest + index"], per_run)}
"""
    return body, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--entries", type=int, default=200, help="lines per session file")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each runs both tools)")
    parser.add_argument(
        "--ref-venv", type=Path, default=None, help=f"venv for {REFERENCE} (default: cached)"
    )
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()

    venv, version = reference_venv(args.ref_venv)
    scripts = {"reference": venv / "bin" / "opentraces", "ours": common.venv_script("opentraces")}
    corpus = common.fresh_dir("corpus")
    gen.generate(corpus, args.sessions, args.entries, seed=1)
    warm_up(scripts)
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": []}
    for n in range(args.runs):
        order = ("ours", "reference") if n % 2 == 0 else ("reference", "ours")
        for tool in order:
            r = run_once(tool, scripts[tool], corpus)
            runs[tool].append(r)
            print(
                f"round {n + 1} {tool}: ingest {r['ingest']:.2f} s, index {r['index']:.2f} s "
                f"({r['imported']} sessions, {r['indexed']})",
                file=sys.stderr,
            )

    body, ratio = report(args, version, runs)
    common.write_results(
        "reference", f"Side by side with opentraces {REF_VERSION}", body, record=not args.no_record
    )
    print(
        f"{verdict(ratio['total'])}: ingest {ratio['ingest']:.1f}x, index {ratio['index']:.1f}x, "
        f"ingest + index {ratio['total']:.1f}x"
    )


if __name__ == "__main__":
    main()

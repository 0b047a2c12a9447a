"""Shared helpers for the benchmark scripts.

Import this module *before* anything from ``opentraces``: on import it points ``HOME`` and
``OPENTRACES_HOME`` at a private temporary folder (removed at exit), so a benchmark can never
read or write the real ``~/.opentraces``. Scripts still pass explicit
:class:`~opentraces.config.Settings` built by :func:`sqlite_settings`.

Temporary folders go under ``$OPENTRACES_BENCH_TMP`` when set (else the system temp dir); they
should live on a real disk, since append figures depend on ``fsync``.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
DEFAULT_PG_URL = "postgresql://opentraces:opentraces@127.0.0.1:5432/opentraces_test"

# -- isolation (runs at import, before opentraces is imported) --------------------------------

SCRATCH = Path(tempfile.mkdtemp(prefix="opentraces-bench-",
                                dir=os.environ.get("OPENTRACES_BENCH_TMP") or None))
BENCH_HOME = SCRATCH / "home"
BENCH_HOME.mkdir()
os.environ["HOME"] = str(BENCH_HOME)
os.environ["OPENTRACES_HOME"] = str(BENCH_HOME / ".opentraces")
os.environ.pop("OPENTRACES_STORE_URL", None)
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def fresh_dir(name: str) -> Path:
    """A new empty folder under the benchmark scratch space."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH))
    return path


def sqlite_settings(home: Path) -> Any:
    """Explicit settings for a SQLite store under ``home`` (never the environment's home)."""
    from opentraces.config import Settings, StoreConfig

    return Settings(home=home, store=StoreConfig(sqlite_path=home / "bucket" / "events.sqlite"))


def isolated_env() -> dict[str, str]:
    """Environment for child processes: the private HOME/OPENTRACES_HOME, no store URL."""
    env = dict(os.environ)
    env["HOME"] = str(BENCH_HOME)
    env["OPENTRACES_HOME"] = str(BENCH_HOME / ".opentraces")
    env.pop("OPENTRACES_STORE_URL", None)
    return env


_COMPILED: dict[str, str] | None = None


def compiled_env() -> dict[str, str]:
    """:func:`isolated_env` with bytecode as an installed package has it: ``python -m
    compileall`` writes it once into a private cache (``PYTHONPYCACHEPREFIX``, never the source
    tree), and every run reads it. This sandbox sets ``PYTHONDONTWRITEBYTECODE``, which would
    otherwise compile every module from source at every start."""
    global _COMPILED
    if _COMPILED is None:
        import site
        import sysconfig

        env = isolated_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(fresh_dir("pycache"))
        root = Path(__file__).resolve().parent.parent
        folders = [root / "opentraces", root / "projections", root / "commands",
                   Path(sysconfig.get_path("stdlib")), *map(Path, site.getsitepackages())]
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                        *map(str, folders)], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)  # a few unparsable test files
        _COMPILED = env
    return dict(_COMPILED)


def venv_script(name: str) -> Path:
    """A console script installed next to the running interpreter (e.g. ``.venv/bin/ot``)."""
    return Path(sys.executable).parent / name


# -- statistics and formatting ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """median / p95 / min / max of durations in seconds, as milliseconds."""
    return {"median": statistics.median(seconds) * 1e3, "p95": percentile(seconds, 95) * 1e3,
            "min": min(seconds) * 1e3, "max": max(seconds) * 1e3}


def fmt_int(n: float) -> str:
    return f"{round(n):,}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def dir_size(path: Path) -> int:
    """Bytes used by the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.machine()


def _ram_bytes() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def _filesystem(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (from /proc/mounts)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = ("", "unknown")
    resolved = str(path.resolve())
    for parts in mounts:
        if len(parts) < 3:
            continue
        point = parts[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, parts[2])
    return best[1]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def code_version() -> str:
    """The commit measured, flagged when the library folders have uncommitted changes."""
    import subprocess

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "opentraces", "projections", "commands")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (+ uncommitted library changes)" if dirty else commit


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    ram = _ram_bytes()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({usable} usable)",
        "ram": fmt_bytes(ram) if ram else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(f"{d} {_version(d)}" for d in
                              ("opentraces", "eventsourcing", "msgspec", "click")),
        "scratch": f"{SCRATCH.parent} ({_filesystem(SCRATCH)})",
        "code": code_version(),
        "load average (1/5/15 min) when written": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def machine_line() -> str:
    """One line naming the date and machine, for the top of each results section."""
    m = machine()
    return (f"Measured {m['date']} at commit {m['code']} on {m['cpu']}, {m['cores']}, "
            f"{m['ram']} RAM, Python {m['python']}, SQLite {m['sqlite']}.")


def machine_table() -> str:
    return table(["", ""], [(k, v) for k, v in machine().items()])


# -- RESULTS.md -------------------------------------------------------------------------------

_HEADER = """# Benchmark results

Produced by the scripts in this folder (see `README.md`); each script rewrites only its own
section, between `<!-- bench:NAME -->` markers. Do not edit the sections by hand.
"""


def update_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the ``name`` section of ``path`` with ``body``, keeping every other section.

    A section is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; one
    that does not exist yet is appended. The file is replaced atomically.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def write_results(name: str, title: str, body: str, *, record: bool = True) -> None:
    """Print a section and (unless ``record`` is false) store it and the machine section."""
    section = f"## {title}\n\n{machine_line()}\n\n{body.strip()}\n"
    print(section)
    if not record:
        print("(not written to RESULTS.md)")
        return
    update_section("machine", f"## Machine\n\nLast updated by `{name}`.\n\n{machine_table()}\n")
    update_section(name, section)
    print(f"wrote section {name!r} of {RESULTS}")


def print_profile(profiler: Any, top: int) -> None:
    """The ``top`` entries of a cProfile run by cumulative and by own time, on stderr."""
    import io
    import pstats

    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(top)
        print(out.getvalue(), file=sys.stderr)

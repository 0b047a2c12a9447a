"""`--help` stays light: the heavy, lazily imported packages never load for it.

Each check runs in a fresh interpreter (this process has imported plenty already), under
``-X importtime`` so that a failure names the import chain. Nothing here is timed; the wall-time
budget is measured by ``benchmarks/bench_help.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opentraces import __version__

#: Packages that --help must not import (prefix match on module names).
FORBIDDEN = ("huggingface_hub", "whoosh", "dulwich", "psycopg", "eventsourcing.postgres")

PROBE = """
import json, sys
from opentraces.commands.main import cli
try:
    cli(ARGV)
except SystemExit as e:
    code = e.code
else:
    code = 0
sys.stdout.flush()
print("\\n@@MODULES@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _forbidden(names: list[str]) -> list[str]:
    return sorted(n for n in names
                  if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))


def _imported_by_log(stderr: str) -> list[str]:
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            names.append(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["bucket", "--help"],
                                  ["rebuild", "--help"], ["status", "--help"],
                                  ["trace", "--help"], ["trace", "teleport", "--help"],
                                  ["trail", "--help"], ["ctx", "--help"]])
def test_help_imports_no_heavy_package(argv: list[str]) -> None:
    code = PROBE.replace("ARGV", repr(argv))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert "@@MODULES@@" in proc.stdout, proc.stdout + proc.stderr
    help_text, _, payload = proc.stdout.rpartition("@@MODULES@@")
    result = json.loads(payload)
    assert result["code"] in (0, None), proc.stdout + proc.stderr
    assert "Usage:" in help_text
    assert _forbidden(result["modules"]) == []
    assert _forbidden(_imported_by_log(proc.stderr)) == []


def test_console_script_help_imports_no_heavy_package() -> None:
    script = Path(sys.executable).parent / "opentraces"
    assert script.exists(), f"{script} is missing: install the project (pip install -e .)"
    proc = subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert _forbidden(_imported_by_log(proc.stderr)) == []


@pytest.mark.parametrize("name", ["ot", "opentraces"])
def test_version_prints_the_version(name: str) -> None:
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{script} is missing: install the project (pip install -e .)"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout
    assert proc.stdout.strip() == f"opentraces, version {__version__}"

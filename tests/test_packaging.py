"""The shape of the package: what the wheel holds, who may import whom, what the API exports,
how large a module may grow.

The wheel test builds and installs a real wheel into a fresh virtual environment, which takes a
few seconds; it runs in the default test run on purpose, because an install that only works from
the source tree is a bug users meet first.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tokenize
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import opentraces
from opentraces import api

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = {"opentraces": "opentraces", "projections": "opentraces.projections",
               "commands": "opentraces.commands"}
BUILD_TIMEOUT = 600


# ---------------------------------------------------------------------------------------------
# (a) the wheel


def _build_requirements_met() -> bool:
    """Whether this interpreter has the build backend pyproject.toml asks for (so no network)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    for spec in pyproject["build-system"]["requires"]:
        requirement = Requirement(spec)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT, check=False)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def clean_env(scratch: Path) -> dict[str, str]:
    """The environment for subprocesses: a private HOME, nothing pointing into this checkout."""
    home = scratch / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "OPENTRACES_STORE_URL")}
    return env | {"HOME": str(home), "OPENTRACES_HOME": str(home / ".opentraces")}


@pytest.fixture(scope="module")
def wheel(scratch: Path, clean_env: dict[str, str]) -> Path:
    """A wheel built from a copy of the checkout (so the build leaves nothing in the repo)."""
    source = scratch / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".work"))
    out = scratch / "dist"
    if _build_requirements_met():
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
               str(source)]
    else:
        # This interpreter lacks the build backend pyproject.toml asks for; let pip fetch it
        # into an isolated build environment, as `pip install` does.
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out),
               str(source)]
    _run(cmd, clean_env, scratch)
    (built,) = out.glob("opentraces-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(scratch: Path, wheel: Path, clean_env: dict[str, str]) -> tuple[Path, dict]:
    """A new venv with only the wheel installed; dependencies come from this venv via PYTHONPATH.

    PYTHONPATH does not process .pth files, so this checkout's editable install stays invisible
    and ``opentraces`` can only be imported from the fresh venv (asserted by the tests).
    """
    venv = scratch / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], clean_env, scratch)
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--no-deps", "--no-index", str(wheel)], clean_env, scratch)
    deps = os.pathsep.join(dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    return venv, clean_env | {"PYTHONPATH": deps}


def test_wheel_holds_only_the_opentraces_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top - dist_info == {"opentraces"}, "nothing but opentraces/ at the top of the wheel"
    packages = {name.rsplit("/", 1)[0] for name in names if name.endswith(".py")}
    assert packages == {"opentraces", "opentraces/capture", "opentraces/projections",
                        "opentraces/commands", "opentraces/security", "opentraces/trail"}
    (info,) = dist_info
    assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == ["opentraces"]


def test_wheel_holds_every_source_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{package.replace('.', '/')}/{path.relative_to(REPO / folder).as_posix()}"
                for folder, package in SOURCE_DIRS.items()
                for path in (REPO / folder).rglob("*.py")}
    assert expected - names == set()
    samples = {n for n in names
               if n.startswith("opentraces/samples/") and n.endswith((".jsonl", ".json"))}
    assert {n.split("/")[2] for n in samples} == {"claude-code", "codex-cli", "gemini-cli", "pi"}


def test_wheel_declares_both_entry_points(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "opentraces = opentraces.commands.main:cli" in text
    assert "ot = opentraces.commands.main:cli" in text


def test_installed_wheel_imports_from_the_fresh_venv(fresh_venv: tuple[Path, dict],
                                                     scratch: Path) -> None:
    venv, env = fresh_venv
    probe = ("import importlib.util, opentraces, opentraces.commands.main, "
             "opentraces.projections.runner\n"
             "for m in (opentraces, opentraces.commands.main, opentraces.projections.runner):\n"
             "    print(m.__file__)\n"
             "print(importlib.util.find_spec('commands'), importlib.util.find_spec('projections'))")
    result = _run([str(venv / "bin" / "python"), "-c", probe], env, scratch)
    *files, missing = result.stdout.splitlines()
    for file in files:
        assert Path(file).resolve().is_relative_to(venv.resolve()), file
    assert missing == "None None", "no top-level commands/projections modules may be installed"


def test_installed_wheel_runs_help_and_version(fresh_venv: tuple[Path, dict],
                                               scratch: Path) -> None:
    venv, env = fresh_venv
    bin_dir = venv / "bin"
    helped = _run([str(bin_dir / "opentraces"), "--help"], env, scratch)
    assert helped.stdout.startswith("Usage: opentraces [OPTIONS] COMMAND [ARGS]...")
    for command in ("bucket", "doctor", "rebuild", "repair", "status"):
        assert f"\n  {command} " in helped.stdout
    version = _run([str(bin_dir / "ot"), "--version"], env, scratch)
    assert version.stdout.strip() == f"opentraces, version {opentraces.__version__}"
    as_module = _run([str(bin_dir / "python"), "-m", "opentraces", "--help"], env, scratch)
    assert as_module.stdout.startswith("Usage:")


def test_installed_wheel_runs_status(fresh_venv: tuple[Path, dict], scratch: Path) -> None:
    venv, env = fresh_venv
    result = _run([str(venv / "bin" / "opentraces"), "--json", "status"], env, scratch)
    assert '"schema_version": "opentraces.status.v1"' in result.stdout
    assert '"verdict": "empty"' in result.stdout


# ---------------------------------------------------------------------------------------------
# (b) the import rule


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def imports_of(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports anywhere (function bodies included), fully qualified.

    ``from opentraces import api`` counts as ``opentraces.api``; ``from opentraces import
    __version__`` as ``opentraces``.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.add(child if _is_module(child) else module)
    return found


def modules_in(folder: str) -> list[tuple[Path, str]]:
    package = SOURCE_DIRS[folder]
    return [(path, package) for path in sorted((REPO / folder).rglob("*.py"))]


def own(imports: set[str]) -> set[str]:
    return {m for m in imports if m == "opentraces" or m.startswith("opentraces.")}


def _param(path: Path, package: str, xfail: dict[str, str]) -> object:
    rel = path.relative_to(REPO).as_posix()
    marks = [pytest.mark.xfail(strict=True, reason=xfail[rel])] if rel in xfail else []
    return pytest.param(path, package, id=rel, marks=marks)


@pytest.mark.parametrize(("path", "package"), [
    _param(p, pkg, {}) for p, pkg in modules_in("opentraces") if p.name != "__main__.py"])
def test_library_modules_do_not_import_the_cli(path: Path, package: str) -> None:
    cli_imports = {m for m in own(imports_of(path, package))
                   if m == "opentraces.commands" or m.startswith("opentraces.commands.")}
    assert cli_imports == set()


COMMAND_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(("path", "package"), [
    _param(p, pkg, COMMAND_XFAIL) for p, pkg in modules_in("commands")])
def test_commands_import_only_the_api(path: Path, package: str) -> None:
    allowed = {"opentraces", "opentraces.api"}
    wrong = {m for m in own(imports_of(path, package))
             if m not in allowed and not m.startswith("opentraces.commands")}
    assert wrong == set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    from_root = {alias.name for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module == "opentraces"
                 and not node.level for alias in node.names}
    assert from_root <= {"api", "__version__"}


@pytest.mark.parametrize(("path", "package"), [
    _param(p, pkg, {}) for p, pkg in modules_in("projections")])
def test_projections_import_only_events_errors_record(path: Path, package: str) -> None:
    allowed = {"opentraces.events", "opentraces.errors", "opentraces.record"}
    wrong = {m for m in own(imports_of(path, package))
             if m not in allowed and not m.startswith("opentraces.projections")}
    assert wrong == set()


def module_name(path: Path, package: str) -> str:
    rel = path.relative_to(REPO / package.split(".")[-1] if package != "opentraces"
                           else REPO / "opentraces").with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def import_graph() -> dict[str, set[str]]:
    """Who imports whom inside ``opentraces/`` and ``projections/``: every import counts,
    module level, function bodies and ``TYPE_CHECKING`` blocks alike (a lazy import still
    ties the two modules together)."""
    nodes = {module_name(p, pkg): (p, pkg)
             for folder in ("opentraces", "projections") for p, pkg in modules_in(folder)
             if p.name != "__main__.py"}
    return {name: {m for m in own(imports_of(path, pkg)) if m in nodes and m != name}
            for name, (path, pkg) in nodes.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_inside_the_library() -> None:
    assert import_cycles(import_graph()) == []


def test_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_inside_the_library_imports_the_facade() -> None:
    graph = import_graph()
    assert sorted(m for m, deps in graph.items() if "opentraces.api" in deps) == []
    assert "opentraces.workspace" in graph["opentraces.api"]


def test_import_scanner_resolves_names() -> None:
    main = REPO / "commands" / "main.py"
    assert {"opentraces", "opentraces.api", "opentraces.commands.output"} <= imports_of(
        main, "opentraces.commands")


# ---------------------------------------------------------------------------------------------
# (c) the API's public surface


def test_api_all_names_exist_once() -> None:
    assert len(api.__all__) == len(set(api.__all__))
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []


def test_api_exports_every_public_definition() -> None:
    defined = {name for name, value in vars(api).items()
               if not name.startswith("_")
               and (inspect.isfunction(value) or inspect.isclass(value))
               and value.__module__ == api.__name__}
    assert defined - set(api.__all__) == set()


# ---------------------------------------------------------------------------------------------
# (d) module size

#: A module past this many lines of code holds more than one capability; split it along its
#: seams (as intel became context_waste, run_signals and trace_compare) instead of raising it.
MAX_MODULE_LOC = 800

_NOT_CODE = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                       tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER})


def lines_of_code(path: Path) -> int:
    """The non-blank lines of ``path`` that hold code: a line with only a comment does not count,
    every non-blank line of a docstring or other string does."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in _NOT_CODE:
            rows.update(range(token.start[0], token.end[0] + 1))
    return sum(1 for row in rows if lines[row - 1].strip())


def test_line_counter_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Doc.\n\nMore."""\n\n# a comment\n    # an indented one\n'
                      'x = 1  # code with a comment\n\n\ndef f() -> str:\n'
                      '    return """a\n\n    b"""\n', encoding="utf-8")
    assert lines_of_code(sample) == 6


def test_no_module_exceeds_the_size_bound() -> None:
    """Every .py under opentraces/, projections/ and commands/ has at most MAX_MODULE_LOC lines
    of code, counted by :func:`lines_of_code` (blank and comment-only lines left out)."""
    over = {path.relative_to(REPO).as_posix(): count
            for folder in SOURCE_DIRS for path, _ in modules_in(folder)
            if (count := lines_of_code(path)) > MAX_MODULE_LOC}
    assert over == {}, f"over {MAX_MODULE_LOC} lines of code: " + ", ".join(
        f"{path} ({count})" for path, count in sorted(over.items()))

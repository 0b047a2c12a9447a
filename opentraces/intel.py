"""Trace Intelligence: deterministic signals derived on demand from one TraceRecord.

Three pure functions, each returning the payload of one JSON envelope (the CLI adds ``status``,
``schema_version`` and the next-step fields):

- :func:`context_waste` (``opentraces.context_waste.v2``): large tool outputs, one file read
  again and again, bursts of searches;
- :func:`run_intel` (``opentraces.run_intel.v1``): failures, recoveries, loops and resteers;
- :func:`compare` (``opentraces.trace_compare.v1``): two runs side by side.

Invariants:
- A payload is a function of the record alone: no clock, no environment, no randomness, no
  I/O. Lists are sorted by a total key, ids are hashes of what they name, and
  ``json.dumps(payload, sort_keys=True)`` is byte-identical across calls and processes (so
  ``trace get --waste`` and ``trace map --waste`` print the same bytes).
- Nothing is persisted: the signals are recomputed each time from the record.
- Timestamps come from ``Step.timestamp``. A step without one (or with an unreadable one)
  takes the time of the nearest earlier step that has one; steps before any timestamp have no
  time and never count towards a time window (the payload says so in ``limitations``).
- Only what the record carries is used. Tool output length is measured on
  ``Observation.content`` (restored from its blob by ``trace_get``); when an observation also
  carries ``output_chars`` (the full length the capture saw), the larger of the two counts.
- ``fidelity`` is ``"record"``: the signals are read from the TraceRecord. ``"otel"`` is
  reserved for traces captured by an OTLP receiver, which opentraces does not have yet.

The rules, thresholds and their limits are described in ``docs/intel.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentraces.record import Metrics, Observation, Step, ToolCall, TraceRecord

__all__ = [
    "CONTEXT_WASTE_SCHEMA",
    "RUN_INTEL_SCHEMA",
    "TRACE_COMPARE_SCHEMA",
    "compare",
    "context_waste",
    "is_approval",
    "quality",
    "resteer_lead",
    "run_intel",
    "shell_command",
]

CONTEXT_WASTE_SCHEMA = "opentraces.context_waste.v2"
RUN_INTEL_SCHEMA = "opentraces.run_intel.v1"
TRACE_COMPARE_SCHEMA = "opentraces.trace_compare.v1"

FIDELITY = "record"

#: A tool output at least this long (characters) is a large_output finding.
LARGE_OUTPUT_CHARS = 12_000
#: ... and a high-severity one from this length on.
LARGE_OUTPUT_HIGH_CHARS = 48_000
#: The same file read this many times within the window is a repeated_file_read finding.
FILE_READ_MIN = 3
FILE_READ_WINDOW_S = 20 * 60
#: This many searches within the window make a repeated_search finding.
SEARCH_MIN = 5
SEARCH_WINDOW_S = 10 * 60
#: A shell command run this many times (anywhere in the trace) is one loop signal.
LOOP_MIN = 3

#: Quoted in evidence and matched_text; long enough to recognise, short enough to scan.
QUOTE_CHARS = 160

# ---------------------------------------------------------------------------------------------
# Tool vocabulary of the supported agents

#: Tools whose input is a shell command: Claude ``Bash``, Codex ``exec_command``/``shell``
#: (and ``local_shell``), Pi ``bash``, Gemini ``run_shell_command``.
SHELL_TOOLS = frozenset({"Bash", "bash", "exec_command", "shell", "local_shell",
                         "shell_command", "run_shell_command"})
#: Native file readers: Claude ``Read``, Pi ``read``, Gemini ``read_file``.
READ_TOOLS = frozenset({"Read", "read", "read_file"})
#: Native search tools: Claude ``Grep``/``Glob``, Gemini ``search_file_content``/``glob``
#: (``grep_search`` in later versions), Pi ``grep``/``find``.
SEARCH_TOOLS = frozenset({"Grep", "Glob", "search_file_content", "glob", "grep_search", "grep",
                          "find"})
#: Native file writers: the path they name was changed at that step.
EDIT_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit", "edit", "write",
                        "write_file", "replace"})
#: Shell programs that print a file into the context.
READ_PROGRAMS = frozenset({"cat", "nl", "head", "tail", "sed", "less", "more", "bat", "batcat"})
#: Shell programs that search code (only at the start of a pipeline: ``ps | grep x`` filters).
SEARCH_PROGRAMS = frozenset({"rg", "grep", "egrep", "fgrep", "find", "ag", "ack", "fd"})
#: Words before the real program of a command.
COMMAND_PREFIXES = frozenset({"sudo", "time", "env", "nohup", "command", "exec", "xargs"})
#: Options of reader programs that take the next token as their value.
VALUE_OPTIONS = {"head": frozenset({"-n", "-c", "--lines", "--bytes"}),
                 "tail": frozenset({"-n", "-c", "--lines", "--bytes"}),
                 "sed": frozenset({"-e", "-f", "--expression", "--file"})}

_PATH_KEYS = ("file_path", "path", "absolute_path", "notebook_path")
_PATCH_FILE = re.compile(r"^\*\*\* (?:Update|Add|Delete) File: (.+)$", re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# The calls of a record, with their results and times


@dataclass(frozen=True)
class _Call:
    order: int  # position among all calls of the record
    step: Step
    call: ToolCall
    obs: Observation | None
    at: float | None  # seconds since the epoch (see the module invariants)

    @property
    def ok(self) -> bool:
        """A result came back and it is not an error."""
        return self.obs is not None and self.obs.error is None


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A naive time is taken as UTC: every agent we read writes UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _step_times(record: TraceRecord) -> tuple[dict[int, float | None], int]:
    """Each step's time (carried forward), and how many steps had no readable time."""
    times: dict[int, float | None] = {}
    last: float | None = None
    missing = 0
    for step in record.steps:
        own = _parse_time(step.timestamp)
        if own is None:
            missing += 1
        else:
            last = own
        times[step.step_index] = last
    return times, missing


def _calls(record: TraceRecord) -> list[_Call]:
    times, _ = _step_times(record)
    out: list[_Call] = []
    for step in record.steps:
        results = {o.source_call_id: o for o in step.observations}
        for call in step.tool_calls:
            out.append(_Call(order=len(out), step=step, call=call,
                             obs=results.get(call.tool_call_id), at=times[step.step_index]))
    return out


def _output_chars(obs: Observation) -> int:
    measured = len(obs.content or "")
    # output_chars is the capture's full length; the record may carry only a cut copy.
    recorded = getattr(obs, "output_chars", None)
    return max(measured, recorded) if isinstance(recorded, int) else measured


def _quote(text: str | None, limit: int = QUOTE_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8",
                                                                      "backslashreplace")
                          ).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Shell commands


def shell_command(call: ToolCall) -> str | None:
    """The command line of a shell tool call, or None for any other call."""
    if call.tool_name not in SHELL_TOOLS:
        return None
    for key in ("command", "cmd"):
        value = call.input.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            # Codex ``shell`` gives argv, usually ["bash", "-lc", "<script>"].
            if len(value) == 3 and posixpath.basename(value[0]) in ("bash", "sh", "zsh") \
                    and value[1] in ("-c", "-lc"):
                return value[2]
            return shlex.join(value)
    return None


@dataclass(frozen=True)
class _Segment:
    words: tuple[str, ...]  # one simple command, redirections removed
    piped: bool  # reads the previous command's output
    cwd: str | None  # working folder after the ``cd`` commands before it


_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", "|&", ";;"})
_REDIRECT = re.compile(r"^[<>&|]*[<>][<>&|]*$")


def _tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote or a heredoc body: fall back to plain words
        return command.split()


def _segments(command: str, cwd: str | None) -> list[_Segment]:
    """The simple commands of a command line, in order, without their redirections."""
    out: list[_Segment] = []
    words: list[str] = []
    piped = skip_next = False
    for token in [*_tokens(command.replace("\n", " ; ")), ";"]:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS:
            if words:
                if words[0] == "cd" and len(words) > 1:
                    cwd = _join(cwd, words[1])
                out.append(_Segment(tuple(words), piped, cwd))
            words = []
            piped = token in ("|", "|&")
            continue
        if _REDIRECT.match(token):
            # "2>&1" arrives as "2", ">&", "1": drop the descriptor and the target.
            if words and words[-1].isdigit():
                words.pop()
            skip_next = True
            continue
        words.append(token)
    return out


def _program(words: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The program name (basename) and its arguments, past env assignments and prefixes."""
    i = 0
    while i < len(words) and (re.match(r"^[A-Za-z_]\w*=", words[i])
                              or words[i] in COMMAND_PREFIXES):
        i += 1
    if i >= len(words):
        return "", ()
    return posixpath.basename(words[i]), words[i + 1:]


def _join(cwd: str | None, path: str) -> str:
    if path.startswith("~") or posixpath.isabs(path) or not cwd:
        return posixpath.normpath(path)
    return posixpath.normpath(posixpath.join(cwd, path))


def _read_paths(program: str, args: tuple[str, ...]) -> list[str]:
    """Files a reader program prints (none for ``sed`` without ``-n`` or with ``-i``)."""
    if program == "sed" and ("-i" in args or not any(
            a == "-n" or (a.startswith("-") and "n" in a[1:] and not a.startswith("--"))
            for a in args)):
        return []
    files: list[str] = []
    script_seen = program != "sed" or any(a in ("-e", "-f") for a in args)
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in VALUE_OPTIONS.get(program, ()):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        if not script_seen:
            script_seen = True  # sed's first plain argument is its script
            continue
        files.append(arg)
    return [f for f in files if not re.search(r"[*?\[\]$`{}]", f) and f != "/dev/null"]


# ---------------------------------------------------------------------------------------------
# What a call reads, searches, edits


@dataclass(frozen=True)
class _Read:
    path: str
    range: str | None  # "offset+limit" for native readers, the sed/head/tail words for shell


def _cwd(record: TraceRecord, call: ToolCall) -> str | None:
    workdir = call.input.get("workdir") or call.input.get("cwd")
    if isinstance(workdir, str) and workdir:
        return workdir
    cwd = record.metadata.get("cwd")
    return cwd if isinstance(cwd, str) and cwd else None


def _input_path(call: ToolCall) -> str | None:
    for key in _PATH_KEYS:
        value = call.input.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _reads(record: TraceRecord, call: ToolCall) -> list[_Read]:
    cwd = _cwd(record, call)
    if call.tool_name in READ_TOOLS:
        path = _input_path(call)
        if path is None:
            return []
        span = [str(call.input[k]) for k in ("offset", "limit") if call.input.get(k) is not None]
        return [_Read(_join(cwd, path), "+".join(span) or None)]
    command = shell_command(call)
    if command is None:
        return []
    reads = []
    for seg in _segments(command, cwd):
        program, args = _program(seg.words)
        if program in READ_PROGRAMS:
            opts = " ".join(a for a in args if a.startswith("-") or re.match(r"^\d", a))
            reads += [_Read(_join(seg.cwd, p), f"{program} {opts}".strip())
                      for p in _read_paths(program, args)]
    return reads


def _search(call: ToolCall) -> str | None:
    """The query of a search call (tool name plus pattern), or None if it is not one."""
    if call.tool_name in SEARCH_TOOLS:
        pattern = call.input.get("pattern") or call.input.get("query") or ""
        where = _input_path(call) or ""
        return f"{call.tool_name} {pattern} {where}".strip()
    command = shell_command(call)
    if command is None:
        return None
    for seg in _segments(command, None):
        program, args = _program(seg.words)
        if seg.piped:
            continue  # ``… | grep x`` filters output, it does not search code
        if program in SEARCH_PROGRAMS or (program == "git" and args[:1] == ("grep",)):
            return " ".join(seg.words)
    return None


def _edited_paths(record: TraceRecord, call: ToolCall) -> list[str]:
    cwd = _cwd(record, call)
    if call.tool_name in EDIT_TOOLS:
        path = _input_path(call)
        return [_join(cwd, path)] if path else []
    patch = call.input.get("patch") or call.input.get("input")
    if call.tool_name == "apply_patch" and isinstance(patch, str):
        return [_join(cwd, p.strip()) for p in _PATCH_FILE.findall(patch)]
    return []


def _edits(record: TraceRecord, calls: list[_Call]) -> dict[str, list[int]]:
    """path -> the steps that changed it (native edits, apply_patch, the record's patches)."""
    cwd = record.metadata.get("cwd") if isinstance(record.metadata.get("cwd"), str) else None
    found: dict[str, set[int]] = {}
    for c in calls:
        if c.ok:
            for path in _edited_paths(record, c.call):
                found.setdefault(path, set()).add(c.step.step_index)
    for patch in record.patches:
        if patch.step_index is not None:
            found.setdefault(_join(cwd, patch.file_path), set()).add(patch.step_index)
    return {p: sorted(s) for p, s in found.items()}


# ---------------------------------------------------------------------------------------------
# Time windows


def _dense_stretches(items: list[tuple[float, int]], min_count: int,
                     window: float) -> list[list[int]]:
    """Groups of items (time, index) that lie in windows holding ``min_count`` or more.

    An item is *dense* when some window of ``window`` seconds contains it and at least
    ``min_count - 1`` other items. Consecutive dense items (in time order) form one stretch;
    an item that is not dense ends it. Returns the indexes of each stretch, in time order.
    """
    ordered = sorted(items)
    dense = [False] * len(ordered)
    end = 0
    for start in range(len(ordered)):
        end = max(end, start)
        while end + 1 < len(ordered) and ordered[end + 1][0] - ordered[start][0] <= window:
            end += 1
        if end - start + 1 >= min_count:
            for k in range(start, end + 1):
                dense[k] = True
    stretches: list[list[int]] = []
    current: list[int] = []
    for flag, (_, index) in zip(dense, ordered, strict=True):
        if flag:
            current.append(index)
        elif current:
            stretches.append(current)
            current = []
    if current:
        stretches.append(current)
    return stretches


# ---------------------------------------------------------------------------------------------
# Context waste


def context_waste(record: TraceRecord) -> dict[str, Any]:
    """The ``opentraces.context_waste.v2`` payload of one record (see the module docstring)."""
    calls = _calls(record)
    _, missing_times = _step_times(record)
    findings = [*_large_outputs(record, calls), *_repeated_reads(record, calls),
                *_repeated_searches(record, calls)]
    findings.sort(key=lambda f: (f["step_index"], f["pattern"], f["finding_id"]))
    counts = {p: sum(1 for f in findings if f["pattern"] == p)
              for p in ("large_output", "repeated_file_read", "repeated_search")}
    return {
        "trace_id": record.trace_id,
        "fidelity": FIDELITY,
        "thresholds": {
            "large_output_chars": LARGE_OUTPUT_CHARS,
            "large_output_high_chars": LARGE_OUTPUT_HIGH_CHARS,
            "repeated_file_read_min": FILE_READ_MIN,
            "repeated_file_read_window_s": FILE_READ_WINDOW_S,
            "repeated_search_min": SEARCH_MIN,
            "repeated_search_window_s": SEARCH_WINDOW_S,
        },
        "findings": findings,
        "summary": {
            "context_waste_count": len(findings),
            "large_output_count": counts["large_output"],
            "repeated_file_read_count": counts["repeated_file_read"],
            "repeated_search_count": counts["repeated_search"],
        },
        "limitations": _waste_limitations(record, calls, missing_times),
    }


def _finding(record: TraceRecord, pattern: str, key: str, step: Step, *, severity: str,
             confidence: str, reason: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"finding_id": f"cw_{_digest(record.trace_id, pattern, key, step.step_index)}",
            "pattern": pattern, "severity": severity, "confidence": confidence,
            "reason": reason, "step_index": step.step_index, "node_id": step.context_node_id,
            "evidence": evidence}


def _target(call: ToolCall) -> str | None:
    command = shell_command(call)
    return _quote(command) if command is not None else _input_path(call)


def _large_outputs(record: TraceRecord, calls: list[_Call]) -> Iterator[dict[str, Any]]:
    for c in calls:
        if c.obs is None or not c.obs.content:
            continue
        chars = _output_chars(c.obs)
        if chars < LARGE_OUTPUT_CHARS:
            continue
        yield _finding(
            record, "large_output", c.call.tool_call_id, c.step,
            severity="high" if chars >= LARGE_OUTPUT_HIGH_CHARS else "medium",
            confidence="high",
            reason=f"{c.call.tool_name} returned {chars:,} characters "
                   f"(about {chars // 4:,} tokens) into the context",
            evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                      "output_chars": chars, "approx_tokens": chars // 4,
                      "target": _target(c.call)})


def _directories(record: TraceRecord, calls: list[_Call]) -> set[str]:
    """Paths that other paths of the trace live under: folders, whatever their name says."""
    seen: set[str] = set()
    for c in calls:
        seen.update(r.path for r in _reads(record, c.call))
        seen.update(_edited_paths(record, c.call))
    parents = set()
    for path in seen:
        head = posixpath.dirname(path)
        while head and head not in parents and head != posixpath.dirname(head):
            parents.add(head)
            head = posixpath.dirname(head)
    return parents


def _repeated_reads(record: TraceRecord, calls: list[_Call]) -> Iterator[dict[str, Any]]:
    folders = _directories(record, calls)
    by_path: dict[str, list[tuple[_Call, _Read]]] = {}
    for c in calls:
        if not c.ok:  # a failed read (missing file, a folder) put no file in the context
            continue
        for read in _reads(record, c.call):
            if read.path not in folders and read.path not in (".", "..", "/"):
                by_path.setdefault(read.path, []).append((c, read))
    edits = _edits(record, calls)
    for path in sorted(by_path):
        reads = by_path[path]
        timed = [(c.at, i) for i, (c, _) in enumerate(reads) if c.at is not None]
        for stretch in _dense_stretches(timed, FILE_READ_MIN, FILE_READ_WINDOW_S):
            chosen = [reads[i] for i in stretch]
            steps = [c.step.step_index for c, _ in chosen]
            edited = [s for s in edits.get(path, []) if steps[0] <= s < steps[-1]]
            trigger = chosen[FILE_READ_MIN - 1][0]
            yield _finding(
                record, "repeated_file_read", path, trigger.step,
                severity="high" if len(chosen) >= 2 * FILE_READ_MIN else "medium",
                confidence="medium" if edited else "high",
                reason=f"{path} was read {len(chosen)} times in "
                       f"{_span(chosen[0][0], chosen[-1][0])} ({FILE_READ_MIN}+ within "
                       f"{FILE_READ_WINDOW_S // 60} min)"
                       + (f"; it was edited in between (steps {_ranges(edited)})"
                          if edited else ", with no edit in between"),
                evidence={"path": path, "read_count": len(chosen), "step_indexes": steps,
                          "tool_names": sorted({c.call.tool_name for c, _ in chosen}),
                          "ranges": [r.range for _, r in chosen],
                          "edited_at_steps": edited,
                          "span_s": _seconds(chosen[0][0], chosen[-1][0]),
                          "total_reads_in_trace": len(reads)})


def _repeated_searches(record: TraceRecord, calls: list[_Call]) -> Iterator[dict[str, Any]]:
    searches = [(c, q) for c in calls if (q := _search(c.call)) is not None]
    timed = [(c.at, i) for i, (c, _) in enumerate(searches) if c.at is not None]
    for stretch in _dense_stretches(timed, SEARCH_MIN, SEARCH_WINDOW_S):
        chosen = [searches[i] for i in stretch]
        queries = [q for _, q in chosen]
        repeated = sorted({q for q in queries if queries.count(q) > 1})
        trigger = chosen[SEARCH_MIN - 1][0]
        yield _finding(
            record, "repeated_search", chosen[0][0].call.tool_call_id, trigger.step,
            severity="high" if len(chosen) >= 2 * SEARCH_MIN else "medium",
            confidence="high" if repeated else "medium",
            reason=f"{len(chosen)} searches in {_span(chosen[0][0], chosen[-1][0])} "
                   f"({SEARCH_MIN}+ within {SEARCH_WINDOW_S // 60} min)"
                   + (f", {len(repeated)} of them repeated verbatim" if repeated else ""),
            evidence={"search_count": len(chosen),
                      "step_indexes": [c.step.step_index for c, _ in chosen],
                      "tool_names": sorted({c.call.tool_name for c, _ in chosen}),
                      "distinct_queries": len(set(queries)),
                      "repeated_queries": [_quote(q) for q in repeated],
                      "span_s": _seconds(chosen[0][0], chosen[-1][0])})


def _seconds(a: _Call, b: _Call) -> float | None:
    if a.at is None or b.at is None:
        return None
    return round(b.at - a.at, 3)


def _span(a: _Call, b: _Call) -> str:
    seconds = _seconds(a, b) or 0.0
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _ranges(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps)


def _waste_limitations(record: TraceRecord, calls: list[_Call], missing_times: int) -> list[str]:
    notes = ["fidelity is record: outputs are measured as the TraceRecord holds them "
             "(restored from blobs when available); OTLP wire capture is not available"]
    if missing_times:
        notes.append(f"{missing_times} of {len(record.steps)} steps have no readable timestamp; "
                     "they take the time of the step before them")
    untimed = sum(1 for c in calls if c.at is None)
    if untimed:
        notes.append(f"{untimed} tool calls come before any timestamp and are left out of the "
                     "time-window detectors")
    if any(c.obs is not None and c.obs.content and getattr(c.obs, "output_chars", None) is None
           for c in calls):
        notes.append("output lengths are measured on the recorded content; a copy cut at "
                     "capture whose blob is not here counts only its kept prefix")
    notes.append("whether a path is a file or a folder is judged from the trace alone "
                 "(a path that others live under is a folder)")
    return notes


# ---------------------------------------------------------------------------------------------
# Run signals


#: Lines that give a command's exit status (Claude, Pi, Codex wording).
_EXIT_LINE = re.compile(
    r"^(?:Exit code|Command exited with code|Process exited with code) (-?\d+)\s*$",
    re.MULTILINE)
#: Failure text in a shell output that was not marked as an error (e.g. piped through tail).
_FAILURE_TEXT = [
    (re.compile(r"^Traceback \(most recent call last\):$", re.MULTILINE), "medium"),
    (re.compile(r"^.{0,80}\bcommand not found\b.*$", re.MULTILINE), "medium"),
    (re.compile(r"^(?:=+ )?.{0,40}\b[1-9]\d* (?:failed|failing)\b.*$", re.MULTILINE), "medium"),
    (re.compile(r"^(?:npm ERR!|error(?:\[\w+\])?:|fatal:|FAILED\b).*$", re.MULTILINE), "low"),
]
#: A tool result that is the user refusing the call, not the tool failing.
_REJECTION = re.compile(r"^The user doesn't want to (?:proceed with this tool use|take this "
                        r"action)")
_REJECTION_SAID = re.compile(r"(?:the user said|the following reason for the rejection):\s*(.+)",
                             re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class _Failure:
    source: str  # "tool_error" (structured) or "output_text"
    matched: str
    exit_code: int | None
    confidence: str


def _failure(c: _Call) -> _Failure | None:
    if c.obs is None or c.obs.error == "no_result":
        return None
    content = c.obs.content or ""
    if _REJECTION.match(content):
        return None
    exit_match = _EXIT_LINE.search(content)
    exit_code = int(exit_match.group(1)) if exit_match else None
    if exit_code == 1 and _no_match(c.call, content):
        return None  # grep, rg, ag and ack exit 1 when nothing matched: an answer, not a failure
    if c.obs.error is not None:
        line = exit_match.group(0) if exit_match else next(
            (ln for ln in content.splitlines() if ln.strip()), c.obs.error)
        return _Failure("tool_error", _quote(line), exit_code, "high")
    if shell_command(c.call) is None:
        return None  # free text of other tools (file contents, web pages) is not a status
    if exit_code:
        return _Failure("exit_code", _quote(exit_match.group(0)), exit_code, "high")
    for pattern, confidence in _FAILURE_TEXT:
        m = pattern.search(content)
        if m:
            return _Failure("output_text", _quote(m.group(0)), None, confidence)
    return None


#: Lines the agents wrap around a command's own output (exit status, Codex chunk headers).
_WRAPPER_LINE = re.compile(r"^(?:\(no output\)|Chunk ID: .*|Wall time: .*|Original token count: .*|"
                           r"Output:|(?:Exit code|Command exited with code|Process exited with "
                           r"code) -?\d+)\s*$")
_MATCHERS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "ack"})


def _no_match(call: ToolCall, content: str) -> bool:
    """A search command that printed nothing but its exit status."""
    command = shell_command(call)
    if command is None or any(ln.strip() and not _WRAPPER_LINE.match(ln.strip())
                              for ln in content.splitlines()):
        return False
    programs = [_program(seg.words) for seg in _segments(command, None)]
    main = [(p, args) for p, args in programs if p not in ("cd", "")]
    return bool(main) and (main[-1][0] in _MATCHERS
                           or (main[-1][0] == "git" and main[-1][1][:1] == ("grep",)))


def _action_key(record: TraceRecord, call: ToolCall) -> str:
    """What makes two calls "the same or similar": for commands, the program and up to two
    sub-command words (``npm run check``, ``git commit``, ``python -m pytest``); for file
    tools, the tool and the path."""
    command = shell_command(call)
    if command is None:
        path = _input_path(call)
        return f"{call.tool_name}:{_join(_cwd(record, call), path) if path else ''}"
    for seg in _segments(command, None):
        program, args = _program(seg.words)
        if program in ("cd", "export", "source", ".", "set", "echo", "") or seg.piped:
            continue
        words = [program]
        i = 0
        while i < len(args) and len(words) < 3:
            arg = args[i]
            if arg == "-m" and i + 1 < len(args):
                words += ["-m", args[i + 1]]
                i += 2
                continue
            if arg.startswith("-") or not re.match(r"^[A-Za-z][\w:.-]*$", arg) \
                    or "/" in arg or re.search(r"\.\w{1,5}$", arg):
                break
            words.append(arg)
            i += 1
        return "shell:" + " ".join(words)
    return "shell:" + _quote(command, 60)


def _loop_key(command: str) -> str:
    flat = " ".join(command.split())
    return re.sub(r"^(?:cd \S+ &&\s*)+", "", flat)


def run_intel(record: TraceRecord) -> dict[str, Any]:
    """The ``opentraces.run_intel.v1`` payload of one record (rules in ``docs/intel.md``)."""
    calls = [c for c in _calls(record) if c.step.role == "agent"]
    signals = [*_failures_and_recoveries(record, calls), *_loops(record, calls),
               *_resteers(record)]
    kind_order = {"resteer": 0, "failure": 1, "recovery": 2, "loop": 3}
    signals.sort(key=lambda s: (s["step_index"], kind_order[s["kind"]],
                                s["evidence"].get("tool_call_id") or "", s["matched_text"]))
    return {
        "trace_id": record.trace_id,
        "fidelity": FIDELITY,
        "signals": signals,
        "counts": {k: sum(1 for s in signals if s["kind"] == k)
                   for k in ("resteer", "recovery", "loop", "failure")},
    }


def _signal(kind: str, step: Step, *, severity: str, confidence: str, reason: str,
            matched_text: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "confidence": confidence, "reason": reason,
            "step_index": step.step_index, "node_id": step.context_node_id,
            "matched_text": matched_text, "evidence": evidence}


def _failures_and_recoveries(record: TraceRecord,
                             calls: list[_Call]) -> Iterator[dict[str, Any]]:
    open_failures: dict[str, list[_Call]] = {}
    for c in calls:
        if c.obs is None or c.obs.error == "no_result" or _REJECTION.match(c.obs.content or ""):
            continue
        key = _action_key(record, c.call)
        failed = _failure(c)
        if failed is not None:
            open_failures.setdefault(key, []).append(c)
            yield _signal(
                "failure", c.step, severity="medium", confidence=failed.confidence,
                reason=f"{c.call.tool_name} failed"
                       + (f" with exit code {failed.exit_code}" if failed.exit_code else "")
                       + (" (reported by the tool)" if failed.source == "tool_error"
                          else " (read from its output)"),
                matched_text=failed.matched,
                evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                          "source": failed.source, "exit_code": failed.exit_code,
                          "action": key, "target": _target(c.call)})
        elif key in open_failures:
            earlier = open_failures.pop(key)
            yield _signal(
                "recovery", c.step, severity="low", confidence="high" if any(
                    _action_key(record, e.call) == key and shell_command(e.call)
                    == shell_command(c.call) for e in earlier) else "medium",
                reason=f"{key.partition(':')[2] or c.call.tool_name} succeeded after "
                       f"{len(earlier)} failure(s) since step {earlier[0].step.step_index}",
                matched_text=_quote(_target(c.call) or c.call.tool_name),
                evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                          "action": key,
                          "failed_step_indexes": [e.step.step_index for e in earlier],
                          "failures_cleared": len(earlier)})


def _loops(record: TraceRecord, calls: list[_Call]) -> Iterator[dict[str, Any]]:
    runs: dict[str, list[_Call]] = {}
    for c in calls:
        command = shell_command(c.call)
        if command is not None and command.strip():
            runs.setdefault(_loop_key(command), []).append(c)
    edit_steps = sorted({s for steps in _edits(record, calls).values() for s in steps})
    for command in sorted(runs):
        repeats = runs[command]
        if len(repeats) < LOOP_MIN:
            continue
        steps = [c.step.step_index for c in repeats]
        # A repeat with no file change since the previous run can only see the same world.
        unchanged = sum(1 for a, b in itertools.pairwise(steps)
                        if not any(a <= s < b for s in edit_steps))
        failed = sum(1 for c in repeats if _failure(c) is not None)
        yield _signal(
            "loop", repeats[LOOP_MIN - 1].step,
            severity="high" if len(repeats) >= 2 * LOOP_MIN else "medium"
            if len(repeats) > LOOP_MIN else "low",
            confidence="high" if unchanged >= LOOP_MIN - 1 else "medium" if unchanged else "low",
            reason=f"the same command ran {len(repeats)} times"
                   + (f", {unchanged} time(s) with no file change since the previous run"
                      if unchanged else ""),
            matched_text=_quote(command),
            evidence={"repeat_count": len(repeats), "step_indexes": steps,
                      "unchanged_repeats": unchanged, "failed_runs": failed,
                      "tool_names": sorted({c.call.tool_name for c in repeats})})


# -- resteers ---------------------------------------------------------------------------------

#: Words that, alone or together (at most APPROVAL_MAX_WORDS), only approve or continue.
APPROVAL_WORDS = frozenset({
    "ok", "okay", "okey", "k", "kk", "yes", "yep", "yeah", "yup", "ya", "y", "sure", "go",
    "ahead", "on", "continue", "proceed", "lgtm", "sounds", "looks", "good", "great", "perfect",
    "nice", "cool", "fine", "thanks", "thank", "you", "thx", "ty", "please", "pls", "do", "it",
    "alright", "right", "correct", "approved", "approve", "ship", "done", "agreed", "exactly",
    "excellent", "awesome", "yes,", "now", "then", "and", "to", "me", "keep", "going",
})
APPROVAL_MAX_WORDS = 5

#: Correction leads, matched at the start of the message (after an optional "please", "oh",
#: "hey", "ugh"); each is a clause lead, never a word found in the middle of a sentence.
_LEADS: list[tuple[str, re.Pattern[str], str]] = [
    ("no", re.compile(r"no(?![-'’])\b(?!\s+(?:worries|problem|prob|rush|doubt|idea|"
                      r"need to (?:apologi[sz]e|worry)|pressure)\b)"), "high"),
    ("nope", re.compile(r"nope\b"), "high"),
    ("stop", re.compile(r"stop\b(?!\s+the\b)"), "high"),
    ("don't", re.compile(r"(?:don'?t|do not|dont)\b(?!\s+(?:we|you|i|they|it)\b)"), "high"),
    ("never", re.compile(r"never\b(?!\s*mind)"), "medium"),
    ("never mind", re.compile(r"(?:never\s*mind|nvm)\b"), "high"),
    ("actually", re.compile(r"actually\b"), "medium"),
    ("wait", re.compile(r"wait\b(?!\s+(?:for|until|till)\b)"), "medium"),
    ("hold on", re.compile(r"(?:hold|hang) on\b"), "high"),
    ("that's wrong", re.compile(
        r"(?:that|this|it)(?:'?s| is|s)(?: not| n'?t)?\s+(?:\w+\s+){0,2}?(?:wrong|incorrect|"
        r"broken|horrible|terrible|bad|confusing|nonsense|useless|not (?:it|right|what|how|"
        r"correct))\b|(?:that|this) (?:isn'?t|doesn'?t|won'?t|is not|does not)\b"), "high"),
    ("wrong", re.compile(r"wrong\b"), "high"),
    ("not what", re.compile(r"not (?:what|like (?:that|this)|quite|that|this one)\b"), "high"),
    ("instead", re.compile(r"(?:instead|rather than)\b"), "high"),
    ("undo", re.compile(r"(?:undo|revert|roll ?back)\b"), "high"),
    ("why did you", re.compile(r"why (?:did|are|would|do) you (?!think\b)"), "medium"),
    ("you forgot", re.compile(r"you (?:forgot|missed|broke|didn'?t|did not|shouldn'?t|"
                              r"should not|were supposed)\b"), "high"),
    ("i said", re.compile(r"i (?:said|meant|told you|asked (?:you )?(?:to|for))\b"), "high"),
    ("scratch that", re.compile(r"scratch that\b"), "high"),
]
_LEAD_PREFIX = re.compile(r"^(?:(?:please|pls|hey|ugh|uh|um|hmm+|ok(?:ay)?|so)[\s,.!]+)*",
                          re.IGNORECASE)
_INTERRUPT = re.compile(r"^\[Request interrupted by user[^\]]*\]")
_CODEX_ABORT = "<turn_aborted>"
#: User-role steps that are not something the user typed to steer: harness echoes and markers.
_NOT_TYPED = re.compile(r"^\s*(?:<[a-zA-Z][\w-]*[ >]|!|Caveat:|\[Request interrupted|"
                        r"This session is being continued|Warmup\s*$)")


def is_approval(text: str) -> bool:
    """True when ``text`` only approves or says to go on ("ok", "yes please", "lgtm!")."""
    words = re.findall(r"[a-z']+", text.lower().replace("’", "'"))
    rest = re.sub(r"[\w\s'’.,!?:;\-]", "", text)
    return bool(words) and len(words) <= APPROVAL_MAX_WORDS and not rest.strip(
        "👍🙏✅🚀😀🙂") and all(w in APPROVAL_WORDS for w in words)


def resteer_lead(text: str) -> tuple[str, str, str] | None:
    """The correction lead a user message opens with: (rule, matched text, confidence).

    Only the start of the message counts ("no, …", "stop …", "don't …", "actually, …",
    "wait, …", "that's wrong", "instead of X do Y", "revert …", "I said …"); the same words in
    the middle of a sentence are not a lead. An approval is never one.
    """
    if is_approval(text):
        return None
    body = text.strip()
    start = _LEAD_PREFIX.match(body)
    body = body[start.end():] if start else body
    lowered = body.lower().replace("’", "'")
    for rule, pattern, confidence in _LEADS:
        m = pattern.match(lowered)
        if m:
            return rule, body[: max(m.end(), 1)].strip(), confidence
    return None


def _resteers(record: TraceRecord) -> Iterator[dict[str, Any]]:
    agent_worked = False  # the agent did something since the user's last message
    interrupted = False  # the last thing the user did was stop the agent
    for step in record.steps:
        text = step.content or ""
        if step.role == "agent":
            agent_worked = True
            interrupted = False
            yield from _rejections(step)
            continue
        if step.role == "system":
            if _CODEX_ABORT in text:
                interrupted = True
            continue
        if step.role != "user":
            continue
        if _INTERRUPT.match(text.strip()):
            interrupted = True
            continue
        if not text.strip() or _NOT_TYPED.match(text):
            continue
        follows_work, after_interrupt = agent_worked, interrupted
        agent_worked = interrupted = False
        if not follows_work or is_approval(text):
            continue
        lead = resteer_lead(text)
        if lead is None and not after_interrupt:
            continue
        if lead is not None:
            rule, matched, confidence = lead
            trigger = "interrupt+correction" if after_interrupt else "correction"
        else:
            rule, matched, confidence, trigger = "interrupt", _quote(text), "high", "interrupt"
        yield _signal(
            "resteer", step, severity="medium", confidence=confidence,
            reason=("the user stopped the agent and redirected it" if after_interrupt
                    else f"the user corrected the agent (message opens with {rule!r})"),
            matched_text=_quote(matched),
            evidence={"trigger": trigger, "rule": rule, "text": _quote(text)})


def _rejections(step: Step) -> Iterator[dict[str, Any]]:
    """A refused tool call that carries the user's instructions is a resteer too."""
    for obs in step.observations:
        content = obs.content or ""
        said = _REJECTION_SAID.search(content) if _REJECTION.match(content) else None
        if said is None or is_approval(said.group(1)):
            continue
        yield _signal(
            "resteer", step, severity="medium", confidence="high",
            reason="the user refused a tool call and said how to proceed",
            matched_text=_quote(said.group(1)),
            evidence={"trigger": "tool_rejection", "rule": "tool_rejection",
                      "tool_call_id": obs.source_call_id, "text": _quote(said.group(1))})


# ---------------------------------------------------------------------------------------------
# Compare


def compare(a: TraceRecord, b: TraceRecord, *, no_quality: bool = False,
            burst_gap: int | None = None) -> dict[str, Any]:
    """The ``opentraces.trace_compare.v1`` payload: ``b`` measured against ``a``.

    Every ``{a, b, delta}`` triple has ``delta = b - a`` (None when either side is unknown).
    ``burst_gap`` pins both sides to one gap (in steps) for burst counting; by default
    :data:`opentraces.trace_map.BURST_GAP`.
    """
    intel_a, intel_b = run_intel(a), run_intel(b)
    waste_a, waste_b = context_waste(a), context_waste(b)
    delta: dict[str, Any] = {
        "metrics": {name: _triple(getattr(a.metrics, name), getattr(b.metrics, name))
                    for name in Metrics.__struct_fields__},
        "bursts": _burst_delta(a, b, burst_gap),
        "signals": {k: _triple(intel_a["counts"][k], intel_b["counts"][k])
                    for k in intel_a["counts"]},
        "waste": {k: _triple(waste_a["summary"][k], waste_b["summary"][k])
                  for k in waste_a["summary"]},
        "errors": {k: _triple(va, vb) for (k, va), vb in zip(
            _error_counts(a).items(), _error_counts(b).values(), strict=True)},
        "security": {k: _triple(getattr(a.security, k), getattr(b.security, k))
                     for k in ("scanned", "flags_reviewed", "redactions_applied")},
    }
    if not no_quality:
        qa, qb = quality(a, intel_a, waste_a), quality(b, intel_b, waste_b)
        delta["quality"] = {k: _triple(qa[k], qb[k]) for k in qa}
        delta["quality_version"] = QUALITY_VERSION
    return {"trace_a": a.trace_id, "trace_b": b.trace_id,
            "fidelity": {"a": FIDELITY, "b": FIDELITY}, "delta": delta}


def _number(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _triple(a: Any, b: Any) -> dict[str, Any]:
    a, b = _number(a), _number(b)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return {"a": a, "b": b, "delta": _number(b - a) if numeric else None}


def _error_counts(record: TraceRecord) -> dict[str, int]:
    observations = [o for s in record.steps for o in s.observations]
    return {"tool_calls": sum(len(s.tool_calls) for s in record.steps),
            "tool_errors": sum(1 for o in observations if o.error == "tool_error"),
            "no_result": sum(1 for o in observations if o.error == "no_result")}


def _burst_delta(a: TraceRecord, b: TraceRecord, gap: int | None) -> dict[str, Any]:
    # Imported here: the map module is larger and only compare needs it.
    from opentraces.trace_map import BURST_GAP, bursts

    gap = BURST_GAP if gap is None else gap
    counts = [len(bursts(r, gap=gap, commit_lookup=False)) for r in (a, b)]
    return {"gap": gap, **_triple(*counts)}


#: Version of the persona score formulas below; bump it when one changes.
QUALITY_VERSION = 1


def quality(record: TraceRecord, intel: dict[str, Any] | None = None,
            waste: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deterministic persona scores (0-100, higher is better) for one record.

    - ``reliability`` (the reviewer): ``100 * (1 - unrecovered / tool_calls)``, where
      ``unrecovered = max(0, failures - recoveries)``; None without tool calls.
    - ``autonomy`` (the user): ``100 * (1 - resteers / follow_ups)``, where ``follow_ups`` are
      the user's typed messages after the first; 100 when there are none.
    - ``efficiency`` (the budget holder): ``100 - 10 * (waste findings + loop signals)``,
      floored at 0.
    - ``overall``: the mean of the scores that are not None.
    All are rounded to one decimal.
    """
    intel = intel if intel is not None else run_intel(record)
    waste = waste if waste is not None else context_waste(record)
    counts = intel["counts"]
    calls = sum(len(s.tool_calls) for s in record.steps if s.role == "agent")
    unrecovered = max(0, counts["failure"] - counts["recovery"])
    typed = [s for s in record.steps if s.role == "user" and (s.content or "").strip()
             and not _NOT_TYPED.match(s.content or "") and not _INTERRUPT.match(s.content or "")]
    follow_ups = max(0, len(typed) - 1)
    scores: dict[str, float | None] = {
        "reliability": round(100 * (1 - unrecovered / calls), 1) if calls else None,
        "autonomy": round(100 * (1 - min(counts["resteer"], follow_ups) / follow_ups), 1)
        if follow_ups else 100.0,
        "efficiency": float(max(0, 100 - 10 * (waste["summary"]["context_waste_count"]
                                               + counts["loop"]))),
    }
    known = [v for v in scores.values() if v is not None]
    scores["overall"] = round(sum(known) / len(known), 1) if known else None
    return scores


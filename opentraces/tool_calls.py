"""The tool calls of one TraceRecord as the trace-intelligence detectors read them.

Shared by :mod:`opentraces.context_waste` and :mod:`opentraces.run_signals` (and through them
:mod:`opentraces.trace_compare`): each call with its result and time (:func:`record_calls`),
shell command lines split into simple commands (:func:`shell_command`, :func:`segments`), and
what a call reads, searches and edits, in the tool vocabulary of the supported agents.

Invariants every payload built on these keeps:
- A payload is a function of the record alone: no clock, no environment, no randomness, no
  I/O. Lists are sorted by a total key, ids are hashes of what they name, and
  ``json.dumps(payload, sort_keys=True)`` is byte-identical across calls and processes (so
  ``trace get --waste`` and ``trace map --waste`` print the same bytes).
- Nothing is persisted: the signals are recomputed each time from the record.
- Timestamps come from ``Step.timestamp``. A step without one (or with an unreadable one)
  takes the time of the nearest earlier step that has one; steps before any timestamp have no
  time and never count towards a time window (the payload says so in ``limitations``).
- ``fidelity`` is ``"record"``: the signals are read from the TraceRecord. ``"otel"`` is
  reserved for traces captured by an OTLP receiver, which opentraces does not have yet.

The rules, thresholds and their limits are described in ``docs/intel.md``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

from opentraces.record import Observation, Step, ToolCall, TraceRecord

#: Quoted in evidence and matched_text; long enough to recognise, short enough to scan.
QUOTE_CHARS = 160

#: What the signals are read from (see the module docstring).
FIDELITY = "record"

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
class Call:
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


def step_times(record: TraceRecord) -> tuple[dict[int, float | None], int]:
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


def record_calls(record: TraceRecord) -> list[Call]:
    times, _ = step_times(record)
    out: list[Call] = []
    for step in record.steps:
        results = {o.source_call_id: o for o in step.observations}
        for call in step.tool_calls:
            out.append(Call(order=len(out), step=step, call=call,
                            obs=results.get(call.tool_call_id), at=times[step.step_index]))
    return out


def quote(text: str | None, limit: int = QUOTE_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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
class Segment:
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


def segments(command: str, cwd: str | None) -> list[Segment]:
    """The simple commands of a command line, in order, without their redirections."""
    out: list[Segment] = []
    words: list[str] = []
    piped = skip_next = False
    for token in [*_tokens(command.replace("\n", " ; ")), ";"]:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS:
            if words:
                if words[0] == "cd" and len(words) > 1:
                    cwd = join_path(cwd, words[1])
                out.append(Segment(tuple(words), piped, cwd))
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


def program_of(words: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The program name (basename) and its arguments, past env assignments and prefixes."""
    i = 0
    while i < len(words) and (re.match(r"^[A-Za-z_]\w*=", words[i])
                              or words[i] in COMMAND_PREFIXES):
        i += 1
    if i >= len(words):
        return "", ()
    return posixpath.basename(words[i]), words[i + 1:]


def join_path(cwd: str | None, path: str) -> str:
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
class Read:
    path: str
    range: str | None  # "offset+limit" for native readers, the sed/head/tail words for shell


def call_cwd(record: TraceRecord, call: ToolCall) -> str | None:
    workdir = call.input.get("workdir") or call.input.get("cwd")
    if isinstance(workdir, str) and workdir:
        return workdir
    cwd = record.metadata.get("cwd")
    return cwd if isinstance(cwd, str) and cwd else None


def input_path(call: ToolCall) -> str | None:
    for key in _PATH_KEYS:
        value = call.input.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def call_reads(record: TraceRecord, call: ToolCall) -> list[Read]:
    cwd = call_cwd(record, call)
    if call.tool_name in READ_TOOLS:
        path = input_path(call)
        if path is None:
            return []
        span = [str(call.input[k]) for k in ("offset", "limit") if call.input.get(k) is not None]
        return [Read(join_path(cwd, path), "+".join(span) or None)]
    command = shell_command(call)
    if command is None:
        return []
    reads = []
    for seg in segments(command, cwd):
        program, args = program_of(seg.words)
        if program in READ_PROGRAMS:
            opts = " ".join(a for a in args if a.startswith("-") or re.match(r"^\d", a))
            reads += [Read(join_path(seg.cwd, p), f"{program} {opts}".strip())
                      for p in _read_paths(program, args)]
    return reads


def search_query(call: ToolCall) -> str | None:
    """The query of a search call (tool name plus pattern), or None if it is not one."""
    if call.tool_name in SEARCH_TOOLS:
        pattern = call.input.get("pattern") or call.input.get("query") or ""
        where = input_path(call) or ""
        return f"{call.tool_name} {pattern} {where}".strip()
    command = shell_command(call)
    if command is None:
        return None
    for seg in segments(command, None):
        program, args = program_of(seg.words)
        if seg.piped:
            continue  # ``… | grep x`` filters output, it does not search code
        if program in SEARCH_PROGRAMS or (program == "git" and args[:1] == ("grep",)):
            return " ".join(seg.words)
    return None


def edited_paths(record: TraceRecord, call: ToolCall) -> list[str]:
    cwd = call_cwd(record, call)
    if call.tool_name in EDIT_TOOLS:
        path = input_path(call)
        return [join_path(cwd, path)] if path else []
    patch = call.input.get("patch") or call.input.get("input")
    if call.tool_name == "apply_patch" and isinstance(patch, str):
        return [join_path(cwd, p.strip()) for p in _PATCH_FILE.findall(patch)]
    return []


def edits_by_path(record: TraceRecord, calls: list[Call]) -> dict[str, list[int]]:
    """path -> the steps that changed it (native edits, apply_patch, the record's patches)."""
    cwd = record.metadata.get("cwd") if isinstance(record.metadata.get("cwd"), str) else None
    found: dict[str, set[int]] = {}
    for c in calls:
        if c.ok:
            for path in edited_paths(record, c.call):
                found.setdefault(path, set()).add(c.step.step_index)
    for patch in record.patches:
        if patch.step_index is not None:
            found.setdefault(join_path(cwd, patch.file_path), set()).add(patch.step_index)
    return {p: sorted(s) for p, s in found.items()}


def call_target(call: ToolCall) -> str | None:
    command = shell_command(call)
    return quote(command) if command is not None else input_path(call)

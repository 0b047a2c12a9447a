"""The agent hook, ``opentraces-hook <agent> <event>``, and the spool it writes.

A coding agent runs this program on its hook events with a JSON payload on stdin. It appends
one line describing the event to ``$OPENTRACES_HOME/spool/<agent>.jsonl``; the importer
(``opentraces import --from-spool``) later reads the spool, imports the transcripts the lines
name, and drains what it consumed. The transcript stays the evidence: a spool line only says
"this session moved, look at this file", so losing one costs latency, never data.

Invariants:
- Passive and fail-open. Whatever happens (bad JSON, unknown agent, unwritable spool) the hook
  exits 0 and prints nothing on stdout or stderr: agents read hook stdout (Claude Code and Codex
  parse it as a decision) and a non-zero exit can block them. What went wrong goes to
  ``spool/errors.jsonl`` when that can be written (it stops growing past
  :data:`ERRORS_LIMIT_BYTES`).
- Fast: only the standard library and :mod:`opentraces.config` are imported (no eventsourcing,
  click or sqlite3, and not msgspec either: its import alone costs 25-45 ms on a 2-core machine,
  most of the 60 ms budget, while the stdlib ``json`` module costs about 3 ms and writes the
  same JSON line).
- One event, one line, one ``os.write`` on an ``O_APPEND`` descriptor (then ``fsync``), so
  concurrent hooks never interleave. Hooks hold a shared ``flock`` on ``spool/.lock`` while
  appending; :func:`drain_spool` holds it exclusively while it cuts the file, so no append can
  land in a file being replaced.
- Lines stay small: payload values larger than :data:`FIELD_LIMIT` bytes (tool inputs and
  responses, file contents) are replaced by ``{"_omitted_bytes": n}``; small fields of a large
  object (a ``file_path``, a ``command``) are kept.
- A project holding an ``.opentraces-exclude`` file (in the session's cwd or any parent) is
  never spooled: nothing about it is written.
- The hook never writes into the agent's transcript, its settings or any ``.git``.
- On a session-ending event (:data:`IMPORT_TRIGGERS`) it starts the importer as a detached
  process (new session, stdio to /dev/null) and returns without waiting for it.
- ``opentraces-hook git post-commit`` is the post-commit hook of ``opentraces setup git``
  (:mod:`opentraces.git_hook`): no payload; the line carries the working folder and the commit
  from ``OPENTRACES_COMMIT``, and the importer records an anchor search for it.

Spool line (JSON, one per line)::

    {"v": 1, "agent": "claude-code", "event": "PostToolUse",
     "received_at": "2026-01-02T03:04:05.678Z", "session_id": "…", "transcript_path": "…",
     "cwd": "…", "payload": {…the rest of the hook payload, large values omitted…}}

Importer contract: ``entries = read_spool(home)``; import the ``transcript_path`` of each entry
(skipping the ones :func:`opentraces.enrollment.should_capture` refuses); then
``drain_spool(home, spool_marks(entries))``. Marks carry the spool generation they were read
at, so a drain with marks older than a drain that already ran is a no-op (its lines are read
and imported again next time, which the store makes idempotent).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from opentraces.home import home_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends still work, without the drain lock
    fcntl = None  # type: ignore[assignment]

#: Agents the hook accepts (their spool file is ``<agent>.jsonl``).
AGENTS = ("claude-code", "codex-cli", "pi")
#: Everything that may call the hook: the agents, and the post-commit hook of `setup git`.
SOURCES = (*AGENTS, "git")
#: Events after which the importer is started in the background.
IMPORT_TRIGGERS: dict[str, frozenset[str]] = {
    "claude-code": frozenset({"Stop", "SessionEnd"}),
    "codex-cli": frozenset({"Stop"}),  # Codex has no session-end hook; Stop ends each turn
    "pi": frozenset({"Stop", "SessionEnd", "session_shutdown"}),
    # the post-commit hook of `opentraces setup git`: the importer records an anchor search
    "git": frozenset({"post-commit"}),
}
#: Events that say a session ended: the importer records ``SessionEnded`` for them.
SESSION_ENDS: dict[str, frozenset[str]] = {
    "claude-code": frozenset({"SessionEnd"}),
    "pi": frozenset({"SessionEnd", "session_shutdown"}),
}
#: Where the git post-commit hook passes the new commit's id.
COMMIT_ENV = "OPENTRACES_COMMIT"
#: A file with this name in a project folder (or a parent) turns capture off for it.
EXCLUDE_MARKER = ".opentraces-exclude"
SPOOL_DIR = "spool"
ERRORS_FILE = "errors.jsonl"
LOCK_FILE = ".lock"
#: Payload values larger than this (encoded JSON bytes) are replaced by their size.
FIELD_LIMIT = 4096
#: Small fields of an oversized object are kept up to this size each.
SUBFIELD_LIMIT = 1024
#: A line whose payload is still larger than this keeps only the payload's size.
LINE_LIMIT = 65536
ERRORS_LIMIT_BYTES = 8 * 1024 * 1024
#: How long an append waits for a drain to finish before writing without the lock.
LOCK_WAIT_SECONDS = 2.0
SPOOL_VERSION = 1
#: Payload keys lifted to the top of the spool line.
LIFTED = {"session_id": ("session_id", "sessionId"),
          "transcript_path": ("transcript_path", "transcriptPath", "session_file"),
          "cwd": ("cwd",)}
USAGE = "usage: opentraces-hook <agent> <event>   (payload: hook JSON on stdin)"


class HookError(Exception):
    """Something the hook could not do; recorded in errors.jsonl, never raised to the agent."""


def default_import_command() -> list[str]:
    """The detached importer: this interpreter running ``opentraces import --from-spool``."""
    return [sys.executable, "-m", "opentraces", "import", "--from-spool"]


# ---------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None, *, stdin: BinaryIO | None = None,
         import_command: Sequence[str] | None = None) -> int:
    """Run the hook: spool one line, maybe start the importer. Always returns 0.

    Args:
        argv: ``[agent, event]`` (default: ``sys.argv[1:]``).
        stdin: where the payload is read from (default: the process's stdin).
        import_command: argv of the background importer (default:
            :func:`default_import_command`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):  # a person asking; agents never pass this
        sys.stderr.write(f"{USAGE}\nAgents: {', '.join(SOURCES)}. Always exits 0.\n")
        return 0
    home: Path | None = None
    try:
        home = home_dir()
        handle(home, args, _read_payload(stdin), import_command)
    except BaseException as e:  # the outermost frame of a hook fails open (and records why)
        if home is not None:
            _record_error(home, args, e)
    return 0


def handle(home: Path, args: Sequence[str], payload: bytes,
           import_command: Sequence[str] | None = None) -> None:
    """Spool one hook event under ``home``; start the importer after a session-ending event.

    Raises:
        HookError: bad arguments or payload, or the spool could not be written (an importer
            due after this event is still started).
    """
    if len(args) != 2:
        raise HookError(f"{USAGE}; got {len(args)} arguments")
    agent, event = _clean(args[0])[:64], _clean(args[1])[:64]
    if agent not in SOURCES:
        raise HookError(f"unknown agent {agent!r}; known: {', '.join(SOURCES)}")
    if agent == "git":  # git gives a post-commit hook no payload: describe the commit here
        payload = _encode({"cwd": os.getcwd(), "commit": os.environ.get(COMMIT_ENV, "")})
    problem: HookError | None = None
    line: bytes | None = None
    try:
        line = spool_line(agent, event, payload, received_at=_now())
        if line is None:
            return  # an excluded project: nothing is written, no import is started
    except HookError as e:
        problem = e
    try:
        if line is not None:
            append_line(home, agent, line)
    finally:
        if event in IMPORT_TRIGGERS[agent]:
            spawn_detached(list(import_command or default_import_command()), home)
    if problem is not None:
        raise problem


def _read_payload(stdin: BinaryIO | None) -> bytes:
    if stdin is not None:
        return stdin.read()
    stream = sys.stdin
    if stream is None or stream.isatty():  # run by hand: there is no payload to wait for
        return b""
    return stream.buffer.read()


# ---------------------------------------------------------------------------------------------
# Building the line


def spool_line(agent: str, event: str, payload: bytes, *, received_at: str) -> bytes | None:
    """Encode one spool line (with its newline) from a raw hook payload.

    Returns None when the session's folder is excluded (:data:`EXCLUDE_MARKER`).

    Raises:
        HookError: the payload is empty, not JSON, or not a JSON object.
    """
    fields = _decode_fields(payload)
    lifted = {name: _lift(fields, keys) for name, keys in LIFTED.items()}
    cwd = lifted["cwd"]
    if cwd and excluded_by_marker(cwd):
        return None
    taken = {key for keys in LIFTED.values() for key in keys}
    small = compact({k: v for k, v in fields.items() if k not in taken})
    record: dict[str, Any] = {"v": SPOOL_VERSION, "agent": agent, "event": event,
                              "received_at": received_at, **lifted, "payload": small}
    data = _encode(record)
    if len(data) > LINE_LIMIT:
        record["payload"] = _omitted(len(payload))
        data = _encode(record)
    return data + b"\n"


def _encode(value: Any) -> bytes:
    """Compact UTF-8 JSON; lone surrogates (valid JSON escapes) become ``\\udXXX`` text."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(_clean_value(value), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")


def _decode_fields(payload: bytes) -> dict[str, Any]:
    """The payload's top-level fields (invalid UTF-8 is replaced, never refused)."""
    text = payload.decode("utf-8", "replace")
    if not text.strip():
        raise HookError("no payload on stdin")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise HookError(f"payload is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise HookError(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def _lift(fields: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = fields.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return _clean(str(value))[:FIELD_LIMIT]
    return None


def compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Payload fields with every value over :data:`FIELD_LIMIT` bytes replaced by its size.

    An oversized object keeps its small fields (up to :data:`SUBFIELD_LIMIT` bytes each).
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        size = _size(value)
        if size <= FIELD_LIMIT:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _shrink_object(value, size)
        else:
            out[key] = _omitted(size)
    return out


def _size(value: Any) -> int:
    """Bytes of ``value`` as JSON (counted cheaply for strings, exactly past the limit)."""
    if isinstance(value, str) and len(value) * 4 + 2 <= FIELD_LIMIT:
        return len(value) + 2
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _shrink_object(value: dict[str, Any], size: int) -> dict[str, Any]:
    kept = {k: (v if (n := _size(v)) <= SUBFIELD_LIMIT else _omitted(n)) for k, v in value.items()}
    if _size(kept) > FIELD_LIMIT:
        return _omitted(size)
    return kept


def _omitted(size: int) -> dict[str, int]:
    return {"_omitted_bytes": size}


def _clean(text: str) -> str:
    """A string that encodes as UTF-8 (lone surrogates become ``\\udXXX`` text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list):
        return [_clean_value(v) for v in value]
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_value(v) for k, v in value.items()}
    return value


def excluded_by_marker(cwd: str | os.PathLike[str]) -> bool:
    """Whether ``cwd`` or one of its parents holds an :data:`EXCLUDE_MARKER` file."""
    path = os.path.abspath(os.fspath(cwd))
    while True:
        if os.path.exists(os.path.join(path, EXCLUDE_MARKER)):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


# ---------------------------------------------------------------------------------------------
# Writing


def spool_dir(home: Path) -> Path:
    return home / SPOOL_DIR


def append_line(home: Path, agent: str, data: bytes) -> None:
    """Append one complete line to the agent's spool file in a single write, then fsync.

    Raises:
        HookError: the write was refused or short.
    """
    spool = spool_dir(home)
    try:
        os.makedirs(spool, mode=0o700, exist_ok=True)
        with _spool_lock(spool, shared=True, wait=LOCK_WAIT_SECONDS):
            fd = os.open(spool / f"{agent}.jsonl",
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                written = os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise HookError(f"cannot append to {spool / (agent + '.jsonl')}: {e}") from e
    if written != len(data):
        raise HookError(f"short write to {spool / (agent + '.jsonl')}: "
                        f"{written} of {len(data)} bytes")


def spawn_detached(command: Sequence[str], home: Path) -> None:
    """Start ``command`` in its own session with stdio on /dev/null; do not wait for it."""
    import subprocess

    cwd = home if home.is_dir() else Path("/")
    subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                     cwd=cwd)


def _record_error(home: Path, args: Sequence[str], error: BaseException) -> None:
    """Append what went wrong to errors.jsonl; give up silently if even that fails."""
    path = spool_dir(home) / ERRORS_FILE
    record = {"at": _now(), "argv": [_clean(a)[:200] for a in args],
              "error": type(error).__name__, "message": _clean(str(error))[:2000]}
    try:
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
        if path.exists() and path.stat().st_size > ERRORS_LIMIT_BYTES:
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(record).encode("ascii") + b"\n")
        finally:
            os.close(fd)
    except OSError:
        return  # nowhere left to report to, and the agent must not notice


@contextmanager
def _spool_lock(spool: Path, *, shared: bool, wait: float | None = None) -> Iterator[bool]:
    """Hold ``spool/.lock`` (shared for appends, exclusive for drains).

    With ``wait`` the lock is given up after that many seconds and the body runs unlocked
    (yielding False): an append must never hang the agent.
    """
    if fcntl is None:
        yield False
        return
    fd = os.open(spool / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if wait is None:
            fcntl.flock(fd, mode)
            yield True
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.005)
            else:
                yield True
                return
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ---------------------------------------------------------------------------------------------
# Reading and draining (used by the importer)


def _generation(spool: Path, agent: str) -> int:
    try:
        return int((spool / f"{agent}.generation").read_text(encoding="ascii").strip() or 0)
    except FileNotFoundError:
        return 0


def _replace_file(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def read_spool(home: Path) -> list[dict[str, Any]]:
    """Every complete line of every agent's spool, oldest first per agent.

    Each entry is the decoded line plus ``"spool": {"agent", "generation", "offset", "end"}``
    (the byte range of the line). A line that does not decode is returned as
    ``{"agent": …, "spool_error": reason, "spool": …}`` so that it can be reported and drained.
    A partial last line (a write in progress) is left for the next read.
    """
    spool = spool_dir(home)
    if not spool.is_dir():
        return []
    entries: list[dict[str, Any]] = []
    with _spool_lock(spool, shared=True):
        for agent in SOURCES:
            try:
                data = (spool / f"{agent}.jsonl").read_bytes()
            except FileNotFoundError:
                continue
            entries.extend(_entries(agent, _generation(spool, agent), data))
    return entries


def _entries(agent: str, generation: int, data: bytes) -> Iterator[dict[str, Any]]:
    offset = 0
    while (end := data.find(b"\n", offset)) >= 0:
        line, start, offset = data[offset:end], offset, end + 1
        if not line.strip():
            continue
        where = {"agent": agent, "generation": generation, "offset": start, "end": offset}
        try:
            entry = json.loads(line)
        except ValueError as e:
            yield {"agent": agent, "spool_error": str(e), "spool": where}
            continue
        if not isinstance(entry, dict):
            yield {"agent": agent, "spool_error": "the line is not a JSON object", "spool": where}
            continue
        entry["spool"] = where
        yield entry


def spool_marks(entries: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """How far ``entries`` reach in each spool: ``{agent: (generation, end offset)}``."""
    marks: dict[str, tuple[int, int]] = {}
    for entry in entries:
        where = entry["spool"]
        mark = (where["generation"], where["end"])
        marks[where["agent"]] = max(marks.get(where["agent"], mark), mark)
    return marks


def drain_spool(home: Path, upto_offset: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """Remove each agent's spool lines up to a mark from :func:`spool_marks`, atomically.

    Lines appended after the marks are kept. A mark from an older generation (another drain
    ran since it was read) removes nothing. Returns the bytes removed per agent.

    Raises:
        ValueError: an unknown agent, or an offset that is not the end of a line.
    """
    spool = spool_dir(home)
    removed: dict[str, int] = {}
    if not spool.is_dir():
        return removed
    with _spool_lock(spool, shared=False):
        for agent, (generation, offset) in sorted(upto_offset.items()):
            if agent not in SOURCES:
                raise ValueError(f"unknown spool agent {agent!r}")
            path = spool / f"{agent}.jsonl"
            if generation != _generation(spool, agent) or offset <= 0 or not path.exists():
                continue
            data = path.read_bytes()
            offset = min(offset, len(data))
            if data[offset - 1:offset] != b"\n":
                raise ValueError(f"offset {offset} is not the end of a line in {path}")
            # The generation moves first: after a crash between the two writes, stale marks
            # cut nothing and the kept lines are simply imported again.
            _replace_file(spool / f"{agent}.generation", f"{generation + 1}\n".encode())
            _replace_file(path, data[offset:])
            removed[agent] = offset
    return removed


if __name__ == "__main__":
    sys.exit(main())

"""Search index: whoosh (BM25F) indexes of traces: one document per trace, one per step.

The build folder holds two things:

- ``state.sqlite``, the *side tables*: what the index is made of, accumulated from the events
  (session facts, step text, tool calls, results, skills, patches, anchors) plus ``dirty``, the
  units whose documents must be (re)written. Step text grows with ``StepExtended`` and results
  arrive after their calls, so documents are rendered from these rows, never from one event.
- ``whoosh/``, two whoosh indexes with one schema: ``traces`` (a document per trace, keyed by
  ``<trace_id>``, holding the text of all its steps up to :data:`TRACE_FIELD_CHARS` per field,
  and the union of their facets) and ``steps`` (a document per step, keyed by
  ``<trace_id>:<step_index>``). A query ranks and counts traces on the first (10k documents for
  10k traces rather than one per step), then picks the best step of each trace it shows from the
  second; keeping them apart keeps each one's statistics (lengths, frequencies) its own.

A unit is written by :meth:`SearchIndex.finish` (or earlier, once :data:`FLUSH_UNITS` units are
dirty) with one whoosh writer per index: ``update_document`` by ``unit_id``, or delete-by-trace
then add when the trace's inherited facets changed or its transcript was read again from the
start. Any change to a trace rewrites its trace document.

Invariants:
- Only events are read (never another projection). ``SourceSegmentRead`` at offset 0 with a
  higher generation drops the trace's steps, calls, results and skills, as in the traces view.
- Two positions are kept in ``meta``: ``position`` (side tables applied, committed with the
  rows) and ``indexed`` (the whoosh index holds every document of the side tables up to there,
  recorded only after both whoosh commits). :meth:`position` answers ``indexed``, so after a crash
  between the two the runner feeds the events again; the side tables skip them and the dirty
  units are written again (keyed updates, so nothing is doubled).
- :meth:`digest` is blake3 over the side tables (documents are a pure function of them), not
  over whoosh's segment files, so rebuilds compare equal.
- Reading opens the side file and the whoosh folder read-only; only the runner writes, never
  through an ``AsyncWriter``. Like every SQL projection's, the side file is left in rollback
  mode when the writer closes, so a read-only open creates no ``-wal``/``-shm`` files beside it.
- whoosh is imported lazily (CLI start-up budget).
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import blake3

from opentraces import events as ev
from opentraces.errors import OpentracesError
from opentraces.events import Recorded
from opentraces.projections.base import Handler, SqlProjection, in_trace_stream
from opentraces.projections.bucket_manifest import project_slug

T = TypeVar("T")

INDEX_DIR = "whoosh"
#: The two whoosh indexes (``indexname``) of the folder.
TRACES = "traces"
STEPS = "steps"

#: Caps on what one document holds: enough to find a step, not the whole transcript.
TEXT_CHARS = 8000  # a step's prompt or agent text
OUTPUT_CHARS = 2000  # one tool result
STEP_OUTPUT_CHARS = 6000  # all results of one step
ERROR_CHARS = 1000  # one failed result's text
COMMAND_CHARS = 1000  # one tool call's command, pattern or query
TASK_CHARS = 2000  # the first prompt (a trace's summary, and its title when it has none)
SUMMARY_CHARS = 240
TITLE_CHARS = 80
#: Cap on each text field of a trace document (the trace's steps' text, joined in order). A
#: longer session's later text is still in its step documents, but a query finds traces by
#: their trace document, so the cap is large. Any new event of a trace rewrites its trace
#: document whole, so the cap also bounds that work.
TRACE_FIELD_CHARS = 100_000
PATHS_PER_CALL = 20

#: Write and commit once this many units are dirty. Each commit leaves a segment, and every
#: query pays for each segment it opens (~10 files), so a rebuild should end as few segments:
#: the writer spills to disk past WRITER_LIMIT_MB, so a large value costs little memory.
FLUSH_UNITS = 200_000
WRITER_LIMIT_MB = 256
#: Dirty units from which a first build writes half the documents in a second process (its
#: start-up, ~0.2 s, would cost a smaller build more than it saves).
PARALLEL_UNITS = 500

#: Attempts of :meth:`SearchIndex.read` at reading indexes that a commit changes meanwhile.
READ_ATTEMPTS = 3

#: ``dirty.step_index`` for the trace document only, and for every unit of the trace.
TRACE_DOC = -1
WHOLE_TRACE = -2

#: Searchable text fields and their BM25F boosts.
TEXT_FIELDS: dict[str, float] = {
    "title": 3.0, "prompt": 2.0, "text": 1.0, "commands": 1.5, "paths": 1.5, "errors": 1.5,
    "output": 0.5,
}
#: Fields indexed without word positions (the bulk of the text): phrases do not match there.
NO_PHRASE_FIELDS = ("output",)
#: Facet fields (KEYWORD, comma separated); the case-sensitive ones keep their values as given.
FACETS = ("agent", "model", "project", "tool", "file", "file_kind", "skill", "outcome",
          "committed", "date")
CASE_SENSITIVE_FACETS = ("file", "project")
#: Facets every step of a trace shares with it (``cwd`` too, a field but no facet).
INHERITED_FACETS = ("agent", "project", "committed")

#: Tool input keys naming a file (always a file) or a path (a file when it has an extension).
FILE_KEYS = ("file_path", "notebook_path", "filePath", "absolute_path", "target_file",
             "filename")
PATH_KEYS = ("path", "dir_path", "directory", "cwd", "workdir")
LIST_KEYS = ("paths", "file_paths")
COMMAND_KEYS = ("command", "cmd", "script", "pattern", "query", "url", "description", "skill",
                "args")
PATCH_KEYS = ("patch", "input")

LANGUAGES = {
    "py": "python", "pyi": "python", "ts": "typescript", "tsx": "typescript",
    "js": "javascript", "jsx": "javascript", "mjs": "javascript", "rs": "rust", "go": "go",
    "rb": "ruby", "java": "java", "kt": "kotlin", "swift": "swift", "c": "c", "h": "c",
    "cc": "cpp", "cpp": "cpp", "hpp": "cpp", "cs": "csharp", "ex": "elixir", "exs": "elixir",
    "heex": "elixir", "md": "markdown", "json": "json", "yaml": "yaml", "yml": "yaml",
    "toml": "toml", "sh": "shell", "bash": "shell", "zsh": "shell", "sql": "sql",
    "html": "html", "css": "css", "scss": "css", "php": "php", "lua": "lua",
}

_PATCH_TARGET = re.compile(r"^\*\*\* (?:(?:Add|Update|Delete) File|Move to): (.+)$|^\+\+\+ b/(.+)$",
                           re.MULTILINE)
_URL = re.compile(r"\w+://\S+")
_TOKEN = re.compile(r"[\w@~+./-]+")
_FILE_LIKE = re.compile(r"[\w@~+./-]*[\w-]\.[A-Za-z][A-Za-z0-9]{0,7}")
_EXTENSION = re.compile(r"\.([A-Za-z][A-Za-z0-9]{0,7})$")
#: Extensions that make a bare word of a command a file name (``README.md``, not ``phx.server``).
OTHER_EXTENSIONS = frozenset({"txt", "lock", "log", "cfg", "ini", "env", "csv", "tsv", "xml",
                              "svg", "png", "jpg", "gif", "pdf", "ipynb", "rst", "conf", "vue",
                              "svelte", "proto", "gradle", "mod", "sum", "tf", "dockerfile"})



def _stat(path: Path) -> os.stat_result | None:
    """A file's status, None when it is gone: an import catching the index up deletes the files
    of merged segments and older tables of contents while commands list the folder."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _first_line(text: str, chars: int) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:chars]
    return ""


def _facet(values: Sequence[str]) -> str:
    """Facet values as one KEYWORD string: sorted, unique, commas (the separator) removed."""
    return ",".join(sorted({v.replace(",", ";").strip() for v in values if v and v.strip()}))


def epoch(at: str | None) -> int | None:
    """Seconds since 1970 (UTC) of an ISO timestamp; naive times are taken as UTC."""
    if not at:
        return None
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def file_kinds(path: str) -> list[str]:
    """A file's extension and, when known, its language (``["py", "python"]``)."""
    m = _EXTENSION.search(path.rsplit("/", 1)[-1])
    if not m:
        return []
    ext = m.group(1).lower()
    return [ext, LANGUAGES[ext]] if ext in LANGUAGES else [ext]


def paths_in_command(command: str) -> list[str]:
    """Tokens of a shell command that look like file names (``src/app.py``, ``README.md``)."""
    command = _URL.sub(" ", command)
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        words = command.split()
    found: list[str] = []
    for word in words:
        for token in _TOKEN.findall(word):
            if token.startswith("-") or not _FILE_LIKE.fullmatch(token):
                continue
            kinds = file_kinds(token)
            if "/" in token or (kinds and (kinds[0] in LANGUAGES or kinds[0] in OTHER_EXTENSIONS)):
                found.append(token)
    return list(dict.fromkeys(found))[:PATHS_PER_CALL]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def call_facts(call: ev.ToolCall) -> tuple[str, list[str], list[str]]:
    """(command text, file paths, other paths) named by one tool call's input."""
    inp = call.input
    commands: list[str] = []
    files: list[str] = []
    others: list[str] = []
    for key in COMMAND_KEYS:
        for text in _strings(inp.get(key)):
            commands.append(text)
    shell = " ".join(" ".join(_strings(inp.get(k))) for k in ("command", "cmd", "script"))
    if shell.strip():
        files += paths_in_command(shell)
    for key in FILE_KEYS:
        files += _strings(inp.get(key))
    for key in LIST_KEYS:
        files += _strings(inp.get(key))
    for key in PATH_KEYS:
        for path in _strings(inp.get(key)):
            (files if file_kinds(path) else others).append(path)
    for key in PATCH_KEYS:
        for text in _strings(inp.get(key)):
            files += [a or b for a, b in _PATCH_TARGET.findall(text)]
    files = [f.strip() for f in files if f.strip()]
    command = " ".join(commands)[:COMMAND_CHARS]
    return (command, list(dict.fromkeys(files))[:PATHS_PER_CALL],
            list(dict.fromkeys(o for o in others if o.strip()))[:PATHS_PER_CALL])


def relative(path: str, cwd: str | None) -> str:
    """``path`` relative to the session's folder when inside it (one name per file)."""
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1:]
    return path


def schema() -> Any:
    """The whoosh schema (built on demand: whoosh is imported lazily)."""
    from whoosh import analysis, fields

    from opentraces.projections.indexing import FusedText

    # One stop list for every field: a word stopped in some fields only would have to match in
    # the others, and an AND query would then miss units that have it only where it is stopped.
    stop = analysis.StopFilter(stoplist=analysis.STOP_WORDS, minsize=1)
    words = analysis.StemmingAnalyzer(stoplist=analysis.STOP_WORDS, minsize=1)
    plain = analysis.RegexTokenizer(r"\w+(\.?\w+)*") | analysis.LowercaseFilter() | stop
    parts = analysis.RegexTokenizer(r"[^/\\\s:'\"]+") | analysis.LowercaseFilter() | stop
    analyzers = {"title": words, "prompt": words, "text": words, "errors": words,
                 "commands": plain, "output": plain, "paths": parts}
    spec: dict[str, Any] = {
        "unit_id": fields.ID(stored=True, unique=True, sortable=True),
        "trace_id": fields.ID(stored=True, sortable=True),
        "cwd": fields.ID(),
        "time": fields.NUMERIC(int, bits=64, signed=True, sortable=True, stored=True),
        "card": fields.STORED(),
    }
    for name, boost in TEXT_FIELDS.items():
        # Positions (for phrases) are kept where phrases are asked for: prose and commands.
        spec[name] = FusedText(analyzer=analyzers[name], field_boost=boost,
                               phrase=name not in NO_PHRASE_FIELDS)
    for name in FACETS:
        spec[name] = fields.KEYWORD(commas=True, scorable=False,
                                    lowercase=name not in CASE_SENSITIVE_FACETS)
    return fields.Schema(**spec)


# ---------------------------------------------------------------------------------------------
# Documents, rendered from the side tables of one trace


@dataclass
class _Step:
    role: str = "agent"
    at: str | None = None
    model: str | None = None
    text: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    other_paths: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # call id -> first non-empty output
    failed: dict[str, str] = field(default_factory=dict)  # call id -> error text
    skills: list[str] = field(default_factory=list)

    def indexable(self) -> bool:
        """Whether the step has anything to find (else it gets no document)."""
        return bool("".join(self.text).strip() or self.tools or self.outputs or self.failed
                    or self.skills or self.files)


@dataclass
class _Trace:
    head: dict[str, Any]
    steps: dict[int, _Step]

    @classmethod
    def read(cls, conn: sqlite3.Connection, trace_id: str) -> _Trace:
        q = (trace_id,)
        cur = conn.execute("SELECT * FROM traces WHERE trace_id = ?", q)
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        head = dict(zip(names, row, strict=True)) if row else {"trace_id": trace_id}
        steps: dict[int, _Step] = {}
        for index, role, at, model in conn.execute(
                "SELECT step_index, role, at, model FROM steps WHERE trace_id = ? "
                "ORDER BY step_index", q):
            steps[index] = _Step(role=role, at=at, model=model)
        for index, body in conn.execute(
                "SELECT step_index, body FROM texts WHERE trace_id = ? ORDER BY position", q):
            steps.setdefault(index, _Step()).text.append(body)
        for index, tool, command, files, others in conn.execute(
                "SELECT step_index, tool_name, command, files, others FROM calls "
                "WHERE trace_id = ? ORDER BY position, seq", q):
            step = steps.setdefault(index, _Step())
            step.tools.append(tool)
            if command:
                step.commands.append(f"{tool} {command}")
            step.files += [f for f in files.split("\n") if f]
            step.other_paths += [p for p in others.split("\n") if p]
        for index, call_id, output, is_error in conn.execute(
                "SELECT step_index, tool_call_id, output, is_error FROM results "
                "WHERE trace_id = ? ORDER BY position", q):
            step = steps.setdefault(index, _Step())
            if output and call_id not in step.outputs:
                step.outputs[call_id] = output
            if is_error:
                step.failed[call_id] = step.failed.get(call_id) or output[:ERROR_CHARS]
        for index, path in conn.execute(
                "SELECT step_index, path FROM patches WHERE trace_id = ? ORDER BY position", q):
            steps.setdefault(index, _Step()).files.append(path)
        for index, skill in conn.execute(
                "SELECT step_index, skill FROM skills WHERE trace_id = ? ORDER BY position", q):
            steps.setdefault(index, _Step()).skills.append(skill)
        committed = conn.execute(
            "SELECT 1 FROM anchors a JOIN patches p ON p.patch_id = a.patch_id "
            "WHERE a.trace_id = ? AND p.trace_id = ? LIMIT 1", (trace_id, trace_id)).fetchone()
        head["committed"] = committed is not None
        return cls(head=head, steps=steps)

    # -- trace-level facts every document carries -------------------------------------------

    def task(self) -> str:
        for step in self.steps.values():
            if step.role == "user" and "".join(step.text).strip():
                return "".join(step.text)[:TASK_CHARS]
        return ""

    def title(self) -> str:
        return (self.head.get("title") or _first_line(self.task(), TITLE_CHARS)
                or self.head.get("session_id") or self.head["trace_id"])

    def model(self) -> str | None:
        return self.head.get("model") or next(
            (s.model for s in self.steps.values() if s.role == "agent" and s.model), None)

    def inherited(self) -> dict[str, Any]:
        """What every step document of the trace repeats; a change rewrites them all."""
        return {"agent": self.head.get("agent") or "unknown", "model": self.model() or "",
                "project": project_slug(self.head.get("project") or self.head.get("cwd")) or "",
                "cwd": self.head.get("cwd") or "", "committed": self.head["committed"],
                "title": self.title()}

    def key(self) -> str:
        inherited = self.inherited()
        return blake3.blake3(repr(sorted(inherited.items())).encode()).hexdigest()[:32]

    # -- documents ---------------------------------------------------------------------------

    def step_doc(self, index: int, base: dict[str, Any]) -> dict[str, Any] | None:
        step = self.steps[index]
        text = "".join(step.text)[:TEXT_CHARS]
        if not step.indexable():
            return None
        # A failed call's text is its error (in `errors`), not output as well.
        outputs = "\n".join(o for c, o in step.outputs.items()
                            if c not in step.failed)[:STEP_OUTPUT_CHARS]
        errors = "\n".join(t for t in (e or step.outputs.get(c, "")[:ERROR_CHARS]
                                        for c, e in step.failed.items()) if t)
        cwd = base["cwd"] or None
        files = list(dict.fromkeys(relative(f, cwd) for f in step.files))
        seconds = epoch(step.at)
        tools = list(dict.fromkeys(step.tools))
        headline = (_first_line(text, SUMMARY_CHARS) or "; ".join(step.commands)[:SUMMARY_CHARS]
                    or " ".join([", ".join(tools), *files[:3]]).strip())
        summary = (text.strip() or "\n".join(step.commands) or outputs)[:SUMMARY_CHARS]
        doc = self._doc(f"{self.head['trace_id']}:{index}", base, seconds)
        doc |= {
            "prompt" if step.role == "user" else "text": text,
            "commands": "\n".join([*tools, *step.commands]),
            "paths": "\n".join([*files, *step.other_paths]),
            "errors": errors, "output": outputs,
            "model": _facet([step.model or base["model"]]),
            "tool": _facet(tools), "file": _facet(files),
            "file_kind": _facet([k for f in files for k in file_kinds(f)]),
            "skill": _facet(step.skills), "outcome": "error" if step.failed else "ok",
            "date": _day(seconds) if seconds is not None else "",
        }
        doc["card"] = self._card(base, index=index, role=step.role, headline=headline,
                                 summary=summary, files=files, skills=step.skills, doc=doc)
        return doc

    def trace_doc(self, base: dict[str, Any], step_docs: dict[int, dict[str, Any]]
                  ) -> dict[str, Any]:
        """The trace's document: its title, and the text fields of ``step_docs`` (every step's
        document, by index) joined in step order, each cut at :data:`TRACE_FIELD_CHARS`."""
        cwd = base["cwd"] or None
        steps = self.steps.values()
        files = list(dict.fromkeys(relative(f, cwd) for s in steps for f in s.files))
        skills = list(dict.fromkeys(k for s in steps for k in s.skills))
        times = [t for t in (epoch(s.at) for s in steps) if t is not None]
        started = epoch(self.head.get("started_at"))
        if started is not None:
            times.append(started)
        task = self.task()
        doc = self._doc(self.head["trace_id"], base, max(times) if times else None)
        ordered = [d for _, d in sorted(step_docs.items())]
        for name in TEXT_FIELDS:
            doc[name] = "\n".join(d[name] for d in ordered if d.get(name))[:TRACE_FIELD_CHARS]
        doc |= {
            "title": base["title"],
            "model": _facet([base["model"], *(s.model or "" for s in steps)]),
            "tool": _facet([t for s in steps for t in s.tools]), "file": _facet(files),
            "file_kind": _facet([k for f in files for k in file_kinds(f)]),
            "skill": _facet(skills),
            "outcome": "error" if any(s.failed for s in steps) else "ok",
            "date": _facet([_day(t) for t in times]),
        }
        doc["card"] = self._card(base, index=None, role=None, headline=base["title"],
                                 summary=task[:SUMMARY_CHARS], files=files, skills=skills,
                                 doc=doc, steps=len(self.steps))
        return doc

    def _doc(self, unit_id: str, base: dict[str, Any], seconds: int | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "unit_id": unit_id, "trace_id": self.head["trace_id"],
            "agent": _facet([base["agent"]]), "project": _facet([base["project"]]),
            "committed": "true" if base["committed"] else "false",
        }
        if base["cwd"]:
            doc["cwd"] = base["cwd"]
        if seconds is not None:
            doc["time"] = seconds
        return doc

    def _card(self, base: dict[str, Any], *, index: int | None, role: str | None,
              headline: str, summary: str, files: list[str], skills: list[str],
              doc: dict[str, Any], steps: int | None = None) -> dict[str, Any]:
        """What a query answer shows for the unit, stored with the document."""
        facets = {name: doc[name] for name in ("agent", "model", "project", "tool",
                                               "file_kind", "outcome", "committed", "date")}
        return {"step_index": index, "role": role, "title": base["title"],
                "headline": headline, "summary": summary, "files": files[:50],
                "skills": list(dict.fromkeys(skills)), "facets": facets,
                "session_id": self.head.get("session_id"), "steps": steps,
                "at": doc.get("time")}


def _render(conn: sqlite3.Connection, trace_id: str
            ) -> tuple[str, dict[int, dict[str, Any]], dict[str, Any]]:
    """A trace's side-table rows as documents: (inherited key, step documents by index, trace
    document)."""
    trace = _Trace.read(conn, trace_id)
    base = trace.inherited()
    step_docs = {i: d for i in sorted(trace.steps) if (d := trace.step_doc(i, base)) is not None}
    return trace.key(), step_docs, trace.trace_doc(base, step_docs)


def _halves(conn: sqlite3.Connection, trace_ids: list[str]) -> tuple[list[str], list[str]]:
    """``trace_ids`` (sorted) cut in two runs of about equal text to index."""
    size: dict[str, int] = dict.fromkeys(trace_ids, 1)
    for table, column in (("texts", "body"), ("results", "output")):
        for trace_id, chars in conn.execute(
                f"SELECT trace_id, sum(length({column})) FROM {table} GROUP BY trace_id"):
            if trace_id in size:
                size[trace_id] += chars
    half, run = sum(size.values()) / 2, 0
    for i, trace_id in enumerate(trace_ids):
        run += size[trace_id]
        if run >= half:
            return trace_ids[:i + 1], trace_ids[i + 1:]
    return trace_ids, []


def write_part(side: str, index_dir: str, trace_ids: list[str]
               ) -> tuple[dict[str, list[Any]], list[tuple[str, str, int]]]:
    """In a child process: the documents of ``trace_ids`` as one new segment per index, from
    the side tables read-only; returns the segments (for the parent to commit) and the
    ``documents`` rows."""
    from whoosh import index

    from opentraces.projections.indexing import add_document, finish_segment, segment_writer

    conn = sqlite3.connect(f"file:{side}?mode=ro", uri=True)
    try:
        writers = {name: segment_writer(index.open_dir(index_dir, indexname=name),
                                        WRITER_LIMIT_MB // 2) for name in (STEPS, TRACES)}
        counts = []
        for trace_id in trace_ids:
            key, step_docs, trace_doc = _render(conn, trace_id)
            for doc in step_docs.values():
                add_document(writers[STEPS], doc)
            add_document(writers[TRACES], trace_doc)
            counts.append((trace_id, key, 1 + len(step_docs)))
        return {name: [finish_segment(w)] for name, w in writers.items()}, counts
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# The projection


class SearchIndex(SqlProjection):
    name: ClassVar[str] = "search_index"
    version: ClassVar[int] = 2
    eager: ClassVar[bool] = False
    refresh_command: ClassVar[str] = "opentraces trace index refresh"
    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS traces (
        trace_id TEXT PRIMARY KEY, session_id TEXT, agent TEXT, model TEXT, project TEXT,
        cwd TEXT, title TEXT, started_at TEXT);
    CREATE TABLE IF NOT EXISTS sources (
        trace_id TEXT NOT NULL, path TEXT NOT NULL, generation INTEGER NOT NULL,
        PRIMARY KEY (trace_id, path));
    CREATE TABLE IF NOT EXISTS steps (
        trace_id TEXT NOT NULL, step_index INTEGER NOT NULL, role TEXT NOT NULL, at TEXT,
        model TEXT, PRIMARY KEY (trace_id, step_index));
    CREATE TABLE IF NOT EXISTS texts (
        position INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, step_index INTEGER NOT NULL,
        body TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS texts_by_trace ON texts (trace_id, position);
    CREATE TABLE IF NOT EXISTS calls (
        position INTEGER NOT NULL, seq INTEGER NOT NULL, trace_id TEXT NOT NULL,
        step_index INTEGER NOT NULL, tool_call_id TEXT NOT NULL, tool_name TEXT NOT NULL,
        command TEXT NOT NULL, files TEXT NOT NULL, others TEXT NOT NULL,
        PRIMARY KEY (position, seq));
    CREATE INDEX IF NOT EXISTS calls_by_trace ON calls (trace_id, position);
    CREATE TABLE IF NOT EXISTS results (
        position INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, step_index INTEGER NOT NULL,
        tool_call_id TEXT NOT NULL, output TEXT NOT NULL, is_error INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS results_by_trace ON results (trace_id, position);
    CREATE TABLE IF NOT EXISTS skills (
        position INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, step_index INTEGER NOT NULL,
        skill TEXT NOT NULL, at TEXT);
    CREATE INDEX IF NOT EXISTS skills_by_trace ON skills (trace_id, position);
    CREATE TABLE IF NOT EXISTS patches (
        patch_id TEXT PRIMARY KEY, position INTEGER NOT NULL, trace_id TEXT NOT NULL,
        step_index INTEGER NOT NULL, path TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS patches_by_trace ON patches (trace_id, position);
    CREATE TABLE IF NOT EXISTS anchors (
        anchor_id TEXT PRIMARY KEY, patch_id TEXT NOT NULL, trace_id TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS anchors_by_trace ON anchors (trace_id);
    CREATE TABLE IF NOT EXISTS documents (
        trace_id TEXT PRIMARY KEY, inherited TEXT NOT NULL, units INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS dirty (
        trace_id TEXT NOT NULL, step_index INTEGER NOT NULL, PRIMARY KEY (trace_id, step_index));
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.index_dir = directory / INDEX_DIR
        self._indexed: int | None = None

    def handlers(self) -> dict[type[ev.Event], Handler]:
        capture = {
            ev.SessionStarted: self._started, ev.SessionInfo: self._info,
            ev.SourceSegmentRead: self._segment, ev.StepRecorded: self._step,
            ev.StepExtended: self._extended, ev.ToolResultRecorded: self._result,
            ev.SkillInvoked: self._skill,
        }
        wrapped: dict[type[ev.Event], Handler] = {t: in_trace_stream(h)
                                                   for t, h in capture.items()}
        wrapped[ev.PatchRecorded] = self._patch
        wrapped[ev.AnchorRecorded] = self._anchor
        return wrapped

    # -- positions: side tables vs. whoosh ----------------------------------------------------

    def position(self) -> int:
        """The last event whose documents the whoosh index holds."""
        if self._indexed is None:
            self._indexed = int(self._meta().get("indexed", 0))
        return self._indexed

    def apply_page(self, records: Sequence[Recorded]) -> int:
        indexed = self.position()
        fresh = sum(1 for r in records if (r.position or 0) > indexed)
        super().apply_page(records)
        with self._writer() as conn:
            (dirty,) = conn.execute("SELECT count(*) FROM dirty").fetchone()
        if dirty >= FLUSH_UNITS:
            self._flush()
        # Events the side tables had already applied still count: their documents may be
        # unwritten (a crash before the whoosh commit), and finish() writes them.
        return fresh

    def finish(self) -> None:
        self._flush()

    # -- handlers (side tables) ---------------------------------------------------------------

    @staticmethod
    def _mark(conn: sqlite3.Connection, trace_id: str, step_index: int) -> None:
        conn.execute("INSERT OR IGNORE INTO dirty VALUES (?, ?)", (trace_id, step_index))

    def _header(self, conn: sqlite3.Connection, trace_id: str) -> None:
        conn.execute("INSERT OR IGNORE INTO traces (trace_id) VALUES (?)", (trace_id,))
        self._mark(conn, trace_id, TRACE_DOC)

    def _started(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionStarted = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute(
            "UPDATE traces SET session_id = ?, agent = ?, model = coalesce(?, model), "
            "project = coalesce(?, project), cwd = coalesce(?, cwd), "
            "title = coalesce(?, title), started_at = coalesce(?, started_at) "
            "WHERE trace_id = ?",
            (e.session_id, e.agent.name, e.agent.model, e.project, e.cwd, e.title, e.at,
             trace_id))

    def _info(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionInfo = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute(
            "UPDATE traces SET cwd = coalesce(?, cwd), model = coalesce(?, model), "
            "title = coalesce(?, title) WHERE trace_id = ?",
            (e.cwd, e.model, e.title, trace_id))

    def _segment(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SourceSegmentRead = rec.event  # type: ignore[assignment]
        row = conn.execute("SELECT generation FROM sources WHERE trace_id = ? AND path = ?",
                           (trace_id, e.path)).fetchone()
        if row is not None and e.start_offset == 0 and e.generation > row[0]:
            for table in ("steps", "texts", "calls", "results", "skills"):
                conn.execute(f"DELETE FROM {table} WHERE trace_id = ?", (trace_id,))
            self._header(conn, trace_id)
            self._mark(conn, trace_id, WHOLE_TRACE)
        conn.execute(
            "INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT (trace_id, path) DO UPDATE "
            "SET generation = max(generation, excluded.generation)",
            (trace_id, e.path, e.generation))

    def _step(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)",
                     (trace_id, e.step_index, e.role, e.at, e.model))
        self._add(conn, rec, trace_id, e.step_index, e.content, e.tool_calls)

    def _extended(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepExtended = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        # Only agent responses are extended; a lost first line still leaves an agent step.
        conn.execute("INSERT OR IGNORE INTO steps VALUES (?, ?, 'agent', ?, NULL)",
                     (trace_id, e.step_index, e.at))
        self._add(conn, rec, trace_id, e.step_index, e.content, e.tool_calls)

    def _add(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str, step_index: int,
             content: str, calls: Sequence[ev.ToolCall]) -> None:
        self._mark(conn, trace_id, step_index)
        if content:
            conn.execute("INSERT OR REPLACE INTO texts VALUES (?, ?, ?, ?)",
                         (rec.position, trace_id, step_index, content[:TEXT_CHARS]))
        for seq, call in enumerate(calls):
            command, files, others = call_facts(call)
            conn.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (rec.position, seq, trace_id, step_index, call.tool_call_id,
                          call.tool_name, command, "\n".join(files), "\n".join(others)))

    def _result(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.ToolResultRecorded = rec.event  # type: ignore[assignment]
        if not (e.content or e.is_error):
            return
        self._header(conn, trace_id)
        self._mark(conn, trace_id, e.step_index)
        conn.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                     (rec.position, trace_id, e.step_index, e.tool_call_id,
                      e.content[:OUTPUT_CHARS], int(e.is_error)))

    def _skill(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SkillInvoked = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        self._mark(conn, trace_id, e.step_index)
        conn.execute("INSERT OR REPLACE INTO skills VALUES (?, ?, ?, ?, ?)",
                     (rec.position, trace_id, e.step_index, e.skill, e.at))

    def _patch(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.PatchRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, e.trace_id)
        self._mark(conn, e.trace_id, e.step_index)
        conn.execute("INSERT OR REPLACE INTO patches VALUES (?, ?, ?, ?, ?)",
                     (e.patch_id, rec.position, e.trace_id, e.step_index, e.path))

    def _anchor(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.AnchorRecorded = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR REPLACE INTO anchors VALUES (?, ?, ?)",
                     (e.anchor_id, e.patch_id, e.trace_id))
        # `committed` may have flipped; the flush compares the inherited facts.
        self._mark(conn, e.trace_id, TRACE_DOC)

    # -- writing documents --------------------------------------------------------------------

    def _flush(self) -> None:
        """Write every dirty unit with one whoosh writer, commit, then record ``indexed``."""
        with self._writer() as conn:
            dirty: dict[str, set[int]] = {}
            for trace_id, step_index in conn.execute(
                    "SELECT trace_id, step_index FROM dirty ORDER BY trace_id, step_index"):
                dirty.setdefault(trace_id, set()).add(step_index)
            (side_position,) = conn.execute(
                "SELECT coalesce((SELECT value FROM meta WHERE key = 'position'), 0)").fetchone()
            indexes = self._open_for_writing()
            if dirty:
                self._write(conn, indexes, dirty)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM dirty")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)",
                         (str(side_position),))
            conn.execute("COMMIT")
        self._indexed = int(side_position)

    def _write(self, conn: sqlite3.Connection, indexes: dict[str, Any],
               dirty: dict[str, set[int]]) -> None:
        from opentraces.projections.indexing import (
            add_document,
            child_result,
            close_own,
            commit_segments,
            fast_writer,
            start_child,
        )

        # Per index: a crash between the two commits leaves one written and the other empty.
        empty = {name: ix.doc_count_all() == 0 for name, ix in indexes.items()}
        # Not compound: whoosh3 opens a file inside a compound segment by copying it into
        # memory, which made every query read the whole posting file (~14 ms per file at 10k
        # traces); separate files are opened in place.
        writers = {name: fast_writer(ix.writer(limitmb=WRITER_LIMIT_MB // 2, compound=False))
                   for name, ix in indexes.items()}
        stored = dict(conn.execute("SELECT trace_id, inherited FROM documents"))
        mine, theirs = sorted(dirty), []
        # A first build only adds documents, so a second process can write the later traces'
        # as segments of their own (incremental updates stay in one writer).
        if (all(empty.values()) and sum(map(len, dirty.values())) >= PARALLEL_UNITS
                and len(os.sched_getaffinity(0)) > 1):
            mine, theirs = _halves(conn, mine)
        counts: list[tuple[str, str, int]] = []
        helper = None
        try:
            if theirs:
                helper = start_child("opentraces.projections.search_index:write_part",
                                     str(self.path), str(self.index_dir), theirs)
            for trace_id in mine:
                key, step_docs, trace_doc = _render(conn, trace_id)
                whole = (any(empty.values()) or WHOLE_TRACE in dirty[trace_id]
                         or stored.get(trace_id) != key)
                wanted = step_docs if whole else {
                    i: d for i, d in step_docs.items() if i in dirty[trace_id]}
                for name, docs in ((STEPS, list(wanted.values())), (TRACES, [trace_doc])):
                    writer = writers[name]
                    if whole and not empty[name]:
                        writer.delete_by_term("trace_id", trace_id)
                    for doc in docs:
                        if whole:
                            add_document(writer, doc)
                        else:
                            writer.update_document(**doc)
                counts.append((trace_id, key, 1 + len(step_docs)))
            if helper is None:
                for writer in writers.values():
                    writer.commit()
            else:
                own = {name: close_own(writer) for name, writer in writers.items()}
                extra, their_counts = child_result(helper)
                counts += their_counts
                for name, writer in writers.items():
                    commit_segments(writer, own[name], extra[name])
        except BaseException:
            if helper is not None and helper.poll() is None:
                helper.kill()
            for writer in writers.values():
                if not writer.is_closed:
                    writer.cancel()
            raise
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)", counts)
        conn.execute("COMMIT")

    def _open_for_writing(self) -> dict[str, Any]:
        from whoosh import index

        self.index_dir.mkdir(parents=True, exist_ok=True)
        return {name: index.open_dir(self.index_dir, indexname=name)
                if index.exists_in(self.index_dir, indexname=name)
                else index.create_in(self.index_dir, schema(), indexname=name)
                for name in (STEPS, TRACES)}

    # -- checks and reading -------------------------------------------------------------------

    def problems(self) -> list[str]:
        found = super().problems()
        if found:
            return found
        try:
            held = self.read(lambda indexes: {n: ix.doc_count() for n, ix in indexes.items()},
                             None)
        except Exception as e:  # whoosh raises many kinds on a damaged folder
            return [f"{self.name}: {self.index_dir} cannot be opened ({e})"]
        if held is None:
            return [f"{self.name}: {self.index_dir} is missing"]
        with self.reader() as conn:
            (expected,) = conn.execute(
                "SELECT coalesce(sum(units), 0) FROM documents").fetchone()
            (traces,) = conn.execute("SELECT count(*) FROM documents").fetchone()
            (dirty,) = conn.execute("SELECT count(*) FROM dirty").fetchone()
        if dirty:
            return [f"{self.name}: {dirty} units were never written to the index"]
        if (held[TRACES], held[STEPS]) != (traces, expected - traces):
            return [f"{self.name}: the index holds {held[TRACES]} trace and {held[STEPS]} step "
                    f"documents, the side tables {traces} and {expected - traces}"]
        return []

    def open_indexes(self) -> dict[str, Any] | None:
        """The ``traces`` and ``steps`` indexes, opened read-only; None when never written."""
        from whoosh import index

        if not all(index.exists_in(self.index_dir, indexname=n) for n in (STEPS, TRACES)):
            return None
        return {name: index.open_dir(self.index_dir, indexname=name, readonly=True)
                for name in (STEPS, TRACES)}

    def read(self, read: Callable[[dict[str, Any]], T], empty: T) -> T:
        """``read(indexes)`` on freshly opened indexes (``empty`` when never written), again
        when a concurrent commit broke it: an import catching the index up commits new
        segments, and whoosh then deletes the files of the ones it merged, which a reader may
        not have opened yet. At most :data:`READ_ATTEMPTS` attempts."""
        for attempt in range(READ_ATTEMPTS):
            try:
                indexes = self.open_indexes()
                return empty if indexes is None else read(indexes)
            except OpentracesError:
                raise  # a bad query, not a moving index
            except Exception:  # whoosh fails in assorted ways on files deleted under it
                if attempt == READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def doc_count(self) -> int:
        """Documents in both indexes (0 when never written)."""
        return self.read(lambda indexes: sum(ix.doc_count() for ix in indexes.values()), 0)

    def built_at(self) -> str | None:
        """When the index was last committed (the newest table of contents), ISO UTC."""
        moments = [stat.st_mtime for p in self.index_dir.glob("*.toc")
                   if (stat := _stat(p)) is not None]
        if not moments:
            return None
        return datetime.fromtimestamp(max(moments), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def bytes_on_disk(self) -> int:
        files = [self.path, *self.index_dir.glob("*")] if self.index_dir.exists() else \
            [self.path]
        return sum(stat.st_size for p in files if (stat := _stat(p)) is not None)

    def skills(self, skill: str | None = None) -> list[dict[str, Any]]:
        """Observed skills: invocations, distinct traces, last use, most recent traces."""
        if not self.path.exists():
            return []
        where, args = ("WHERE lower(skill) = lower(?)", (skill,)) if skill else ("", ())
        with self.reader() as conn:
            rows = conn.execute(
                f"SELECT skill, count(*), count(DISTINCT trace_id), max(at) FROM skills {where} "
                "GROUP BY skill ORDER BY count(*) DESC, skill", args).fetchall()
            out = []
            for name, invocations, traces, last_seen in rows:
                recent = [t for (t,) in conn.execute(
                    "SELECT trace_id FROM skills WHERE skill = ? GROUP BY trace_id "
                    "ORDER BY max(coalesce(at, '')) DESC, trace_id LIMIT 5", (name,))]
                out.append({"skill": name, "invocations": invocations, "traces": traces,
                            "last_seen": last_seen, "recent_traces": recent})
        return out



__all__ = ["CASE_SENSITIVE_FACETS", "FACETS", "INHERITED_FACETS", "NO_PHRASE_FIELDS", "STEPS",
           "TEXT_FIELDS", "TRACES", "SearchIndex", "schema"]

"""Traces: the rows a :class:`~opentraces.record.TraceRecord` is assembled from, per trace.

Tables (all in ``state.sqlite``; per-row payloads are msgpack):

- ``traces``: session facts (``SessionStarted`` then ``SessionInfo``, later non-null values
  win), the agent-reported usage totals (last ``UsageTotalsRecorded`` or ``SessionEnded`` total
  wins), the end reason and the rejected-line count of the current generation;
- ``system_prompts``: prompt text by hash, per trace;
- ``sources``: per source file, its current generation and end offset;
- ``steps``: one row per step; ``StepRecorded`` writes it whole, ``StepExtended`` reads it,
  appends text, reasoning, tool calls and images, and replaces the token usage;
- ``results``: one row per (trace, tool_call_id): several ``ToolResultRecorded`` for one call
  merge (the first non-empty content wins, details are merged with later keys winning,
  ``is_error`` is OR-ed);
- ``compactions``, ``subagents``, ``skills``: one row per event, ordered by position;
- ``patches`` (``PatchRecorded``) and ``anchors`` (``AnchorRecorded``).

A tool call's ``duration_ms`` comes from its merged result detail: ``duration_ms``, else
``duration_seconds`` or ``duration`` (both in seconds, as the Codex adapter writes them).

Invariants:
- A ``SourceSegmentRead`` at offset 0 with a generation above the one recorded for its path
  means the file was rewritten and is being read again from the start: the trace's steps,
  results, compactions, sub-agent links, skills, usage totals and rejected lines are dropped
  (the re-read emits them again). Session facts, patches and anchors are kept. The importer
  appends the segment marker *before* the segment's events, which is what makes this right.
- A trace is ``committed`` only when an ``AnchorRecorded`` names one of the trace's own
  patches; nothing is inferred from commits, branches or times.
- Rows depend only on the events and their positions, so two rebuilds give equal digests.
- Within one page, step and result rows are kept in memory (:class:`_PageRows`) and written
  once at the end of the page, in the page's transaction: the stored rows are exactly those the
  event-by-event read-modify-write would leave.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from opentraces import events as ev
from opentraces import record as rc
from opentraces.events import Recorded
from opentraces.projections.base import (
    Handler,
    SqlProjection,
    in_trace_stream,
    rows_as_dicts,
)
from opentraces.projections.context_tree import context_node_id

SUMMARY_CHARS = 200

#: blob hash -> bytes, or None when the blob is not available here.
BlobReader = Callable[[str], bytes | None]


class TextPart(msgspec.Struct, frozen=True, array_like=True):
    """A piece of step text; ``blob`` holds the whole piece when ``text`` was cut."""

    text: str
    blob: str | None = None


class StepRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the steps table keeps for one step (its fields as the events gave them)."""

    role: str
    timestamp: str | None = None
    message_id: str | None = None
    agent_role: str | None = None
    cost_usd: float | None = None
    content: list[TextPart] = []
    reasoning: list[str] = []
    model: str | None = None
    call_type: str | None = None
    parent_step: int | None = None
    source_uuid: str | None = None
    is_sidechain: bool = False
    tool_calls: list[ev.ToolCall] = []
    token_usage: ev.TokenUsage | None = None
    images: list[ev.BlobRef] = []
    system_prompt_hash: str | None = None


class ResultRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The merged tool results for one tool call."""

    content: str = ""
    content_blob: str | None = None
    output_chars: int = 0
    is_error: bool = False
    no_result: bool = False
    detail: dict[str, Any] = {}
    timestamp: str | None = None


_STEP = msgspec.msgpack.Decoder(StepRow)
_RESULT = msgspec.msgpack.Decoder(ResultRow)
_USAGE = msgspec.msgpack.Decoder(ev.TokenUsage)
_COMPACTION = msgspec.msgpack.Decoder(ev.CompactionRecorded)
_PATCH = msgspec.msgpack.Decoder(ev.PatchRecorded)
_ANCHOR = msgspec.msgpack.Decoder(ev.AnchorRecorded)
_pack = msgspec.msgpack.encode

#: Tables cleared for a trace when its source file is read again from the start.
_RESTART_TABLES = ("steps", "results", "compactions", "subagents", "skills")



def prompt_hash(text: str) -> str:
    """The key of a system prompt in ``TraceRecord.system_prompts`` (sha256, hex)."""
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


@dataclass
class _PageRows:
    """What one page has read or changed, so each row is read and written at most once per page.

    Why: an import appends thousands of ``StepExtended`` and ``ToolResultRecorded`` events for
    the same few rows; reading and rewriting a row per event was most of the catch-up time.

    Invariant: an entry here is the current value of its row, newer than what SQLite holds
    until :meth:`Traces.end_page` writes it (an entry is only made when a handler changes the
    row, so every entry is written). A generation restart deletes a trace's rows in SQLite and
    drops its entries here in the same step, so both stay equal to the event-by-event result.
    """

    #: Traces whose header row is known to exist (``INSERT OR IGNORE`` already run this page).
    headers: set[str] = field(default_factory=set)
    #: trace_id -> ``traces.system_prompt_hash`` as stored (the UPDATEs run immediately).
    prompts: dict[str, str | None] = field(default_factory=dict)
    #: trace_id -> step_index -> row, to be written by ``end_page``.
    steps: dict[str, dict[int, StepRow]] = field(default_factory=dict)
    #: trace_id -> tool_call_id -> (step_index, row), to be written by ``end_page``.
    results: dict[str, dict[str, tuple[int, ResultRow]]] = field(default_factory=dict)
    #: trace_id -> the tool_call_ids SQLite holds results for (most results are for new calls:
    #: one query per trace spares a lookup per result).
    stored_results: dict[str, set[str]] = field(default_factory=dict)


class Traces(SqlProjection):
    name: ClassVar[str] = "traces"
    version: ClassVar[int] = 2
    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS traces (
        trace_id TEXT PRIMARY KEY,
        session_id TEXT,
        agent_name TEXT,
        agent_version TEXT,
        agent_model TEXT,
        project TEXT,
        cwd TEXT,
        git_branch TEXT,
        git_commit TEXT,
        repository_url TEXT,
        title TEXT,
        description TEXT,
        agent_type TEXT,
        parent_session_id TEXT,
        parent_trace_id TEXT,
        parent_step_index INTEGER,
        source_path TEXT,
        started_at TEXT,
        ended INTEGER NOT NULL DEFAULT 0,
        end_reason TEXT,
        system_prompt_hash TEXT,
        usage BLOB,
        usage_cost REAL,
        rejected_lines INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS system_prompts (
        trace_id TEXT NOT NULL, hash TEXT NOT NULL, text TEXT NOT NULL,
        PRIMARY KEY (trace_id, hash));
    CREATE TABLE IF NOT EXISTS sources (
        trace_id TEXT NOT NULL, path TEXT NOT NULL, generation INTEGER NOT NULL,
        end_offset INTEGER NOT NULL, first_position INTEGER NOT NULL,
        PRIMARY KEY (trace_id, path));
    CREATE TABLE IF NOT EXISTS steps (
        trace_id TEXT NOT NULL, step_index INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (trace_id, step_index));
    CREATE TABLE IF NOT EXISTS results (
        trace_id TEXT NOT NULL, tool_call_id TEXT NOT NULL, step_index INTEGER NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (trace_id, tool_call_id));
    CREATE TABLE IF NOT EXISTS compactions (
        trace_id TEXT NOT NULL, position INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (trace_id, position));
    CREATE TABLE IF NOT EXISTS subagents (
        trace_id TEXT NOT NULL, position INTEGER NOT NULL, step_index INTEGER NOT NULL,
        tool_call_id TEXT, child_trace_id TEXT NOT NULL, PRIMARY KEY (trace_id, position));
    CREATE TABLE IF NOT EXISTS skills (
        trace_id TEXT NOT NULL, position INTEGER NOT NULL, step_index INTEGER NOT NULL,
        skill TEXT NOT NULL, via TEXT NOT NULL, PRIMARY KEY (trace_id, position));
    CREATE TABLE IF NOT EXISTS patches (
        patch_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL, position INTEGER NOT NULL,
        data BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS patches_by_trace ON patches (trace_id, position);
    CREATE TABLE IF NOT EXISTS anchors (
        anchor_id TEXT PRIMARY KEY, patch_id TEXT NOT NULL, trace_id TEXT NOT NULL,
        position INTEGER NOT NULL, data BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS anchors_by_trace ON anchors (trace_id, position);
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._page = _PageRows()

    def handlers(self) -> dict[type[ev.Event], Handler]:
        capture: dict[type[ev.Event], Handler] = {
            ev.SessionStarted: self._started,
            ev.SessionInfo: self._info,
            ev.SourceSegmentRead: self._segment,
            ev.SourceLineRejected: self._rejected,
            ev.StepRecorded: self._step,
            ev.StepExtended: self._extended,
            ev.ToolResultRecorded: self._result,
            ev.CompactionRecorded: self._compaction,
            ev.SubagentLinked: self._subagent,
            ev.SkillInvoked: self._skill,
            ev.UsageTotalsRecorded: self._usage_totals,
            ev.SessionEnded: self._ended,
        }
        # Capture events count only in trace streams; the rest name their trace themselves.
        wrapped: dict[type[ev.Event], Handler] = {t: in_trace_stream(h)
                                                   for t, h in capture.items()}
        wrapped[ev.PatchRecorded] = self._patch
        wrapped[ev.AnchorRecorded] = self._anchor
        return wrapped

    # -- page buffering (see _PageRows) --------------------------------------------------------

    def begin_page(self, conn: sqlite3.Connection) -> None:
        self._page = _PageRows()

    def end_page(self, conn: sqlite3.Connection) -> None:
        page, self._page = self._page, _PageRows()
        conn.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                         [(trace_id, index, _pack(row))
                          for trace_id, rows in page.steps.items()
                          for index, row in rows.items()])
        conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                         [(trace_id, call_id, index, _pack(row))
                          for trace_id, rows in page.results.items()
                          for call_id, (index, row) in rows.items()])

    # -- handlers: rows change in SQLite, except step and result rows (buffered per page) -----

    def _header(self, conn: sqlite3.Connection, trace_id: str) -> None:
        if trace_id not in self._page.headers:
            conn.execute("INSERT OR IGNORE INTO traces (trace_id) VALUES (?)", (trace_id,))
            self._page.headers.add(trace_id)

    def _stored_results(self, conn: sqlite3.Connection, trace_id: str) -> set[str]:
        stored = self._page.stored_results.get(trace_id)
        if stored is None:
            stored = self._page.stored_results[trace_id] = {c for (c,) in conn.execute(
                "SELECT tool_call_id FROM results WHERE trace_id = ?", (trace_id,))}
        return stored

    def _prompt(self, conn: sqlite3.Connection, trace_id: str) -> str | None:
        if trace_id not in self._page.prompts:
            (self._page.prompts[trace_id],) = conn.execute(
                "SELECT system_prompt_hash FROM traces WHERE trace_id = ?",
                (trace_id,)).fetchone()
        return self._page.prompts[trace_id]

    def _started(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionStarted = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute(
            "UPDATE traces SET session_id = ?, agent_name = ?, "
            "agent_version = coalesce(?, agent_version), agent_model = coalesce(?, agent_model), "
            "project = coalesce(?, project), cwd = coalesce(?, cwd), "
            "git_branch = coalesce(?, git_branch), title = coalesce(?, title), "
            "parent_trace_id = coalesce(?, parent_trace_id), "
            "parent_step_index = coalesce(?, parent_step_index), "
            "source_path = coalesce(?, source_path), started_at = coalesce(?, started_at) "
            "WHERE trace_id = ?",
            (e.session_id, e.agent.name, e.agent.version, e.agent.model, e.project, e.cwd,
             e.git_branch or None, e.title, e.parent_trace_id, e.parent_step_index,
             e.source_path, e.at, trace_id))

    def _info(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionInfo = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        digest = None
        if e.system_prompt:
            digest = prompt_hash(e.system_prompt)
            conn.execute("INSERT OR IGNORE INTO system_prompts VALUES (?, ?, ?)",
                         (trace_id, digest, e.system_prompt))
        conn.execute(
            "UPDATE traces SET cwd = coalesce(?, cwd), agent_version = coalesce(?, agent_version), "
            "agent_model = coalesce(?, agent_model), git_branch = coalesce(?, git_branch), "
            "git_commit = coalesce(?, git_commit), "
            "repository_url = coalesce(?, repository_url), title = coalesce(?, title), "
            "system_prompt_hash = coalesce(?, system_prompt_hash), "
            "parent_session_id = coalesce(?, parent_session_id), "
            "agent_type = coalesce(?, agent_type), description = coalesce(?, description) "
            "WHERE trace_id = ?",
            (e.cwd, e.agent_version, e.model, e.git_branch or None, e.git_commit or None,
             e.repository_url or None, e.title, digest, e.parent_session_id, e.agent_type,
             e.description, trace_id))
        if digest is not None:  # coalesce: a new hash replaces the stored one
            self._page.prompts[trace_id] = digest

    def _segment(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SourceSegmentRead = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        row = conn.execute("SELECT generation FROM sources WHERE trace_id = ? AND path = ?",
                           (trace_id, e.path)).fetchone()
        if row is not None and e.start_offset == 0 and e.generation > row[0]:
            for table in _RESTART_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE trace_id = ?", (trace_id,))
            self._page.steps.pop(trace_id, None)
            self._page.results.pop(trace_id, None)
            self._page.stored_results.pop(trace_id, None)
            conn.execute("UPDATE traces SET usage = NULL, usage_cost = NULL, "
                         "rejected_lines = 0 WHERE trace_id = ?", (trace_id,))
        conn.execute(
            "INSERT INTO sources VALUES (?, ?, ?, ?, ?) ON CONFLICT (trace_id, path) DO UPDATE "
            "SET generation = max(generation, excluded.generation), "
            "end_offset = excluded.end_offset",
            (trace_id, e.path, e.generation, e.end_offset, rec.position or 0))

    def _rejected(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        self._header(conn, trace_id)
        conn.execute("UPDATE traces SET rejected_lines = rejected_lines + 1 WHERE trace_id = ?",
                     (trace_id,))

    def _step(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        prompt = self._prompt(conn, trace_id)
        row = StepRow(
            role=e.role, timestamp=e.at, message_id=e.message_id, agent_role=e.agent_role,
            cost_usd=e.cost_usd,
            content=[TextPart(e.content, e.content_blob.hash if e.content_blob else None)]
            if e.content or e.content_blob else [],
            reasoning=[e.reasoning_content] if e.reasoning_content else [], model=e.model,
            call_type=e.call_type, parent_step=e.parent_step, source_uuid=e.source_uuid,
            is_sidechain=e.is_sidechain, tool_calls=list(e.tool_calls),
            token_usage=e.token_usage, images=list(e.images),
            system_prompt_hash=prompt if e.role == "agent" else None)
        self._page.steps.setdefault(trace_id, {})[e.step_index] = row

    def _extended(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepExtended = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        rows = self._page.steps.setdefault(trace_id, {})
        row = rows.get(e.step_index)
        if row is None:
            found = conn.execute("SELECT data FROM steps WHERE trace_id = ? AND step_index = ?",
                                 (trace_id, e.step_index)).fetchone()
            # Only agent responses are extended; a lost first line still leaves an agent step.
            row = _STEP.decode(found[0]) if found else StepRow(role="agent", timestamp=e.at)
        rows[e.step_index] = msgspec.structs.replace(
            row,
            content=[*row.content, TextPart(e.content)] if e.content else row.content,
            reasoning=[*row.reasoning, e.reasoning_content] if e.reasoning_content
            else row.reasoning,
            tool_calls=[*row.tool_calls, *e.tool_calls], images=[*row.images, *e.images],
            token_usage=e.token_usage if e.token_usage is not None else row.token_usage)

    def _result(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.ToolResultRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        rows = self._page.results.setdefault(trace_id, {})
        found = rows.get(e.tool_call_id)
        if found is None and e.tool_call_id in self._stored_results(conn, trace_id):
            stored = conn.execute(
                "SELECT step_index, data FROM results WHERE trace_id = ? AND tool_call_id = ?",
                (trace_id, e.tool_call_id)).fetchone()
            found = (stored[0], _RESULT.decode(stored[1]))
        new = ResultRow(content=e.content,
                        content_blob=e.content_blob.hash if e.content_blob else None,
                        output_chars=e.output_chars or len(e.content), is_error=e.is_error,
                        no_result=e.no_result, detail=dict(e.detail), timestamp=e.at)
        step_index = e.step_index
        if found is not None:
            step_index, new = found[0], merge_results(found[1], new)
        rows[e.tool_call_id] = (step_index, new)

    def _compaction(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        self._header(conn, trace_id)
        conn.execute("INSERT OR REPLACE INTO compactions VALUES (?, ?, ?)",
                     (trace_id, rec.position or 0, _pack(rec.event)))

    def _subagent(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SubagentLinked = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute("INSERT OR REPLACE INTO subagents VALUES (?, ?, ?, ?, ?)",
                     (trace_id, rec.position or 0, e.step_index, e.tool_call_id,
                      e.child_trace_id))

    def _skill(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SkillInvoked = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute("INSERT OR REPLACE INTO skills VALUES (?, ?, ?, ?, ?)",
                     (trace_id, rec.position or 0, e.step_index, e.skill, e.via))

    def _usage_totals(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.UsageTotalsRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute("UPDATE traces SET usage = ?, usage_cost = ? WHERE trace_id = ?",
                     (_pack(e.usage), e.cost_usd, trace_id))

    def _ended(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionEnded = rec.event  # type: ignore[assignment]
        self._header(conn, trace_id)
        conn.execute("UPDATE traces SET ended = 1, end_reason = coalesce(?, end_reason), "
                     "usage = coalesce(?, usage) WHERE trace_id = ?",
                     (e.reason, _pack(e.total_usage) if e.total_usage else None, trace_id))

    def _patch(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.PatchRecorded = rec.event  # type: ignore[assignment]
        self._header(conn, e.trace_id)
        conn.execute("INSERT OR REPLACE INTO patches VALUES (?, ?, ?, ?)",
                     (e.patch_id, e.trace_id, rec.position or 0, _pack(e)))

    def _anchor(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.AnchorRecorded = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR REPLACE INTO anchors VALUES (?, ?, ?, ?, ?)",
                     (e.anchor_id, e.patch_id, e.trace_id, rec.position or 0, _pack(e)))

    # -- reading ------------------------------------------------------------------------------

    def resolve(self, prefix: str) -> list[str]:
        """Trace ids equal to ``prefix`` (one) or else starting with it (sorted, maybe many)."""
        if not self.path.exists():
            return []
        with self.reader() as conn:
            if conn.execute("SELECT 1 FROM traces WHERE trace_id = ?", (prefix,)).fetchone():
                return [prefix]
            rows = conn.execute(
                "SELECT trace_id FROM traces WHERE substr(trace_id, 1, ?) = ? ORDER BY trace_id",
                (len(prefix), prefix)).fetchall()
        return [r[0] for r in rows]

    def record(self, trace_id: str, blobs: BlobReader | None = None) -> rc.TraceRecord | None:
        """The assembled TraceRecord of a trace, or None if the view has no such trace.

        ``blobs`` reads blob content: text cut at capture (long messages, tool outputs, tool
        inputs) is restored from its blob when given and available, else the kept prefix stays.
        """
        if not self.path.exists():
            return None
        with self.reader() as conn:
            cur = conn.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,))
            headers = rows_as_dicts(cur)
            if not headers:
                return None
            rows = _TraceRows.read(conn, trace_id)
        return assemble(headers[0], rows, blobs or _no_blobs)



def merge_results(old: ResultRow, new: ResultRow) -> ResultRow:
    """Two results for one tool call: first non-empty content, merged details, OR-ed error."""
    keep_old = bool(old.content or old.content_blob)
    return ResultRow(
        content=old.content if keep_old else new.content,
        content_blob=old.content_blob if keep_old else new.content_blob,
        output_chars=old.output_chars if keep_old else new.output_chars,
        is_error=old.is_error or new.is_error,
        no_result=old.no_result and new.no_result,
        detail={**old.detail, **new.detail},
        timestamp=old.timestamp or new.timestamp)


def _no_blobs(_hash: str) -> bytes | None:
    return None


# ---------------------------------------------------------------------------------------------
# Assembly: rows -> TraceRecord (pure)


@dataclass
class _TraceRows:
    steps: list[tuple[int, StepRow]]
    results: dict[str, tuple[int, ResultRow]]
    compactions: list[ev.CompactionRecorded]
    subagents: list[tuple[int, str | None, str]]
    skills: list[tuple[int, str, str]]
    patches: list[ev.PatchRecorded]
    anchors: list[ev.AnchorRecorded]
    prompts: dict[str, str]
    sources: list[tuple[str, int]]

    @classmethod
    def read(cls, conn: sqlite3.Connection, trace_id: str) -> _TraceRows:
        q = (trace_id,)
        return cls(
            steps=[(i, _STEP.decode(d)) for i, d in conn.execute(
                "SELECT step_index, data FROM steps WHERE trace_id = ? ORDER BY step_index", q)],
            results={c: (i, _RESULT.decode(d)) for c, i, d in conn.execute(
                "SELECT tool_call_id, step_index, data FROM results WHERE trace_id = ? "
                "ORDER BY step_index, tool_call_id", q)},
            compactions=[_COMPACTION.decode(d) for (d,) in conn.execute(
                "SELECT data FROM compactions WHERE trace_id = ? ORDER BY position", q)],
            subagents=list(conn.execute(
                "SELECT step_index, tool_call_id, child_trace_id FROM subagents "
                "WHERE trace_id = ? ORDER BY position", q)),
            skills=list(conn.execute(
                "SELECT step_index, skill, via FROM skills WHERE trace_id = ? ORDER BY position",
                q)),
            patches=[_PATCH.decode(d) for (d,) in conn.execute(
                "SELECT data FROM patches WHERE trace_id = ? ORDER BY position", q)],
            # Only anchors naming a patch of this very trace count (see the module invariants).
            anchors=[_ANCHOR.decode(d) for (d,) in conn.execute(
                "SELECT a.data FROM anchors a JOIN patches p ON p.patch_id = a.patch_id "
                "WHERE a.trace_id = ? AND p.trace_id = ? ORDER BY a.position",
                (trace_id, trace_id))],
            prompts=dict(conn.execute(
                "SELECT hash, text FROM system_prompts WHERE trace_id = ? ORDER BY hash", q)),
            sources=list(conn.execute(
                "SELECT path, generation FROM sources WHERE trace_id = ? "
                "ORDER BY first_position", q)))


def assemble(head: dict[str, Any], rows: _TraceRows, blobs: BlobReader) -> rc.TraceRecord:
    links = _links_by_step(rows.subagents)
    called = {c.tool_call_id for _, s in rows.steps for c in s.tool_calls}
    orphans: dict[int, list[str]] = {}
    for call_id, (step_index, _) in rows.results.items():
        if call_id not in called:
            orphans.setdefault(step_index, []).append(call_id)
    steps = [_step(head["trace_id"], i, s, rows.results, orphans.get(i, []), links.get(i), blobs)
             for i, s in rows.steps]
    patches, committed, commit_sha = _patches(rows.patches, rows.anchors)
    usage, usage_source = _usage(head, rows.steps)
    start, end = _span(head, steps)
    prompts = [(r.is_sidechain, s.content) for (_, r), s in zip(rows.steps, steps, strict=True)
               if s.role == "user" and s.content]
    # A sub-agent's own trace is all sidechain: its first prompt is then the task.
    description = next((c for side, c in prompts if not side), None) or next(
        (c for _, c in prompts), None)
    record = rc.TraceRecord(
        trace_id=head["trace_id"], session_id=head["session_id"] or "",
        timestamp_start=start, timestamp_end=end, execution_context="devtime",
        task=rc.Task(description=description, source="user_prompt" if description else None,
                     repository=owner_repo(head["repository_url"]),
                     repository_url=head["repository_url"], base_commit=head["git_commit"]),
        agent=rc.Agent(name=head["agent_name"] or "unknown", version=head["agent_version"],
                       model=head["agent_model"] or next(
                           (s.model for s in steps if s.role == "agent" and s.model), None)),
        environment=rc.Environment(vcs=rc.VCS(
            type="git" if head["git_commit"] or head["git_branch"] else "none",
            base_commit=head["git_commit"], branch=head["git_branch"])),
        system_prompts=rows.prompts, steps=steps,
        outcome=rc.Outcome(committed=committed, commit_sha=commit_sha),
        metrics=_metrics(steps, rows.steps, usage, head["usage_cost"], start, end),
        lifecycle="final" if committed else "provisional",
        generation_index=max((g for _, g in rows.sources), default=0),
        patches=patches, git_links=_git_links(rows.anchors, head),
        metadata=_metadata(head, rows, usage_source))
    return record.with_content_hash()


def _links_by_step(subagents: list[tuple[int, str | None, str]]) -> dict[int, str]:
    links: dict[int, str] = {}
    for step_index, _call, child in subagents:
        links.setdefault(step_index, child)  # the first link of a step is its reference
    return links


def _text(parts: list[TextPart], blobs: BlobReader) -> str | None:
    pieces = []
    for part in parts:
        whole = blobs(part.blob) if part.blob else None
        pieces.append(whole.decode("utf-8", "backslashreplace") if whole is not None
                      else part.text)
    # Adapters put the separator between blocks into the extension's text itself.
    return "".join(p for p in pieces if p) or None


def _step(trace_id: str, index: int, row: StepRow, results: dict[str, tuple[int, ResultRow]],
          orphans: list[str], subagent: str | None, blobs: BlobReader) -> rc.Step:
    calls, observations = [], []
    for call in row.tool_calls:
        result = results.get(call.tool_call_id)
        calls.append(rc.ToolCall(tool_call_id=call.tool_call_id, tool_name=call.tool_name,
                                 input=_call_input(call, blobs),
                                 duration_ms=_duration_ms(result[1]) if result else None))
        observations.append(_observation(call.tool_call_id, result, blobs))
    observations += [_observation(c, results[c], blobs) for c in orphans]
    usage = row.token_usage or ev.TokenUsage()
    return rc.Step(
        step_index=index, role=row.role, content=_text(row.content, blobs),
        reasoning_content="".join(row.reasoning) or None, model=row.model,
        system_prompt_hash=row.system_prompt_hash, agent_role=row.agent_role,
        parent_step=row.parent_step, call_type=row.call_type, subagent_trajectory_ref=subagent,
        tool_calls=calls, observations=observations,
        token_usage=rc.TokenUsage(input_tokens=usage.input_tokens,
                                  output_tokens=usage.output_tokens,
                                  cache_read_tokens=usage.cache_read_tokens,
                                  cache_write_tokens=usage.cache_write_tokens),
        timestamp=row.timestamp,
        # computed, not stored: the context tree derives the same id on its own
        context_node_id=context_node_id(trace_id, index, row.source_uuid))


def _call_input(call: ev.ToolCall, blobs: BlobReader) -> dict[str, Any]:
    if call.input_blob is not None:
        data = blobs(call.input_blob.hash)
        if data is not None:
            try:
                value = msgspec.json.decode(data)
            except msgspec.DecodeError:
                value = None
            if isinstance(value, dict):
                return value
    return dict(call.input)


#: Result detail keys that carry a tool's run time, with their unit in milliseconds.
DURATION_KEYS = (("duration_ms", 1), ("duration_seconds", 1000), ("duration", 1000))


def _duration_ms(result: ResultRow) -> int | None:
    for key, scale in DURATION_KEYS:
        value = result.detail.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return round(value * scale)
    return None


def _observation(call_id: str, found: tuple[int, ResultRow] | None,
                 blobs: BlobReader) -> rc.Observation:
    if found is None or found[1].no_result:
        return rc.Observation(source_call_id=call_id, error="no_result")
    result = found[1]
    content = _text([TextPart(result.content, result.content_blob)], blobs)
    return rc.Observation(source_call_id=call_id, content=content,
                          output_summary=_summary(content),
                          error="tool_error" if result.is_error else None)


def _summary(content: str | None) -> str | None:
    if not content:
        return None
    line = next((ln.strip() for ln in content.splitlines() if ln.strip()), "")
    return line[:SUMMARY_CHARS] or None


def _patches(patches: list[ev.PatchRecorded], anchors: list[ev.AnchorRecorded]
             ) -> tuple[list[rc.Patch], bool, str | None]:
    by_patch: dict[str, list[ev.AnchorRecorded]] = {}
    for a in anchors:  # in log order: the last anchor of a patch is its current one
        by_patch.setdefault(a.patch_id, []).append(a)
    out = []
    for p in patches:
        found = by_patch.get(p.patch_id, [])
        anchor = None
        if found:
            last = found[-1]
            anchor = rc.GitAnchor(last_searched_at=last.at or "", found=True,
                                  commit_sha=last.commit, path=last.path,
                                  evidence_tier=last.evidence_tier,
                                  evidence_firmness=last.evidence_firmness)
        earlier = list(dict.fromkeys(a.commit for a in reversed(found[:-1])))
        out.append(rc.Patch(
            patch_id=p.patch_id, file_path=p.path, step_index=p.step_index,
            tool_call_id=p.tool_call_id,
            snapshot_before_id=p.before.hash if p.before else None,
            snapshot_after_id=p.after.hash if p.after else None, anchor=anchor,
            superseded_by=[c for c in earlier if anchor is None or c != anchor.commit_sha]))
    committed = bool(anchors)
    return out, committed, anchors[-1].commit if anchors else None


def link_tier(evidence_tier: str) -> str:
    """The schema's git-link tier for an anchor's evidence tier (exact, divergent, overlap)."""
    if evidence_tier.startswith(("exact", "git_clean", "patch_id")):
        return "tool_emitted"
    if evidence_tier.startswith(("overlapping", "time_")):
        return "overlapping"
    return "tool_emitted_with_divergence"


_TIER_STRENGTH = ("tool_emitted", "tool_emitted_with_divergence", "overlapping")


def _git_links(anchors: list[ev.AnchorRecorded], head: dict[str, Any]) -> list[rc.GitLink]:
    tiers: dict[str, str] = {}
    for a in anchors:  # one link per commit, with the strongest evidence seen for it
        tier = link_tier(a.evidence_tier)
        known = tiers.get(a.commit)
        if known is None or _TIER_STRENGTH.index(tier) < _TIER_STRENGTH.index(known):
            tiers[a.commit] = tier
    return [rc.GitLink(revision=commit, tier=tier, repo_url=head["repository_url"])
            for commit, tier in tiers.items()]


def _usage(head: dict[str, Any], steps: list[tuple[int, StepRow]]) -> tuple[ev.TokenUsage, str]:
    """The agent's own reported totals when it gave any, else the sum over steps."""
    if head["usage"] is not None:
        return _USAGE.decode(head["usage"]), "agent_reported"
    totals = [0, 0, 0, 0]
    for _, s in steps:
        u = s.token_usage
        if u is not None:
            totals = [totals[0] + u.input_tokens, totals[1] + u.output_tokens,
                      totals[2] + u.cache_read_tokens, totals[3] + u.cache_write_tokens]
    return ev.TokenUsage(*totals), "step_sum"


def _span(head: dict[str, Any], steps: list[rc.Step]) -> tuple[str | None, str | None]:
    times = sorted(t for t in (s.timestamp for s in steps) if t)
    if not times:
        return head["started_at"], None
    return times[0], times[-1]


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except (ValueError, TypeError):  # unparseable or naive-vs-aware times: no duration
        return None
    return round(delta.total_seconds(), 3)


def _metrics(steps: list[rc.Step], rows: list[tuple[int, StepRow]], usage: ev.TokenUsage,
             reported_cost: float | None, start: str | None, end: str | None) -> rc.Metrics:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    costs = [r.cost_usd for _, r in rows if r.cost_usd is not None]
    if reported_cost is not None:
        cost: float | None = reported_cost
    else:
        cost = round(sum(costs), 6) if costs else None
    return rc.Metrics(
        total_steps=len(steps), total_input_tokens=usage.input_tokens,
        total_output_tokens=usage.output_tokens,
        total_cache_read_tokens=usage.cache_read_tokens,
        total_cache_creation_tokens=usage.cache_write_tokens,
        total_duration_s=_seconds_between(start, end),
        cache_hit_rate=round(usage.cache_read_tokens / prompt, 6) if prompt else None,
        estimated_cost_usd=cost)


def _metadata(head: dict[str, Any], rows: _TraceRows, usage_source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source_paths": [p for p, _ in rows.sources] or
        ([head["source_path"]] if head["source_path"] else []),
        "rejected_lines": head["rejected_lines"],
        "token_usage_source": usage_source,
        "compactions": [{"step_index": c.step_index, "boundary_uuid": c.boundary_uuid,
                         "logical_parent_uuid": c.logical_parent_uuid, "trigger": c.trigger,
                         "pre_tokens": c.pre_tokens, "summary": c.summary}
                        for c in rows.compactions],
        "skills": [{"step_index": i, "skill": s, "via": v} for i, s, v in rows.skills],
        "subagents": [{"step_index": i, "tool_call_id": c, "trace_id": t}
                      for i, c, t in rows.subagents],
    }
    optional = {"title": head["title"], "project": head["project"], "cwd": head["cwd"],
                "description": head["description"], "agent_type": head["agent_type"],
                "parent_trace_id": head["parent_trace_id"],
                "parent_step_index": head["parent_step_index"],
                "parent_session_id": head["parent_session_id"],
                "end_reason": head["end_reason"]}
    meta.update({k: v for k, v in optional.items() if v is not None})
    meta["ended"] = bool(head["ended"])
    return meta


def owner_repo(url: str | None) -> str | None:
    """``owner/repo`` from a remote URL (https, ssh or scp-like), or None."""
    if not url:
        return None
    path = url.rstrip("/").removesuffix(".git")
    if "://" in path:
        path = path.split("://", 1)[1].partition("/")[2]
    elif ":" in path:
        path = path.split(":", 1)[1]
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None

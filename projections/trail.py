"""Trail: patches, their current anchors and their latest survival, for blame/track/graph.

Tables (``state.sqlite``):

- ``patches``: one row per ``PatchRecorded`` (first one wins: re-derivation appends none);
- ``anchors``: one row per ``AnchorRecorded``; ``current_anchor``: patch -> its anchor, the
  last ``AnchorRecorded`` for the patch in log order (an amend or rebase re-anchors);
- ``survival``: per (patch, anchor), the last ``SurvivalObserved``;
- ``requests``: ``AnchorSearchRequested`` events (what the post-commit hook asked for).

Invariants:
- Rows depend only on the events and their positions: two rebuilds give equal digests.
- Capture events are ignored, so catching up costs one page read per page of the log (eager).
"""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

from opentraces import events as ev
from opentraces.events import Recorded
from opentraces.projections.base import Handler, SqlProjection, rows_as_dicts


def _range(r: ev.LineRange | None) -> tuple[int | None, int | None]:
    return (r.start, r.end) if r is not None else (None, None)


class Trail(SqlProjection):
    name: ClassVar[str] = "trail"
    version: ClassVar[int] = 1
    eager: ClassVar[bool] = True
    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS patches (
        patch_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL, step_index INTEGER NOT NULL,
        tool_call_id TEXT NOT NULL, tool_name TEXT NOT NULL, path TEXT NOT NULL,
        file_path TEXT, repo_root TEXT, range_start INTEGER, range_end INTEGER,
        authored_hash TEXT, authored_lines INTEGER NOT NULL, hunks TEXT, change TEXT NOT NULL,
        at TEXT, position INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS patches_by_trace ON patches (trace_id, position);
    CREATE TABLE IF NOT EXISTS anchors (
        anchor_id TEXT PRIMARY KEY, patch_id TEXT NOT NULL, trace_id TEXT NOT NULL,
        repo_key TEXT NOT NULL, commit_sha TEXT NOT NULL, path TEXT NOT NULL,
        range_start INTEGER, range_end INTEGER, evidence_tier TEXT NOT NULL,
        evidence_firmness TEXT NOT NULL, similarity REAL NOT NULL, subject TEXT,
        committed_at TEXT, lines INTEGER NOT NULL, position INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS anchors_by_commit ON anchors (commit_sha);
    CREATE TABLE IF NOT EXISTS current_anchor (
        patch_id TEXT PRIMARY KEY, anchor_id TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS survival (
        patch_id TEXT NOT NULL, anchor_id TEXT NOT NULL, head TEXT NOT NULL,
        survival_state TEXT NOT NULL, retention_fraction REAL, current_path TEXT,
        killing_commit TEXT, observed_at TEXT, position INTEGER NOT NULL,
        PRIMARY KEY (patch_id, anchor_id));
    CREATE TABLE IF NOT EXISTS requests (
        position INTEGER PRIMARY KEY, repo_key TEXT NOT NULL, commit_sha TEXT NOT NULL,
        path TEXT, source TEXT NOT NULL);
    """

    def handlers(self) -> dict[type[ev.Event], Handler]:
        return {ev.PatchRecorded: self._patch, ev.AnchorRecorded: self._anchor,
                ev.SurvivalObserved: self._survival,
                ev.AnchorSearchRequested: self._request}

    def _patch(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.PatchRecorded = rec.event  # type: ignore[assignment]
        conn.execute(
            "INSERT OR IGNORE INTO patches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.patch_id, e.trace_id, e.step_index, e.tool_call_id, e.tool_name, e.path,
             e.file_path, e.repo_root, *_range(e.range), e.authored_hash, e.authored_lines,
             e.hunks.hash if e.hunks else None, e.change, e.at, rec.position or 0))

    def _anchor(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.AnchorRecorded = rec.event  # type: ignore[assignment]
        conn.execute(
            "INSERT OR REPLACE INTO anchors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.anchor_id, e.patch_id, e.trace_id, e.repo_key, e.commit, e.path,
             *_range(e.range), e.evidence_tier, e.evidence_firmness, e.similarity, e.subject,
             e.at, e.lines, rec.position or 0))
        conn.execute("INSERT OR REPLACE INTO current_anchor VALUES (?, ?)",
                     (e.patch_id, e.anchor_id))

    def _survival(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.SurvivalObserved = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR REPLACE INTO survival VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (e.patch_id, e.anchor_id, e.head, e.survival_state, e.retention_fraction,
                      e.current_path, e.killing_commit, e.at, rec.position or 0))

    def _request(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.AnchorSearchRequested = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?)",
                     (rec.position or 0, e.repo_key, e.commit, e.path, e.source))

    # -- reading ------------------------------------------------------------------------------

    _PATCH_VIEW = """
        SELECT p.patch_id, p.trace_id, p.step_index, p.tool_name, p.path, p.file_path,
               p.range_start, p.range_end, p.authored_lines, p.hunks, p.at,
               a.anchor_id, a.repo_key, a.commit_sha, a.path AS anchor_path,
               a.range_start AS anchor_start, a.range_end AS anchor_end, a.evidence_tier,
               a.evidence_firmness, a.similarity, a.subject, a.committed_at, a.lines,
               s.survival_state, s.retention_fraction, s.current_path, s.head AS observed_head,
               s.killing_commit
        FROM patches p
        LEFT JOIN current_anchor c ON c.patch_id = p.patch_id
        LEFT JOIN anchors a ON a.anchor_id = c.anchor_id
        LEFT JOIN survival s ON s.patch_id = p.patch_id AND s.anchor_id = a.anchor_id
    """

    def _query(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.reader() as conn:
            return rows_as_dicts(conn.execute(
                f"{self._PATCH_VIEW} WHERE {where} ORDER BY p.position", params))

    def patches_of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every patch of a trace with its current anchor and latest survival (log order)."""
        return self._query("p.trace_id = ?", (trace_id,))

    def patches_in_commit(self, sha: str) -> list[dict[str, Any]]:
        """The patches whose current anchor is commit ``sha``."""
        return self._query("a.commit_sha = ?", (sha,))

    def anchored(self, trace_id: str | None = None) -> list[dict[str, Any]]:
        """Every anchored patch (of one trace, or all), in log order."""
        if trace_id is None:
            return self._query("a.anchor_id IS NOT NULL", ())
        return self._query("a.anchor_id IS NOT NULL AND p.trace_id = ?", (trace_id,))

    def trace_ids(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.reader() as conn:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT trace_id FROM patches ORDER BY trace_id")]

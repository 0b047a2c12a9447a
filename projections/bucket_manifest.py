"""Bucket manifest: one row per trace (who, where, what, how big, how safe, how synced).

Rows live in ``state.sqlite``; ``manifest.json`` beside it is rendered from the committed rows
after every page (temp file + rename), so it is always a whole, current view. Nothing in it
depends on the wall clock, so two rebuilds give byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import blake3
import msgspec

from opentraces import events as ev
from opentraces.events import Recorded
from opentraces.projections.base import Handler, SqlProjection, in_trace_stream, rows_as_dicts

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = "opentraces.bucket.manifest.v2"
TITLE_CHARS = 80


def project_slug(path: str | None) -> str | None:
    """A folder path as one token, the way agents name their per-project folders."""
    if not path:
        return None
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or None


def _title_from(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:TITLE_CHARS]
    return None


class BucketManifest(SqlProjection):
    name: ClassVar[str] = "bucket_manifest"
    version: ClassVar[int] = 3
    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS traces (
        trace_id TEXT PRIMARY KEY,
        session_id TEXT,
        agent_name TEXT,
        agent_version TEXT,
        agent_model TEXT,
        project_slug TEXT,
        title TEXT,
        started_at TEXT,
        lifecycle TEXT NOT NULL DEFAULT 'open',
        step_count INTEGER NOT NULL DEFAULT 0,
        patch_count INTEGER NOT NULL DEFAULT 0,
        rejected_lines INTEGER NOT NULL DEFAULT 0,
        security_version TEXT,
        security_verdict TEXT,
        excluded INTEGER NOT NULL DEFAULT 0,
        changed_at INTEGER NOT NULL DEFAULT 0,
        pushed_at INTEGER
    );
    CREATE TABLE IF NOT EXISTS anchored (
        trace_id TEXT NOT NULL,
        patch_id TEXT NOT NULL,
        PRIMARY KEY (trace_id, patch_id)
    );
    """

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    def handlers(self) -> dict[type[ev.Event], Handler]:
        return {
            ev.SessionStarted: self._started,
            ev.SessionInfo: in_trace_stream(self._info),
            ev.SourceSegmentRead: in_trace_stream(self._segment),
            ev.StepRecorded: in_trace_stream(self._step),
            ev.PatchRecorded: self._patch,
            ev.SourceLineRejected: in_trace_stream(self._rejected),
            ev.SessionEnded: in_trace_stream(self._ended),
            ev.AnchorRecorded: self._anchored,
            ev.SanitizationRun: self._sanitized,
            ev.TraceExcluded: self._excluded,
            ev.BucketPushed: self._pushed,
        }

    # -- handlers: one write each -------------------------------------------------------------

    def _touch(self, conn: sqlite3.Connection, trace_id: str, position: int) -> None:
        conn.execute("INSERT INTO traces (trace_id, changed_at) VALUES (?, ?) "
                     "ON CONFLICT (trace_id) DO UPDATE SET changed_at = excluded.changed_at",
                     (trace_id, position))

    def _started(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.SessionStarted = rec.event  # type: ignore[assignment]
        self._touch(conn, e.trace_id, rec.position or 0)
        conn.execute(
            "UPDATE traces SET session_id = ?, agent_name = ?, agent_version = ?, "
            "agent_model = coalesce(?, agent_model), project_slug = ?, "
            "title = coalesce(?, title), started_at = coalesce(?, started_at) "
            "WHERE trace_id = ?",
            (e.session_id, e.agent.name, e.agent.version, e.agent.model,
             project_slug(e.project or e.cwd), e.title, e.at, e.trace_id))

    def _info(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionInfo = rec.event  # type: ignore[assignment]
        self._touch(conn, trace_id, rec.position or 0)
        conn.execute(
            "UPDATE traces SET agent_version = coalesce(?, agent_version), "
            "agent_model = coalesce(?, agent_model), "
            "project_slug = coalesce(?, project_slug), title = coalesce(?, title) "
            "WHERE trace_id = ?",
            (e.agent_version, e.model, project_slug(e.cwd), e.title, trace_id))

    def _segment(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SourceSegmentRead = rec.event  # type: ignore[assignment]
        if e.start_offset == 0 and e.generation > 0:
            # The transcript was rewritten: its steps are read again from the start.
            conn.execute("UPDATE traces SET step_count = 0, patch_count = 0, "
                         "rejected_lines = 0 WHERE trace_id = ?", (trace_id,))

    def _step(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepRecorded = rec.event  # type: ignore[assignment]
        title = _title_from(e.content) if e.role == "user" and not e.is_sidechain else None
        conn.execute(
            "INSERT INTO traces (trace_id, changed_at, step_count, agent_model, title, "
            "started_at) VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (trace_id) DO UPDATE SET "
            "changed_at = excluded.changed_at, step_count = step_count + 1, "
            "agent_model = coalesce(agent_model, excluded.agent_model), "
            "title = coalesce(title, excluded.title), "
            "started_at = coalesce(started_at, excluded.started_at)",
            (trace_id, rec.position or 0, e.model, title, e.at))

    def _patch(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.PatchRecorded = rec.event  # type: ignore[assignment]
        trace_id = e.trace_id
        self._touch(conn, trace_id, rec.position or 0)
        conn.execute("UPDATE traces SET patch_count = patch_count + 1 WHERE trace_id = ?",
                     (trace_id,))

    def _rejected(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        self._touch(conn, trace_id, rec.position or 0)
        conn.execute("UPDATE traces SET rejected_lines = rejected_lines + 1 WHERE trace_id = ?",
                     (trace_id,))

    def _ended(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        self._touch(conn, trace_id, rec.position or 0)
        conn.execute("UPDATE traces SET lifecycle = 'ended' WHERE trace_id = ?", (trace_id,))

    def _anchored(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.AnchorRecorded = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR IGNORE INTO anchored VALUES (?, ?)", (e.trace_id, e.patch_id))

    def _sanitized(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.SanitizationRun = rec.event  # type: ignore[assignment]
        if not e.trace_id:  # content of no trace (a dataset row, a piece of text)
            return
        conn.execute("INSERT OR IGNORE INTO traces (trace_id) VALUES (?)", (e.trace_id,))
        conn.execute("UPDATE traces SET security_version = ?, security_verdict = ? "
                     "WHERE trace_id = ?", (e.security_version, e.verdict, e.trace_id))

    def _excluded(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.TraceExcluded = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR IGNORE INTO traces (trace_id) VALUES (?)", (e.trace_id,))
        conn.execute("UPDATE traces SET excluded = 1 WHERE trace_id = ?", (e.trace_id,))

    def _pushed(self, conn: sqlite3.Connection, rec: Recorded) -> None:
        e: ev.BucketPushed = rec.event  # type: ignore[assignment]
        conn.executemany("UPDATE traces SET pushed_at = ? WHERE trace_id = ?",
                         [(rec.position, t) for t in e.trace_ids])

    # -- outputs ------------------------------------------------------------------------------

    def finish(self) -> None:
        with self.reader() as conn:
            traces = manifest_rows(conn)
            position = self_position(conn)
        body = {"schema_version": SCHEMA_VERSION, "position": position,
                "digest": rows_digest(traces), "traces": traces}
        data = msgspec.json.format(msgspec.json.encode(body, order="sorted"), indent=1)
        temp = self.manifest_path.with_name(f".{MANIFEST_FILE}.{os.getpid()}")
        temp.write_bytes(data)
        os.replace(temp, self.manifest_path)

    def problems(self) -> list[str]:
        found = super().problems()
        if found:
            return found
        manifest = self.read_manifest()
        with self.reader() as conn:
            expected = rows_digest(manifest_rows(conn))
        if manifest is None:
            return [f"{self.name}: {self.manifest_path} is missing"]
        if manifest.get("digest") != expected:
            return [f"{self.name}: {self.manifest_path} does not match the projection rows"]
        return []

    def read_manifest(self) -> dict[str, Any] | None:
        """The rendered manifest, or None when it is missing or unreadable."""
        try:
            return json.loads(self.manifest_path.read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def self_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
    return int(row[0]) if row else 0


def manifest_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT t.*, (SELECT count(*) FROM anchored a WHERE a.trace_id = t.trace_id) AS anchored "
        "FROM traces t ORDER BY t.trace_id")
    return [_row(r) for r in rows_as_dicts(cur)]


def _row(r: dict[str, Any]) -> dict[str, Any]:
    scanned = r["security_version"] is not None
    if r["pushed_at"] is None:
        sync = "local"
    elif r["pushed_at"] >= r["changed_at"]:
        sync = "pushed"
    else:
        sync = "behind"
    return {
        "trace_id": r["trace_id"],
        "session_id": r["session_id"],
        "project_slug": r["project_slug"],
        "title": r["title"],
        "agent_name": r["agent_name"],
        "agent_version": r["agent_version"],
        "agent_model": r["agent_model"],
        "lifecycle": r["lifecycle"],
        "started_at": r["started_at"],
        "summary": {"step_count": r["step_count"], "patch_count": r["patch_count"],
                    "anchored_count": r["anchored"], "rejected_lines": r["rejected_lines"]},
        "status": {"scanned": scanned, "security_version": r["security_version"],
                   "security_verdict": r["security_verdict"], "excluded": bool(r["excluded"]),
                   "syncable": scanned and r["security_verdict"] == "clean"
                   and not r["excluded"],
                   "sync": sync},
    }


def rows_digest(rows: list[dict[str, Any]]) -> str:
    return blake3.blake3(msgspec.json.encode(rows, order="sorted")).hexdigest()

"""What every projection provides, and a base for projections kept in their own SQLite file.

Invariants:
- A projection is a pure function of the event log: the same events in the same order give the
  same rows, so its :meth:`digest` is equal across rebuilds (no wall clock, no random ids, no
  set iteration order in the rows).
- Rows and the position (last applied notification id) are committed in one transaction, and
  a page re-reads the position inside that transaction: an event at or below it is skipped, so
  replaying a page never counts twice.
- Read access (:meth:`SqlProjection.reader`) opens the file read-only and never creates it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import blake3
import msgspec

from opentraces.events import Event, Recorded

STATE_FILE = "state.sqlite"

Handler = Callable[[sqlite3.Connection, Recorded], None]
#: A handler of capture events, given the trace the event's stream belongs to.
TraceHandler = Callable[[sqlite3.Connection, Recorded, str], None]


class Projection(Protocol):
    """The runner's view of a projection."""

    name: ClassVar[str]
    version: ClassVar[int]
    #: Caught up by every command that appends. A lazy projection (False) is caught up only by
    #: its own refresh command and by `repair`, because keeping it current on every import
    #: would cost more than the import itself (the search index).
    eager: ClassVar[bool]
    # A lazy projection also names the command that catches it up (`refresh_command`).

    def __init__(self, directory: Path) -> None: ...

    def position(self) -> int: ...

    def stored_version(self) -> int | None: ...

    def apply_page(self, records: Sequence[Recorded]) -> int: ...

    def digest(self) -> str | None: ...

    def finish(self) -> None: ...

    def seal(self) -> str | None: ...

    def sealed_digest(self) -> str | None: ...

    def close(self) -> None: ...

    def problems(self) -> list[str]: ...


class SqlProjection:
    """A projection whose rows live in ``<directory>/state.sqlite``.

    Subclasses set ``name``, ``version`` and ``SCHEMA`` (DDL) and map event types to handlers in
    :meth:`handlers`. Handlers write rows through the connection they are given. A subclass may
    also buffer writes for the length of a page: :meth:`begin_page` and :meth:`end_page` run
    inside the page's transaction, before the first handler and before the position is stored.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    eager: ClassVar[bool] = True
    SCHEMA: ClassVar[str]

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._handlers: dict[type[Event], Handler] = self.handlers()
        self._conn: sqlite3.Connection | None = None

    def handlers(self) -> dict[type[Event], Handler]:
        raise NotImplementedError

    # -- the runner's interface ---------------------------------------------------------------

    def position(self) -> int:
        meta = self._meta()
        return int(meta.get("position", 0))

    def stored_version(self) -> int | None:
        meta = self._meta()
        return int(meta["version"]) if "version" in meta else None

    def apply_page(self, records: Sequence[Recorded]) -> int:
        """Apply the records newer than the stored position; return how many were applied."""
        applied = 0
        with self._writer() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                position = int(_meta_from(conn).get("position", 0))
                self.begin_page(conn)
                for rec in records:
                    assert rec.position is not None
                    if rec.position <= position:
                        continue
                    handler = self._handlers.get(type(rec.event))
                    if handler is not None:
                        handler(conn, rec)
                    position = rec.position
                    applied += 1
                self.end_page(conn)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('position', ?)",
                             (str(position),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return applied

    def begin_page(self, conn: sqlite3.Connection) -> None:
        """Called in the page's transaction before its first handler (default: nothing)."""

    def end_page(self, conn: sqlite3.Connection) -> None:
        """Called in the page's transaction after its last handler, before the position is
        stored: write whatever the handlers buffered (default: nothing). Not called when a
        handler raises; the transaction is then rolled back and the next page begins afresh."""

    def finish(self) -> None:
        """Called once after a run of pages: render file outputs derived from the rows."""

    def digest(self) -> str | None:
        """blake3 over the name, version and every row of every table (meta excluded)."""
        if not self.path.exists():
            return None
        h = blake3.blake3(f"{self.name}/{self.version}".encode())
        with self.reader() as conn:
            for (table,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name != 'meta' "
                    "ORDER BY name"):
                columns = [r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")]
                order = ", ".join(f'"{c}"' for c in columns)
                h.update(table.encode())
                for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY {order}'):
                    h.update(msgspec.msgpack.encode(list(row)))
        return h.hexdigest()

    def seal(self) -> str | None:
        """Record the current digest, so :meth:`problems` can later tell if rows changed."""
        digest = self.digest()
        if digest is not None:
            with self._writer() as conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('digest', ?)", (digest,))
        return digest

    def sealed_digest(self) -> str | None:
        """The digest recorded by the last :meth:`seal` (None if never sealed)."""
        return self._meta().get("digest")

    def problems(self) -> list[str]:
        """What is wrong with the stored view (empty when it is sound)."""
        if not self.path.exists():
            return [f"{self.name}: {self.path} is missing"]
        try:
            with self.reader() as conn:
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            return [f"{self.name}: {self.path} is unreadable ({e})"]
        if check != "ok":
            return [f"{self.name}: {self.path} fails quick_check ({check})"]
        sealed = self.sealed_digest()
        if sealed is not None and sealed != self.digest():
            return [f"{self.name}: rows no longer match the digest recorded when they were built"]
        return []

    # -- connections --------------------------------------------------------------------------

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection; the file must exist."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _writer(self) -> Iterator[sqlite3.Connection]:
        """The writer connection, opened once per run and kept until :meth:`close`."""
        if self._conn is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript("CREATE TABLE IF NOT EXISTS meta "
                                   "(key TEXT PRIMARY KEY, value TEXT NOT NULL);" + self.SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)",
                             (str(self.version),))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('name', ?)", (self.name,))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        yield self._conn

    def close(self) -> None:
        """Close the writer connection, if one is open.

        The file is left in rollback-journal mode, so that read-only openers (read commands)
        find no WAL to map and create no ``-wal``/``-shm`` files: reads never write. The next
        writer switches back to WAL. If a reader holds the file right now, it stays in WAL mode
        until a later close.
        """
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA busy_timeout = 100")
                self._conn.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.OperationalError:
                pass
            self._conn.close()
            self._conn = None

    def _meta(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        with self.reader() as conn:
            try:
                return _meta_from(conn)
            except sqlite3.OperationalError:
                return {}


def _meta_from(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def trace_of(rec: Recorded) -> str | None:
    """The trace of an event written to a ``trace:<id>`` stream, else None."""
    kind, _, key = rec.stream.partition(":")
    return key if kind == "trace" and key else None


def in_trace_stream(handler: TraceHandler) -> Handler:
    """A handler that applies ``handler`` to events of trace streams only (capture events
    count there; events elsewhere name their trace themselves)."""
    def apply(conn: sqlite3.Connection, rec: Recorded) -> None:
        trace_id = trace_of(rec)
        if trace_id is not None:
            handler(conn, rec, trace_id)
    return apply


def rows_as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

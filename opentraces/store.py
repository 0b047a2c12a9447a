"""The event store: one append-only log of :mod:`opentraces.events`, kept by eventsourcing.

Invariants:
- Every event lives in exactly one stream at one version; ``(stream, version)`` is unique, so
  writing the same event at the same place twice is a no-op and writing a *different* event
  there is a :class:`~opentraces.errors.VersionConflict`.
- Each stored event also gets a notification id (its position in the global log); projections
  read the log in that order and never assume ids are dense.
- A call that returns has committed durably (SQLite: WAL with ``synchronous=FULL``).
- SQLite write transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on
  the busy timeout instead of failing with "database is locked"; lock errors that still happen
  are retried within :data:`LOCK_BUDGET_SECONDS`.

The backend is chosen by :class:`~opentraces.config.StoreConfig` alone: SQLite by default,
PostgreSQL (``eventsourcing.postgres``, imported only then) when configured.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec
from eventsourcing.persistence import (
    EventStore,
    InfrastructureFactory,
    IntegrityError,
    Mapper,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTransaction,
)
from eventsourcing.utils import Environment

from opentraces import packing
from opentraces.config import StoreConfig
from opentraces.errors import (
    EventDecodeError,
    StoreError,
    StoreUnavailable,
    UsageError,
    VersionConflict,
)
from opentraces.events import TOPICS, UPCASTERS, AnyEvent, Event, Recorded, topic_of
from opentraces.text import safe_str, safe_struct

LOCK_BUDGET_SECONDS = 120.0
SQLITE_LOCK_TIMEOUT_SECONDS = 30
PAGE_SIZE = 1000
STALL_LIMIT = 50


# ---------------------------------------------------------------------------------------------
# Codec


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(AnyEvent)
_RAW_DECODER = msgspec.msgpack.Decoder(dict)


def encode_event(event: Event) -> bytes:
    """msgpack bytes of an event; hostile strings are escaped rather than refused."""
    try:
        return _ENCODER.encode(event)
    except (UnicodeEncodeError, OverflowError):
        return _ENCODER.encode(safe_struct(event))


def decode_event(topic: str, state: bytes, where: str) -> Event:
    """Decode stored bytes by topic, upcasting old topics; ``where`` names the event on error."""
    try:
        if topic in TOPICS:
            return _DECODER.decode(state)
        if topic in UPCASTERS:
            return UPCASTERS[topic](_RAW_DECODER.decode(state))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as e:
        raise EventDecodeError(f"cannot decode {where} (topic {topic}): {e}",
                               hint="Run `opentraces repair` to list undecodable events.") from e
    raise EventDecodeError(f"unknown event topic {topic!r} at {where}",
                           hint="This store was written by a newer opentraces; upgrade.")


#: Events larger than this are stored compressed when that saves at least a tenth.
COMPRESS_ABOVE = 256


def pack(event: Event) -> bytes:
    """The stored bytes of an event: msgpack, compressed when large (tool outputs).

    An event is a msgpack array (``[tag, fields…]``), which starts with 0x90-0x9f, 0xdc or
    0xdd, never with the first byte of a compressed frame, so :func:`unpack` can tell the two apart.
    """
    state = encode_event(event)
    if len(state) > COMPRESS_ABOVE:
        packed = packing.compress(state)
        if len(packed) * 10 < len(state) * 9:
            return packed
    return state


def unpack(state: bytes) -> bytes:
    return packing.decompress(state) if packing.is_compressed(state) else state


class MsgspecMapper(Mapper[str]):
    """Stores :class:`Recorded` events as msgpack, topic = event tag (selected by MAPPER_TOPIC)."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        rec: Recorded = domain_event
        state = pack(rec.event)
        if self.compressor:
            state = self.compressor.compress(state)
        return StoredEvent(originator_id=rec.originator_id,
                           originator_version=rec.originator_version,
                           topic=topic_of(rec.event), state=state)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = stored_event.state
        if self.compressor:
            state = self.compressor.decompress(state)
        where = f"{stored_event.originator_id}@{stored_event.originator_version}"
        try:
            state = unpack(state)
        except packing.CorruptData as e:
            raise EventDecodeError(f"cannot decompress {where}: {e}") from e
        event = decode_event(stored_event.topic, state, where)
        position = getattr(stored_event, "id", None)
        return Recorded(str(stored_event.originator_id), stored_event.originator_version,
                        event, position)


# ---------------------------------------------------------------------------------------------
# SQLite tuned for many processes: BEGIN IMMEDIATE, synchronous=FULL


class _ImmediateTransaction(SQLiteTransaction):
    def __enter__(self) -> Any:
        cursor = self.connection.cursor()
        # A deferred transaction that later writes gets SQLITE_BUSY without waiting; taking the
        # write lock up front makes concurrent writers queue on the busy timeout instead.
        cursor.execute("BEGIN IMMEDIATE" if self.commit else "BEGIN")
        return cursor


class _DurableConnection(SQLiteConnection):
    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[Any]:
        with _ImmediateTransaction(self, commit=commit) as curs, curs:
            yield curs


class _DurablePool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        conn = _retry_locked(lambda: self._connect())
        return conn

    def _connect(self) -> SQLiteConnection:
        c = sqlite3.connect(self.db_name, uri=True, check_same_thread=False,
                            isolation_level=None, cached_statements=True,
                            timeout=self.lock_timeout or SQLITE_LOCK_TIMEOUT_SECONDS)
        try:
            if not self.is_sqlite_memory_mode:
                mode = c.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() != "wal":
                    c.execute("PRAGMA journal_mode=WAL")
                # Builds differ in their default; acknowledged must mean durable.
                c.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            c.close()
            raise
        c.row_factory = sqlite3.Row
        return _DurableConnection(sqlite_conn=c, max_age=self.max_age)


class DurableSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with our connection pool (selected by PERSISTENCE_MODULE)."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        old = self.datastore
        self.datastore = SQLiteDatastore.__new__(SQLiteDatastore)
        self.datastore.pool = _DurablePool(db_name=old.pool.db_name,
                                           lock_timeout=old.pool.lock_timeout)
        self.datastore.single_row_tracking = old.single_row_tracking
        self.datastore.originator_id_type = old.originator_id_type
        old.close()


def _is_lock_error(error: BaseException) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _retry_locked(action: Any, budget: float = LOCK_BUDGET_SECONDS) -> Any:
    """Run ``action``, retrying while SQLite reports a lock, up to ``budget`` seconds."""
    deadline = time.monotonic() + budget
    delay = 0.005
    while True:
        try:
            return action()
        except (sqlite3.OperationalError, OperationalError) as e:
            if not _is_lock_error(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


# ---------------------------------------------------------------------------------------------
# The log


def _environment(config: StoreConfig, *, create: bool) -> Environment:
    env = {
        "MAPPER_TOPIC": "opentraces.store:MsgspecMapper",
        "ORIGINATOR_ID_TYPE": "text",
        "CREATE_TABLE": "y" if create else "n",
    }
    if config.backend == "sqlite":
        assert config.sqlite_path is not None
        env |= {"PERSISTENCE_MODULE": "opentraces.store:DurableSQLiteFactory",
                "SQLITE_DBNAME": str(config.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": str(SQLITE_LOCK_TIMEOUT_SECONDS)}
    else:
        pg = config.postgres
        env |= {"PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": pg["dbname"], "POSTGRES_HOST": pg.get("host", "127.0.0.1"),
                "POSTGRES_PORT": pg.get("port", "5432"), "POSTGRES_USER": pg["user"],
                "POSTGRES_PASSWORD": pg.get("password", ""),
                "POSTGRES_CONNECT_TIMEOUT": pg.get("connect_timeout", "5")}
        if pg.get("schema"):
            env["POSTGRES_SCHEMA"] = pg["schema"]
    return Environment(name="opentraces", env=env)


def _check_stream_id(stream_id: str) -> None:
    if "\x00" in stream_id or safe_str(stream_id) != stream_id:
        raise UsageError(f"stream id {stream_id!r} holds characters that cannot be stored "
                         "(NUL or a lone surrogate)")


def _unique(records: Sequence[Recorded]) -> list[Recorded]:
    """Drop repeats of one (stream, version) in a batch; differing repeats are a conflict."""
    first: dict[tuple[str, int], Recorded] = {}
    unique = []
    for rec in records:
        key = (rec.stream, rec.version)
        if key not in first:
            first[key] = rec
            unique.append(rec)
        elif encode_event(first[key].event) != encode_event(rec.event):
            raise VersionConflict(f"one batch holds two different events for stream "
                                  f"{rec.stream} at version {rec.version}")
    return unique


def pg_connect(pg: dict[str, str], *, autocommit: bool = False) -> Any:
    """A psycopg connection from PostgreSQL store settings (imports psycopg only when called)."""
    import psycopg

    return psycopg.connect(dbname=pg["dbname"], host=pg.get("host", "127.0.0.1"),
                           port=pg.get("port", "5432"), user=pg["user"],
                           password=pg.get("password", ""),
                           connect_timeout=int(pg.get("connect_timeout", "5")),
                           autocommit=autocommit)


@contextmanager
def _preparing(config: StoreConfig, *, create: bool) -> Iterator[None]:
    """Make the store's container exist; on PostgreSQL, hold a lock while tables are created.

    Concurrent first opens (several hook processes) would otherwise race on CREATE SCHEMA
    and CREATE TABLE and fail with duplicate-object errors.
    """
    if not create:
        yield
        return
    if config.backend == "sqlite":
        assert config.sqlite_path is not None
        config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        yield
        return
    import psycopg  # only on the PostgreSQL path
    from psycopg import sql

    pg = config.postgres
    try:
        conn = pg_connect(pg, autocommit=True)
    except psycopg.Error as e:
        raise StoreUnavailable(f"cannot connect to {config.describe()}: {e}",
                               next_command="opentraces doctor") from e
    with conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('opentraces.store.create'))")
        try:
            # Someone outside opentraces may create it between our check and our insert.
            with suppress(psycopg.errors.UniqueViolation):
                if pg.get("schema"):
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(pg["schema"])))
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('opentraces.store.create'))")


class EventLog:
    """The append-only event log. Open with :meth:`open`; close when done (or use ``with``).

    With ``create=False`` nothing is created (no folder, schema or table): for readers.
    """

    def __init__(self, config: StoreConfig, *, create: bool = True) -> None:
        self.config = config
        try:
            with _preparing(config, create=create):
                self.factory = InfrastructureFactory.construct(
                    _environment(config, create=create))
                self.recorder = _retry_locked(self.factory.application_recorder)
        except (PersistenceError, sqlite3.Error, OSError, ImportError) as e:
            raise StoreUnavailable(f"cannot open the event store at {config.describe()}: {e}",
                                   next_command="opentraces doctor") from e
        self.mapper = self.factory.mapper(mapper_class=MsgspecMapper)
        self.events = EventStore(mapper=self.mapper, recorder=self.recorder)

    @classmethod
    def open(cls, config: StoreConfig, *, create: bool = True) -> EventLog:
        return cls(config, create=create)

    def close(self) -> None:
        self.factory.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def append(self, stream: str, events: Sequence[Event]) -> list[int]:
        """Append ``events`` at the end of ``stream``; retried on a concurrent version conflict.

        Returns the notification ids (positions) of the new events.
        """
        _check_stream_id(stream)
        if not events:
            return []
        while True:
            last = self.last_version(stream)
            start = 0 if last is None else last + 1
            batch = [Recorded(stream, start + i, e) for i, e in enumerate(events)]
            try:
                return self._put(batch)
            except IntegrityError:
                continue  # someone else appended first: keep our payload, take the next slot

    def write(self, records: Sequence[Recorded]) -> list[int]:
        """Store records at their given ``(stream, version)``, skipping identical ones.

        This is the idempotent path used by capture: re-writing the same bytes is a no-op.
        Returns the positions of the records actually appended.

        Raises:
            VersionConflict: a stream already holds a different event at one of the versions.
        """
        for stream_id in {rec.stream for rec in records}:
            _check_stream_id(stream_id)
        pending = _unique(records)
        stalled = 0
        while pending:
            try:
                return self._put(pending)
            except IntegrityError as e:
                remaining = self._drop_already_stored(pending)
                if len(remaining) < len(pending):
                    stalled = 0
                elif (stalled := stalled + 1) > STALL_LIMIT:
                    raise StoreError(f"writing {len(pending)} events keeps conflicting "
                                     f"although none of their versions is taken: {e}") from e
                else:
                    time.sleep(0.01 * stalled)  # a concurrent writer has not committed yet
            pending = remaining
        return []

    def _put(self, records: Sequence[Recorded]) -> list[int]:
        recordings = _retry_locked(lambda: self.events.put(list(records)))
        return [r.notification.id for r in recordings]

    def _drop_already_stored(self, records: Sequence[Recorded]) -> list[Recorded]:
        by_stream: dict[str, list[Recorded]] = {}
        for rec in records:
            by_stream.setdefault(rec.stream, []).append(rec)
        remaining: list[Recorded] = []
        for stream_id, recs in by_stream.items():
            versions = [r.version for r in recs]
            stored = {
                s.originator_version: s
                for s in self.recorder.select_events(stream_id, gt=min(versions) - 1,
                                                     lte=max(versions))
            }
            for rec in recs:
                existing = stored.get(rec.version)
                if existing is None:
                    remaining.append(rec)
                elif existing.state != self.mapper.to_stored_event(rec).state:
                    raise VersionConflict(
                        f"stream {stream_id} already holds a different event at version "
                        f"{rec.version} ({existing.topic})")
        return remaining

    # -- reading ------------------------------------------------------------------------------

    def read(self, stream: str, *, after: int | None = None,
             upto: int | None = None) -> Iterator[Recorded]:
        """The events of one stream in version order."""
        return self.events.get(stream, gt=after, lte=upto)  # type: ignore[return-value]

    def read_back(self, stream: str, limit: int = PAGE_SIZE,
                  before: int | None = None) -> list[Recorded]:
        """Up to ``limit`` events of one stream, newest first (below version ``before``)."""
        upto = None if before is None else before - 1
        stored = self.recorder.select_events(stream, lte=upto, desc=True, limit=limit)
        return [self.mapper.to_domain_event(s) for s in stored]

    def last_version(self, stream: str) -> int | None:
        stored = self.recorder.select_events(stream, desc=True, limit=1)
        return stored[0].originator_version if stored else None

    def page(self, after: int, limit: int = PAGE_SIZE,
             upto: int | None = None) -> list[Recorded]:
        """Up to ``limit`` events with position > ``after`` (and <= ``upto``), in log order."""
        notes = self.recorder.select_notifications(after, limit, stop=upto,
                                                   inclusive_of_start=False)
        return [self.mapper.to_domain_event(n) for n in notes]

    def raw_page(self, after: int, limit: int = PAGE_SIZE) -> list[Any]:
        """Stored notifications without decoding (for verification)."""
        return list(self.recorder.select_notifications(after, limit, inclusive_of_start=False))

    def iter_all(self, after: int = 0, upto: int | None = None,
                 page_size: int = PAGE_SIZE) -> Iterator[Recorded]:
        """Every event after ``after`` in log order, read in pages."""
        position = after
        while True:
            page = self.page(position, page_size, upto)
            if not page:
                return
            yield from page
            position = page[-1].position or position

    def head(self) -> int:
        """Position of the newest event (0 when the log is empty)."""
        return self.recorder.max_notification_id() or 0

    def count(self) -> int:
        """Number of stored events."""
        return int(self._scalar("SELECT COUNT(*) FROM {table}"))

    def stream_ids(self, kind: str) -> list[str]:
        """Ids of all streams of one kind (``trace``, ``repo``, ...), sorted."""
        prefix = f"{kind}:"
        mark = "?" if self.config.backend == "sqlite" else "%s"
        # LIKE is case-insensitive on SQLite; compare the prefix exactly on both backends.
        rows = self._rows("SELECT DISTINCT originator_id FROM {table} "
                          f"WHERE substr(originator_id, 1, {mark}) = {mark}",
                          (len(prefix), prefix))
        return sorted(row[0] for row in rows)

    def _scalar(self, sql: str) -> Any:
        rows = self._rows(sql, ())
        return rows[0][0] if rows else None

    def _rows(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        table = self.recorder.events_table_name  # type: ignore[attr-defined]
        if self.config.backend == "postgres":
            table = f'"{self.recorder.datastore.schema}"."{table}"'  # type: ignore[attr-defined]
        with self.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
            c.execute(sql.format(table=table), tuple(params))
            return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in c.fetchall()]


EVENTS_TABLE = "opentraces_events"  # eventsourcing names it after the environment


def store_exists(config: StoreConfig) -> bool:
    """Whether the event store has been created (checked without creating anything)."""
    if config.backend == "sqlite":
        return bool(config.sqlite_path and config.sqlite_path.exists())
    import psycopg  # only on the PostgreSQL path

    pg = config.postgres
    table = f'"{pg.get("schema") or "public"}"."{EVENTS_TABLE}"'
    try:
        with pg_connect(pg) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    except psycopg.Error as e:
        raise StoreUnavailable(f"cannot connect to {config.describe()}: {e}",
                               next_command="opentraces doctor") from e
    return bool(row and row[0])


def sqlite_integrity_ok(path: Path) -> bool:
    """``PRAGMA integrity_check`` on a SQLite event log (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

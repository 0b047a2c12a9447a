"""The event store (opentraces.store.EventLog) against both backends.

Every test that takes ``store_config`` runs once on SQLite and once on PostgreSQL (a fresh
schema per test; skipped when the server is unreachable unless OPENTRACES_REQUIRE_POSTGRES).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.config import CONFIG_FILE, StoreConfig, load_settings
from opentraces.errors import UsageError, VersionConflict
from opentraces.events import EVENT_TYPES, Recorded, topic_of
from opentraces.store import EventLog, pg_connect

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log(store_config: StoreConfig) -> Iterator[EventLog]:
    with EventLog.open(store_config) as opened:
        yield opened


def meta(n: int, **extra: Any) -> ev.MetadataRecorded:
    """A small distinct event: ``data["n"]`` identifies it."""
    return ev.MetadataRecorded(record_type="test", data={"n": n, **extra})


def numbers(records: Any) -> list[int]:
    return [r.event.data["n"] for r in records]


def all_records(log: EventLog, page_size: int = 1000) -> list[Recorded]:
    out: list[Recorded] = []
    position = 0
    while True:
        page = log.page(position, page_size)
        if not page:
            return out
        out.extend(page)
        position = page[-1].position


def delete_positions(log: EventLog, config: StoreConfig, positions: list[int]) -> None:
    """Punch holes in the notification log behind the store's back (test-only)."""
    table = log.recorder.events_table_name
    if config.backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(config.sqlite_path, timeout=30)
        try:
            with conn:
                conn.executemany(f"DELETE FROM {table} WHERE rowid = ?",
                                 [(p,) for p in positions])
        finally:
            conn.close()
        return
    from psycopg import sql

    pg = config.postgres
    with pg_connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.{} WHERE notification_id = ANY(%s)").format(
            sql.Identifier(pg["schema"]), sql.Identifier(table)), (positions,))


# ---------------------------------------------------------------------------------------------
# append / read


def test_append_and_read_back_in_order(log: EventLog) -> None:
    first = log.append("trace:a", [meta(0), meta(1), meta(2)])
    other = log.append("trace:b", [meta(100)])
    second = log.append("trace:a", [meta(3)])

    assert len(first) == 3 and len(other) == 1 and len(second) == 1
    positions = first + other + second
    assert positions == sorted(positions) and len(set(positions)) == 5

    records = list(log.read("trace:a"))
    assert numbers(records) == [0, 1, 2, 3]
    assert [r.version for r in records] == [0, 1, 2, 3]
    assert all(r.stream == "trace:a" for r in records)
    assert numbers(log.read("trace:b")) == [100]
    assert numbers(log.read("trace:a", after=1)) == [2, 3]
    assert numbers(log.read("trace:a", after=0, upto=2)) == [1, 2]
    assert list(log.read("trace:none")) == []
    assert log.last_version("trace:a") == 3
    assert log.last_version("trace:none") is None

    # The global log holds them in append order, with the positions append returned.
    everything = all_records(log)
    assert [r.position for r in everything] == positions
    assert numbers(everything) == [0, 1, 2, 100, 3]


def test_append_nothing_is_a_no_op(log: EventLog) -> None:
    assert log.append("trace:a", []) == []
    assert log.count() == 0
    assert log.head() == 0


def test_reopen_sees_what_was_appended(store_config: StoreConfig) -> None:
    with EventLog.open(store_config) as first:
        first.append("trace:a", [meta(0), meta(1)])
    with EventLog.open(store_config) as again:
        assert numbers(again.read("trace:a")) == [0, 1]
        again.append("trace:a", [meta(2)])
        assert [r.version for r in again.read("trace:a")] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# write at explicit versions: idempotent, conflicts refused


def test_write_same_event_twice_is_stored_once(log: EventLog) -> None:
    records = [Recorded("trace:w", v, meta(v)) for v in range(3)]
    positions = log.write(records)
    assert len(positions) == 3

    assert log.write(records) == []
    assert log.write([records[1]]) == []
    assert log.count() == 3
    assert numbers(log.read("trace:w")) == [0, 1, 2]


def test_write_partly_stored_batch_appends_only_the_new_part(log: EventLog) -> None:
    """A grown transcript re-written from the start appends only its tail."""
    head = [Recorded("trace:w", v, meta(v)) for v in range(3)]
    log.write(head)
    grown = [*head, Recorded("trace:w", 3, meta(3)), Recorded("trace:w", 4, meta(4))]

    positions = log.write(grown)

    assert len(positions) == 2
    assert [r.position for r in all_records(log)][-2:] == positions
    assert numbers(log.read("trace:w")) == [0, 1, 2, 3, 4]
    assert log.count() == 5


def test_write_different_event_at_taken_version_conflicts(log: EventLog) -> None:
    log.write([Recorded("trace:w", 0, meta(0)), Recorded("trace:w", 1, meta(1))])

    with pytest.raises(VersionConflict) as raised:
        log.write([Recorded("trace:w", 1, meta(999))])
    assert "trace:w" in raised.value.message
    assert raised.value.code == "version_conflict"

    # The stored event is unchanged and nothing else from a conflicting batch got in.
    with pytest.raises(VersionConflict):
        log.write([Recorded("trace:w", 2, meta(2)), Recorded("trace:w", 0, meta(-1))])
    assert numbers(log.read("trace:w")) == [0, 1]
    assert log.count() == 2


def test_write_conflict_detects_any_field_difference(log: EventLog) -> None:
    original = ev.StepRecorded(step_index=0, role="user", content="hello")
    log.write([Recorded("trace:w", 0, original)])
    changed = ev.StepRecorded(step_index=0, role="user", content="hello", is_sidechain=True)
    with pytest.raises(VersionConflict):
        log.write([Recorded("trace:w", 0, changed)])
    assert [r.event for r in log.read("trace:w")] == [original]


def _write_with_deadline(log: EventLog, records: list[Recorded]) -> list[int]:
    """Run write in a thread so that a retry loop that never ends fails instead of hanging."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(log.write(records))
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert outcome, "write did not return"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_write_batch_with_duplicate_record_is_stored_once(log: EventLog) -> None:
    record = Recorded("trace:dup", 0, meta(0))
    assert len(_write_with_deadline(log, [record, record])) == 1
    assert numbers(log.read("trace:dup")) == [0]


def test_write_batch_with_two_different_events_at_one_version_conflicts(log: EventLog) -> None:
    with pytest.raises(VersionConflict, match="two different events"):
        _write_with_deadline(log, [Recorded("trace:dup", 0, meta(0)),
                                   Recorded("trace:dup", 0, meta(1))])
    assert list(log.read("trace:dup")) == []


@pytest.mark.parametrize("stream_id", ["trace:\x00nul", "dataset:\udcff"])
def test_unstorable_stream_ids_are_a_clear_error(log: EventLog, stream_id: str) -> None:
    with pytest.raises(UsageError, match="cannot be stored"):
        log.append(stream_id, [meta(0)])


# ---------------------------------------------------------------------------------------------
# append from several writers


def test_append_retries_after_a_concurrent_append(store_config: StoreConfig) -> None:
    """Writer B decides on a version A has just taken: B keeps its payload and goes next."""
    with EventLog.open(store_config) as a, EventLog.open(store_config) as b:
        a.append("trace:s", [meta(0)])
        stale = b.last_version("trace:s")
        a.append("trace:s", [meta(1)])

        calls = 0
        real = b.last_version

        def stale_once(stream: str) -> int | None:
            nonlocal calls
            calls += 1
            return stale if calls == 1 else real(stream)

        b.last_version = stale_once  # type: ignore[method-assign]
        positions = b.append("trace:s", [meta(2), meta(3)])

        assert calls == 2, "the first attempt must have collided and been retried"
        assert len(positions) == 2
        records = list(a.read("trace:s"))
        assert numbers(records) == [0, 1, 2, 3]
        assert [r.version for r in records] == [0, 1, 2, 3]


def test_two_instances_appending_concurrently_lose_nothing(store_config: StoreConfig) -> None:
    rounds = 40
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=60)
    with EventLog.open(store_config) as first:  # create the schema before the race
        first.append("trace:other", [meta(-1)])
    logs = {name: EventLog.open(store_config) for name in ("A", "B")}

    def writer(name: str) -> None:
        try:
            start.wait()
            for i in range(rounds):
                batch = [meta(i, w=name, k=k) for k in range(1 + i % 3)]
                logs[name].append("trace:shared", batch)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in logs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        for opened in logs.values():
            opened.close()
    assert errors == []

    with EventLog.open(store_config) as log:
        records = list(log.read("trace:shared"))
    per_writer = sum(1 + i % 3 for i in range(rounds))
    assert len(records) == 2 * per_writer
    assert [r.version for r in records] == list(range(2 * per_writer))
    for name in ("A", "B"):
        mine = [(r.event.data["n"], r.event.data["k"]) for r in records
                if r.event.data["w"] == name]
        expected = [(i, k) for i in range(rounds) for k in range(1 + i % 3)]
        assert mine == expected, f"writer {name}: events lost, duplicated or reordered"
    # A batch is appended as a whole: its events are adjacent in the stream.
    for r0, r1 in itertools.pairwise(records):
        d0, d1 = r0.event.data, r1.event.data
        if d1["k"] > 0:
            assert (d0["w"], d0["n"], d0["k"] + 1) == (d1["w"], d1["n"], d1["k"])


def test_opening_while_another_process_creates_the_schema(store_config: StoreConfig) -> None:
    """Two hook processes opening a fresh PostgreSQL store at once must both succeed.

    Made deterministic: a side session creates the schema in an open transaction, the store
    is opened (and waits on that session's lock), then the side session commits.
    """
    if store_config.backend != "postgres":
        pytest.skip("the schema race is PostgreSQL-only (SQLite: see test_reliability)")
    from psycopg import sql

    pg = store_config.postgres
    outcome: list[BaseException | EventLog] = []

    def opener() -> None:
        try:
            outcome.append(EventLog.open(store_config))
        except BaseException as e:
            outcome.append(e)

    with pg_connect(pg) as side, pg_connect(pg, autocommit=True) as probe:
        side.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg["schema"])))
        thread = threading.Thread(target=opener, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and thread.is_alive():
            waiting = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE 'CREATE SCHEMA IF NOT EXISTS%%'").fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the store did not wait on the concurrent CREATE SCHEMA")
        side.commit()
        thread.join(timeout=60)
    assert outcome, "EventLog.open did not return"
    result = outcome[0]
    assert isinstance(result, EventLog), f"open failed: {type(result).__name__}: {result}"
    with result:
        result.append("trace:cold", [meta(0)])
        assert numbers(result.read("trace:cold")) == [0]


# ---------------------------------------------------------------------------------------------
# the global log: page, head, count, stream_ids


def test_page_returns_events_in_position_order(log: EventLog) -> None:
    for i in range(10):
        log.append(f"trace:{i % 3}", [meta(i)])
    everything = log.page(0, 100)
    positions = [r.position for r in everything]
    assert positions == sorted(positions) and len(positions) == 10
    assert numbers(everything) == list(range(10))
    assert [r.stream for r in everything] == [f"trace:{i % 3}" for i in range(10)]
    # Records from page() know their stream version too.
    assert [r.version for r in everything] == [i // 3 for i in range(10)]

    assert numbers(log.page(0, 4)) == [0, 1, 2, 3]
    assert numbers(log.page(positions[3], 4)) == [4, 5, 6, 7]
    assert numbers(log.page(positions[7], 4)) == [8, 9]
    assert log.page(positions[9], 4) == []
    assert numbers(log.page(positions[2], 100, upto=positions[5])) == [3, 4, 5]
    assert numbers(log.iter_all(page_size=3)) == list(range(10))
    assert numbers(log.iter_all(after=positions[6], page_size=2)) == [7, 8, 9]


def test_page_works_across_gaps(log: EventLog, store_config: StoreConfig) -> None:
    positions = [p for i in range(12) for p in log.append("trace:g", [meta(i)])]
    holes = [positions[1], positions[2], positions[5], positions[9]]
    delete_positions(log, store_config, holes)
    remaining = [p for p in positions if p not in holes]

    seen: list[int] = []
    after = 0
    while page := log.page(after, 3):
        assert len(page) <= 3
        seen.extend(r.position for r in page)
        after = page[-1].position
    assert seen == remaining

    # Starting right at a hole, or just before one, still gives the next existing events.
    assert [r.position for r in log.page(positions[1], 2)] == [positions[3], positions[4]]
    assert [r.position for r in log.page(positions[0], 1)] == [positions[3]]
    assert [r.position for r in log.page(positions[8], 10, upto=positions[10])] == [positions[10]]
    assert [r.position for r in log.iter_all(page_size=2)] == remaining
    assert log.count() == len(remaining)
    assert log.head() == positions[-1]


def test_page_after_a_refused_write_misses_nothing(log: EventLog) -> None:
    """A failed insert may burn ids (PostgreSQL sequences): reading by '> last id' still works."""
    log.append("trace:c", [meta(0)])
    after = log.head()
    with pytest.raises(VersionConflict):
        log.write([Recorded("trace:c", 0, meta(-1))])
    log.append("trace:c", [meta(1)])
    log.append("trace:d", [meta(2)])
    assert numbers(log.page(after, 10)) == [1, 2]
    assert log.count() == 3


def test_head_and_count(log: EventLog) -> None:
    assert log.head() == 0
    assert log.count() == 0
    positions = log.append("trace:h", [meta(0), meta(1)])
    assert log.head() == positions[-1]
    assert log.count() == 2
    more = log.append("repo:r", [meta(2)])
    assert log.head() == more[-1] > positions[-1]
    assert log.count() == 3
    log.write([Recorded("repo:r", 0, meta(2))])  # already there: no change
    assert log.count() == 3
    assert log.head() == more[-1]


def test_stream_ids_by_kind(log: EventLog) -> None:
    for stream_id in ("trace:b", "trace:a", "trace:a_b%c", "repo:trace:x", "tracex:1",
                      "dataset:d", "bucket:default", "trace:b"):
        log.append(stream_id, [meta(0)])
    assert log.stream_ids("trace") == ["trace:a", "trace:a_b%c", "trace:b"]
    assert log.stream_ids("repo") == ["repo:trace:x"]
    assert log.stream_ids("dataset") == ["dataset:d"]
    assert log.stream_ids("bucket") == ["bucket:default"]
    assert log.stream_ids("nothing") == []


def test_stream_ids_is_case_sensitive(log: EventLog) -> None:
    log.append("trace:lower", [meta(0)])
    log.append("TRACE:upper", [meta(1)])
    assert log.stream_ids("trace") == ["trace:lower"]


# ---------------------------------------------------------------------------------------------
# every event type round-trips


def sample_value(t: msgspec.inspect.Type, full: bool) -> Any:
    """A value of msgspec type ``t``: required fields only, or (full) every field non-default."""
    mi = msgspec.inspect
    if isinstance(t, mi.StrType):
        return "s\u00e9\u202e\x00"
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        return 7
    if isinstance(t, mi.FloatType):
        return 0.25
    if isinstance(t, mi.BytesType):
        return b"\x00\xff\x80raw"
    if isinstance(t, mi.NoneType):
        return None
    if isinstance(t, mi.UnionType):
        return sample_value(next(x for x in t.types if not isinstance(x, mi.NoneType)), full)
    if isinstance(t, mi.ListType):
        return [sample_value(t.item_type, full)]
    if isinstance(t, mi.DictType):
        return {"key": sample_value(t.value_type, full)}
    if isinstance(t, mi.AnyType):
        return {"nested": [1, "two", None, 2.5, {"deep": True}]}
    if isinstance(t, mi.StructType):
        fields = [f for f in t.fields if full or f.required]
        if t.array_like:
            values = [((not f.default) if isinstance(f.default, bool)
                       else sample_value(f.type, full)) if full or f.required
                      else msgspec.to_builtins(f.default if f.default is not msgspec.NODEFAULT
                                               else f.default_factory())
                      for f in t.fields]
            return [t.tag, *values] if t.tag is not None else values
        return {f.encode_name: (not f.default) if f.default is True or f.default is False
                else sample_value(f.type, full) for f in fields}
    raise AssertionError(f"no sample for {t!r}; extend sample_value")


def sample_event(cls: type[ev.Event], full: bool) -> ev.Event:
    info = msgspec.inspect.type_info(cls)
    return msgspec.convert(sample_value(info, full), type=cls)


@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
def test_every_event_type_round_trips(log: EventLog, full: bool) -> None:
    samples = [sample_event(cls, full) for cls in EVENT_TYPES]
    positions = log.append("trace:all", samples)
    assert len(positions) == len(EVENT_TYPES)

    read = [r.event for r in log.read("trace:all")]
    assert read == samples
    assert [type(e) for e in read] == list(EVENT_TYPES)
    paged = log.page(0, 1000)
    assert [r.event for r in paged] == samples
    assert [r.position for r in paged] == positions
    assert [n.topic for n in log.raw_page(0)] == [topic_of(e) for e in samples]
    assert len(set(topic_of(e) for e in samples)) == len(EVENT_TYPES)

    # Written at explicit versions, the same events are recognised as already stored.
    assert log.write([Recorded("trace:all", i, e) for i, e in enumerate(samples)]) == []


def test_sample_events_cover_every_field() -> None:
    """Guard for the round-trip test: the full samples leave no field at its default."""
    for cls in EVENT_TYPES:
        event = sample_event(cls, True)
        for field in msgspec.inspect.type_info(cls).fields:
            value = getattr(event, field.name)
            default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT \
                else field.default
            assert value is not None and value != default, (cls.__name__, field.name)


# ---------------------------------------------------------------------------------------------
# backend selection


def test_postgres_selected_by_configuration_alone(store_config: StoreConfig,
                                                  isolated_home: Path) -> None:
    if store_config.backend != "postgres":
        pytest.skip("selecting PostgreSQL by config.json needs the PostgreSQL backend")
    pg = store_config.postgres
    url = (f"postgresql://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/"
           f"{pg['dbname']}?schema={pg['schema']}")
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / CONFIG_FILE).write_text(
        json.dumps({"store": {"backend": "postgres", "url": url}}), encoding="utf-8")

    settings = load_settings(isolated_home)
    assert settings.store.backend == "postgres"
    assert settings.store.postgres["schema"] == pg["schema"]

    # The API is given nothing but the home folder.
    positions = api.append(isolated_home, "trace:cfg", [meta(1), meta(2)])
    assert len(positions) == 2
    assert api.event_count(isolated_home) == 2
    report = api.status(isolated_home)
    assert report.store.backend == "postgres"
    assert report.store.event_count == 2

    with api.open_workspace(isolated_home) as ws:
        assert type(ws.log.recorder).__module__ == "eventsourcing.postgres"
    assert not (isolated_home / "bucket" / "events.sqlite").exists()
    # The events really are in that PostgreSQL schema.
    with EventLog.open(store_config) as log:
        assert numbers(log.read("trace:cfg")) == [1, 2]


DEFAULT_PATH_PROBE = """
import json, sys
import opentraces.api as api
import opentraces.store
from opentraces.config import settings_from_environment
from opentraces.events import SessionEnded
settings = settings_from_environment()
assert settings.store.backend == "sqlite", settings.store
api.append(settings, "trace:probe", [SessionEnded(reason="probe")])
assert api.event_count(settings) == 1
assert api.status(settings).store.backend == "sqlite"
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in ("psycopg", "psycopg_pool", "psycopg_binary")
                        or m.startswith("eventsourcing.postgres"))))
"""


def test_default_sqlite_path_imports_no_postgres(isolated_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENTRACES_STORE_URL"}
    env["OPENTRACES_HOME"] = str(isolated_home)
    done = subprocess.run([sys.executable, "-c", DEFAULT_PATH_PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (isolated_home / "bucket" / "events.sqlite").exists()

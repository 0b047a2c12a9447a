"""Storage reliability: the acceptance criteria for "nothing lost" (docs: security-reliability §3).

- 32 real processes append concurrently to one SQLite file from a cold start.
- kill -9 at random points during appends: every acknowledged event survives, integrity ok.
- Hostile strings (lone surrogates, NUL, invalid UTF-8, RTL overrides, BOM) are stored, not
  dropped or refused.
- Rebuilding the projections is deterministic: equal digests and equal manifest bytes across
  rebuilds, after deleting the projections folder, and against incremental catch-up.

Child processes run small scripts given with ``python -c`` so they share nothing with pytest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings, StoreConfig
from opentraces.events import Recorded
from opentraces.store import EventLog, sqlite_integrity_ok
from opentraces.text import decode_bytes

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPENTRACES_STORE_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_all(log: EventLog) -> list[Recorded]:
    return list(log.iter_all(page_size=500))


# ---------------------------------------------------------------------------------------------
# a. 32 processes appending at once, cold start

PROCESSES = 32
EVENTS_PER_PROCESS = 50

CONCURRENT_CHILD = r"""
import json, sys, time
from pathlib import Path
from opentraces.config import StoreConfig
from opentraces.events import MetadataRecorded
from opentraces.store import EventLog

path, proc, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # "go": all processes start together and race the store's creation
began = time.monotonic()
done, slowest = [], 0.0
with EventLog.open(StoreConfig(sqlite_path=path)) as log:
    opened = time.monotonic() - began
    for seq in range(count):
        stream = f"trace:own-{proc}" if seq % 2 == 0 else "trace:shared"
        event = MetadataRecorded(record_type="load", data={"p": proc, "seq": seq})
        t0 = time.monotonic()
        positions = log.append(stream, [event])
        slowest = max(slowest, time.monotonic() - t0)
        done.append([seq, stream, positions])
print(json.dumps({"proc": proc, "done": done, "open_s": opened, "slowest_s": slowest}),
      flush=True)
"""


@pytest.mark.slow
def test_32_processes_append_concurrently_from_a_cold_start(tmp_path: Path) -> None:
    path = tmp_path / "bucket" / "events.sqlite"
    assert not path.exists()
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_CHILD, str(path), str(p),
                               str(EVENTS_PER_PROCESS)],
                              cwd=REPO, env=child_env(), text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for p in range(PROCESSES)]
    try:
        for proc in procs:  # wait until every interpreter is up and imported
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "ready\n", f"child failed to start: {line!r}"
        assert not path.exists(), "the store must not exist before the race"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    reports: dict[int, dict[str, Any]] = {}
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert "database is locked" not in err.lower()
        assert "locked" not in err.lower() and "busy" not in err.lower(), err
        assert proc.returncode == 0, f"child exited {proc.returncode}:\n{err}"
        assert "Traceback" not in err, err
        report = json.loads(out.strip().splitlines()[-1])
        reports[report["proc"]] = report
    assert sorted(reports) == list(range(PROCESSES))

    total = PROCESSES * EVENTS_PER_PROCESS
    shared_total = PROCESSES * (EVENTS_PER_PROCESS // 2)
    assert sqlite_integrity_ok(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"

    with EventLog.open(StoreConfig(sqlite_path=path)) as log:
        assert log.count() == total
        records = read_all(log)
        shared = list(log.read("trace:shared"))
        own = {p: list(log.read(f"trace:own-{p}")) for p in range(PROCESSES)}
        assert log.head() == total

    # Every (process, seq) payload is present exactly once.
    keys = Counter((r.event.data["p"], r.event.data["seq"]) for r in records)
    expected = {(p, s) for p in range(PROCESSES) for s in range(EVENTS_PER_PROCESS)}
    assert set(keys) == expected
    assert max(keys.values()) == 1
    # Notification ids: unique, in order and, on SQLite, gapless.
    positions = [r.position for r in records]
    assert positions == list(range(1, total + 1))
    # Each process got back the positions its events really have.
    at = {r.position: r for r in records}
    for p, report in reports.items():
        assert [d[0] for d in report["done"]] == list(range(EVENTS_PER_PROCESS))
        for seq, stream, returned in report["done"]:
            assert len(returned) == 1
            rec = at[returned[0]]
            assert (rec.stream, rec.event.data["p"], rec.event.data["seq"]) == (stream, p, seq)
    # Stream versions are dense: the shared stream lost no append to a version conflict.
    assert [r.version for r in shared] == list(range(shared_total))
    assert len({(r.event.data["p"], r.event.data["seq"]) for r in shared}) == shared_total
    for p, recs in own.items():
        assert [r.version for r in recs] == list(range(EVENTS_PER_PROCESS // 2))
        assert [r.event.data["seq"] for r in recs] == list(range(0, EVENTS_PER_PROCESS, 2))
        # Per process, the shared-stream events keep that process's order.
        mine = [r.event.data["seq"] for r in shared if r.event.data["p"] == p]
        assert mine == list(range(1, EVENTS_PER_PROCESS, 2))


# ---------------------------------------------------------------------------------------------
# b. kill -9 during appends

KILL_RUNS = 20
KILL_SEED = 20240611

CRASH_CHILD = r"""
import random, sys
from pathlib import Path
from opentraces.config import StoreConfig
from opentraces.events import MetadataRecorded
from opentraces.store import EventLog

path, run, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
log = EventLog.open(StoreConfig(sqlite_path=path))
print("ready", flush=True)
batch = 0
while True:
    size = rng.choice((1, 1, 2, 3, 5, 10))
    events = [MetadataRecorded(record_type="crash", data={
        "run": run, "batch": batch, "i": i,
        "pad": rng.randbytes(5000).hex() if rng.random() < 0.2 else "x"}) for i in range(size)]
    stream = "trace:crash-shared" if batch % 2 else f"trace:crash-{run}"
    positions = log.append(stream, events)
    print(f"ack {run} {batch} {size} {stream} {positions[0]} {positions[-1]}", flush=True)
    batch += 1
"""


def wait_for_line(path: Path, line: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text(errors="replace").split("\n"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise AssertionError(f"child never printed {line!r} (exit {proc.poll()})")


def parse_acks(stdout: bytes) -> list[tuple[int, int, int, str, int, int]]:
    """Complete ack lines only: a partial last line (no newline) is ignored."""
    *complete, _partial = stdout.split(b"\n")
    acks = []
    for raw in complete:
        line = raw.decode()
        if line == "ready":
            continue
        word, run, batch, size, stream, first, last = line.split(" ")
        assert word == "ack", line
        acks.append((int(run), int(batch), int(size), stream, int(first), int(last)))
    return acks


@pytest.mark.slow
def test_kill_9_during_appends_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    path = tmp_path / "bucket" / "events.sqlite"
    config = StoreConfig(sqlite_path=path)
    shared_seen = 0  # events of trace:crash-shared already checked
    total_present = 0
    total_acked = 0
    acked_batches = 0
    unacked_committed = 0
    head_before = 0

    for run in range(KILL_RUNS):
        out_path, err_path = tmp_path / f"run{run}.out", tmp_path / f"run{run}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(path), str(run),
                                     str(rng.randrange(2**32))],
                                    cwd=REPO, env=child_env(), stdout=out, stderr=err)
        try:
            wait_for_line(out_path, "ready", proc, timeout=60)
            time.sleep(rng.uniform(0.2, 1.5))
            assert proc.poll() is None, f"child died early:\n{err_path.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in err_path.read_text(errors="replace")

        acks = parse_acks(out_path.read_bytes())
        assert acks, f"run {run}: the kill landed before the first append returned"
        assert [a[1] for a in acks] == list(range(len(acks)))
        # Checked before anything reopens the store: the hot WAL as the crash left it.
        assert sqlite_integrity_ok(path), f"run {run}: integrity_check failed after kill -9"

        with EventLog.open(config) as log:
            records = list(log.iter_all(after=head_before, page_size=500))
            own = list(log.read(f"trace:crash-{run}"))
            shared = list(log.read("trace:crash-shared", after=shared_seen - 1))
            count = log.count()
            head_before = log.head()
        keys = Counter((r.event.data["run"], r.event.data["batch"], r.event.data["i"])
                       for r in records)
        assert max(keys.values(), default=1) == 1, f"run {run}: duplicated events"
        assert {k[0] for k in keys} <= {run}, f"run {run}: events of another run appeared"
        assert len(own) + len(shared) == len(records)
        by_batch: dict[int, list[Recorded]] = {}
        for rec in records:
            by_batch.setdefault(rec.event.data["batch"], []).append(rec)

        for _, batch, size, stream, first, last in acks:
            got = by_batch.get(batch, [])
            assert [r.event.data["i"] for r in got] == list(range(size)), \
                f"run {run}: acknowledged batch {batch} lost (or partly lost) after kill -9"
            # One transaction, one writer: the batch sits at the positions append returned.
            assert [r.position for r in got] == list(range(first, last + 1))
            assert {r.stream for r in got} == {stream}
        # Beyond the acks, at most the one batch in flight may have committed, and whole.
        extra = sorted(set(by_batch) - {a[1] for a in acks})
        assert extra in ([], [len(acks)]), f"run {run}: unexpected batches {extra}"
        for batch in extra:
            assert [r.event.data["i"] for r in by_batch[batch]] == \
                list(range(len(by_batch[batch])))
            unacked_committed += 1
        # Versions stay dense in both streams, across every crash so far.
        assert [r.version for r in own] == list(range(len(own)))
        assert [r.version for r in shared] == list(range(shared_seen, shared_seen + len(shared)))

        shared_seen += len(shared)
        total_present += len(records)
        total_acked += sum(a[2] for a in acks)
        acked_batches += len(acks)
        assert count == total_present
        assert sqlite_integrity_ok(path)

    with EventLog.open(config) as log:
        everything = read_all(log)
    assert len(everything) == total_present >= total_acked
    positions = [r.position for r in everything]
    assert positions == sorted(set(positions))
    assert sqlite_integrity_ok(path)
    print(f"kill -9 x{KILL_RUNS}: {acked_batches} batches / {total_acked} events acknowledged, "
          f"{total_present} stored, {unacked_committed} batches committed but not acknowledged")


# ---------------------------------------------------------------------------------------------
# c. hostile strings

HOSTILE = [
    pytest.param("\ud800", "\\ud800", id="lone-high-surrogate"),
    pytest.param("a\udfffb", "a\\udfffb", id="lone-low-surrogate-inside"),
    pytest.param("\udc00\ud800", "\\udc00\\ud800", id="reversed-pair"),
    pytest.param("\ud83d\ude00", "\\ud83d\\ude00", id="unjoined-pair"),
    pytest.param(json.loads('"x\\ud800y"'), "x\\ud800y", id="surrogate-from-json"),
    pytest.param("\x00", "\x00", id="nul"),
    pytest.param("a\x00b\x00\x00", "a\x00b\x00\x00", id="nuls-inside"),
    pytest.param(decode_bytes(b"\x80"), "\\x80", id="invalid-utf8-byte"),
    pytest.param(decode_bytes(b"ok \xff\xfe \xc3\x28 \xc0\xaf"), "ok \\xff\\xfe \\xc3( \\xc0\\xaf",
                 id="invalid-utf8-mixed"),
    pytest.param(decode_bytes(b"\xed\xa0\x80"), "\\xed\\xa0\\x80", id="utf8-encoded-surrogate"),
    pytest.param(decode_bytes(b"caf\xc3"), "caf\\xc3", id="truncated-multibyte"),
    pytest.param("\u202egnp.exe\u202c", "\u202egnp.exe\u202c", id="rtl-override"),
    pytest.param("\ufeff{}", "\ufeff{}", id="bom"),
    pytest.param("a\u200bb\u2060c", "a\u200bb\u2060c", id="zero-width"),
    pytest.param("\U0001f600\U0001d11e", "\U0001f600\U0001d11e", id="non-bmp"),
    pytest.param("\\ud800 already text", "\\ud800 already text", id="escape-lookalike"),
    pytest.param("\ufeff\x00\ud800\u202e" + decode_bytes(b"\x80") + "\U0001f600",
                 "\ufeff\x00\\ud800\u202e\\x80\U0001f600", id="everything-at-once"),
]

RAW_BYTES = b"\x80\xff\x00\xed\xa0\x80 raw"


def hostile_events(h: str) -> list[ev.Event]:
    """Events carrying ``h`` in plain, nested-struct, list and nested-dict fields (and keys)."""
    blob = ev.BlobRef(hash="ab" * 32, size=3, media_type="text/plain")
    return [
        ev.SessionStarted(trace_id="t1", session_id=h, agent=ev.AgentInfo(name=h, model=h),
                          project=h, cwd=h, title=h, at="2025-01-01T00:00:00Z"),
        ev.StepRecorded(step_index=1, role="user", content=h, reasoning_content=h,
                        tool_calls=[ev.ToolCall(tool_call_id=h, tool_name="Bash",
                                                input={"command": h, h: [h, {"deep": h}]},
                                                input_blob=blob)],
                        token_usage=ev.TokenUsage(input_tokens=5), images=[blob]),
        ev.ToolResultRecorded(step_index=1, tool_call_id=h, content=h, output_chars=7,
                              is_error=True,
                              detail={"stdout": h, h: [h, 1, None, 2.5, {"k": h}],
                                      "nested": {"deeper": {h: h}}, "n": 3}),
        ev.MetadataRecorded(record_type=h, data={"nested": {"deeper": {h: [h, h]}},
                                                 "items": [h, {"x": h}], h: True}),
        ev.SourceLineRejected(path=h, generation=2, line_number=9, offset=1024, reason=h,
                              raw_bytes=RAW_BYTES),
        ev.PatchRecorded(patch_id="p1", trace_id="t1", step_index=1, tool_call_id=h,
                         tool_name="Edit", path=h, range=ev.LineRange(3, 9), before=blob),
        ev.AnchorRecorded(anchor_id="a1", patch_id="p1", trace_id="t1", repo_key=h, commit=h,
                          path=h, evidence_tier="exact", evidence_firmness="firm",
                          range=ev.LineRange(1, 2), similarity=0.5),
        ev.ReviewDecided(row_ids=[h, "r2"], decision="approve", reason=h),
    ]


@pytest.mark.parametrize(("hostile", "expected"), HOSTILE)
def test_hostile_strings_are_stored_not_dropped(store_config: StoreConfig, hostile: str,
                                                expected: str) -> None:
    events = hostile_events(hostile)
    with EventLog.open(store_config) as log:
        positions = log.append("trace:hostile", events)
        assert len(positions) == len(events)
        # Re-writing the same hostile events at their versions is recognised as a no-op.
        assert log.write([Recorded("trace:hostile", i, e) for i, e in enumerate(events)]) == []
        # A different event at a taken version is still refused, hostile or not.
        with pytest.raises(Exception, match="different event"):
            log.write([Recorded("trace:hostile", 0, events[1])])

    with EventLog.open(store_config) as log:  # read back through a fresh connection
        stored = [r.event for r in log.read("trace:hostile")]
        paged = [r.event for r in log.page(0, 100)]
        assert log.count() == len(events)
    wanted = hostile_events(expected)
    assert stored == wanted
    assert paged == wanted
    assert stored[4].raw_bytes == RAW_BYTES  # bytes fields are kept byte-exact
    assert stored[2].detail["stdout"] == expected
    assert stored[3].data["nested"]["deeper"] == {expected: [expected, expected]}


def test_decode_bytes_keeps_every_byte() -> None:
    assert decode_bytes("café ✓ \U0001f600".encode()) == "café ✓ \U0001f600"
    assert decode_bytes(b"a\x00b") == "a\x00b"
    raw = bytes(range(256))
    text = decode_bytes(raw)
    assert text.encode("utf-8")  # always storable
    assert text[:128] == raw[:128].decode("ascii")
    assert text[128:] == "".join(f"\\x{b:02x}" for b in range(128, 256))


def test_hostile_strings_property(settings: Settings) -> None:
    """Any text json.loads can produce (surrogates included) is stored and read back escaped."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    # st.characters() leaves out surrogates even with codec=None, so add them explicitly.
    char = st.one_of(st.characters(codec=None, categories=None, exclude_categories=()),
                     st.integers(0xD800, 0xDFFF).map(chr),
                     st.sampled_from(["\x00", "\ufeff", "\u202e"]))
    text = st.text(char, max_size=40)

    with EventLog.open(settings.store) as log:
        counter = iter(range(10**9))

        @hypothesis.settings(max_examples=150, derandomize=True, deadline=None)
        @hypothesis.given(value=text, key=text)
        def check(value: str, key: str) -> None:
            stream = f"trace:prop-{next(counter)}"
            event = ev.ToolResultRecorded(step_index=0, tool_call_id=value, content=value,
                                          detail={key: [value, {"v": value}]})
            log.append(stream, [event])
            (back,) = [r.event for r in log.read(stream)]
            escaped = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c
                              for c in value)
            escaped_key = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c
                                  for c in key)
            assert back.content == escaped and back.tool_call_id == escaped
            assert back.detail == {escaped_key: [escaped, {"v": escaped}]}

        check()


# ---------------------------------------------------------------------------------------------
# d. rebuild is deterministic

MANIFEST = "bucket_manifest"


def workload(seed: int = 7) -> list[tuple[str, list[ev.Event]]]:
    """A few hundred varied events over several traces, as (stream, events) append calls."""
    rng = random.Random(seed)
    trace_ids = [f"trace{n:02d}" for n in range(7)]
    calls: list[tuple[str, list[ev.Event]]] = [
        ("bucket:default", [ev.RemoteConfigured(remote_kind="hf", target="me/bucket")]),
    ]
    steps = dict.fromkeys(trace_ids, 0)
    for n, tid in enumerate(trace_ids):
        calls.append((f"trace:{tid}", [ev.SessionStarted(
            trace_id=tid, session_id=f"s-{n}", agent=ev.AgentInfo(name="claude_code",
                                                                  version=f"1.0.{n}"),
            project=f"/home/u/proj{n % 3}", at=f"2025-01-0{n + 1}T00:00:00Z",
            title=None if n % 2 else f"title {n} \ud800")]))
    for round_ in range(30):
        tid = rng.choice(trace_ids)
        batch: list[ev.Event] = []
        for _ in range(rng.randint(1, 8)):
            i = steps[tid]
            steps[tid] += 1
            role = "user" if i % 4 == 0 else "assistant"
            batch.append(ev.StepRecorded(step_index=i, role=role, model="m-1",
                                         content=f"\n  step {i} of {tid} \x00\u202e{round_}\n",
                                         is_sidechain=(i % 7 == 3)))
            if role == "assistant" and rng.random() < 0.3:
                batch.append(ev.ToolResultRecorded(step_index=i, tool_call_id=f"c{i}",
                                                   content="ok", detail={"n": i}))
            if rng.random() < 0.25:
                pid = f"{tid}-p{i}"
                batch.append(ev.PatchRecorded(patch_id=pid, trace_id=tid, step_index=i,
                                              tool_call_id=f"c{i}", tool_name="Edit",
                                              path=f"src/f{i}.py", range=ev.LineRange(1, i + 1)))
                if rng.random() < 0.6:
                    calls.append(("repo:r1", [ev.AnchorRecorded(
                        anchor_id=f"a-{pid}", patch_id=pid, trace_id=tid, repo_key="r1",
                        commit=f"{round_:040x}", path=f"src/f{i}.py", evidence_tier="exact",
                        evidence_firmness="firm")]))
            if rng.random() < 0.05:
                batch.append(ev.SourceLineRejected(path="x.jsonl", generation=0,
                                                   line_number=i, offset=i * 10,
                                                   reason="bad json", raw_bytes=b"{\xff"))
        calls.append((f"trace:{tid}", batch))
        if round_ % 6 == 5:
            scanned = rng.sample(trace_ids, 3)
            calls.append(("bucket:default", [
                ev.SanitizationRun(trace_id=t, security_version="sec-1",
                                   tools_applied=["regex"], findings=int(t == "trace03"),
                                   verdict="findings" if t == "trace03" else "clean")
                for t in scanned]))
            calls.append(("bucket:default", [ev.BucketPushed(remote="hf", trace_ids=scanned,
                                                             blob_count=2, commit="c0ffee")]))
        if round_ == 12:
            calls.append(("bucket:default", [ev.TraceExcluded(trace_id="trace05",
                                                              reason="private")]))
    for tid in trace_ids[:4]:
        calls.append((f"trace:{tid}", [ev.SessionEnded(reason="exit",
                                                       total_usage=ev.TokenUsage(9, 9))]))
    calls.append(("dataset:d1", [ev.DatasetCreated(name="d1", workflow="w",
                                                   workflow_digest="dd")]))
    calls.append(("bucket:default", [ev.SanitizationRun(trace_id="trace-unknown",
                                                        security_version="sec-1")]))
    return calls


def populate(settings: Settings, append: Callable[[str, list[ev.Event]], Any]) -> int:
    calls = workload()
    for stream, events in calls:
        append(stream, events)
    return sum(len(events) for _, events in calls)


def manifest_bytes(settings: Settings) -> bytes:
    return (settings.projections_dir / MANIFEST / "manifest.json").read_bytes()


def live_digest(settings: Settings) -> str:
    with api.open_workspace(settings, readonly=True) as ws:
        proj = ws.runner().open(MANIFEST)
        assert proj is not None
        assert proj.problems() == []
        digest = proj.digest()
    assert digest is not None
    return digest


def rebuild_digest(settings: Settings) -> str:
    report = api.rebuild(settings)
    result = report.projections[MANIFEST]
    assert result["rebuilt"] is True
    assert result["digest"] == live_digest(settings)
    status = api.status(settings)
    assert status.projections[MANIFEST]["state"] == "fresh", status
    return result["digest"]


@pytest.fixture
def populated(backend_settings: Settings) -> Iterator[tuple[Settings, int]]:
    with EventLog.open(backend_settings.store) as log:
        total = populate(backend_settings, log.append)
        assert log.count() == total
    yield backend_settings, total


def check_manifest_is_meaningful(settings: Settings) -> None:
    manifest = json.loads(manifest_bytes(settings))
    traces = {t["trace_id"]: t for t in manifest["traces"]}
    assert len(traces) == 8  # seven sessions plus one sanitized id without a session
    assert traces["trace05"]["status"]["excluded"] is True
    assert traces["trace03"]["status"]["security_verdict"] == "findings"
    assert {t["status"]["sync"] for t in traces.values()} == {"local", "pushed", "behind"}
    assert sum(t["summary"]["step_count"] for t in traces.values()) > 100
    assert sum(t["summary"]["anchored_count"] for t in traces.values()) > 0
    assert traces["trace00"]["title"] == "title 0 \\ud800"
    assert sum(t["lifecycle"] == "ended" for t in traces.values()) == 4


@pytest.mark.slow
def test_rebuild_twice_gives_identical_digests_and_manifest(
        populated: tuple[Settings, int]) -> None:
    settings, total = populated
    first = rebuild_digest(settings)
    first_manifest = manifest_bytes(settings)
    check_manifest_is_meaningful(settings)
    assert json.loads(first_manifest)["position"] == api.status(settings).store.head

    second = rebuild_digest(settings)
    assert second == first
    assert manifest_bytes(settings) == first_manifest
    assert api.event_count(settings) == total


@pytest.mark.slow
def test_incremental_catch_up_equals_full_rebuild(backend_settings: Settings) -> None:
    settings = backend_settings
    with api.open_workspace(settings) as ws:  # one open log, caught up after every append
        populate(settings, lambda stream, events: api.append(ws, stream, events))
    assert api.status(settings).projections[MANIFEST]["state"] == "fresh"
    incremental = live_digest(settings)
    incremental_manifest = manifest_bytes(settings)
    check_manifest_is_meaningful(settings)

    assert rebuild_digest(settings) == incremental
    assert manifest_bytes(settings) == incremental_manifest


def test_incremental_catch_up_with_fresh_opens_equals_full_rebuild(
        backend_settings: Settings) -> None:
    """api.append given only Settings: each call opens, appends, catches up and closes."""
    settings = backend_settings
    calls = workload()
    chunks = [calls[i:i + 9] for i in range(0, len(calls), 9)]
    for chunk in chunks:
        for stream, events in chunk[:-1]:
            api.append(settings, stream, events, catch_up=False)
        api.append(settings, *chunk[-1])  # catch up once per chunk
    incremental = live_digest(settings)
    incremental_manifest = manifest_bytes(settings)
    assert rebuild_digest(settings) == incremental
    assert manifest_bytes(settings) == incremental_manifest


@pytest.mark.slow
def test_rebuild_after_deleting_projections_folder(populated: tuple[Settings, int]) -> None:
    settings, _ = populated
    first = rebuild_digest(settings)
    first_manifest = manifest_bytes(settings)

    shutil.rmtree(settings.projections_dir)
    assert not settings.projections_dir.exists()
    assert api.status(settings).projections[MANIFEST]["state"] == "missing"

    assert rebuild_digest(settings) == first
    assert manifest_bytes(settings) == first_manifest
    # Only the live builds remain after the swaps.
    builds = sorted(b.resolve() for b in (settings.projections_dir / ".builds").iterdir())
    assert builds == sorted((settings.projections_dir / name).resolve()
                            for name in api.projection_names())

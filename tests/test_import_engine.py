"""The importer's bookkeeping, driven by a tiny adapter so that it is tested on its own:
offsets, partial lines, growth, rewrites, rejections, raw preservation, concurrent imports."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from opentraces import events as ev
from opentraces.blobs import BlobStore
from opentraces.capture.base import Context, LineRef, SessionRef
from opentraces.capture.importer import import_files
from opentraces.config import Settings
from opentraces.store import EventLog


class ToyParser:
    def __init__(self) -> None:
        self.steps = 0

    def feed(self, record: Any, line: LineRef) -> list[ev.Event]:
        if not isinstance(record, dict) or "role" not in record:
            return [ev.MetadataRecorded(record_type="other")]
        self.steps += 1
        return [ev.StepRecorded(step_index=self.steps - 1, role=record["role"],
                                content=str(record.get("text", "")))]


class ToyAdapter:
    agent: ClassVar[str] = "toy"

    def default_roots(self, home: Path) -> list[Path]:
        return []

    def discover(self, root: Path) -> Iterator[Path]:
        return iter(sorted(root.glob("*.jsonl")))

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        return SessionRef(agent="toy", session_id=path.stem, path=path)

    def parser(self, ref: SessionRef, ctx: Context) -> ToyParser:
        return ToyParser()


def line(role: str, text: str) -> bytes:
    return json.dumps({"role": role, "text": text}).encode() + b"\n"


def run(settings: Settings, *paths: Path):
    with EventLog(settings.store) as log:
        return import_files(log, BlobStore(settings.blobs_dir), [(ToyAdapter(), p) for p in paths])


def trace_events(settings: Settings, path: Path) -> list[ev.Event]:
    ref = ToyAdapter().identify(path, None)
    with EventLog(settings.store) as log:
        return [r.event for r in log.read(ev.stream("trace", ref.trace_id))]


def steps(events: list[ev.Event]) -> list[tuple[int, str]]:
    return [(e.step_index, e.content) for e in events if isinstance(e, ev.StepRecorded)]


def test_first_import_then_nothing_new(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "s1.jsonl"
    f.write_bytes(line("user", "a") + line("agent", "b"))
    first = run(settings, f)
    assert (first.traces_created, first.lines_read, first.events_appended) == (1, 2, 4)
    events = trace_events(settings, f)
    assert isinstance(events[0], ev.SessionStarted) and events[0].source_path == str(f)
    assert isinstance(events[1], ev.SourceSegmentRead)
    assert (events[1].start_offset, events[1].end_offset) == (0, f.stat().st_size)
    again = run(settings, f)
    assert (again.events_appended, again.sources_unchanged) == (0, 1)
    assert trace_events(settings, f) == events


def test_growth_appends_only_the_new_lines(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "s2.jsonl"
    f.write_bytes(line("user", "a"))
    run(settings, f)
    with open(f, "ab") as fh:
        fh.write(line("agent", "b") + line("user", "c"))
    report = run(settings, f)
    assert (report.traces_updated, report.lines_read, report.events_appended) == (1, 2, 3)
    assert steps(trace_events(settings, f)) == [(0, "a"), (1, "b"), (2, "c")]


def test_partial_last_line_waits(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "s3.jsonl"
    whole = line("agent", "second")
    f.write_bytes(line("user", "first") + whole[:7])
    run(settings, f)
    assert steps(trace_events(settings, f)) == [(0, "first")]
    assert run(settings, f).events_appended == 0  # still partial: nothing to do
    with open(f, "ab") as fh:
        fh.write(whole[7:])
    run(settings, f)
    assert steps(trace_events(settings, f)) == [(0, "first"), (1, "second")]


def test_rewritten_or_shrunk_file_starts_a_new_generation(settings: Settings,
                                                         tmp_path: Path) -> None:
    f = tmp_path / "s4.jsonl"
    f.write_bytes(line("user", "a") + line("agent", "b"))
    run(settings, f)
    f.write_bytes(line("user", "x"))  # shorter, different bytes
    run(settings, f)
    segments = [e for e in trace_events(settings, f) if isinstance(e, ev.SourceSegmentRead)]
    assert [(s.generation, s.start_offset) for s in segments] == [(0, 0), (1, 0)]
    f.write_bytes(line("user", "y") + line("agent", "z"))  # same length as before, new bytes
    run(settings, f)
    segments = [e for e in trace_events(settings, f) if isinstance(e, ev.SourceSegmentRead)]
    assert [(s.generation, s.start_offset) for s in segments] == [(0, 0), (1, 0), (2, 0)]


def test_bad_lines_are_rejected_with_their_bytes(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "s5.jsonl"
    f.write_bytes(line("user", "ok") + b"{not json\n" + b"\xff\xfe\n" + line("agent", "fine"))
    report = run(settings, f)
    assert report.lines_rejected == 2
    assert [(r.line, r.reason.split(" at ")[0]) for r in report.rejected] == [
        (2, "invalid JSON"), (3, "invalid UTF-8")]
    events = trace_events(settings, f)
    bad = [e for e in events if isinstance(e, ev.SourceLineRejected)]
    assert [b.raw_bytes for b in bad] == [b"{not json", b"\xff\xfe"]
    assert steps(events) == [(0, "ok"), (1, "fine")]


def test_raw_bytes_are_kept_local_only(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "s6.jsonl"
    data = line("user", "keep me") + line("agent", "and me")
    f.write_bytes(data)
    run(settings, f)
    (segment,) = [e for e in trace_events(settings, f) if isinstance(e, ev.SourceSegmentRead)]
    assert segment.raw.local_only is True
    assert BlobStore(settings.blobs_dir).get(segment.raw.hash) == data
    f.unlink()  # the agent deleted its transcript: the bytes survive
    assert BlobStore(settings.blobs_dir).get(segment.raw.hash) == data


def _import_in_child(args: tuple[str, str]) -> int:
    home, path = args
    from opentraces.config import load_settings

    return run(load_settings(Path(home)), Path(path)).events_appended


def test_concurrent_imports_of_a_growing_file_converge(settings: Settings,
                                                       tmp_path: Path) -> None:
    f = tmp_path / "s7.jsonl"
    f.write_bytes(b"".join(line("user", f"m{i}") for i in range(200)))
    EventLog(settings.store).close()  # create the store before the race
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        appended = pool.map(_import_in_child, [(str(settings.home), str(f))] * 8)
    assert sum(appended) == 202  # one importer wrote everything, the others found it done
    assert steps(trace_events(settings, f)) == [(i, f"m{i}") for i in range(200)]


def test_a_line_nested_too_deeply_is_rejected_not_raised(settings: Settings,
                                                         tmp_path: Path) -> None:
    f = tmp_path / "s8.jsonl"
    deep = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    f.write_bytes(line("user", "before") + deep + line("agent", "after"))
    report = run(settings, f)
    assert [(r.line, r.reason) for r in report.rejected] == [(2, "JSON nested too deeply")]
    assert steps(trace_events(settings, f)) == [(0, "before"), (1, "after")]

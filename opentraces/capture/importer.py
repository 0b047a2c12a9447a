"""Import transcript files into the event log: incremental, idempotent, lossless.

Per source file the trace stream remembers, in ``SourceSegmentRead`` events, which bytes were
read (generation, end offset of the last complete line, fingerprints of the head and of the
bytes just before that offset). On the next import of the same path:

- same bytes up to the offset, nothing after it: nothing is appended;
- the file grew: only the lines after the offset are turned into events (the earlier lines are
  replayed through the parser for its state, see :mod:`opentraces.capture.base`);
- a partial last line (no newline yet) is left for the next import;
- the file shrank or its head/tail changed (rewritten): a new generation starts at offset 0.

Each segment's raw bytes go to the blob store marked ``local_only``, so a session survives the
agent deleting it. A complete line that does not decode becomes ``SourceLineRejected`` with its
bytes. Writes go at explicit versions after the stream's last one, so two importers racing on
the same file converge: identical events are skipped, and a loser that read a different range
re-reads the stream and tries again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgspec

from opentraces.blobs import BlobStore
from opentraces.capture import adapter
from opentraces.capture.base import Adapter, Context, SessionRef
from opentraces.capture.lines import complete_length
from opentraces.capture.parse import first_record, parse_bytes
from opentraces.errors import UsageError, VersionConflict
from opentraces.events import (
    AgentInfo,
    Event,
    Recorded,
    SessionStarted,
    SourceLineRejected,
    SourceSegmentRead,
    stream,
)
from opentraces.store import EventLog

HEAD_BYTES = 4096
TAIL_BYTES = 256
BATCH_EVENTS = 20_000
RAW_MEDIA_TYPE = "application/x-ndjson"

Progress = Callable[[int], None]
#: Decides whether a session may be captured (tracking mode, enrollment):
#: called with its working folder, agent and start time (ISO-8601), each possibly unknown.
CaptureFilter = Callable[[str | None, str, str | None], bool]


class Rejection(msgspec.Struct, frozen=True):
    path: str
    line: int
    reason: str


class Skipped(msgspec.Struct, frozen=True):
    path: str
    reason: str


class ImportReport(msgspec.Struct):
    sources_scanned: int = 0
    sources_unchanged: int = 0
    sources_skipped: int = 0
    traces_created: int = 0
    traces_updated: int = 0
    events_appended: int = 0
    lines_read: int = 0
    lines_rejected: int = 0
    bytes_read: int = 0
    rejected: list[Rejection] = []
    skipped: list[Skipped] = []


@dataclass(frozen=True)
class Checkpoint:
    """Where the last import of one path stopped."""

    generation: int
    end_offset: int
    head_hash: str | None
    tail_hash: str | None


@dataclass
class Plan:
    """The events one file adds, ready to write."""

    ref: SessionRef
    records: list[Recorded]
    created: bool
    lines_read: int
    rejected: list[Rejection]
    size: int


def head_hash(data: bytes, end: int) -> str:
    return blake3.blake3(data[:min(HEAD_BYTES, end)]).hexdigest()


def tail_hash(data: bytes, end: int) -> str:
    return blake3.blake3(data[max(0, end - TAIL_BYTES):end]).hexdigest()


# ---------------------------------------------------------------------------------------------
# Finding files


def candidates(paths: Sequence[Path] | None, agents: Sequence[str], user_home: Path | None,
               since: float | None = None) -> Iterator[tuple[Adapter | None, Path]]:
    """(adapter, file) pairs to read.

    Without ``paths``: each agent's own discovery in its standard folders under ``user_home``.
    With ``paths``: every ``*.jsonl`` file given or found below a given folder, claimed by the
    first of ``agents`` whose adapter recognises its first record (file names vary: renamed
    copies, exported fixtures). A file no adapter recognises comes with ``None``, so that it
    is reported rather than silently passed over.
    """
    chosen = [adapter(a) for a in agents]
    seen: set[Path] = set()

    def fresh(file: Path) -> bool:
        key = file.resolve()
        if key in seen or (since is not None and file.stat().st_mtime < since):
            return False
        seen.add(key)
        return True

    if not paths:
        for ad in chosen:
            for root in ad.default_roots(user_home) if user_home is not None else []:
                if root.exists():
                    yield from ((ad, f) for f in ad.discover(root) if fresh(f))
        return
    for root in paths:
        if not root.exists():
            raise UsageError(f"{root}: no such file or folder")
        files = [root] if root.is_file() else sorted(root.rglob("*.jsonl"))
        for file in files:
            if fresh(file):
                yield next((ad for ad in chosen if _claims(ad, file)), None), file


def _claims(ad: Adapter, file: Path) -> bool:
    with open(file, "rb") as fh:
        head = fh.read(1 << 20)
    return ad.identify(file, first_record(head[:complete_length(head)])) is not None


# ---------------------------------------------------------------------------------------------
# Planning one file


def last_checkpoint(log: EventLog, stream_id: str,
                    path: str) -> tuple[Checkpoint | None, int | None]:
    """The newest checkpoint for ``path`` in a stream, and the stream's last version."""
    last_version = None
    before = None
    while True:
        page = log.read_back(stream_id, 1000, before)
        if not page:
            return None, last_version
        if last_version is None:
            last_version = page[0].version
        for rec in page:
            e = rec.event
            if isinstance(e, SourceSegmentRead) and e.path == path:
                return Checkpoint(e.generation, e.end_offset, e.head_hash, e.tail_hash), \
                    last_version
        before = page[-1].version


def plan_file(log: EventLog, blobs: BlobStore, ad: Adapter, path: Path, data: bytes,
              accept: CaptureFilter | None = None) -> Plan | None:
    """The records that importing ``data`` (the file's bytes) adds, or None if nothing."""
    first = first_record(data[:complete_length(data)])
    ref = ad.identify(path, first)
    if ref is None:
        return None
    stream_id = stream("trace", ref.trace_id)
    where = str(path)
    checkpoint, last_version = last_checkpoint(log, stream_id, where)
    complete = complete_length(data)
    generation, resume = 0, 0
    if checkpoint is not None:
        same = (len(data) >= checkpoint.end_offset
                and checkpoint.head_hash == head_hash(data, checkpoint.end_offset)
                and checkpoint.tail_hash == tail_hash(data, checkpoint.end_offset))
        if same and complete == checkpoint.end_offset:
            return Plan(ref, [], False, 0, [], 0)
        generation = checkpoint.generation if same else checkpoint.generation + 1
        resume = checkpoint.end_offset if same else 0
    ctx = Context(lambda content, media: blobs.put(content, media))
    parsed = parse_bytes(ad, path, data[:complete], resume=resume, ctx=ctx)
    # Checked on every import, so `remove` or an exclusion marker also stops a session that
    # was captured before: its new lines are left unread.
    if accept is not None and not accept(parsed.cwd or ref.extra.get("cwd"), ref.agent,
                                         parsed.started_at):
        return None
    raw = blobs.put(data[resume:complete], RAW_MEDIA_TYPE, local_only=True)
    events: list[Event] = []
    if last_version is None:
        events.append(SessionStarted(
            trace_id=ref.trace_id, session_id=ref.session_id, agent=AgentInfo(name=ref.agent),
            parent_trace_id=ref.parent_trace_id, source_path=where))
    events.append(SourceSegmentRead(
        path=where, generation=generation, start_offset=resume, end_offset=complete,
        line_count=parsed.lines_read + len(parsed.rejected), raw=raw,
        head_hash=head_hash(data, complete), tail_hash=tail_hash(data, complete)))
    events.extend(parsed.events)
    rejected = []
    for line, bad in parsed.rejected:
        events.append(SourceLineRejected(path=where, generation=generation,
                                         line_number=line.number, offset=line.offset,
                                         reason=bad.reason, raw_bytes=bad.raw))
        rejected.append(Rejection(path=where, line=line.number, reason=bad.reason))
    start = 0 if last_version is None else last_version + 1
    records = [Recorded(stream_id, start + i, e) for i, e in enumerate(events)]
    return Plan(ref, records, last_version is None, parsed.lines_read, rejected,
                complete - resume)


# ---------------------------------------------------------------------------------------------
# Importing


def import_files(log: EventLog, blobs: BlobStore,
                 files: Iterable[tuple[Adapter | None, Path]], *,
                 accept: CaptureFilter | None = None,
                 progress: Progress | None = None) -> ImportReport:
    """Import every (adapter, file) pair; events are written in batches across files."""
    report = ImportReport()
    batch: list[tuple[Adapter, Path, Plan]] = []
    pending = 0
    for ad, path in files:
        report.sources_scanned += 1
        if ad is None:
            report.sources_skipped += 1
            report.skipped.append(Skipped(str(path), "not a transcript of a known agent"))
            continue
        plan = _plan(log, blobs, ad, path, accept)
        if plan is None:
            report.sources_skipped += 1
            report.skipped.append(Skipped(str(path), "not captured (tracking mode, enrollment "
                                                     "or exclusion), or no longer there"))
        elif not plan.records:
            report.sources_unchanged += 1
        else:
            batch.append((ad, path, plan))
            pending += len(plan.records)
        if pending >= BATCH_EVENTS:
            _flush(log, blobs, batch, report, accept)
            batch, pending = [], 0
        if progress is not None:
            progress(1)
    _flush(log, blobs, batch, report, accept)
    return report


def _plan(log: EventLog, blobs: BlobStore, ad: Adapter, path: Path,
          accept: CaptureFilter | None) -> Plan | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # deleted since it was listed: nothing to read, nothing lost
    return plan_file(log, blobs, ad, path, data, accept)


def _flush(log: EventLog, blobs: BlobStore, batch: list[tuple[Adapter, Path, Plan]],
           report: ImportReport, accept: CaptureFilter | None) -> None:
    if not batch:
        return
    blobs.sync()  # the events about to be committed reference these blobs
    try:
        written = len(log.write([r for _, _, plan in batch for r in plan.records]))
        done = [plan for _, _, plan in batch]
    except VersionConflict:
        # Another importer wrote some of these streams meanwhile: redo file by file.
        done, written = [], 0
        for ad, path, _ in batch:
            if (result := _write_alone(log, blobs, ad, path, accept)) is not None:
                done.append(result[0])
                written += result[1]
    for plan in done:
        _count(report, plan)
    # Events another importer had already written identically are not counted as ours.
    report.events_appended += written


def _write_alone(log: EventLog, blobs: BlobStore, ad: Adapter, path: Path,
                 accept: CaptureFilter | None) -> tuple[Plan, int] | None:
    for attempt in range(5):
        plan = _plan(log, blobs, ad, path, accept)
        if plan is None or not plan.records:
            return None
        blobs.sync()
        try:
            return plan, len(log.write(plan.records))
        except VersionConflict:
            time.sleep(0.01 * (attempt + 1))
    raise VersionConflict(f"{path}: another import keeps writing the same session; try again")


def _count(report: ImportReport, plan: Plan) -> None:
    if plan.created:
        report.traces_created += 1
    else:
        report.traces_updated += 1
    report.lines_read += plan.lines_read
    report.lines_rejected += len(plan.rejected)
    report.bytes_read += plan.size
    report.rejected.extend(plan.rejected)

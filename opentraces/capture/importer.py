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

Whole documents (files an adapter reads as one JSON document, ``base.DocumentAdapter``; Gemini
CLI's ``chats/session-*.json``) are rewritten in place by their agent, so they are read whole on
every import and checkpointed by their items (messages), not by bytes. Their
``SourceSegmentRead`` fields mean:

- ``start_offset``/``end_offset``: items consumed before and after this read (so offset 0 still
  means "read from the start"; the items are the document's ``split`` list);
- ``line_count``: text lines of the document; ``raw``: the whole document;
- ``head_hash``: blake3 of the consumed items (``msgspec`` JSON of ``items[:end_offset]``),
  None after a read that did not decode; ``tail_hash``: blake3 of the whole document's bytes.

On the next import: the same bytes append nothing; the same consumed items followed by new ones
append the new items' events (earlier items are replayed for the parser's state); the last
consumed item revised in place (a response that gained its results) replays the previous
version, read back from the previous ``raw`` blob, and feeds the new one, which the adapter
turns into extensions of the same step; any other change (an earlier item changed or removed,
the previous raw blob missing) starts a new generation at item 0. A document that does not
decode (caught half-written, truncated) is one ``SourceLineRejected`` at the error's line, with
a segment that consumes nothing and keeps the bytes; the same bytes again append nothing, and
the next read that decodes starts a new generation (what the readers show is then what the
document says now; the rejection stays in the log). A document naming no session it can be
filed under (empty, or cut before its ids) is reported as skipped and read on a later import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import msgspec

from opentraces.blobs import BlobStore
from opentraces.capture import adapter
from opentraces.capture.base import Adapter, Context, DocumentAdapter, SessionRef, is_document
from opentraces.capture.lines import Undecodable, complete_length, decode_document
from opentraces.capture.parse import Records, feed_document, identify_head, parse_bytes
from opentraces.errors import BlobCorrupt, BlobMissing, UsageError, VersionConflict
from opentraces.events import (
    AgentInfo,
    BlobRef,
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
DOCUMENT_MEDIA_TYPE = "application/json"
#: A rejected document keeps at most this much of its bad line in the event (all of it is in
#: the segment's raw blob).
REJECTED_LINE_BYTES = 16_000

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
    #: Traces this import appended to (created or grown), in the order they were written.
    trace_ids: list[str] = []
    #: What the Trace Trails sync after the import found (None when it did not run).
    trail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Checkpoint:
    """Where the last import of one path stopped."""

    generation: int
    end_offset: int
    head_hash: str | None
    tail_hash: str | None
    raw: BlobRef | None = None


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
    is reported rather than silently passed over. Below a folder, files matching a document
    adapter's ``document_glob`` are listed too, but only those it recognises, or knows as its
    agent's and refuses (so an import reports why): other ``*.json`` files are not transcripts.
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
        documents: set[Path] = set()
        if root.is_dir():
            globs = {g for ad in chosen if isinstance(g := getattr(ad, "document_glob", None),
                                                      str)}
            documents = {f for g in globs for f in root.rglob(g) if f.is_file()} - set(files)
        for file in sorted([*files, *documents]) if documents else files:
            # A file some adapter reads as a document is offered to those adapters only: a
            # line adapter would take an indented document for a transcript yet to be written.
            readers = [ad for ad in chosen if is_document(ad, file)] or chosen
            if file in documents:
                claimed = next((ad for ad in readers if _claims(ad, file)), None)
                if claimed is not None and fresh(file):
                    yield claimed, file
            elif fresh(file):
                yield next((ad for ad in readers if _claims(ad, file)), None), file


def _claims(ad: Adapter, file: Path) -> bool:
    if is_document(ad, file):
        return _claims_document(ad, file)  # type: ignore[arg-type]
    with open(file, "rb") as fh:
        head = fh.read(1 << 20)
    return identify_head(ad, file, head) is not None


def _claims_document(ad: DocumentAdapter, file: Path) -> bool:
    data = file.read_bytes()
    value = decode_document(data)
    if isinstance(value, Undecodable):
        return ad.identify_partial(file, data) is not None
    return ad.identify(file, value) is not None or ad.refusal(file, value) is not None


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
                return Checkpoint(e.generation, e.end_offset, e.head_hash, e.tail_hash,
                                  e.raw), last_version
        before = page[-1].version


def trace_of_file(ad: Adapter, path: Path) -> str | None:
    """The trace a line-per-event transcript's lines go to; None for a whole document, or when
    the file cannot be read or ``ad`` does not recognise it."""
    if is_document(ad, path):
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    ref = identify_head(ad, path, data)
    return ref.trace_id if ref is not None else None


def plan_file(log: EventLog, blobs: BlobStore, ad: Adapter, path: Path, data: bytes,
              accept: CaptureFilter | None = None) -> Plan | None:
    """The records that importing ``data`` (the file's bytes) adds, or None if nothing."""
    ref = identify_head(ad, path, data)
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


def items_hash(items: list[Any]) -> str:
    """The fingerprint of a document's consumed items (``SourceSegmentRead.head_hash``)."""
    return blake3.blake3(msgspec.json.encode(items)).hexdigest()


def plan_document(log: EventLog, blobs: BlobStore, ad: DocumentAdapter, path: Path, data: bytes,
                  accept: CaptureFilter | None = None) -> Plan | str | None:
    """The records that importing a whole document adds, or why it is skipped (a str), or None
    when ``accept`` refuses its session."""
    if not data.strip():
        return "empty document (being written?): read on a later import"
    value = decode_document(data)
    bad = value if isinstance(value, Undecodable) else None
    if bad is not None:
        ref = ad.identify_partial(path, data)
        if ref is None:
            return (f"not a complete JSON document ({bad.reason}, line {bad.line}) and no session "
                    "named in what can be read: read on a later import")
    else:
        ref = ad.identify(path, value)
        if ref is None:
            return ad.refusal(path, value) or f"not a {ad.agent} transcript"
    stream_id = stream("trace", ref.trace_id)
    where = str(path)
    checkpoint, last_version = last_checkpoint(log, stream_id, where)
    content = blake3.blake3(data).hexdigest()
    if checkpoint is not None and checkpoint.tail_hash == content:
        return Plan(ref, [], False, 0, [], 0)
    events: list[Event] = []
    rejected: list[Rejection] = []
    lines_read = 0
    if bad is not None:
        if accept is not None and not accept(ref.extra.get("cwd"), ref.agent, None):
            return None
        generation = checkpoint.generation if checkpoint is not None else 0
        start = end = checkpoint.end_offset if checkpoint is not None else 0
        prefix = None
        events.append(SourceLineRejected(path=where, generation=generation,
                                         line_number=bad.line, offset=bad.offset,
                                         reason=bad.reason,
                                         raw_bytes=bad.raw[:REJECTED_LINE_BYTES]))
        rejected.append(Rejection(path=where, line=bad.line, reason=bad.reason))
    else:
        header, items = ad.split(value)
        generation, start, replay, keep = _resume(ad, blobs, checkpoint, header, items)
        ctx = Context(lambda body, media: blobs.put(body, media))
        parsed = feed_document(ad, ref, replay, keep, ctx)
        if accept is not None and not accept(parsed.cwd or ref.extra.get("cwd"), ref.agent,
                                             parsed.started_at):
            return None
        end, prefix = len(items), items_hash(items)
        events.extend(parsed.events)
        lines_read = parsed.lines_read
    raw = blobs.put(data, DOCUMENT_MEDIA_TYPE, local_only=True)
    head: list[Event] = []
    if last_version is None:
        head.append(SessionStarted(
            trace_id=ref.trace_id, session_id=ref.session_id, agent=AgentInfo(name=ref.agent),
            parent_trace_id=ref.parent_trace_id, source_path=where))
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    head.append(SourceSegmentRead(path=where, generation=generation, start_offset=start,
                                  end_offset=end, line_count=lines, raw=raw, head_hash=prefix,
                                  tail_hash=content))
    first = 0 if last_version is None else last_version + 1
    records = [Recorded(stream_id, first + i, e) for i, e in enumerate(head + events)]
    return Plan(ref, records, last_version is None, lines_read, rejected, len(data))


def _resume(ad: DocumentAdapter, blobs: BlobStore, checkpoint: Checkpoint | None, header: Any,
            items: list[Any]) -> tuple[int, int, Records, Records]:
    """(generation, items consumed before, records to replay, records to keep)."""
    whole: list[tuple[int, Any]] = [(0, header), *enumerate(items, 1)]
    if checkpoint is None:
        return 0, 0, [], whole
    generation, done = checkpoint.generation, checkpoint.end_offset
    if checkpoint.head_hash is not None and len(items) >= done:
        if items_hash(items[:done]) == checkpoint.head_hash:
            return generation, done, whole[:done + 1], whole[done + 1:]
        before = _previous(ad, blobs, checkpoint.raw)
        if (before is not None and done > 0 and len(before[1]) == done
                and before[1][:done - 1] == items[:done - 1]
                and ad.item_key(items[done - 1]) is not None
                and ad.item_key(before[1][done - 1]) == ad.item_key(items[done - 1])):
            # The last item read was revised in place: replay the version read then, feed
            # the new one again (positions: item n is record n).
            return generation, done, [(0, before[0]), *enumerate(before[1], 1)], whole[done:]
    return generation + 1, 0, [], whole


def _previous(ad: DocumentAdapter, blobs: BlobStore,
              raw: BlobRef | None) -> tuple[Any, list[Any]] | None:
    """(header, items) of the document as the previous import read it, if its bytes are here."""
    if raw is None:
        return None
    try:
        value = decode_document(blobs.get(raw.hash))
    except (BlobMissing, BlobCorrupt):
        return None  # deleted or damaged by hand: read the document again from its start
    return None if isinstance(value, Undecodable) else ad.split(value)


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
        if plan is None or isinstance(plan, str):
            report.sources_skipped += 1
            report.skipped.append(Skipped(str(path), plan or "not captured (tracking mode, "
                                                             "enrollment or exclusion), or no "
                                                             "longer there"))
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
    report.trace_ids = list(dict.fromkeys(report.trace_ids))
    return report


def _plan(log: EventLog, blobs: BlobStore, ad: Adapter, path: Path,
          accept: CaptureFilter | None) -> Plan | str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # deleted since it was listed: nothing to read, nothing lost
    if is_document(ad, path):
        return plan_document(log, blobs, ad, path, data, accept)  # type: ignore[arg-type]
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
        if plan is None or isinstance(plan, str) or not plan.records:
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
    report.trace_ids.append(plan.ref.trace_id)  # de-duplicated once, at the end

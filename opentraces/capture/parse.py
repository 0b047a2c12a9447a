"""Run an adapter over transcript bytes: the pure half of import (no store involved).

Line files go through :func:`parse_bytes`; whole documents (see ``base.DocumentAdapter``)
through :func:`feed_document` (records already decoded and split, as the importer has them)
or :func:`parse_document` (bytes in, for tests and one-off reads). For a document,
``Parsed.lines_read`` counts the items kept and ``Parsed.end_offset`` is the number of items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentraces.blobs import blob_hash
from opentraces.capture.base import Adapter, Context, DocumentAdapter, LineRef, SessionRef
from opentraces.capture.lines import (
    Rejected,
    Undecodable,
    complete_length,
    decode,
    decode_document,
    iter_lines,
)
from opentraces.events import BlobRef, Event, SessionInfo


@dataclass
class Parsed:
    """What one pass over a file produced (only for lines at or after ``resume``)."""

    ref: SessionRef | None
    events: list[Event] = field(default_factory=list)
    rejected: list[tuple[LineRef, Rejected]] = field(default_factory=list)
    lines_read: int = 0
    end_offset: int = 0
    #: The session's working folder and first time, from every line (replayed ones too).
    cwd: str | None = None
    started_at: str | None = None


def first_record(data: bytes) -> Any | None:
    """The first decodable JSON value of the first non-blank complete line, if any."""
    for _, raw in iter_lines(data):
        values = decode(raw)
        if isinstance(values, Rejected):
            return None
        if values:
            return values[0]
    return None


def identify_head(adapter: Adapter, path: Path, data: bytes) -> SessionRef | None:
    """The session named by the first complete line of ``data`` (a transcript, or its head)."""
    return adapter.identify(path, first_record(data[:complete_length(data)]))


def memory_context() -> Context:
    """A context whose blobs are only hashed, for parsing without a store (tests, dry runs)."""
    return Context(lambda data, media_type: BlobRef(hash=blob_hash(data), size=len(data),
                                                    media_type=media_type))


def parse_bytes(adapter: Adapter, path: Path, data: bytes, *, resume: int = 0,
                ctx: Context | None = None) -> Parsed:
    """Feed every complete line of ``data`` to a fresh parser; keep what lines >= resume emit.

    Lines before ``resume`` (a line-start offset) are replayed so the parser's state is exactly
    what it was when they were first imported; their events are discarded.
    """
    ref = adapter.identify(path, first_record(data))
    parsed = Parsed(ref=ref, end_offset=complete_length(data))
    if ref is None:
        return parsed
    parser = adapter.parser(ref, ctx or memory_context())
    for line, raw in iter_lines(data):
        values = decode(raw)
        keep = line.offset >= resume
        if isinstance(values, Rejected):
            if keep:
                parsed.rejected.append((line, values))
            continue
        for value in values:
            events = parser.feed(value, line)
            _learn(parsed, events)
            if keep:
                parsed.events.extend(events)
        if keep:
            parsed.lines_read += 1
    return parsed


def _learn(parsed: Parsed, events: list[Event]) -> None:
    for e in events:
        if parsed.started_at is None and e.at:
            parsed.started_at = e.at
        if parsed.cwd is None and isinstance(e, SessionInfo) and e.cwd:
            parsed.cwd = e.cwd


def parse_file(adapter: Adapter, path: Path, ctx: Context | None = None) -> Parsed:
    """Parse a whole file from disk (a convenience for tests and one-off reads)."""
    return parse_bytes(adapter, path, path.read_bytes(), ctx=ctx)


#: A document's records as fed to a parser: (position, record); position 0 is the header,
#: n >= 1 the n-th item.
Records = Sequence[tuple[int, Any]]


def feed_document(adapter: Adapter, ref: SessionRef, replay: Records, keep: Records,
                  ctx: Context | None = None) -> Parsed:
    """Feed ``replay`` then ``keep`` to a fresh parser; keep only what ``keep`` emits.

    ``replay`` is what an earlier import already turned into events (its events are discarded:
    it only rebuilds the parser's state), ``keep`` what is new.
    """
    parsed = Parsed(ref=ref, end_offset=max((n for n, _ in [*replay, *keep]), default=0))
    parser = adapter.parser(ref, ctx or memory_context())
    for records, kept in ((replay, False), (keep, True)):
        for n, record in records:
            events = parser.feed(record, LineRef(number=n, offset=0))
            _learn(parsed, events)
            if kept:
                parsed.events.extend(events)
                parsed.lines_read += 1 if n else 0
    return parsed


def parse_document(adapter: DocumentAdapter, path: Path, data: bytes,
                   ctx: Context | None = None) -> Parsed:
    """Decode a whole document and feed all of it; an undecodable one is one rejection."""
    value = decode_document(data)
    if isinstance(value, Undecodable):
        return Parsed(ref=adapter.identify_partial(path, data),
                      rejected=[(LineRef(value.line, value.offset),
                                 Rejected(value.reason, value.raw))])
    ref = adapter.identify(path, value)
    if ref is None:
        return Parsed(ref=None)
    header, items = adapter.split(value)
    return feed_document(adapter, ref, [], [(0, header), *enumerate(items, 1)], ctx)

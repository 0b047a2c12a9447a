"""Run an adapter over transcript bytes: the pure half of import (no store involved)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentraces.blobs import blob_hash
from opentraces.capture.base import Adapter, Context, LineRef, SessionRef
from opentraces.capture.lines import Rejected, complete_length, decode, iter_lines
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

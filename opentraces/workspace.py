"""The workspace: one open opentraces home (settings, event log, blobs, projection runner).

This module sits at the bottom of the library: capture, trail, tracing, search, context and
enrollment all open a workspace here, and :mod:`opentraces.api` only re-exports it. It must not
import any of them (a test fails on an import cycle).

Every function takes a *target*: a :class:`~opentraces.config.Settings`, a home folder
(:class:`pathlib.Path`) or an already open :class:`Workspace`, and closes only what it opened.
Writes catch the eager projections up before returning (:func:`catch_up_after_write`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from opentraces.blobs import BlobStore
from opentraces.config import Settings, load_settings
from opentraces.events import BlobRef, Event, Recorded
from opentraces.store import EventLog, store_exists

__all__ = [
    "LAZY_CATCH_UP_EVENTS",
    "Progress",
    "Workspace",
    "append",
    "catch_up_after_write",
    "event_count",
    "open_workspace",
    "projection_names",
    "put_blob",
    "to_builtins",
]

Progress = Callable[[int], None]


class Workspace:
    """An open opentraces home: settings, event log, blobs and projection runner.

    With ``readonly=True`` a missing SQLite store is treated as empty and never created.
    """

    def __init__(self, settings: Settings, *, readonly: bool = False) -> None:
        self.settings = settings
        self.readonly = readonly
        self.blobs = BlobStore(settings.blobs_dir)
        self._log: EventLog | None = None
        self._exists: bool | None = None

    @property
    def store_exists(self) -> bool:
        if self._exists is None:
            self._exists = store_exists(self.settings.store)
        return self._exists

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = EventLog.open(self.settings.store, create=not self.readonly)
        return self._log

    def source(self) -> Any:
        """The event source for the runner (an empty one for a read of a store not yet made)."""
        if self.readonly and not self.store_exists:
            return _EmptyLog()
        return self.log

    def runner(self) -> Any:
        from opentraces.projections import ALL
        from opentraces.projections.runner import Runner

        return Runner(self.source(), self.settings.projections_dir, ALL,
                      store_id=self.settings.store_id)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self.blobs.close()


class _EmptyLog:
    def page(self, after: int, limit: int = 0, upto: int | None = None) -> list[Recorded]:
        return []

    def head(self) -> int:
        return 0


@contextmanager
def open_workspace(target: Settings | Path | Workspace, *,
                   readonly: bool = False) -> Iterator[Workspace]:
    """Yield a workspace for ``target``; close it afterwards only if it was opened here."""
    if isinstance(target, Workspace):
        yield target
        return
    settings = load_settings(target) if isinstance(target, Path) else target
    ws = Workspace(settings, readonly=readonly)
    try:
        yield ws
    finally:
        ws.close()


def to_builtins(value: Any) -> Any:
    """Plain JSON-ready data from API results (Structs, dicts of Structs)."""
    return msgspec.to_builtins(value)


def event_count(target: Settings | Path | Workspace) -> int:
    """How many events the log holds (0 when no store exists yet)."""
    with open_workspace(target, readonly=True) as ws:
        source = ws.source()
        return source.count() if isinstance(source, EventLog) else 0


def projection_names() -> list[str]:
    from opentraces.projections import ALL

    return [p.name for p in ALL]


#: After a write, a lazy projection (the search index) is caught up too when it is at most this
#: many events behind: hook-driven imports keep it current, a bulk import leaves it to
#: `trace index refresh`.
LAZY_CATCH_UP_EVENTS = 2_000


def catch_up_after_write(ws: Workspace, progress: Progress | None = None) -> None:
    """Catch up the eager projections, and the lazy ones that are only a little behind."""
    runner = ws.runner()
    eager = runner.eager()
    head = ws.source().head()
    lazy = [n for n in runner.classes if n not in eager
            and (s := runner.state(n, head)).state in ("fresh", "lagging", "missing")
            and s.lag <= LAZY_CATCH_UP_EVENTS]
    runner.catch_up(eager + lazy, progress=progress)


def append(target: Settings | Path | Workspace, stream: str, events: Sequence[Event], *,
           catch_up: bool = True) -> list[int]:
    """Append events to the end of a stream and (by default) catch the projections up.

    Returns:
        The positions (notification ids) of the appended events.
    """
    with open_workspace(target) as ws:
        positions = ws.log.append(stream, events)
        if catch_up:
            catch_up_after_write(ws)
        return positions


def put_blob(target: Settings | Path | Workspace, data: bytes,
             media_type: str = "application/octet-stream", *, local_only: bool = False) -> BlobRef:
    """Store content in the blob store and return its reference."""
    with open_workspace(target) as ws:
        return ws.blobs.put(data, media_type, local_only=local_only)

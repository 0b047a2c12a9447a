"""Keeps projections caught up with the event log, and rebuilds them from scratch.

Layout under the projections root::

    <name>                 symlink to the live build (swapped atomically on rebuild)
    .builds/<name>-<id>/   build folders; the one the symlink names is live, others are
                           deleted a minute after they were replaced
    <build>/STORE          which store the build was made from
    .locks/<name>          flock held by whoever is writing that projection

Invariants:
- Only the runner writes projections; each writer holds the projection's lock.
- A rebuild fills a fresh folder from position 0 up to a fixed head, then swaps the symlink
  with one ``rename``: readers see the old view or the new one, never half of either.
- A projection whose code ``version`` differs from the stored one, or that was built from
  another store (or is ahead of this one), is rebuilt, not caught up.
- Positions are compared with ">" only: notification ids may have gaps.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

import msgspec

from opentraces.errors import UnknownProjection
from opentraces.events import Recorded
from opentraces.projections.base import Projection

PAGE_SIZE = 1000
STORE_MARKER = "STORE"
SWEEP_AFTER_SECONDS = 60.0

Progress = Callable[[int], None]


class EventSource(Protocol):
    """What the runner needs from the event log."""

    def page(self, after: int, limit: int = PAGE_SIZE,
             upto: int | None = None) -> list[Recorded]: ...

    def head(self) -> int: ...


class ProjectionState(msgspec.Struct, frozen=True):
    name: str
    version: int
    stored_version: int | None
    position: int
    head: int
    lag: int
    digest: str | None
    state: str  # fresh | lagging | missing | version_changed | other_store


class BuildResult(msgspec.Struct, frozen=True):
    events_applied: int
    position: int
    digest: str | None
    seconds: float
    rebuilt: bool


class Runner:
    def __init__(self, source: EventSource, root: Path,
                 projections: Sequence[type[Projection]], *, store_id: str = "") -> None:
        self.source = source
        self.root = root
        self.classes = {p.name: p for p in projections}
        self.store_id = store_id

    # -- reading ------------------------------------------------------------------------------

    def open(self, name: str) -> Projection | None:
        """The live build of a projection for reading, or None if it was never built."""
        link = self.root / name
        if not link.exists():
            return None
        return self.classes[name](link.resolve())

    def eager(self) -> list[str]:
        """The projections that commands which append keep current."""
        return [n for n, cls in self.classes.items() if cls.eager]

    def state(self, name: str, head: int | None = None) -> ProjectionState:
        """The state of one projection."""
        return self._state(name, self.source.head() if head is None else head)

    def states(self, head: int | None = None) -> dict[str, ProjectionState]:
        head = self.source.head() if head is None else head
        return {name: self._state(name, head) for name in self.classes}

    def _state(self, name: str, head: int) -> ProjectionState:
        cls = self.classes[name]
        proj = self.open(name)
        stored = proj.stored_version() if proj else None
        position = proj.position() if proj else 0
        if proj is None and head == 0:
            state = "fresh"  # nothing to project yet
        elif proj is None or stored is None:
            state = "missing"
        elif stored != cls.version:
            state = "version_changed"
        elif self._built_from(name) != self.store_id or position > head:
            state = "other_store"  # built from a store that is not (or no longer) this one
        elif position < head:
            state = "lagging"
        else:
            state = "fresh"
        return ProjectionState(name=name, version=cls.version, stored_version=stored,
                               position=position, head=head, lag=max(head - position, 0),
                               digest=proj.sealed_digest() if proj else None, state=state)

    def _built_from(self, name: str) -> str | None:
        try:
            return (self.root / name / STORE_MARKER).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    # -- writing ------------------------------------------------------------------------------

    def catch_up(self, names: Sequence[str] | None = None,
                 progress: Progress | None = None) -> dict[str, BuildResult]:
        """Apply new events to each projection; rebuild those missing or of another version."""
        results: dict[str, BuildResult] = {}
        head = self.source.head()
        with self._locked(self._names(names)) as chosen:
            stale = [n for n in chosen if self._state(n, head).state not in ("fresh", "lagging")]
            results |= self._rebuild_locked(stale, head, progress)
            live = {n: self.open(n) for n in chosen if n not in stale}
            results |= self._feed({n: p for n, p in live.items() if p is not None},
                                  head, progress, rebuilt=False)
        return results

    def rebuild(self, names: Sequence[str] | None = None,
                progress: Progress | None = None) -> dict[str, BuildResult]:
        """Build the named projections (default: all) from position 0 and swap them in."""
        head = self.source.head()
        with self._locked(self._names(names)) as chosen:
            return self._rebuild_locked(chosen, head, progress)

    def _rebuild_locked(self, names: Sequence[str], head: int,
                        progress: Progress | None) -> dict[str, BuildResult]:
        if not names:
            return {}
        builds = self.root / ".builds"
        builds.mkdir(parents=True, exist_ok=True)
        fresh = {}
        for name in names:
            self._sweep(name)
            folder = builds / f"{name}-{time.time_ns():x}-{os.getpid()}"
            fresh[name] = (folder, self.classes[name](folder))
        results = self._feed({n: p for n, (_, p) in fresh.items()}, head, progress,
                             rebuilt=True)
        for name, (folder, _) in fresh.items():
            folder.mkdir(parents=True, exist_ok=True)  # an empty log still gets a live build
            (folder / STORE_MARKER).write_text(self.store_id, encoding="utf-8")
            self._swap(name, folder)
        return results

    def _feed(self, projections: dict[str, Projection], head: int,
              progress: Progress | None, *, rebuilt: bool) -> dict[str, BuildResult]:
        """Read the log once from the lowest position and give each projection its events."""
        if not projections:
            return {}
        try:
            return self._feed_open(projections, head, progress, rebuilt=rebuilt)
        finally:
            for proj in projections.values():
                proj.close()

    def _feed_open(self, projections: dict[str, Projection], head: int,
                   progress: Progress | None, *, rebuilt: bool) -> dict[str, BuildResult]:
        positions = {n: p.position() for n, p in projections.items()}
        applied = dict.fromkeys(projections, 0)
        seconds = dict.fromkeys(projections, 0.0)
        start = min(positions.values())
        for page in self._pages(start, head):
            for name, proj in projections.items():
                todo = [r for r in page if (r.position or 0) > positions[name]]
                if not todo:
                    continue
                began = time.perf_counter()
                applied[name] += proj.apply_page(todo)
                seconds[name] += time.perf_counter() - began
                positions[name] = max(positions[name], page[-1].position or 0)
            if progress is not None:
                progress(len(page))
        results = {}
        for name, proj in projections.items():
            if rebuilt and applied[name] == 0:
                proj.apply_page([])  # materialise the empty view and its meta
            changed = rebuilt or applied[name] > 0
            if changed:
                proj.finish()
            results[name] = BuildResult(
                events_applied=applied[name], position=proj.position(),
                digest=proj.seal() if changed else proj.sealed_digest(),
                seconds=round(seconds[name], 6), rebuilt=rebuilt)
        return results

    def _pages(self, after: int, head: int) -> Iterator[list[Recorded]]:
        position = after
        while position < head:
            page = self.source.page(position, PAGE_SIZE, head)
            if not page:
                return
            yield page
            position = page[-1].position or head

    def _swap(self, name: str, folder: Path) -> None:
        link = self.root / name
        if link.exists() and not link.is_symlink():
            # A plain folder here was left by hand; replace it like any old build.
            shutil.rmtree(link)
        temp = self.root / f".{name}.link-{os.getpid()}"
        temp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(folder, self.root), temp)
        os.replace(temp, link)
        self._sweep(name)

    def _sweep(self, name: str) -> None:
        """Delete old builds of ``name``: not live, and untouched for :data:`SWEEP_AFTER_SECONDS`.

        The grace period lets a reader that resolved the old build just before a swap finish.
        """
        builds = self.root / ".builds"
        link = self.root / name
        live = link.resolve() if link.is_symlink() else None
        cutoff = time.time() - SWEEP_AFTER_SECONDS
        for folder in builds.glob(f"{name}-*"):
            if folder.resolve() != live and folder.stat().st_mtime <= cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def _names(self, names: Sequence[str] | None) -> list[str]:
        if not names:
            return list(self.classes)
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise UnknownProjection(
                f"unknown projection {', '.join(unknown)}; known: {', '.join(self.classes)}")
        return list(dict.fromkeys(names))

    @contextmanager
    def _locked(self, names: list[str]) -> Iterator[list[str]]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            for name in sorted(names):
                fh = stack.enter_context(open(locks / name, "a+b"))
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield names

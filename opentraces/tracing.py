"""Reading traces: one TraceRecord by trace id or unique id prefix (re-exported by the API).

Reads never write: the traces projection is opened read-only and answers as it was last built.

- If the projection *lags* the log (events appended without catching up), the answer comes from
  the view as it is and :class:`TraceView` says ``stale=True`` with the position and head; the
  CLI then points to ``opentraces repair``. A trace that only the unprojected events know is
  reported as not found, with that hint.
- If the projection is *missing* (never built while the log has events), was built by another
  code version or from another store, :class:`~opentraces.errors.MaintenanceNeeded` is raised:
  there is no trustworthy view to answer from.

Errors: an unknown id raises :class:`TraceNotFound`; a prefix shared by several traces raises
:class:`AmbiguousTrace`, which lists them. Both are usage errors (exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from opentraces.config import Settings
from opentraces.errors import BlobMissing, MaintenanceNeeded, UsageError
from opentraces.record import TraceRecord

if TYPE_CHECKING:
    from opentraces.api import Workspace

__all__ = ["AmbiguousTrace", "TraceNotFound", "TraceView", "trace_get", "trace_view"]

PROJECTION = "traces"
#: How many candidates an AmbiguousTrace message names (the exception keeps them all).
SHOWN_CANDIDATES = 5


class TraceNotFound(UsageError):
    """No trace has this id, and none starts with it."""

    code = "trace_not_found"


class AmbiguousTrace(UsageError):
    """Several traces start with the given prefix; ``candidates`` lists them."""

    code = "ambiguous_trace"

    def __init__(self, message: str, *, candidates: list[str], hint: str | None = None,
                 next_command: str | None = None) -> None:
        super().__init__(message, hint=hint, next_command=next_command)
        self.candidates = candidates


class TraceView(msgspec.Struct, frozen=True):
    """A record with the freshness of the view it came from."""

    record: TraceRecord
    stale: bool  # the log holds events the view has not applied yet
    position: int  # last event the view applied
    head: int  # last event in the log


def trace_view(target: Settings | Path | Workspace, ref: str) -> TraceView:
    """The TraceRecord of one trace, and whether the view it came from lags the log.

    Args:
        target: settings, a home folder or an open workspace (see :mod:`opentraces.api`).
        ref: a full trace id or a prefix of exactly one.

    Returns:
        A :class:`TraceView`; long texts kept in blobs are restored when the blobs are here.

    Raises:
        TraceNotFound: no trace matches ``ref``.
        AmbiguousTrace: several traces start with ``ref``.
        MaintenanceNeeded: the traces view is missing or must be rebuilt.
    """
    from opentraces.api import open_workspace

    ref = ref.strip()
    if not ref:
        raise UsageError("a trace id (or the start of one) is required")
    with open_workspace(target, readonly=True) as ws:
        runner = ws.runner()
        state = runner.states()[PROJECTION]
        proj = runner.open(PROJECTION)
        if state.state not in ("fresh", "lagging"):
            raise MaintenanceNeeded(
                f"the traces view is {state.state.replace('_', ' ')}; it must be rebuilt "
                "before traces can be read", next_command="opentraces repair")
        stale = state.state == "lagging"
        matches = proj.resolve(ref) if proj is not None else []  # type: ignore[attr-defined]
        _check_one(ref, matches, stale, state.lag)
        record = proj.record(matches[0], _blob_reader(ws))  # type: ignore[union-attr]
    if record is None:  # resolve() only returns ids the view holds, so this is a bug
        raise TraceNotFound(f"trace {matches[0]} vanished from the traces view while reading")
    return TraceView(record=record, stale=stale, position=state.position, head=state.head)


def trace_get(target: Settings | Path | Workspace, ref: str) -> TraceRecord:
    """The TraceRecord of one trace (see :func:`trace_view` for errors and freshness)."""
    return trace_view(target, ref).record


def _check_one(ref: str, matches: list[str], stale: bool, lag: int) -> None:
    if not matches:
        if stale:
            raise TraceNotFound(
                f"no trace matches {ref!r} in the traces view",
                hint=f"The view is {lag} events behind the log; the trace may be among them.",
                next_command="opentraces repair")
        raise TraceNotFound(f"no trace matches {ref!r}",
                            hint="List the captured traces with `opentraces bucket manifest`.",
                            next_command="opentraces bucket manifest")
    if len(matches) > 1:
        shown = ", ".join(matches[:SHOWN_CANDIDATES])
        more = len(matches) - SHOWN_CANDIDATES
        raise AmbiguousTrace(
            f"{len(matches)} traces start with {ref!r}: {shown}"
            + (f" and {more} more" if more > 0 else ""),
            candidates=matches, hint="Give more characters of the trace id.")


def _blob_reader(ws: Workspace) -> Callable[[str], bytes | None]:
    blobs = ws.blobs

    def read(digest: str) -> bytes | None:
        try:
            return blobs.get(digest)
        except BlobMissing:  # not on this machine: the record keeps the inline prefix
            return None

    return read

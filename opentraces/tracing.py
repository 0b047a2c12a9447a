"""Reading traces: one TraceRecord, step or range by its address (re-exported by the API).

Addresses: ``<trace>`` (a full trace id or a prefix only one trace has), ``<trace>:<n>`` (one
step by its ``step_index``), ``<trace>:last``, and ``<trace>:<A>-<B>`` (steps A to B, both
included; ``B`` may be ``last``). :func:`parse_address` turns one into an :class:`Address`;
a malformed one raises :class:`BadAddress`, a step outside the trace :class:`StepOutOfRange`
(both usage errors, exit code 2), whose message gives the trace's valid steps.

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

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from opentraces.config import Settings
from opentraces.errors import BlobMissing, MaintenanceNeeded, UsageError
from opentraces.record import Step, TraceRecord

if TYPE_CHECKING:
    from opentraces.workspace import Workspace

__all__ = [
    "LAST",
    "Address",
    "AmbiguousTrace",
    "BadAddress",
    "RangeView",
    "StepOutOfRange",
    "StepView",
    "TraceNotFound",
    "TraceView",
    "parse_address",
    "trace_get",
    "trace_range",
    "trace_step",
    "trace_view",
]

PROJECTION = "traces"
#: ``start``/``end`` of an :class:`Address` that name the trace's last step.
LAST = -1
_STEPS = re.compile(r"(\d+|last)(?:-(\d+|last))?")
ADDRESS_FORMS = "<trace>, <trace>:<step>, <trace>:last or <trace>:<A>-<B>"
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


class BadAddress(UsageError):
    """A trace address that does not parse."""

    code = "bad_address"


class StepOutOfRange(UsageError):
    """An address names a step the trace does not have."""

    code = "step_out_of_range"


class Address(msgspec.Struct, frozen=True):
    """A parsed address: ``start``/``end`` are None for a whole trace, ``LAST`` for its end."""

    trace: str
    start: int | None = None
    end: int | None = None

    @property
    def kind(self) -> str:
        """``trace``, ``step`` or ``range``."""
        if self.start is None:
            return "trace"
        return "step" if self.start == self.end else "range"


class TraceView(msgspec.Struct, frozen=True):
    """A record with the freshness of the view it came from."""

    record: TraceRecord
    stale: bool  # the log holds events the view has not applied yet
    position: int  # last event the view applied
    head: int  # last event in the log


class StepView(msgspec.Struct, frozen=True):
    """One step of a trace, with the freshness of the view it came from."""

    trace_id: str
    step: Step
    context_node_id: str | None
    stale: bool
    position: int
    head: int


class RangeView(msgspec.Struct, frozen=True):
    """Steps ``start`` to ``end`` (both included) of a trace, with the view's freshness."""

    trace_id: str
    start: int
    end: int
    steps: list[Step]
    stale: bool
    position: int
    head: int


def parse_address(text: str) -> Address:
    """An :class:`Address` from ``<trace>``, ``<trace>:<n>``, ``<trace>:last`` or
    ``<trace>:<A>-<B>``.

    Raises:
        BadAddress: the text is empty or its step part is not a step, ``last`` or a range.
    """
    text = text.strip()
    trace, sep, steps = text.partition(":")
    trace = trace.strip()
    if not trace:
        raise BadAddress("a trace id (or the start of one) is required" if not text else
                         f"malformed trace address {text!r}: it starts with no trace id",
                         hint=f"Addresses are {ADDRESS_FORMS}.")
    if not sep:
        return Address(trace=trace)
    start, end = parse_steps(steps, text)
    return Address(trace=trace, start=start, end=end)


def parse_steps(text: str, address: str) -> tuple[int, int]:
    """``(start, end)`` from the step part of an address (``3``, ``last``, ``2-7``, ``5-last``).

    Raises:
        BadAddress: the text is none of these, or the range is reversed.
    """
    found = _STEPS.fullmatch(text.strip())
    if found is None:
        raise BadAddress(
            f"malformed trace address {address!r}: after the ':' give a step number, 'last' "
            "or a range A-B", hint=f"Addresses are {ADDRESS_FORMS}, e.g. 3f2a:12 or 3f2a:4-9.")
    start = LAST if found.group(1) == "last" else int(found.group(1))
    end = start if found.group(2) is None else (
        LAST if found.group(2) == "last" else int(found.group(2)))
    if start == LAST and end != LAST:
        raise BadAddress(f"malformed trace address {address!r}: 'last' can only end a range")
    if end != LAST and start > end:
        raise BadAddress(f"malformed trace address {address!r}: the range {start}-{end} is "
                         f"reversed; give the lower step first ({end}-{start})")
    return start, end


def step_bounds(record: TraceRecord, start: int, end: int) -> tuple[int, int]:
    """``start`` and ``end`` as step indexes of ``record`` (``LAST`` resolved), checked.

    Raises:
        StepOutOfRange: the trace has no steps, a bound lies outside its steps, or the one
            step named is missing.
    """
    if not record.steps:
        raise StepOutOfRange(f"trace {record.trace_id} has no steps")
    lo, hi = record.steps[0].step_index, record.steps[-1].step_index
    a = hi if start == LAST else start
    b = hi if end == LAST else end
    if a > b:
        raise StepOutOfRange(f"the range {a}-{b} is reversed; give the lower step first")
    for n in (a, b):
        if not lo <= n <= hi:
            raise StepOutOfRange(f"step {n} is out of range: trace {record.trace_id} has "
                                 f"steps {lo} to {hi}",
                                 hint=f"Give a step from {lo} to {hi}, or 'last'.")
    if a == b and all(s.step_index != a for s in record.steps):
        raise StepOutOfRange(f"trace {record.trace_id} has no step {a} (its steps run from "
                             f"{lo} to {hi} with gaps)")
    return a, b


def trace_step(target: Settings | Path | Workspace, address: str) -> StepView:
    """One step, by an address such as ``3f2a:12`` or ``3f2a:last``.

    Raises:
        BadAddress: the address is malformed, or names a range or a whole trace.
        StepOutOfRange: the trace has no such step.
        TraceNotFound, AmbiguousTrace, MaintenanceNeeded: as :func:`trace_view`.
    """
    addr = parse_address(address)
    if addr.kind != "step":
        what = "a whole trace" if addr.kind == "trace" else "a range"
        raise BadAddress(f"{address.strip()!r} names {what}, not one step",
                         hint=f"Give one step, e.g. {addr.trace}:0 or {addr.trace}:last.")
    view = trace_view(target, addr.trace)
    n, _ = step_bounds(view.record, addr.start, addr.end)  # type: ignore[arg-type]
    step = next(s for s in view.record.steps if s.step_index == n)
    return StepView(trace_id=view.record.trace_id, step=step,
                    context_node_id=step.context_node_id, stale=view.stale,
                    position=view.position, head=view.head)


def trace_range(target: Settings | Path | Workspace, address: str) -> RangeView:
    """The steps an address names: a range, one step, or all steps of a whole trace.

    Raises:
        BadAddress, StepOutOfRange, TraceNotFound, AmbiguousTrace, MaintenanceNeeded: as
            :func:`trace_step`.
    """
    addr = parse_address(address)
    view = trace_view(target, addr.trace)
    record = view.record
    if addr.start is None:
        a, b = step_bounds(record, record.steps[0].step_index if record.steps else 0, LAST)
    else:
        a, b = step_bounds(record, addr.start, addr.end)  # type: ignore[arg-type]
    return RangeView(trace_id=record.trace_id, start=a, end=b,
                     steps=[s for s in record.steps if a <= s.step_index <= b],
                     stale=view.stale, position=view.position, head=view.head)


def trace_view(target: Settings | Path | Workspace, ref: str) -> TraceView:
    """The TraceRecord of one trace, and whether the view it came from lags the log.

    Args:
        target: settings, a home folder or an open workspace (see :mod:`opentraces.workspace`).
        ref: a full trace id or a prefix of exactly one; any address of the trace is accepted
            (its step part is checked against the record).

    Returns:
        A :class:`TraceView`; long texts kept in blobs are restored when the blobs are here.

    Raises:
        TraceNotFound: no trace matches ``ref``.
        AmbiguousTrace: several traces start with ``ref``.
        MaintenanceNeeded: the traces view is missing or must be rebuilt.
        BadAddress, StepOutOfRange: the address is malformed or names a missing step.
    """
    from opentraces.workspace import open_workspace

    addr = parse_address(ref)
    ref = addr.trace
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
    if addr.start is not None:
        step_bounds(record, addr.start, addr.end)  # type: ignore[arg-type]
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

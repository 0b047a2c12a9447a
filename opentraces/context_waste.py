"""Context waste: what one TraceRecord put into the model's context for nothing.

:func:`context_waste` is the ``opentraces.context_waste.v2`` payload: large tool outputs, one
file read again and again, bursts of searches. It keeps the invariants of
:mod:`opentraces.tool_calls` (a function of the record alone, nothing stored). Tool output
length is measured on ``Observation.content`` (restored from its blob by ``trace_get``); when an
observation also carries ``output_chars`` (the full length the capture saw), the larger of the
two counts.

The rules, thresholds and their limits are described in ``docs/intel.md``.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from typing import Any

from opentraces.record import Observation, Step, TraceRecord
from opentraces.tool_calls import (
    FIDELITY,
    Call,
    Read,
    call_reads,
    call_target,
    edited_paths,
    edits_by_path,
    quote,
    record_calls,
    search_query,
    step_times,
)

__all__ = ["CONTEXT_WASTE_SCHEMA", "context_waste"]

CONTEXT_WASTE_SCHEMA = "opentraces.context_waste.v2"

#: A tool output at least this long (characters) is a large_output finding.
LARGE_OUTPUT_CHARS = 12_000
#: ... and a high-severity one from this length on.
LARGE_OUTPUT_HIGH_CHARS = 48_000
#: The same file read this many times within the window is a repeated_file_read finding.
FILE_READ_MIN = 3
FILE_READ_WINDOW_S = 20 * 60
#: This many searches within the window make a repeated_search finding.
SEARCH_MIN = 5
SEARCH_WINDOW_S = 10 * 60


def _output_chars(obs: Observation) -> int:
    measured = len(obs.content or "")
    # output_chars is the capture's full length; the record may carry only a cut copy.
    recorded = getattr(obs, "output_chars", None)
    return max(measured, recorded) if isinstance(recorded, int) else measured


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8",
                                                                      "backslashreplace")
                          ).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Time windows


def _dense_stretches(items: list[tuple[float, int]], min_count: int,
                     window: float) -> list[list[int]]:
    """Groups of items (time, index) that lie in windows holding ``min_count`` or more.

    An item is *dense* when some window of ``window`` seconds contains it and at least
    ``min_count - 1`` other items. Consecutive dense items (in time order) form one stretch;
    an item that is not dense ends it. Returns the indexes of each stretch, in time order.
    """
    ordered = sorted(items)
    dense = [False] * len(ordered)
    end = 0
    for start in range(len(ordered)):
        end = max(end, start)
        while end + 1 < len(ordered) and ordered[end + 1][0] - ordered[start][0] <= window:
            end += 1
        if end - start + 1 >= min_count:
            for k in range(start, end + 1):
                dense[k] = True
    stretches: list[list[int]] = []
    current: list[int] = []
    for flag, (_, index) in zip(dense, ordered, strict=True):
        if flag:
            current.append(index)
        elif current:
            stretches.append(current)
            current = []
    if current:
        stretches.append(current)
    return stretches


# ---------------------------------------------------------------------------------------------
# The payload and its detectors


def context_waste(record: TraceRecord) -> dict[str, Any]:
    """The ``opentraces.context_waste.v2`` payload of one record (see the module docstring)."""
    calls = record_calls(record)
    _, missing_times = step_times(record)
    findings = [*_large_outputs(record, calls), *_repeated_reads(record, calls),
                *_repeated_searches(record, calls)]
    findings.sort(key=lambda f: (f["step_index"], f["pattern"], f["finding_id"]))
    counts = {p: sum(1 for f in findings if f["pattern"] == p)
              for p in ("large_output", "repeated_file_read", "repeated_search")}
    return {
        "trace_id": record.trace_id,
        "fidelity": FIDELITY,
        "thresholds": {
            "large_output_chars": LARGE_OUTPUT_CHARS,
            "large_output_high_chars": LARGE_OUTPUT_HIGH_CHARS,
            "repeated_file_read_min": FILE_READ_MIN,
            "repeated_file_read_window_s": FILE_READ_WINDOW_S,
            "repeated_search_min": SEARCH_MIN,
            "repeated_search_window_s": SEARCH_WINDOW_S,
        },
        "findings": findings,
        "summary": {
            "context_waste_count": len(findings),
            "large_output_count": counts["large_output"],
            "repeated_file_read_count": counts["repeated_file_read"],
            "repeated_search_count": counts["repeated_search"],
        },
        "limitations": _waste_limitations(record, calls, missing_times),
    }


def _finding(record: TraceRecord, pattern: str, key: str, step: Step, *, severity: str,
             confidence: str, reason: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"finding_id": f"cw_{_digest(record.trace_id, pattern, key, step.step_index)}",
            "pattern": pattern, "severity": severity, "confidence": confidence,
            "reason": reason, "step_index": step.step_index, "node_id": step.context_node_id,
            "evidence": evidence}


def _large_outputs(record: TraceRecord, calls: list[Call]) -> Iterator[dict[str, Any]]:
    for c in calls:
        if c.obs is None or not c.obs.content:
            continue
        chars = _output_chars(c.obs)
        if chars < LARGE_OUTPUT_CHARS:
            continue
        yield _finding(
            record, "large_output", c.call.tool_call_id, c.step,
            severity="high" if chars >= LARGE_OUTPUT_HIGH_CHARS else "medium",
            confidence="high",
            reason=f"{c.call.tool_name} returned {chars:,} characters "
                   f"(about {chars // 4:,} tokens) into the context",
            evidence={"tool_name": c.call.tool_name, "tool_call_id": c.call.tool_call_id,
                      "output_chars": chars, "approx_tokens": chars // 4,
                      "target": call_target(c.call)})


def _directories(record: TraceRecord, calls: list[Call]) -> set[str]:
    """Paths that other paths of the trace live under: folders, whatever their name says."""
    seen: set[str] = set()
    for c in calls:
        seen.update(r.path for r in call_reads(record, c.call))
        seen.update(edited_paths(record, c.call))
    parents = set()
    for path in seen:
        head = posixpath.dirname(path)
        while head and head not in parents and head != posixpath.dirname(head):
            parents.add(head)
            head = posixpath.dirname(head)
    return parents


def _repeated_reads(record: TraceRecord, calls: list[Call]) -> Iterator[dict[str, Any]]:
    folders = _directories(record, calls)
    by_path: dict[str, list[tuple[Call, Read]]] = {}
    for c in calls:
        if not c.ok:  # a failed read (missing file, a folder) put no file in the context
            continue
        for read in call_reads(record, c.call):
            if read.path not in folders and read.path not in (".", "..", "/"):
                by_path.setdefault(read.path, []).append((c, read))
    edits = edits_by_path(record, calls)
    for path in sorted(by_path):
        reads = by_path[path]
        timed = [(c.at, i) for i, (c, _) in enumerate(reads) if c.at is not None]
        for stretch in _dense_stretches(timed, FILE_READ_MIN, FILE_READ_WINDOW_S):
            chosen = [reads[i] for i in stretch]
            steps = [c.step.step_index for c, _ in chosen]
            edited = [s for s in edits.get(path, []) if steps[0] <= s < steps[-1]]
            trigger = chosen[FILE_READ_MIN - 1][0]
            yield _finding(
                record, "repeated_file_read", path, trigger.step,
                severity="high" if len(chosen) >= 2 * FILE_READ_MIN else "medium",
                confidence="medium" if edited else "high",
                reason=f"{path} was read {len(chosen)} times in "
                       f"{_span(chosen[0][0], chosen[-1][0])} ({FILE_READ_MIN}+ within "
                       f"{FILE_READ_WINDOW_S // 60} min)"
                       + (f"; it was edited in between (steps {_ranges(edited)})"
                          if edited else ", with no edit in between"),
                evidence={"path": path, "read_count": len(chosen), "step_indexes": steps,
                          "tool_names": sorted({c.call.tool_name for c, _ in chosen}),
                          "ranges": [r.range for _, r in chosen],
                          "edited_at_steps": edited,
                          "span_s": _seconds(chosen[0][0], chosen[-1][0]),
                          "total_reads_in_trace": len(reads)})


def _repeated_searches(record: TraceRecord, calls: list[Call]) -> Iterator[dict[str, Any]]:
    searches = [(c, q) for c in calls if (q := search_query(c.call)) is not None]
    timed = [(c.at, i) for i, (c, _) in enumerate(searches) if c.at is not None]
    for stretch in _dense_stretches(timed, SEARCH_MIN, SEARCH_WINDOW_S):
        chosen = [searches[i] for i in stretch]
        queries = [q for _, q in chosen]
        repeated = sorted({q for q in queries if queries.count(q) > 1})
        trigger = chosen[SEARCH_MIN - 1][0]
        yield _finding(
            record, "repeated_search", chosen[0][0].call.tool_call_id, trigger.step,
            severity="high" if len(chosen) >= 2 * SEARCH_MIN else "medium",
            confidence="high" if repeated else "medium",
            reason=f"{len(chosen)} searches in {_span(chosen[0][0], chosen[-1][0])} "
                   f"({SEARCH_MIN}+ within {SEARCH_WINDOW_S // 60} min)"
                   + (f", {len(repeated)} of them repeated verbatim" if repeated else ""),
            evidence={"search_count": len(chosen),
                      "step_indexes": [c.step.step_index for c, _ in chosen],
                      "tool_names": sorted({c.call.tool_name for c, _ in chosen}),
                      "distinct_queries": len(set(queries)),
                      "repeated_queries": [quote(q) for q in repeated],
                      "span_s": _seconds(chosen[0][0], chosen[-1][0])})


def _seconds(a: Call, b: Call) -> float | None:
    if a.at is None or b.at is None:
        return None
    return round(b.at - a.at, 3)


def _span(a: Call, b: Call) -> str:
    seconds = _seconds(a, b) or 0.0
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _ranges(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps)


def _waste_limitations(record: TraceRecord, calls: list[Call], missing_times: int) -> list[str]:
    notes = ["fidelity is record: outputs are measured as the TraceRecord holds them "
             "(restored from blobs when available); OTLP wire capture is not available"]
    if missing_times:
        notes.append(f"{missing_times} of {len(record.steps)} steps have no readable timestamp; "
                     "they take the time of the step before them")
    untimed = sum(1 for c in calls if c.at is None)
    if untimed:
        notes.append(f"{untimed} tool calls come before any timestamp and are left out of the "
                     "time-window detectors")
    if any(c.obs is not None and c.obs.content and getattr(c.obs, "output_chars", None) is None
           for c in calls):
        notes.append("output lengths are measured on the recorded content; a copy cut at "
                     "capture whose blob is not here counts only its kept prefix")
    notes.append("whether a path is a file or a folder is judged from the trace alone "
                 "(a path that others live under is a folder)")
    return notes

"""Compare: two runs side by side, from their TraceRecords.

:func:`compare` is the ``opentraces.trace_compare.v1`` payload: ``b`` measured against ``a`` on
metrics, change bursts, run signals, context waste, errors and security, plus the persona scores
of :func:`quality`. Like the signals it is built from, it is a function of the two records alone
(see :mod:`opentraces.tool_calls`).

The rules and their limits are described in ``docs/intel.md``.
"""

from __future__ import annotations

from typing import Any

from opentraces.context_waste import context_waste
from opentraces.record import Metrics, TraceRecord
from opentraces.run_signals import INTERRUPT, NOT_TYPED, run_intel
from opentraces.tool_calls import FIDELITY
from opentraces.trace_map import BURST_GAP, bursts

__all__ = ["TRACE_COMPARE_SCHEMA", "compare", "quality"]

TRACE_COMPARE_SCHEMA = "opentraces.trace_compare.v1"


def compare(a: TraceRecord, b: TraceRecord, *, no_quality: bool = False,
            burst_gap: int | None = None) -> dict[str, Any]:
    """The ``opentraces.trace_compare.v1`` payload: ``b`` measured against ``a``.

    Every ``{a, b, delta}`` triple has ``delta = b - a`` (None when either side is unknown).
    ``burst_gap`` pins both sides to one gap (in steps) for burst counting; by default
    :data:`opentraces.trace_map.BURST_GAP`.
    """
    intel_a, intel_b = run_intel(a), run_intel(b)
    waste_a, waste_b = context_waste(a), context_waste(b)
    delta: dict[str, Any] = {
        "metrics": {name: _triple(getattr(a.metrics, name), getattr(b.metrics, name))
                    for name in Metrics.__struct_fields__},
        "bursts": _burst_delta(a, b, burst_gap),
        "signals": {k: _triple(intel_a["counts"][k], intel_b["counts"][k])
                    for k in intel_a["counts"]},
        "waste": {k: _triple(waste_a["summary"][k], waste_b["summary"][k])
                  for k in waste_a["summary"]},
        "errors": {k: _triple(va, vb) for (k, va), vb in zip(
            _error_counts(a).items(), _error_counts(b).values(), strict=True)},
        "security": {k: _triple(getattr(a.security, k), getattr(b.security, k))
                     for k in ("scanned", "flags_reviewed", "redactions_applied")},
    }
    if not no_quality:
        qa, qb = quality(a, intel_a, waste_a), quality(b, intel_b, waste_b)
        delta["quality"] = {k: _triple(qa[k], qb[k]) for k in qa}
        delta["quality_version"] = QUALITY_VERSION
    return {"trace_a": a.trace_id, "trace_b": b.trace_id,
            "fidelity": {"a": FIDELITY, "b": FIDELITY}, "delta": delta}


def _number(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _triple(a: Any, b: Any) -> dict[str, Any]:
    a, b = _number(a), _number(b)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return {"a": a, "b": b, "delta": _number(b - a) if numeric else None}


def _error_counts(record: TraceRecord) -> dict[str, int]:
    observations = [o for s in record.steps for o in s.observations]
    return {"tool_calls": sum(len(s.tool_calls) for s in record.steps),
            "tool_errors": sum(1 for o in observations if o.error == "tool_error"),
            "no_result": sum(1 for o in observations if o.error == "no_result")}


def _burst_delta(a: TraceRecord, b: TraceRecord, gap: int | None) -> dict[str, Any]:
    gap = BURST_GAP if gap is None else gap
    counts = [len(bursts(r, gap=gap, commit_lookup=False)) for r in (a, b)]
    return {"gap": gap, **_triple(*counts)}


#: Version of the persona score formulas below; bump it when one changes.
QUALITY_VERSION = 1


def quality(record: TraceRecord, intel: dict[str, Any] | None = None,
            waste: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deterministic persona scores (0-100, higher is better) for one record.

    - ``reliability`` (the reviewer): ``100 * (1 - unrecovered / tool_calls)``, where
      ``unrecovered = max(0, failures - recoveries)``; None without tool calls.
    - ``autonomy`` (the user): ``100 * (1 - resteers / follow_ups)``, where ``follow_ups`` are
      the user's typed messages after the first; 100 when there are none.
    - ``efficiency`` (the budget holder): ``100 - 10 * (waste findings + loop signals)``,
      floored at 0.
    - ``overall``: the mean of the scores that are not None.
    All are rounded to one decimal.
    """
    intel = intel if intel is not None else run_intel(record)
    waste = waste if waste is not None else context_waste(record)
    counts = intel["counts"]
    calls = sum(len(s.tool_calls) for s in record.steps if s.role == "agent")
    unrecovered = max(0, counts["failure"] - counts["recovery"])
    typed = [s for s in record.steps if s.role == "user" and (s.content or "").strip()
             and not NOT_TYPED.match(s.content or "") and not INTERRUPT.match(s.content or "")]
    follow_ups = max(0, len(typed) - 1)
    scores: dict[str, float | None] = {
        "reliability": round(100 * (1 - unrecovered / calls), 1) if calls else None,
        "autonomy": round(100 * (1 - min(counts["resteer"], follow_ups) / follow_ups), 1)
        if follow_ups else 100.0,
        "efficiency": float(max(0, 100 - 10 * (waste["summary"]["context_waste_count"]
                                               + counts["loop"]))),
    }
    known = [v for v in scores.values() if v is not None]
    scores["overall"] = round(sum(known) / len(known), 1) if known else None
    return scores

"""`opentraces trace compare`: two traces side by side (Trace Intelligence).

The payload is :func:`opentraces.api.trace_compare` of the two records; this module only reads
them, renders and exits. Registered in the ``trace`` group by ``commands/trace.py``.
"""

from __future__ import annotations

from typing import Any

import click

from opentraces.commands.output import emit, json_option

REPAIR_STEP = "The traces view is {lag} events behind the log; `opentraces repair` adds them."


@click.command("compare")
@click.argument("ref_a", metavar="TRACE_A")
@click.argument("ref_b", metavar="TRACE_B")
@click.option("--no-quality", is_flag=True,
              help="Leave out the persona quality scores.")
@json_option
@click.pass_context
def trace_compare(ctx: click.Context, ref_a: str, ref_b: str, no_quality: bool) -> None:
    """Compare two traces: metrics, bursts, run signals, errors and quality, B against A.

    Each figure is given as {a, b, delta} with delta = b - a.

    Example: opentraces trace compare 3f2a 9c1e --json
    """
    from opentraces import api

    settings = api.settings_from_environment()
    views = [api.trace_view(settings, ref) for ref in (ref_a, ref_b)]
    payload = api.trace_compare(views[0].record, views[1].record, no_quality=no_quality)
    lag = max(v.head - v.position for v in views)
    stale = any(v.stale for v in views)
    emit(ctx, api.TRACE_COMPARE_SCHEMA, payload, text=lambda: summary(payload),
         next_command="opentraces repair" if stale else None,
         next_steps=[REPAIR_STEP.format(lag=lag)] if stale else [])


def summary(payload: dict[str, Any]) -> str:
    """The comparison as aligned lines for people: name, A, B, delta."""
    delta = payload["delta"]
    rows = [("", "A", "B", "delta"),
            ("trace", payload["trace_a"][:12], payload["trace_b"][:12], "")]
    for group in ("metrics", "signals", "waste", "errors", "quality"):
        for name, t in delta.get(group, {}).items():
            rows.append((f"{group}.{name}", _cell(t["a"]), _cell(t["b"]), _cell(t["delta"])))
    bursts = delta["bursts"]
    rows.append((f"bursts (gap {bursts['gap']})", _cell(bursts["a"]), _cell(bursts["b"]),
                     _cell(bursts["delta"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

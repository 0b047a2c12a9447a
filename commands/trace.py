"""`opentraces trace …`: read captured traces."""

from __future__ import annotations

import json
from typing import Any

import click

from opentraces.commands.output import emit, json_mode, json_option

REPAIR_STEP = "The traces view is {lag} events behind the log; `opentraces repair` adds them."


@click.group()
def trace() -> None:
    """Read captured traces (sessions) as TraceRecords."""


@trace.command("get")
@click.argument("ref", metavar="TRACE")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl"]), default=None,
              help="Print the record itself: indented JSON, or the one-line JSONL export.")
@json_option
@click.pass_context
def trace_get(ctx: click.Context, ref: str, fmt: str | None) -> None:
    """Show one trace, by its id or the start of it.

    Example: opentraces trace get 3f2a --format jsonl >> traces.jsonl
    """
    from opentraces import api

    view = api.trace_view(api.settings_from_environment(), ref)
    steps = [REPAIR_STEP.format(lag=view.head - view.position)] if view.stale else []
    if fmt is not None and not json_mode(ctx):
        text = view.record.to_jsonl_line() if fmt == "jsonl" else json.dumps(
            api.to_builtins(view.record), indent=2, ensure_ascii=False)
        click.echo(text)
        for step in steps:
            click.echo(step, err=True)
        return
    emit(ctx, "opentraces.trace.record.v1",
         {"record": api.to_builtins(view.record),
          "freshness": {"stale": view.stale, "position": view.position, "head": view.head}},
         text=lambda: summary(api.to_builtins(view.record)),
         next_command="opentraces repair" if view.stale else None, next_steps=steps)


def summary(r: dict[str, Any]) -> str:
    """A few lines about a record (given as plain data) for people."""
    agent = " ".join(x for x in (r["agent"]["name"], r["agent"]["version"]) if x)
    steps = r["steps"]
    calls = sum(len(s["tool_calls"]) for s in steps)
    missing = sum(1 for s in steps for o in s["observations"] if o["error"] == "no_result")
    m, outcome = r["metrics"], r["outcome"]
    task = (r["task"]["description"] or "").strip().splitlines()
    lines = [
        f"trace {r['trace_id']}  session {r['session_id']}",
        f"agent: {agent}" + (f"  model {r['agent']['model']}" if r["agent"]["model"] else ""),
        f"task: {task[0][:100] if task else '(none)'}",
        f"time: {r['timestamp_start'] or '?'} .. {r['timestamp_end'] or '?'}",
        f"steps: {m['total_steps']}, tool calls: {calls} ({missing} without result)",
        f"tokens: in {m['total_input_tokens']}, out {m['total_output_tokens']}, "
        f"cache read {m['total_cache_read_tokens']}, cache write "
        f"{m['total_cache_creation_tokens']}"
        + (f", cost ${m['estimated_cost_usd']:.4f}" if m["estimated_cost_usd"] is not None
           else ""),
        f"committed: {outcome['commit_sha']}" if outcome["committed"] else "committed: no",
    ]
    return "\n".join(lines)

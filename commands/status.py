"""`opentraces status`: one-glance verdict on the local store."""

from __future__ import annotations

import click

from opentraces.commands.output import emit, json_option, table


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show counts, projection freshness and what to do next."""
    from opentraces import api

    report = api.status(api.settings_from_environment())

    def text() -> str:
        s = report.store
        rows = [(name, p["state"], f"{p['position']}/{p['head']}")
                for name, p in report.projections.items()]
        return (f"opentraces {report.verdict}: {s.trace_count} traces, {s.project_count} "
                f"projects, {s.event_count} events\nstore: {s.location}\n" + table(rows))

    emit(ctx, "opentraces.status.v1", api.to_builtins(
        {"store": report.store, "projections": report.projections, "verdict": report.verdict,
         "freshness": report.freshness}),
         text=text, next_command=report.next_command, next_steps=report.next_steps)

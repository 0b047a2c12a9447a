"""`opentraces doctor`: check the store, blobs, projections and configuration."""

from __future__ import annotations

import click

from opentraces.commands.output import emit, json_option


@click.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check store, blobs, projections and config; exit 3 if maintenance is needed."""
    from opentraces import api

    report = api.doctor(api.settings_from_environment())
    exit_code = 0 if report.ok else 3 if report.needs_maintenance else 1
    lines = [f"{'ok ' if c.ok else 'BAD'} {c.name}: {c.detail}" for c in report.checks]
    emit(ctx, "opentraces.doctor.v1",
         {"doctor": api.to_builtins(report), "cli": {"installed_version": report.version}},
         text="\n".join(lines), next_command=report.next_command, next_steps=report.next_steps,
         exit_code=exit_code, status="ok" if report.ok else "error")

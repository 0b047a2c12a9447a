"""`opentraces init` and `opentraces remove`: turn capture on or off for the current project."""

from __future__ import annotations

from pathlib import Path

import click

from opentraces.commands.output import emit, json_option


@click.command()
@click.option("--agent", "agents", multiple=True, metavar="AGENT",
              help="Enroll for this agent only: claude-code, codex-cli or pi (repeatable; "
                   "default: every agent).")
@click.option("--import-existing/--start-fresh", default=False,
              help="Also import the project's earlier sessions, or capture only sessions "
                   "started from now on (the default).")
@json_option
@click.pass_context
def init(ctx: click.Context, agents: tuple[str, ...], import_existing: bool) -> None:
    """Enroll the current folder as a project whose sessions are captured."""
    from opentraces import api

    settings, cwd = api.settings_from_environment(), Path.cwd()
    result = api.enroll(settings, cwd, list(agents), start_fresh=not import_existing)
    payload = {"init": api.to_builtins(result), "imported": None}
    steps: list[str] = []
    if import_existing:
        payload["imported"] = api.to_builtins(api.import_sessions(settings, project=cwd))
    if result.tracking_mode == "global":
        steps.append("Tracking mode is global: every project is captured unless removed; "
                     "enrollment narrows nothing.")
    verb = "enrolled" if result.changed else "already enrolled"
    since = f" (sessions from {result.since})" if result.since else " (all sessions)"
    who = ", ".join(result.agents) or "every agent"
    emit(ctx, "opentraces.init.v1", payload,
         text=f"{result.project} {verb} for {who}{since}", next_steps=steps)


@click.command()
@json_option
@click.pass_context
def remove(ctx: click.Context) -> None:
    """Stop capturing sessions in the current folder (captured ones stay in the store)."""
    from opentraces import api

    result = api.remove(api.settings_from_environment(), Path.cwd())
    verb = "capture turned off" if result.changed else "capture was already off"
    emit(ctx, "opentraces.remove.v1", {"remove": api.to_builtins(result)},
         text=f"{result.project}: {verb}")

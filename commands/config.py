"""`opentraces config …`: machine-wide capture settings."""

from __future__ import annotations

import click

from opentraces.commands.output import emit, json_option


@click.group()
def config() -> None:
    """Show or change machine-wide capture settings."""


@config.command("tracking-mode")
@click.argument("mode", required=False, type=click.Choice(["global", "manual"]))
@json_option
@click.pass_context
def config_tracking_mode(ctx: click.Context, mode: str | None) -> None:
    """Show the tracking mode, or set it to global or manual.

    global captures every project except removed ones; manual captures only projects enrolled
    with `opentraces init`.
    """
    from opentraces import api

    settings = api.settings_from_environment()
    if mode is None:
        current = api.tracking_mode(settings)
        payload = {"mode": current, "previous": current, "changed": False}
        text = f"tracking mode: {current}"
    else:
        result = api.set_tracking_mode(settings, mode)
        payload = api.to_builtins(result)
        text = f"tracking mode: {result.mode}" + ("" if result.changed else " (unchanged)")
    emit(ctx, "opentraces.config.tracking_mode.v1", payload, text=text)

"""`opentraces import`: read agent transcripts into the event log."""

from __future__ import annotations

import time
from pathlib import Path

import click

from opentraces.commands.output import emit, json_option, progress

AGENTS = ("claude-code", "codex-cli", "pi", "gemini-cli")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None) -> float | None:
    """``12h``, ``3d``, ``90m`` → a Unix time that far in the past."""
    if value is None:
        return None
    number, unit = value[:-1], value[-1:]
    if unit not in UNITS or not number.isdigit():
        raise click.BadParameter(f"{value!r} is not a duration like 90m, 12h or 7d",
                                 param_hint="--since")
    return time.time() - int(number) * UNITS[unit]


@click.command("import")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--agent", "agents", multiple=True, type=click.Choice(AGENTS),
              help="Only this agent's transcripts (repeatable).")
@click.option("--since", help="Only files changed within this long, e.g. 12h or 7d.")
@click.option("--from-spool", is_flag=True,
              help="Import the sessions that agent hooks reported, then clear their spool.")
@click.option("--samples-when-empty", is_flag=True,
              help="If no agent transcripts are found, import the bundled sample sessions.")
@json_option
@click.pass_context
def import_(ctx: click.Context, paths: tuple[Path, ...], agents: tuple[str, ...],
            since: str | None, from_spool: bool, samples_when_empty: bool) -> None:
    """Import sessions from PATHS, or from the agents' standard folders.

    Re-running is safe: unchanged files add nothing and grown files add only their new lines.
    """
    from opentraces import api

    settings = api.settings_from_environment()
    if from_spool:
        report = api.import_from_spool(settings)
        emit(ctx, "opentraces.import.v1", api.to_builtins(report) | {"samples": False},
             text=f"{report.events_appended} events from {report.sources_scanned} spooled files")
        return
    sources = api.import_sources(settings, list(paths) or None, agents=agents or None,
                                 since=parse_since(since))
    samples = samples_when_empty and not sources
    if samples:
        sources = api.sample_sources()
    with progress(ctx, "Importing", len(sources)) as advance:
        report = api.import_sessions(settings, sources, progress=advance)
    body = api.to_builtins(report) | {"samples": samples}
    text = (f"{report.sources_scanned} files: {report.traces_created} new traces, "
            f"{report.traces_updated} updated, {report.sources_unchanged} unchanged; "
            f"{report.events_appended} events, {report.lines_rejected} lines rejected")
    steps = [f"{r.path}:{r.line}: {r.reason}" for r in report.rejected[:20]]
    if samples:
        steps.append("No agent transcripts were found here, so the bundled sample sessions "
                     "were imported (working folder /home/sample/opentraces-demo).")
    elif report.sources_scanned == 0:
        steps.append("No agent transcripts were found; pass a file or folder to import.")
    if report.trail:
        text += (f"\nTrace Trails: {report.trail['patches_derived']} new patches, "
                 f"{report.trail['anchors_recorded']} anchored in git")
    nxt = "opentraces status" if report.events_appended else None
    index = api.index_status(settings) if report.events_appended else None
    if index is not None and index.lag:
        steps.append(f"The search index is {index.lag} events behind (a large import does not "
                     "index as it goes); `opentraces trace index refresh` catches it up.")
        nxt = "opentraces trace index refresh"
    emit(ctx, "opentraces.import.v1", body, text=text, next_steps=steps, next_command=nxt)

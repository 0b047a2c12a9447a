"""`opentraces rebuild` and `opentraces repair`: replay the log into the projections."""

from __future__ import annotations

import click

from opentraces.commands.output import emit, json_option, progress, table


def run_rebuild(ctx: click.Context, names: tuple[str, ...], schema_version: str) -> None:
    from opentraces import api

    settings = api.settings_from_environment()
    with progress(ctx, "Rebuilding", api.event_count(settings)) as advance:
        report = api.rebuild(settings, list(names) or None, progress=advance)
    rows = [(n, f"{p['events_applied']} events", f"{p['seconds']:.2f}s", (p["digest"] or "")[:16])
            for n, p in report.projections.items()]
    emit(ctx, schema_version, {"projections": report.projections, "seconds": report.seconds},
         text=table(rows))


def run_repair(ctx: click.Context) -> None:
    from opentraces import api

    settings = api.settings_from_environment()
    with progress(ctx, "Repairing", api.event_count(settings)) as advance:
        report = api.repair(settings, progress=advance)
    text = (f"checked {report.events_checked} events and {report.blobs_checked} blobs; "
            f"caught up: {', '.join(report.projections_caught_up) or 'none'}; "
            f"rebuilt: {', '.join(report.projections_rebuilt) or 'none'}")
    emit(ctx, "opentraces.bucket.repair.v1", {"repair": api.to_builtins(report)},
         text=text, next_steps=report.errors, exit_code=1 if report.errors else 0,
         status="error" if report.errors else "ok",
         next_command="opentraces bucket verify --full" if report.errors else None)


@click.command()
@click.argument("names", nargs=-1)
@json_option
@click.pass_context
def rebuild(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Rebuild projections (all, or the NAMES given) from the event log."""
    run_rebuild(ctx, names, "opentraces.rebuild.v1")


@click.command()
@json_option
@click.pass_context
def repair(ctx: click.Context) -> None:
    """Verify events and blobs, catch up lagging projections and rebuild broken ones."""
    run_repair(ctx)

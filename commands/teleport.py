"""`opentraces trace teleport …`: carry a trace and its git evidence to another opentraces home."""

from __future__ import annotations

from pathlib import Path

import click

from opentraces.commands.output import emit, json_option

FOLDER = click.Path(path_type=Path, file_okay=False)


@click.group()
def teleport() -> None:
    """Move a trace and the git evidence it needs between opentraces homes."""


@teleport.command("export")
@click.argument("trace")
@click.option("--output", type=FOLDER, required=True,
              help="A new or empty folder, outside any git repository, for the bundle.")
@click.option("--include-raw", is_flag=True,
              help="Also carry the raw transcript bytes (left behind by default).")
@json_option
@click.pass_context
def teleport_export(ctx: click.Context, trace: str, output: Path, include_raw: bool) -> None:
    """Write TRACE, its anchors, survival and referenced blobs into a verified bundle.

    Example: opentraces trace teleport export 3f2a --output /tmp/3f2a-bundle
    """
    from opentraces import api

    r = api.teleport_export(api.settings_from_environment(), trace, output,
                            include_raw=include_raw)
    emit(ctx, "opentraces.trace.teleport_export.v1", api.to_builtins(r),
         text=f"trace {r.trace_id}: {r.trace_events} events, {r.repo_events} git evidence "
              f"events and {r.blobs} blobs written to {r.output}"
              + (f" ({len(r.omitted_blobs)} blobs left behind)" if r.omitted_blobs else ""),
         next_command=f"opentraces trace teleport open {r.output} --project <blank folder>")


@teleport.command("open")
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--project", type=FOLDER,
              help="A new or empty folder that gets a README about the trace.")
@click.option("--no-readme", is_flag=True, help="Write nothing into --project.")
@json_option
@click.pass_context
def teleport_open(ctx: click.Context, bundle: Path, project: Path | None,
                  no_readme: bool) -> None:
    """Verify BUNDLE and import its trace and git evidence into this store (idempotent)."""
    from opentraces import api

    r = api.teleport_open(api.settings_from_environment(), bundle, project=project,
                          readme=not no_readme)
    emit(ctx, "opentraces.trace.teleport_open.v1", api.to_builtins(r),
         text=f"trace {r.trace_id}: {r.events_written} events written, "
              f"{r.repo_events_appended} git evidence events added, {r.blobs_imported} blobs",
         next_command=f"opentraces trace get {r.trace_id}")

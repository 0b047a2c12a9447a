"""`opentraces bucket …`: the local store of captured traces, its blobs and manifest."""

from __future__ import annotations

import click

from opentraces.commands.maintenance import run_rebuild, run_repair
from opentraces.commands.output import emit, json_option, table


@click.group()
def bucket() -> None:
    """Inspect, verify, repair and prune the local bucket."""


@bucket.command("status")
@json_option
@click.pass_context
def bucket_status(ctx: click.Context) -> None:
    """Counts, safety verdict and sync state of the bucket."""
    from opentraces import api

    s = api.bucket_status(api.settings_from_environment())
    text = (f"{s.trace_count} traces, {s.event_count} events, {s.blob_count} blobs "
            f"({s.blob_bytes} bytes); safety {s.safety}; remote {s.remote or 'none'}")
    emit(ctx, "opentraces.bucket.status.v1", api.to_builtins(s), text=text,
         next_command="opentraces repair" if s.stale else None)


@bucket.command("manifest")
@json_option
@click.pass_context
def bucket_manifest(ctx: click.Context) -> None:
    """List every trace in the bucket with its counts and status."""
    from opentraces import api

    m = api.bucket_manifest(api.settings_from_environment())
    rows = [(t["trace_id"][:12], t["agent_name"] or "?", str(t["summary"]["step_count"]),
             t["title"] or "") for t in m.traces]
    emit(ctx, "opentraces.bucket.manifest.v2", api.to_builtins(m),
         text=table(rows) or "The bucket is empty.",
         next_command="opentraces repair" if m.stale else None)


@bucket.command("verify")
@click.option("--full", is_flag=True, help="Also re-hash unreferenced blobs and check SQLite.")
@json_option
@click.pass_context
def bucket_verify(ctx: click.Context, full: bool) -> None:
    """Decode every event and re-hash every referenced blob; exit 1 on any problem."""
    from opentraces import api

    v = api.bucket_verify(api.settings_from_environment(), full=full)
    text = "\n".join(v.errors) or f"ok: {v.events_checked} events, {v.blobs_checked} blobs"
    emit(ctx, "opentraces.bucket.verify.v1",
         {"ok": v.ok, "errors": v.errors,
          "verify": {"blobs_checked": v.blobs_checked, "events_checked": v.events_checked,
                     "dangling_count": v.dangling_count, "full": v.full}},
         text=text, exit_code=0 if v.ok else 1, status="ok" if v.ok else "error",
         next_command=None if v.ok else "opentraces repair")


@bucket.command("repair")
@json_option
@click.pass_context
def bucket_repair(ctx: click.Context) -> None:
    """Same as `opentraces repair`, from within the bucket group."""
    run_repair(ctx)


@bucket.command("rebuild")
@click.argument("names", nargs=-1)
@json_option
@click.pass_context
def bucket_rebuild(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Rebuild bucket projections (all, or the NAMES given) from the event log."""
    run_rebuild(ctx, names, "opentraces.bucket.rebuild.v1")


@bucket.command("prune")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--min-age", type=float, default=3600.0, show_default=True,
              help="Keep unreferenced blobs younger than this many seconds.")
@json_option
@click.pass_context
def bucket_prune(ctx: click.Context, dry_run: bool, min_age: float) -> None:
    """Delete blobs that no event references."""
    from opentraces import api

    p = api.bucket_prune(api.settings_from_environment(), dry_run=dry_run,
                         min_age_seconds=min_age)
    key = "would_delete" if dry_run else "deleted"
    verb = "would delete" if dry_run else "deleted"
    emit(ctx, "opentraces.bucket.prune.v1",
         {key: p.hashes, "bytes": p.bytes, "temp_files": p.temp_files, "dry_run": dry_run},
         text=f"{verb} {len(p.hashes)} blobs ({p.bytes} bytes)")


@bucket.command("security")
@click.option("--enable", multiple=True, metavar="TOOL", help="Turn a tool on (repeatable).")
@click.option("--disable", multiple=True, metavar="TOOL",
              help="Turn off a tool that is on by default (repeatable; never the floor).")
@json_option
@click.pass_context
def bucket_security(ctx: click.Context, enable: tuple[str, ...],
                    disable: tuple[str, ...]) -> None:
    """Show or change the machine-wide security tools every push from this bucket applies.

    Example: opentraces bucket security --enable classifier
    """
    from opentraces import api

    r = api.bucket_security(api.settings_from_environment(), enable=list(enable),
                            disable=list(disable))
    pending = r.pending
    emit(ctx, "opentraces.bucket.security.v1", api.to_builtins(r),
         text=f"security version {r.security_version}\n"
              f"floor (always on): {', '.join(r.policy['floor'])}\n"
              f"on: {', '.join(r.policy['enabled'])}\n"
              f"off by choice: {', '.join(r.policy['disabled']) or 'none'}\n"
              f"traces not yet sanitized under this version: {pending['traces']}")

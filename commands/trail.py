"""`opentraces trail …`: which sessions wrote which commits, and what is left of it at HEAD.

Visible: ``blame commit``, ``blame pr render|create|update``, ``graph``, ``track``. Hidden
but callable (scripting and debugging): ``sync``, ``explain``, ``timeline``, ``attach``,
``resolve``, ``rebuild``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from opentraces.commands.output import emit, envelope, json_mode, json_option, progress

REPO = click.Path(path_type=Path, file_okay=False)
REPO_HELP = "The repository (any folder inside it; default: the current folder)."
BASE_HELP = "The branch the pull request goes into (default: main)."


@click.group()
def trail() -> None:
    """Trace Trails: which sessions wrote which commits, and what survives at HEAD."""


@contextmanager
def bar(ctx: click.Context, label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing output.progress once the total is known."""
    opened: list[Any] = []

    def advance(done: int, total: int) -> None:
        if not opened:
            opened.append(progress(ctx, label, total))
            opened.append(opened[0].__enter__())
        opened[1](done)

    try:
        yield advance
    finally:
        if opened:
            opened[0].__exit__(None, None, None)


def since_iso(value: str | None) -> str | None:
    """``12h``/``7d`` (that long ago) or an ISO-8601 time, as ``YYYY-MM-DDTHH:MM:SSZ``."""
    if value is None:
        return None
    if value[-1:] in "smhdw" and value[:-1].isdigit():
        from opentraces.commands.capture import parse_since

        when = parse_since(value)
        assert when is not None
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is neither a duration like 12h nor an ISO time",
                                 param_hint="--since") from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# blame


@trail.group()
def blame() -> None:
    """Which traces wrote a commit, which commits carry a trace, and PR bodies."""


@blame.command("commit")
@click.argument("ref", metavar="SHA|t:TRACE")
@click.option("--repo", type=REPO, default=".", help=REPO_HELP)
@json_option
@click.pass_context
def blame_commit(ctx: click.Context, ref: str, repo: Path) -> None:
    """Show the traces that wrote commit SHA (coverage of its added lines, per-file ranges),
    or, for t:TRACE, the commits that carry that trace.

    Example: opentraces trail blame commit HEAD
    """
    from opentraces import api

    settings = api.settings_from_environment()
    if ref.startswith("t:"):
        found = api.blame_trace(settings, ref[2:])
        emit(ctx, "opentraces.trail.blame_trace.v1", api.to_builtins(found),
             text=lambda: blame_trace_text(found))
        return
    blame = api.blame_commit(settings, ref, repo)
    nxt = None if blame.evidence else "opentraces trail sync"
    emit(ctx, "opentraces.trail.blame.v1", api.to_builtins(blame),
         text=lambda: blame_text(blame), next_command=nxt)


def blame_text(b: Any) -> str:
    c, cov = b.commit, b.coverage
    lines = [f"{c.sha[:12]} {c.subject}",
             f"coverage: {cov.attributed}/{cov.total} added lines ({cov.ratio:.0%})"]
    for t in b.traces:
        lines.append(f"  {t.trace_id}  {t.agent or 'unknown agent'}  {t.title or ''}".rstrip())
    for path, ranges in b.files.items():
        spans = ", ".join(f"{a}-{z}" if a != z else f"{a}" for a, z in ranges)
        lines.append(f"  {path}: lines {spans}")
    if not b.evidence:
        lines.append("  no captured session is anchored in this commit")
    return "\n".join(lines)


def blame_trace_text(b: Any) -> str:
    if not b.commits:
        return f"trace {b.trace_id}: no commit carries its edits yet"
    return "\n".join([f"trace {b.trace_id}"] + [
        f"  {c.sha[:12]} {c.subject or ''}  ({len(c.patches)} patches)" for c in b.commits])


@blame.group("pr")
def blame_pr() -> None:
    """Pull-request bodies: per commit, the sessions that wrote it or why none did."""


@blame_pr.command("render")
@click.option("--base", default="main", show_default=True, help=BASE_HELP)
@click.option("--repo", type=REPO, default=".", help=REPO_HELP)
@json_option
@click.pass_context
def blame_pr_render(ctx: click.Context, base: str, repo: Path) -> None:
    """Print the PR body (Markdown) for the commits of the current branch that BASE lacks."""
    from opentraces import api

    body = api.pr_render(api.settings_from_environment(), repo, base)
    emit(ctx, "opentraces.trail.pr.v1", body, text=body["markdown"].rstrip("\n"))


@blame_pr.command("create")
@click.option("--base", default="main", show_default=True, help=BASE_HELP)
@click.option("--repo", type=REPO, default=".", help=REPO_HELP)
@click.option("--title", help="The PR title (default: the newest commit's subject).")
@json_option
@click.pass_context
def blame_pr_create(ctx: click.Context, base: str, repo: Path, title: str | None) -> None:
    """Open a pull request for the current branch with the rendered body (needs `gh`)."""
    from opentraces import api

    result = api.pr_create(api.settings_from_environment(), repo, base, title=title)
    emit(ctx, "opentraces.trail.pr_create.v1", result,
         text=f"created {result['url'] or 'the pull request'}")


@blame_pr.command("update")
@click.option("--base", default="main", show_default=True, help=BASE_HELP)
@click.option("--repo", type=REPO, default=".", help=REPO_HELP)
@json_option
@click.pass_context
def blame_pr_update(ctx: click.Context, base: str, repo: Path) -> None:
    """Refresh the body of the current branch's pull request; no edit when it is current."""
    from opentraces import api

    result = api.pr_update(api.settings_from_environment(), repo, base)
    emit(ctx, "opentraces.trail.pr_update.v1", result,
         text=f"PR #{result['number']}: {result['action']}")


# ---------------------------------------------------------------------------------------------
# graph and track


@trail.command("graph")
@click.option("--trace", help="Trace-primary: this trace's patches and their commits.")
@click.option("--repo", type=REPO,
              help="Show this repository's recent commits, with or without traces (default: "
                   "every commit that carries trace evidence).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many commits.")
@json_option
@click.pass_context
def trail_graph(ctx: click.Context, trace: str | None, repo: Path | None,
                limit: int | None) -> None:
    """Draw commits and the traces that wrote them, newest first (or one trace's patches).

    Example: opentraces trail graph --repo . --limit 10
    """
    from opentraces import api

    settings = api.settings_from_environment()
    if trace is not None:
        tg = api.trail_trace_graph(settings, trace)
        emit(ctx, "opentraces.trail.graph.v1", api.to_builtins(tg),
             text=lambda: api.render_trace_graph(tg))
        return
    graph = api.trail_commit_rail(settings, repo, limit)
    emit(ctx, "opentraces.trail.graph.v1", api.to_builtins(graph),
         text=lambda: api.render_commit_graph(graph))


@trail.command("track")
@click.argument("trace", required=False)
@click.option("--patch", help="Track one patch (its id).")
@click.option("--anchor", help="Track the patch of one anchor (its id).")
@click.option("--since", help="Patches written within this long (12h, 7d) or since an ISO time.")
@click.option("--all", "all_", is_flag=True, help="Track every anchored patch.")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N patches.")
@json_option
@click.pass_context
def trail_track(ctx: click.Context, trace: str | None, patch: str | None, anchor: str | None,
                since: str | None, all_: bool, limit: int | None) -> None:
    """Follow a trace's anchored lines to HEAD and report what survives (records changes).

    With --all or --since and --json, prints JSON lines: one envelope per patch.

    Example: opentraces trail track --since 12h --json
    """
    from opentraces import api

    with bar(ctx, "Tracking") as advance:
        report = api.trail_track(api.settings_from_environment(), trace=trace, patch=patch,
                                 anchor=anchor, since=since_iso(since), all=all_, limit=limit,
                                 progress=advance)
    if (all_ or since is not None) and json_mode(ctx):
        emit_lines(report, api.to_builtins)
        ctx.exit(0)
    emit(ctx, "opentraces.trail.track.v1", api.to_builtins(report),
         text=lambda: track_text(report))


def emit_lines(report: Any, to_builtins: Callable[[Any], Any]) -> None:
    """JSON lines for a batch: one track envelope per patch (one empty one when none)."""
    items = report.patches or [None]
    for p in items:
        body = {"trace_id": p.trace_id if p else None,
                "head": report.heads.get(p.repo_key) if p and p.repo_key else None,
                "heads": report.heads, "patches": [to_builtins(p)] if p else [],
                "observations_appended": report.observations_appended}
        click.echo(json.dumps(envelope("opentraces.trail.track.v1", body), ensure_ascii=False))


def track_text(report: Any) -> str:
    if not report.patches:
        return "no patches to track"
    lines = []
    for p in report.patches:
        where = f"{p.anchor.commit[:12]}" if p.anchor else "not committed"
        s = p.current_survival
        state = (f"{s.survival_state} {s.retention_fraction:.0%}"
                 if s and s.retention_fraction is not None else s.survival_state if s else "-")
        lines.append(f"{p.patch_id[:12]}  {p.path}  {where}  {state}")
    lines.append(f"{report.observations_appended} new observations")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Hidden scripting verbs


@trail.command("sync", hidden=True)
@click.option("--repo", type=REPO, help="Only this repository.")
@click.option("--patch", help="Only this patch: anchor its trace, then track it.")
@click.option("--anchor", help="Only the patch of this anchor.")
@json_option
@click.pass_context
def trail_sync(ctx: click.Context, repo: Path | None, patch: str | None,
               anchor: str | None) -> None:
    """Derive missing patches and anchor them in their repositories."""
    from opentraces import api

    settings = api.settings_from_environment()
    if patch is not None or anchor is not None:
        synced, tracked = api.trail_sync_patch(settings, patch=patch, anchor=anchor)
        emit(ctx, "opentraces.trail.sync.v1",
             {"sync": api.to_builtins(synced), "track": api.to_builtins(tracked)},
             text=lambda: sync_text(synced) + "\n" + track_text(tracked))
        return
    with bar(ctx, "Syncing") as advance:
        report = api.trail_sync(settings, repo=repo, progress=advance)
    emit(ctx, "opentraces.trail.sync.v1", {"sync": api.to_builtins(report), "track": None},
         text=lambda: sync_text(report))


def sync_text(r: Any) -> str:
    return (f"{r.traces_scanned} traces: {r.patches_derived} new patches, "
            f"{r.anchors_recorded} new anchors in {len(r.repos)} repositories")


@trail.command("explain", hidden=True)
@click.argument("where", metavar="[PATH:LINE]", required=False)
@click.option("--trace", help="The trace (with --step).")
@click.option("--step", type=click.IntRange(min=0), help="The step of --trace.")
@json_option
@click.pass_context
def trail_explain(ctx: click.Context, where: str | None, trace: str | None,
                  step: int | None) -> None:
    """Explain a line at HEAD (PATH:LINE) or a step (--trace T --step N)."""
    from opentraces import api

    settings = api.settings_from_environment()
    if where is not None and trace is None and step is None:
        path, _, number = where.rpartition(":")
        if not path or not number.isdigit():
            raise click.UsageError(f"{where!r} is not PATH:LINE")
        found = api.trail_explain_line(settings, Path(path).absolute(), int(number))
        emit(ctx, "opentraces.trail.explain.v1", {"kind": "line", **api.to_builtins(found)},
             text=lambda: explain_line_text(found))
        return
    if where is not None or trace is None or step is None:
        raise click.UsageError("give PATH:LINE, or --trace and --step")
    found = api.trail_explain(settings, trace, step)
    emit(ctx, "opentraces.trail.explain.v1", {"kind": "step", **api.to_builtins(found)},
         text=lambda: explain_step_text(found))


def explain_line_text(e: Any) -> str:
    head = f"{e.path}:{e.line} was introduced by {e.commit[:12]} {e.subject}"
    if not e.patches:
        return f"{head}\n  {e.reason}"
    return "\n".join([head] + [f"  trace {p.trace_id} step {p.step_index} (patch "
                               f"{p.patch_id[:12]})" for p in e.patches])


def explain_step_text(e: Any) -> str:
    lines = [f"trace {e.trace_id} step {e.step_index}"]
    if e.instruction:
        lines.append(f"  asked: {' '.join(e.instruction.split())[:200]}")
    lines += [f"  {p.path} -> {p.anchor.commit[:12] if p.anchor else 'not committed'}"
              for p in e.patches]
    if not e.patches:
        lines.append("  this step wrote no file")
    return "\n".join(lines)


@trail.command("timeline", hidden=True)
@click.argument("trace")
@json_option
@click.pass_context
def trail_timeline(ctx: click.Context, trace: str) -> None:
    """List a trace's patches, anchors and survival observations in recorded order."""
    from opentraces import api

    tl = api.trail_timeline(api.settings_from_environment(), trace)
    emit(ctx, "opentraces.trail.timeline.v1", api.to_builtins(tl),
         text=lambda: "\n".join(
             [f"trace {tl.trace_id}"] + [timeline_line(e) for e in tl.events]))


def timeline_line(e: Any) -> str:
    detail = {"patch": f"step {e.step_index} {e.path}",
              "anchor": f"{(e.commit or '')[:12]} {e.evidence_tier}/{e.evidence_firmness}",
              "survival": f"{e.survival_state} at {(e.head or '')[:12]}"}[e.kind]
    return f"  {e.at or '-':20}  {e.kind:8}  {e.patch_id[:12]}  {detail}"


@trail.command("attach", hidden=True)
@click.option("--trace", required=True, help="The trace whose edits the commit carries.")
@click.option("--commit", required=True, help="The commit (id, prefix or HEAD).")
@click.option("--repo", type=REPO, default=".", help=REPO_HELP)
@json_option
@click.pass_context
def trail_attach(ctx: click.Context, trace: str, commit: str, repo: Path) -> None:
    """Assert by hand that a commit carries a trace's edits (a manual anchor)."""
    from opentraces import api

    r = api.trail_attach(api.settings_from_environment(), trace, commit, repo)
    emit(ctx, "opentraces.trail.attach.v1", api.to_builtins(r),
         text=f"{len(r.attached)} patches attached to {r.commit[:12]}, "
              f"{len(r.already)} already there")


@trail.command("resolve", hidden=True)
@click.argument("uri")
@json_option
@click.pass_context
def trail_resolve(ctx: click.Context, uri: str) -> None:
    """Show what an ot:// address names (trace, patch trail, patch or anchor)."""
    from opentraces import api

    r = api.trail_resolve(api.settings_from_environment(), uri)
    emit(ctx, "opentraces.trail.resolve.v1", api.to_builtins(r),
         text=lambda: f"{r.kind}: {json.dumps(r.object, indent=2, ensure_ascii=False)}")


@trail.command("rebuild", hidden=True)
@json_option
@click.pass_context
def trail_rebuild(ctx: click.Context) -> None:
    """Rebuild the trail projection from the event log."""
    from opentraces.commands.maintenance import run_rebuild

    run_rebuild(ctx, ("trail",), "opentraces.trail.rebuild.v1")

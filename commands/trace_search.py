"""`opentraces trace query|skills|index`: search traces through the local search index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from opentraces.commands.output import emit, json_option, progress, table

INDEX_ACTIONS = ("status", "refresh", "rebuild")


def _facet_pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        if not sep or not name.strip() or not wanted.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="--facet")
        pairs[name.strip()] = wanted.strip()
    return pairs


@click.command("query")
@click.argument("terms", nargs=-1)
@click.option("--lex", is_flag=True,
              help="Read TERMS as plain words, any of which may match (no query syntax).")
@click.option("--skill", help="Only traces where this skill was invoked.")
@click.option("--tool", help="Only traces that called this tool (e.g. Bash, apply_patch).")
@click.option("--files", metavar="GLOB", help="Only traces that touched files matching GLOB.")
@click.option("--project", help="Only sessions of this project (folder or slug).")
@click.option("--cwd", is_flag=False, flag_value=".", default=None, metavar="[DIR]",
              help="Only sessions run in DIR or below it (default: the current folder).")
@click.option("--since", help="Only activity since an ISO date/time or an age: 12h, 7d, 2w.")
@click.option("--facet", "facets", multiple=True, metavar="NAME=VALUE",
              help="Exact facet filter (agent, model, project, tool, file, file_kind, skill, "
                   "outcome, committed, date); repeatable.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Candidates per page.")
@click.option("--page-token", help="Continue with the page after the one that gave this token.")
@click.option("--sort", type=click.Choice(["relevance", "time"]), default="relevance",
              show_default=True, help="Best match first, or newest first.")
@json_option
@click.pass_context
def query(ctx: click.Context, terms: tuple[str, ...], lex: bool, skill: str | None,
          tool: str | None, files: str | None, project: str | None, cwd: str | None,
          since: str | None, facets: tuple[str, ...], limit: int, page_token: str | None,
          sort: str) -> None:
    """Find traces by words and facets; one candidate per trace (its best step), best first.

    Words are AND-ed over a trace's text; use OR, NOT, parentheses, "exact phrases" and field:value
    (e.g. tool:bash, file_kind:python). Without words, traces are listed newest first.

    Example: opentraces trace query "failing test" --tool Bash --since 7d --json
    """
    from opentraces import api

    result = api.trace_query(
        api.settings_from_environment(), " ".join(terms), lex=lex, skill=skill, tool=tool,
        files=files, project=project, cwd=Path(cwd).resolve() if cwd else None, since=since,
        facets=_facet_pairs(facets), limit=limit, page_token=page_token, sort=sort)
    body = api.to_builtins(result)
    nxt, steps = body.pop("next_command"), body.pop("next_steps")
    emit(ctx, "opentraces.trace.query.v1", body, text=lambda: _query_text(body),
         next_command=nxt, next_steps=steps)


def _query_text(body: dict[str, Any]) -> str:
    lines = [f"{body['total']} matching, showing {body['total_returned']}"]
    for c in body["candidates"]:
        unit = c["trace_id"] if c["step_index"] is None else f"{c['trace_id']}:{c['step_index']}"
        facets = c["facets"]
        lines.append(f"{unit}  {facets.get('agent') or '?'}  {c['title'][:70]}")
        if c["step_index"] is not None and c["headline"]:
            lines.append(f"    {c['headline'][:100]}")
    if body["next_page_token"]:
        lines.append(f"more: --page-token {body['next_page_token']}")
    return "\n".join(lines)


@click.command("skills")
@click.option("--skill", help="Only this skill.")
@json_option
@click.pass_context
def skills(ctx: click.Context, skill: str | None) -> None:
    """List the skills agents invoked, most used first."""
    from opentraces import api

    result = api.trace_skills(api.settings_from_environment(), skill)
    body = api.to_builtins(result)
    nxt, steps = body.pop("next_command"), body.pop("next_steps")
    rows = [(s["skill"], f"{s['invocations']} invocations", f"{s['traces']} traces",
             s["last_seen"] or "") for s in body["skills"]]
    emit(ctx, "opentraces.trace.skills.v1", body,
         text=lambda: table(rows) or "No skill invocations were captured.",
         next_command=nxt, next_steps=steps)


@click.command("index")
@click.argument("action", type=click.Choice(INDEX_ACTIONS), default="status", required=False)
@json_option
@click.pass_context
def index(ctx: click.Context, action: str) -> None:
    """Show the search index (status), bring it up to date (refresh) or build it anew
    (rebuild). Small imports keep it current; after a large one, refresh adds only what is
    new."""
    from opentraces import api

    settings = api.settings_from_environment()
    if action == "status":
        report = api.index_status(settings)
    else:
        before = api.index_status(settings)
        total = before.head if action == "rebuild" else before.lag
        run = api.index_refresh if action == "refresh" else api.index_rebuild
        label = "Indexing" if action == "refresh" else "Rebuilding the index"
        with progress(ctx, label, total) as advance:
            report = run(settings, progress=advance)
    body = api.to_builtins(report)
    nxt, steps = body.pop("next_command"), body.pop("next_steps")
    text = (f"search index {report.state}: {report.doc_count} documents, position "
            f"{report.position} of {report.head}, {report.bytes / 1e6:.1f} MB")
    if action != "status":
        text += f"; {report.events_applied} events applied in {report.seconds:.2f}s"
    emit(ctx, "opentraces.trace.index.v1", {"action": action, **body}, text=text,
         next_command=nxt, next_steps=steps)

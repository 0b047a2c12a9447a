"""`opentraces trace …`: read captured traces, their steps, maps, change bursts and slices."""

from __future__ import annotations

import json
from typing import Any

import click

from opentraces.commands.output import emit, json_mode, json_option

REPAIR_STEP = "The traces view is {lag} events behind the log; `opentraces repair` adds them."
#: Lines of a step's text shown to people (the JSON envelope has it all).
TEXT_LINES = 20
STEP = click.IntRange(min=0)


@click.group()
def trace() -> None:
    """Read captured traces (sessions) as TraceRecords."""


def view_options(func: Any) -> Any:
    """The whole-trace views shared by `trace get` and `trace map`."""
    for option in reversed([
        click.option("--bursts", is_flag=True,
                     help="Show the change bursts: clusters of nearby edits with their intent "
                          "and commit."),
        click.option("--no-commit-lookup", is_flag=True,
                     help="With --bursts: find commits only from the trace's anchors; read no "
                          "repository and no git output."),
        click.option("--waste", is_flag=True,
                     help="Show context waste: large outputs, repeated reads and searches."),
        click.option("--run-intel", is_flag=True,
                     help="Show run signals: failures, recoveries, loops and resteers."),
    ]):
        func = option(func)
    return func


@trace.command("get")
@click.argument("ref", metavar="ADDRESS")
@click.option("--card", is_flag=True,
              help="Show a short card: headline, outcome, key files and key steps.")
@view_options
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl"]), default=None,
              help="Print the record (or the steps addressed) itself: indented JSON, or JSONL.")
@click.option("--resume", is_flag=True,
              help="With TRACE:N (a Claude Code trace): write a new session cut just before "
                   "step N and print the `claude --resume` command that continues it.")
@click.option("--dry-run", is_flag=True,
              help="With --resume: say which session file would be written; write nothing.")
@json_option
@click.pass_context
def trace_get(ctx: click.Context, ref: str, card: bool, bursts: bool, no_commit_lookup: bool,
              waste: bool, run_intel: bool, fmt: str | None, resume: bool,
              dry_run: bool) -> None:
    """Show a trace, a step or a range of steps, by address.

    Addresses: TRACE (its id or the start of it), TRACE:N (step N), TRACE:last and
    TRACE:A-B (steps A to B).

    Example: opentraces trace get 3f2a:12
    """
    from opentraces import api

    view = one_view(card=card, bursts=bursts, waste=waste, run_intel=run_intel, resume=resume)
    if dry_run and not resume:
        raise click.UsageError("--dry-run goes with --resume")
    if resume:
        if fmt is not None:
            raise click.UsageError("--format prints the record or steps; it does not combine "
                                   "with --resume")
        show_resume(ctx, api.resume_session_file(api.settings_from_environment(), ref,
                                                 dry_run=dry_run))
        return
    addr = api.parse_address(ref)
    if addr.kind != "trace" and view is not None:
        raise click.UsageError(f"--{view.replace('_', '-')} describes a whole trace; give "
                               f"{addr.trace} without a step")
    if fmt is not None and view is not None:
        raise click.UsageError("--format prints the record or steps; it does not combine with "
                               f"--{view.replace('_', '-')}")
    settings = api.settings_from_environment()
    if addr.kind != "trace":
        show_steps(ctx, api.trace_range(settings, ref), addr.kind, fmt)
    else:
        show_trace(ctx, api.trace_view(settings, ref), view, fmt, not no_commit_lookup)


@trace.command("map")
@click.argument("ref", metavar="TRACE")
@click.option("--candidate", metavar="UNIT",
              help="Focus on a step or range (12, 10-20, last): the sections that hold it.")
@view_options
@json_option
@click.pass_context
def trace_map(ctx: click.Context, ref: str, candidate: str | None, bursts: bool,
              no_commit_lookup: bool, waste: bool, run_intel: bool) -> None:
    """Map a trace: facets, landmarks, one section per user instruction, and a hand-off.

    Example: opentraces trace map 3f2a --candidate 40-52
    """
    from opentraces import api

    view = one_view(bursts=bursts, waste=waste, run_intel=run_intel)
    addr = api.parse_address(ref)
    if addr.kind != "trace":
        if candidate is not None:
            raise click.UsageError("give the unit either in the address or with --candidate")
        candidate = ref.strip().partition(":")[2]
    traced = api.trace_view(api.settings_from_environment(), addr.trace)
    if view in ("waste", "run_intel"):
        show_intel(ctx, traced, view)
        return
    payload = api.trace_map(traced.record, candidate=candidate)
    if view == "bursts":
        payload |= burst_payload(api, traced.record, not no_commit_lookup)
    freshness, nxt, notes = fresh(traced)
    if nxt is None and payload["handoff"] is not None:
        nxt = payload["handoff"]["command"]
    emit(ctx, "opentraces.trace.map.v1", payload | {"freshness": freshness},
         text=lambda: map_text(payload), next_command=nxt, next_steps=notes)


@trace.command("slice")
@click.argument("ref", metavar="TRACE")
@click.option("--from-step", type=STEP, help="First step of the slice (default: the first).")
@click.option("--to-step", type=STEP, help="Last step of the slice (default: the last).")
@click.option("--around-step", type=STEP, help="Slice around this step (with --radius).")
@click.option("--radius", type=STEP, help="Steps either side of --around-step (default 5).")
@click.option("--template", type=click.Choice(["bursts"]),
              help="Slice by a template: 'bursts' gives one slice per change burst.")
@json_option
@click.pass_context
def trace_slice(ctx: click.Context, ref: str, from_step: int | None, to_step: int | None,
                around_step: int | None, radius: int | None, template: str | None) -> None:
    """Cut a trace into deterministic slices of whole steps.

    Example: opentraces trace slice 3f2a --template bursts --json
    """
    from opentraces import api

    addr = api.parse_address(ref)
    if addr.kind != "trace":
        if any(v is not None for v in (from_step, to_step, around_step, radius, template)):
            raise click.UsageError("give the steps either in the address or with options")
        from_step, to_step = addr.start, addr.end  # "last" (api.LAST) is resolved there
    traced = api.trace_view(api.settings_from_environment(), ref)
    payload = api.trace_slice(traced.record, from_step=from_step, to_step=to_step,
                              around_step=around_step, radius=radius, template=template)
    freshness, nxt, steps = fresh(traced)
    emit(ctx, "opentraces.trace.slice.v1", payload | {"freshness": freshness},
         text=lambda: slice_text(payload), next_command=nxt, next_steps=steps)


# ---------------------------------------------------------------------------------------------
# Rendering


def one_view(**flags: bool) -> str | None:
    """The one view asked for, or None; several is a usage error."""
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        names = " and ".join(f"--{n.replace('_', '-')}" for n in chosen)
        raise click.UsageError(f"{names} cannot be combined; choose one")
    return chosen[0] if chosen else None


def fresh(view: Any) -> tuple[dict[str, Any], str | None, list[str]]:
    """The freshness block, next command and next steps of anything read from the view."""
    steps = [REPAIR_STEP.format(lag=view.head - view.position)] if view.stale else []
    return ({"stale": view.stale, "position": view.position, "head": view.head},
            "opentraces repair" if view.stale else None, steps)


def burst_payload(api: Any, record: Any, lookup: bool) -> dict[str, Any]:
    return {"burst_gap": api.BURST_GAP,
            "bursts": api.bursts(record, commit_lookup=lookup)}


def show_trace(ctx: click.Context, view: Any, kind: str | None, fmt: str | None,
               lookup: bool) -> None:
    from opentraces import api

    freshness, nxt, notes = fresh(view)
    if kind in ("waste", "run_intel"):
        show_intel(ctx, view, kind)
    elif kind == "card":
        card = api.record_card(view.record)
        emit(ctx, "opentraces.trace.get.v1", {"card": card, "freshness": freshness},
             text=lambda: card_text(card), next_command=nxt, next_steps=notes)
    elif kind == "bursts":
        body = {"trace_id": view.record.trace_id} | burst_payload(api, view.record, lookup)
        emit(ctx, "opentraces.trace.map.v1", body | {"freshness": freshness},
             text=lambda: bursts_text(body["bursts"]), next_command=nxt, next_steps=notes)
    elif fmt is not None and not json_mode(ctx):
        record = api.to_builtins(view.record)
        click.echo(view.record.to_jsonl_line() if fmt == "jsonl" else json.dumps(
            record, indent=2, ensure_ascii=False))
        for note in notes:
            click.echo(note, err=True)
    else:
        record = api.to_builtins(view.record)
        emit(ctx, "opentraces.trace.record.v1", {"record": record, "freshness": freshness},
             text=lambda: summary(record), next_command=nxt, next_steps=notes)


def show_resume(ctx: click.Context, found: dict[str, Any]) -> None:
    """The session cut for ``--resume``; the command that continues it is the next one."""
    text = (f"{'would write' if found['dry_run'] else 'wrote'} {found['session_file']}\n"
            f"session {found['session_id']}: trace {found['trace_id']} up to just before step "
            f"{found['step_index']}")
    if found["dry_run"]:
        text += f"\nthen resume it with: {found['command']}"
        nxt = f"opentraces trace get {found['trace_id']}:{found['step_index']} --resume"
    else:
        nxt = found["command"]
    emit(ctx, "opentraces.trace.resume.v1", found, text=text, next_command=nxt)


def show_intel(ctx: click.Context, view: Any, kind: str) -> None:
    """Emit a trace-intelligence payload exactly as computed (the same bytes from get and map)."""
    from opentraces import api

    if kind == "waste":
        schema, payload = api.CONTEXT_WASTE_SCHEMA, api.context_waste(view.record)
    else:
        schema, payload = api.RUN_INTEL_SCHEMA, api.run_intel(view.record)
    _, nxt, steps = fresh(view)
    emit(ctx, schema, payload, text=lambda: intel_text(payload), next_command=nxt,
         next_steps=steps)


def show_steps(ctx: click.Context, view: Any, kind: str, fmt: str | None) -> None:
    from opentraces import api

    steps = api.to_builtins(view.steps)
    freshness, nxt, notes = fresh(view)
    if fmt is not None and not json_mode(ctx):
        for step in steps:
            click.echo(json.dumps(step, indent=2 if fmt == "json" else None,
                                  ensure_ascii=False))
        return
    if kind == "step":
        (step,) = steps
        emit(ctx, "opentraces.trace.step.v1",
             {"trace_id": view.trace_id, "step": step,
              "context_node_id": step["context_node_id"], "freshness": freshness},
             text=lambda: step_text(view.trace_id, step), next_command=nxt, next_steps=notes)
    else:
        emit(ctx, "opentraces.trace.steps.v1",
             {"trace_id": view.trace_id, "start_step_index": view.start,
              "end_step_index": view.end, "steps": steps, "freshness": freshness},
             text=lambda: "\n".join(step_line(s) for s in steps), next_command=nxt,
             next_steps=notes)


# ---------------------------------------------------------------------------------------------
# Text for people (plain data in, a few lines out)


def _line(text: str | None, chars: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= chars else flat[:chars - 1] + "…"


def step_line(s: dict[str, Any]) -> str:
    calls = ", ".join(c["tool_name"] for c in s["tool_calls"])
    body = _line(s["content"], 80) or (f"[{calls}]" if calls else "")
    return f"{s['step_index']:>5}  {s['role']:<6} {body}" + (
        f"  [{calls}]" if calls and s["content"] else "")


def step_text(trace_id: str, s: dict[str, Any]) -> str:
    head = f"trace {trace_id}  step {s['step_index']}  {s['role']}" + (
        f"  {s['timestamp']}" if s["timestamp"] else "")
    lines = [head]
    text = (s["content"] or "").splitlines()
    lines += text[:TEXT_LINES] + ([f"… ({len(text) - TEXT_LINES} more lines)"]
                                  if len(text) > TEXT_LINES else [])
    results = {o["source_call_id"]: o for o in s["observations"]}
    for call in s["tool_calls"]:
        obs = results.get(call["tool_call_id"], {})
        what = call["input"].get("command") or call["input"].get("file_path") or \
            call["input"].get("path") or ""
        lines.append(f"  {call['tool_name']} {_line(str(what), 60)}".rstrip()
                     + f" -> {_line(obs.get('output_summary'), 60) or '(no output)'}"
                     + (f" [{obs['error']}]" if obs.get("error") else ""))
    return "\n".join(lines)


def map_text(m: dict[str, Any]) -> str:
    f = m["facets"]
    lines = [f"trace {m['trace_id']}  {f['agent']}  {f['steps']} steps, "
             f"{f['user_instructions']} instructions, {f['edit_calls']} edits to "
             f"{f['files_edited']} files, {f['errors']} errors, {f['commits_seen']} commits"]
    if m["sections"]:
        lines.append("sections:")
        lines += [f"  {s['step']:>5}-{s['end_step']:<5} {_line(s['preview'], 90)}"
                  for s in m["sections"]]
    if m["landmarks"]:
        lines.append("landmarks:")
        lines += [f"  {x['step']:>5}  {x['type']:<16} {_line(x['preview'], 80)}"
                  for x in m["landmarks"] if x["type"] not in ("first_prompt",
                                                               "user_instruction")]
    if "bursts" in m:
        lines.append(bursts_text(m["bursts"]))
    return "\n".join(lines)


def bursts_text(bursts: list[dict[str, Any]]) -> str:
    if not bursts:
        return "no change bursts"
    lines = [f"{len(bursts)} change bursts:"]
    for b in bursts:
        a, z = b["step_range"]
        intent = b["intent"]
        spec = intent["most_substantive_spec"]
        lines.append(f"  {a}-{z}  {len(b['unique_files'])} files, {len(b['patches'])} edits"
                     + (f", commit {b['burst_commit_sha'][:12]}" if b["burst_commit_sha"]
                        else ""))
        lines.append(f"      files: {_line(', '.join(b['unique_files']), 90)}")
        if spec:
            lines.append(f"      spec ({spec['step']}): {_line(spec['text'], 80)}")
        if intent["trigger"]:
            lines.append(f"      trigger ({intent['trigger']['step']}): "
                         f"{_line(intent['trigger']['text'], 80)}")
    return "\n".join(lines)


def card_text(c: dict[str, Any]) -> str:
    lines = [f"{c['headline']}", f"trace {c['trace_id']}  {c['agent']['name']}  {c['outcome']}"
             + (f" {c['commit_sha']}" if c["commit_sha"] else ""), c["summary"]]
    if c["key_files"]:
        lines.append("files: " + _line(", ".join(c["key_files"]), 110))
    lines += [f"  {s['step']:>5}  {s['type']:<16} {_line(s['preview'], 80)}"
              for s in c["key_steps"]]
    return "\n".join(lines)


def slice_text(p: dict[str, Any]) -> str:
    lines = [f"{len(p['slices'])} slices ({p['mode']})"]
    for s in p["slices"]:
        lines.append(f"{s['slice_id']}  steps {s['start_step_index']}-{s['end_step_index']}")
        lines += [step_line(x) for x in s["steps"][:TEXT_LINES]]
        if len(s["steps"]) > TEXT_LINES:
            lines.append(f"  … {len(s['steps']) - TEXT_LINES} more steps")
    return "\n".join(lines)


def intel_text(p: dict[str, Any]) -> str:
    items = p.get("findings", p.get("signals", []))
    counts = p.get("summary", p.get("counts", {}))
    lines = [f"trace {p.get('trace_id')}  " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    for x in items:
        kind = x.get("pattern") or x.get("kind")
        lines.append(f"  {x.get('step_index')!s:>5}  {kind:<20} {x.get('severity', ''):<7} "
                     f"{_line(x.get('reason'), 70)}")
    return "\n".join(lines)


def summary(r: dict[str, Any]) -> str:
    """A few lines about a record (given as plain data) for people."""
    agent = " ".join(x for x in (r["agent"]["name"], r["agent"]["version"]) if x)
    steps = r["steps"]
    calls = sum(len(s["tool_calls"]) for s in steps)
    missing = sum(1 for s in steps for o in s["observations"] if o["error"] == "no_result")
    m, outcome = r["metrics"], r["outcome"]
    task = (r["task"]["description"] or "").strip().splitlines()
    lines = [
        f"trace {r['trace_id']}  session {r['session_id']}",
        f"agent: {agent}" + (f"  model {r['agent']['model']}" if r["agent"]["model"] else ""),
        f"task: {task[0][:100] if task else '(none)'}",
        f"time: {r['timestamp_start'] or '?'} .. {r['timestamp_end'] or '?'}",
        f"steps: {m['total_steps']}, tool calls: {calls} ({missing} without result)",
        f"tokens: in {m['total_input_tokens']}, out {m['total_output_tokens']}, "
        f"cache read {m['total_cache_read_tokens']}, cache write "
        f"{m['total_cache_creation_tokens']}"
        + (f", cost ${m['estimated_cost_usd']:.4f}" if m["estimated_cost_usd"] is not None
           else ""),
        f"committed: {outcome['commit_sha']}" if outcome["committed"] else "committed: no",
    ]
    return "\n".join(lines)


# Subcommands kept in their own modules, registered here so that `trace --help` lists them.
from opentraces.commands.teleport import teleport  # noqa: E402
from opentraces.commands.trace_intel import trace_compare  # noqa: E402
from opentraces.commands.trace_search import index, query, skills  # noqa: E402

for _command in (query, skills, index, trace_compare, teleport):
    trace.add_command(_command)

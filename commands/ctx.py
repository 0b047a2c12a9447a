"""`opentraces ctx …`: what the model had in its context at each step (the context tree).

Each command parses its arguments, calls one function of :mod:`opentraces.context` (through
:mod:`opentraces.api`) and renders the dict it returns, unchanged, as one envelope or as a few
lines of text. A trace is named by its id or the start of it, a node by its ``ctxn_`` id or its
``ot://context-node/<id>`` address. When the context tree view lags the log the payload says
``"stale": true`` and the envelope points at ``opentraces repair``. Errors (an unknown trace or
node, no anchored commit: exit 3) go through the CLI's one error path.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from opentraces.commands.output import emit, json_option, table
from opentraces.commands.trace import _line

STEP = click.IntRange(min=0)
#: The layer names of :data:`opentraces.context.LAYERS`, here so that `--help` imports nothing.
LAYERS = ("system", "messages", "tool_registry", "runtime_state")
STALE_STEP = "The context tree view lags the log; `opentraces repair` brings it up to date."
#: Messages (or rows) shown to people; the JSON envelope has them all.
TEXT_ROWS = 20
#: A linear run longer than this is shown as its first and last node in `ctx tree`.
RUN = 3


@click.group()
def ctx() -> None:
    """Read the context tree: what the model saw at each step."""


def send(cli_ctx: click.Context, schema: str, payload: dict[str, Any],
         text: Callable[[], str], *, next_command: str | None = None,
         next_steps: list[str] | None = None) -> None:
    """Emit a context-tree payload; a lagging view adds the repair hint."""
    stale = payload.get("stale", (payload.get("object") or {}).get("stale", False))
    emit(cli_ctx, schema, payload, text=text,
         next_command="opentraces repair" if stale else next_command,
         next_steps=[*([STALE_STEP] if stale else []), *(next_steps or [])])


def _settings() -> Any:
    from opentraces import api

    return api.settings_from_environment()


# ---------------------------------------------------------------------------------------------
# Traces


@ctx.command("list")
@json_option
@click.pass_context
def ctx_list(cli_ctx: click.Context) -> None:
    """List the traces of the context tree.

    One row per trace: nodes, active path length, compactions, sub-agents and branches.

    Example: opentraces ctx list --json
    """
    from opentraces import api

    payload = api.ctx_list(_settings())
    send(cli_ctx, "opentraces.ctx.info.v2", payload, lambda: list_text(payload["traces"]))


@ctx.command("info")
@click.argument("trace", metavar="TRACE")
@json_option
@click.pass_context
def ctx_info(cli_ctx: click.Context, trace: str) -> None:
    """Show one trace's nodes, layers and branches.

    Also its capture methods, compactions and sub-agents.

    Example: opentraces ctx info 3f2a
    """
    from opentraces import api

    payload = api.ctx_info(_settings(), trace)
    send(cli_ctx, "opentraces.ctx.info.v2", payload, lambda: info_text(payload["traces"][0]))


@ctx.command("tree")
@click.argument("trace", metavar="TRACE")
@json_option
@click.pass_context
def ctx_tree(cli_ctx: click.Context, trace: str) -> None:
    """Show the tree of a trace.

    Its nodes, with rewinds, compactions and sub-agents as branches.

    In text, * marks the active path and long linear runs are shortened; --json lists every
    node.

    Example: opentraces ctx tree 3f2a
    """
    from opentraces import api

    payload = api.ctx_tree(_settings(), trace)
    send(cli_ctx, "opentraces.context_tree.v1", payload, lambda: tree_text(payload))


@ctx.command("compactions")
@click.argument("trace", metavar="TRACE")
@json_option
@click.pass_context
def ctx_compactions(cli_ctx: click.Context, trace: str) -> None:
    """List a trace's compactions and what each dropped.

    Example: opentraces ctx compactions 3f2a --json
    """
    from opentraces import api

    payload = api.ctx_compactions(_settings(), trace)
    send(cli_ctx, "opentraces.ctx.compactions.v1", payload, lambda: compactions_text(payload))


# ---------------------------------------------------------------------------------------------
# One node


@ctx.command("step")
@click.argument("trace", metavar="TRACE")
@click.argument("step", metavar="N", type=STEP)
@json_option
@click.pass_context
def ctx_step(cli_ctx: click.Context, trace: str, step: int) -> None:
    """Show what the model had before step N of a trace.

    Its layers (with capture method and completeness) and the messages before the step.

    Example: opentraces ctx step 3f2a 12
    """
    from opentraces import api

    payload = api.ctx_step(_settings(), trace, step)
    send(cli_ctx, "opentraces.ctx.view.v1", payload, lambda: view_text(payload))


@ctx.command("show")
@click.argument("node", metavar="NODE")
@json_option
@click.pass_context
def ctx_show(cli_ctx: click.Context, node: str) -> None:
    """Show one context node and what it saw.

    Its layers (with capture method and completeness) and the messages before its step.

    NODE is a node id (ctxn_…) or its address ot://context-node/<id>.

    Example: opentraces ctx show ctxn_0123456789abcdef01234567
    """
    from opentraces import api

    payload = api.ctx_show(_settings(), node)
    send(cli_ctx, "opentraces.ctx.view.v1", payload, lambda: view_text(payload))


@ctx.command("resolve")
@click.argument("uri", metavar="URI")
@json_option
@click.pass_context
def ctx_resolve(cli_ctx: click.Context, uri: str) -> None:
    """Resolve an ot://context-node/<id> address to its node.

    Example: opentraces ctx resolve ot://context-node/ctxn_0123456789abcdef01234567 --json
    """
    from opentraces import api

    payload = api.ctx_resolve(_settings(), uri)
    send(cli_ctx, "opentraces.ctx.resolve.v1", payload,
         lambda: f"{payload['uri']} is a {payload['kind'].replace('_', ' ')}\n"
                 + view_text(payload["object"]))


def step_range(step: int | None, from_step: int | None,
               to_step: int | None) -> dict[str, int | None]:
    if step is not None and (from_step is not None or to_step is not None):
        raise click.UsageError("give either --step or --from-step/--to-step, not both")
    return {"step": step, "first": from_step, "last": to_step}


def io_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The item selection shared by `ctx reads` and `ctx writes`."""
    for option in reversed([
        click.option("--step", type=STEP,
                     help="Only what was in the context before step N."),
        click.option("--from-step", type=STEP,
                     help="Only items of active-path steps from this one on."),
        click.option("--to-step", type=STEP,
                     help="Only items of active-path steps up to this one."),
    ]):
        func = option(func)
    return func


@ctx.command("reads")
@click.argument("trace", metavar="TRACE")
@io_options
@json_option
@click.pass_context
def ctx_reads(cli_ctx: click.Context, trace: str, step: int | None, from_step: int | None,
              to_step: int | None) -> None:
    """List what came into the context from outside.

    The user, system and tool messages (not the model's own responses).

    Without --step or a range, everything the active path's steps added.

    Example: opentraces ctx reads 3f2a --from-step 10 --to-step 20
    """
    from opentraces import api

    payload = api.ctx_reads(_settings(), trace, **step_range(step, from_step, to_step))
    send(cli_ctx, "opentraces.context_reads.v1", payload,
         lambda: items_text(payload, "reads"))


@ctx.command("writes")
@click.argument("trace", metavar="TRACE")
@io_options
@json_option
@click.pass_context
def ctx_writes(cli_ctx: click.Context, trace: str, step: int | None, from_step: int | None,
               to_step: int | None) -> None:
    """List what the model wrote into its context.

    Its responses (user, system and tool messages are `ctx reads`).

    Without --step or a range, everything the active path's steps added.

    Example: opentraces ctx writes 3f2a --step 12 --json
    """
    from opentraces import api

    payload = api.ctx_writes(_settings(), trace, **step_range(step, from_step, to_step))
    send(cli_ctx, "opentraces.context_writes.v1", payload,
         lambda: items_text(payload, "writes"))


@ctx.command("diff")
@click.argument("node_a", metavar="NODE_A")
@click.argument("node_b", metavar="NODE_B")
@click.option("--layer", type=click.Choice(LAYERS),
              help="Compare only this layer (default: all four).")
@json_option
@click.pass_context
def ctx_diff(cli_ctx: click.Context, node_a: str, node_b: str, layer: str | None) -> None:
    """Compare the context of two nodes, per layer.

    What NODE_B had that NODE_A did not (added), the reverse (removed), and changed keys.

    Example: opentraces ctx diff ctxn_aaa… ctxn_bbb… --layer messages
    """
    from opentraces import api

    payload = api.ctx_diff(_settings(), node_a, node_b, layer=layer)
    send(cli_ctx, "opentraces.ctx.diff.v1", payload, lambda: diff_text(payload))


# ---------------------------------------------------------------------------------------------
# Resume, prune, anchors


@ctx.command("resume")
@click.argument("node", metavar="NODE")
@json_option
@click.pass_context
def ctx_resume(cli_ctx: click.Context, node: str) -> None:
    """Print a packet to continue from a node.

    The messages before its step with their content, its layers and its environment.

    Example: opentraces ctx resume ctxn_0123456789abcdef01234567 --json
    """
    from opentraces import api

    payload = api.ctx_resume(_settings(), node)
    send(cli_ctx, "opentraces.context_resume.v1", payload, lambda: resume_text(payload))


def session_name(value: str | None) -> str | None:
    """A session id names a file beside the source, so it must be a plain file name."""
    if value is not None and (not value.strip() or value.startswith(".")
                              or any(c in value for c in "/\\\0")):
        raise click.BadParameter(f"{value!r} is not a plain session name",
                                 param_hint="--to-session")
    return value


@ctx.command("prune")
@click.argument("node", metavar="NODE")
@click.option("--source-jsonl", required=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The Claude Code session file the node's trace was captured from.")
@click.option("--to-session", metavar="NAME", callback=lambda _c, _p, v: session_name(v),
              help="Session id (file name) of the new session (default: derived from the "
                   "node).")
@click.option("--write", is_flag=True,
              help="Write the file; without it nothing is written (a dry run).")
@json_option
@click.pass_context
def ctx_prune(cli_ctx: click.Context, node: str, source_jsonl: Path, to_session: str | None,
              write: bool) -> None:
    """Cut a Claude Code session just before a node.

    Writes a new session file holding the lines the node's step hangs from.

    The new file is written beside FILE and never over an existing file. Without --write this
    is a dry run that says what would be written.

    Example: opentraces ctx prune ctxn_0123… --source-jsonl s.jsonl --write
    """
    from opentraces import api

    payload = api.ctx_prune(_settings(), node, source_jsonl, to_session=to_session,
                            write=write)
    if payload["written"]:
        nxt = f"claude --resume {payload['session_id']}"
        steps = ["Run it in the session's working folder."]
    else:
        nxt = shlex.join(["opentraces", "ctx", "prune", payload["node_id"], "--source-jsonl",
                          payload["source_jsonl"], *(["--to-session", to_session]
                                                     if to_session else []), "--write"])
        steps = []
    send(cli_ctx, "opentraces.ctx.prune.v1", payload, lambda: prune_text(payload),
         next_command=nxt, next_steps=steps)


@ctx.command("anchor-for-step")
@click.argument("trace", metavar="TRACE")
@click.argument("step", metavar="N", type=STEP)
@json_option
@click.pass_context
def ctx_anchor_for_step(cli_ctx: click.Context, trace: str, step: int) -> None:
    """Show the commit anchored nearest step N of a trace.

    Of the trace's edits that a commit contains, the one whose step is closest. Exits 3 when
    no commit is anchored to the trace.

    Example: opentraces ctx anchor-for-step 3f2a 40 --json
    """
    from opentraces import api

    payload = api.ctx_anchor_for_step(_settings(), trace, step)
    send(cli_ctx, "opentraces.ctx.anchor.v1", payload, lambda: anchor_text(payload))


# ---------------------------------------------------------------------------------------------
# Text for people (plain data in, a few lines out)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _branches(branches: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in branches.items())


def list_text(traces: list[dict[str, Any]]) -> str:
    if not traces:
        return "no traces in the context tree"
    rows = [("trace", "agent", "nodes", "active", "compactions", "subagents", "branches")]
    rows += [(t["trace_id"], t["agent"] or "?", str(t["node_count"]),
              str(t["active_path_length"]), str(t["compactions"]), str(t["subagents"]),
              _branches(t["branches"])) for t in traces]
    return table(rows)


def info_text(t: dict[str, Any]) -> str:
    return "\n".join([
        f"trace {t['trace_id']}  {t['agent'] or '?'}",
        f"nodes: {t['node_count']} ({t['active_path_length']} on the active path), "
        f"layers: {t['layer_count']}",
        f"branches: {_branches(t['branches']) or 'none'}",
        f"compactions: {t['compactions']}, sub-agents: {t['subagents']}",
        f"capture methods: {', '.join(t['capture_methods']) or 'none'}",
    ])


def tree_text(tree: dict[str, Any]) -> str:
    """The tree, one node a line: a chain stays in its column, a branch off it is indented
    under ├─, and a run of plain linear nodes shows only its ends."""
    nodes = tree["nodes"]
    known = {n["node_id"] for n in nodes}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for n in nodes:
        parent = n["parent_node_id"] if n["parent_node_id"] in known else None
        children.setdefault(parent, []).append(n)
    calls: dict[str, list[str]] = {}
    for s in tree["subagents"]:
        if s["trace_id"]:
            calls.setdefault(s["node_id"], []).append(s["trace_id"])
    active = sum(n["on_active_path"] for n in nodes)
    lines = [f"trace {tree['trace_id']}  {len(nodes)} nodes, {active} on the active path (*)"]
    if tree["parent"]:
        lines.append(f"sub-agent of trace {tree['parent']['trace_id']} step "
                     f"{tree['parent']['step_index']}")

    def row(n: dict[str, Any]) -> str:
        mark = "*" if n["on_active_path"] else " "
        note = (f"  -> sub-agent trace {', '.join(calls[n['node_id']])}"
                if n["node_id"] in calls else "")
        return (f"{mark} {n['step_index']:>5}  {n['role']:<6} {n['branch_type']:<10} "
                f"{n['node_id']}{note}")

    def plain(n: dict[str, Any]) -> bool:
        return (n["branch_type"] == "linear" and len(children.get(n["node_id"], [])) == 1
                and n["node_id"] not in calls)

    def flush(run: list[dict[str, Any]], indent: str) -> None:
        if len(run) > RUN:
            lines.extend([indent + row(run[0]),
                          f"{indent}  {'…':>5}  {len(run) - 2} more linear nodes",
                          indent + row(run[-1])])
        else:
            lines.extend(indent + row(r) for r in run)

    # An explicit stack, not recursion: a chain may be thousands of nodes long. A fork pushes
    # its main continuation, then its side branches on top, so the sides print first.
    roots = children.get(None, [])
    stack: list[tuple[dict[str, Any], str, str | None]] = [
        (n, "", None if i == 0 else "orphan root (no parent):")
        for i, n in reversed(list(enumerate(roots)))]
    while stack:
        current, indent, head = stack.pop()
        if head:
            lines.append(head)
        first, run = current, []
        while True:
            if current is not first and plain(current):
                run.append(current)
                current = children[current["node_id"]][0]
                continue
            flush(run, indent)
            run = []
            lines.append(indent + row(current))
            kids = children.get(current["node_id"], [])
            if not kids:
                break
            main = next((k for k in kids if k["on_active_path"]), kids[-1])
            sides = [k for k in kids if k is not main]
            if not sides:
                current = main
                continue
            stack.append((main, indent, None))
            stack.extend((side, indent + "  │ ",
                          f"{indent}  ├─ branch from step {current['step_index']}:")
                         for side in reversed(sides))
            break
    return "\n".join(lines)


def view_text(v: dict[str, Any]) -> str:
    where = "on the active path" if v["on_active_path"] else "off the active path"
    saw = v["saw"]
    runtime = v["runtime"]
    lines = [f"node {v['node_id']}  trace {v['trace_id']}  step {v['step_index']}  "
             f"{v['branch_type']}, {where}",
             f"saw: {saw['messages']} messages, system prompt "
             f"{'yes' if saw['system'] else 'not recorded'}, {saw['tools']} tools",
             "runtime: " + ", ".join(f"{k} {runtime[k]}" for k in
                                     ("cwd", "model", "git_branch", "agent_version")
                                     if runtime.get(k)),
             table([("layer", "capture", "completeness", "bytes")] + [
                 (name, layer["capture_method"], layer["completeness"],
                  str(layer["byte_count"])) for name, layer in v["layers"].items()])]
    messages = v["messages"]
    if messages:
        shown = messages[-TEXT_ROWS:]
        lines.append(f"messages ({len(shown)} of {len(messages)}, newest last):"
                     if len(shown) < len(messages) else "messages:")
        lines.append(table([("step", "role", "kind", "chars", "parts")] + [
            (str(m["step_index"]), m["role"], m["kind"], str(m["chars"]), str(m["parts"]))
            for m in shown]))
    return "\n".join(lines)


def items_text(p: dict[str, Any], key: str) -> str:
    rows = p[key]
    scope = (f"before step {p['step']}" if p["step"] is not None else
             f"steps {_count(p['range'][0])}-{_count(p['range'][1])}" if p["range"] else
             "the active path")
    lines = [f"trace {p['trace_id']}  {len(rows)} {key} ({scope})"]
    shown = rows[:TEXT_ROWS]
    if shown:
        lines.append(table([("step", "role", "kind", "chars", "call", "hash")] + [
            (str(r["step_index"]), r["role"], r["kind"], str(r["chars"]),
             r["tool_call_id"] or "", r["content_hash"][:16]) for r in shown]))
    if len(rows) > len(shown):
        lines.append(f"… {len(rows) - len(shown)} more (--json lists them all)")
    return "\n".join(lines)


def diff_text(p: dict[str, Any]) -> str:
    lines = [f"{p['a']} -> {p['b']}"]
    for name, d in p["layers"].items():
        lines.append(f"{name}: +{len(d['added'])} -{len(d['removed'])} ~{len(d['changed'])}")
        for sign, entries in (("+", d["added"]), ("-", d["removed"])):
            for e in entries[:TEXT_ROWS]:
                lines.append(f"  {sign} " + (f"step {e['step_index']} {e['role']} {e['kind']} "
                                             f"{e['chars']} chars" if isinstance(e, dict)
                                             else str(e)))
        lines += [f"  ~ {c['key']}: {_line(str(c['a']), 40)} -> {_line(str(c['b']), 40)}"
                  for c in d["changed"]]
    return "\n".join(lines)


def compactions_text(p: dict[str, Any]) -> str:
    rows = p["compactions"]
    if not rows:
        return f"trace {p['trace_id']}  no compactions"
    return f"trace {p['trace_id']}  {len(rows)} compactions\n" + table(
        [("#", "form", "step", "trigger", "pre tokens", "dropped msgs", "~tokens dropped")] + [
            (str(c["index"]), c["form"], _count(c["step_index"]), c["trigger"] or "-",
             _count(c["pre_tokens"]), _count(c["dropped"]["messages"]),
             _count(c["dropped"]["tokens_estimate"])) for c in rows])


def resume_text(p: dict[str, Any]) -> str:
    messages = p["messages"]
    env = ", ".join(f"{k} {v}" for k, v in p["env"].items() if v)
    lines = [f"resume trace {p['trace_id']} before step {p['step_index']} ({p['node_id']})",
             f"env: {env or 'unknown'}; {len(p['tool_registry']['tools'])} tools "
             f"({p['tool_registry']['capture_method']})",
             f"{len(messages)} messages" + (f", the last {TEXT_ROWS}:"
                                            if len(messages) > TEXT_ROWS else ":")]
    lines += [f"  {m['step_index']:>5}  {m['role']:<6} {_message_line(m)}"
              for m in messages[-TEXT_ROWS:]]
    return "\n".join(lines)


def _message_line(m: dict[str, Any]) -> str:
    content = m.get("content")
    text = _line(content if isinstance(content, str) else
                 "" if content is None else str(content), 80)
    calls = ", ".join(c["name"] for c in m.get("tool_calls", []))
    return f"{text}  [{calls}]".strip() if calls else text


def prune_text(p: dict[str, Any]) -> str:
    verb = "wrote" if p["written"] else "would write (dry run)"
    return (f"{verb} {p['output']}\n"
            f"session {p['session_id']}: {p['lines_kept']} lines kept, {p['lines_dropped']} "
            f"dropped, cut before step {p['step_index']} of trace {p['trace_id']}")


def anchor_text(p: dict[str, Any]) -> str:
    return (f"trace {p['trace_id']} step {p['step_index']}: commit {p['commit']}\n"
            f"nearest anchored edit: step {p['patch_step_index']} (distance {p['distance']}), "
            f"{p['path'] or '?'}, {p['evidence_tier']}/{p['evidence_firmness']}")

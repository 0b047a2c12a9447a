"""The context tree API: what the model had in its context at each step (re-used by ``ctx``).

Every function takes a target (settings, a home folder or an open workspace), opens it
read-only unless it writes a file, and returns plain dicts shaped like the ``ctx`` JSON
envelopes (see ``docs/context.md``). Reads never write: the context tree view answers as it was
last built. When it lags the log, results say ``"stale": true``; when it is missing or was
built by other code, :class:`~opentraces.errors.MaintenanceNeeded` is raised, as for traces.

Fidelity is stated, never implied: each layer says its ``capture_method`` (``transcript``:
read from the transcript; ``reconstructed``: inferred, e.g. the tool registry from the tools
used; ``otel`` once telemetry-captured layers exist) and its ``completeness``.

Errors: an unknown trace raises :class:`~opentraces.tracing.TraceNotFound` or
:class:`~opentraces.tracing.AmbiguousTrace`, an unknown node :class:`ContextNodeNotFound`,
a step the trace does not have :class:`~opentraces.tracing.StepOutOfRange` (usage errors, exit
2); a step with no anchored
commit near it raises :class:`NoAnchor` (exit 3); a prune that would overwrite a file raises
:class:`~opentraces.errors.Refused`.
"""

from __future__ import annotations

import json
import shlex
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentraces.config import Settings
from opentraces.errors import MaintenanceNeeded, OpentracesError, Refused, UsageError
from opentraces.projections.context_tree import (
    CHARS_PER_TOKEN,
    ContextTree,
    Item,
    TraceTree,
    context_node_id,
    tool_registry,
)
from opentraces.record import TraceRecord
from opentraces.tracing import (
    AmbiguousTrace,
    BadAddress,
    StepOutOfRange,
    TraceNotFound,
    parse_address,
    step_bounds,
    trace_get,
)

if TYPE_CHECKING:
    from opentraces.workspace import Workspace

    Target = Settings | Path | Workspace

__all__ = [
    "ContextNodeNotFound",
    "NoAnchor",
    "context_node_id",
    "ctx_anchor_for_step",
    "ctx_compactions",
    "ctx_diff",
    "ctx_info",
    "ctx_list",
    "ctx_prune",
    "ctx_reads",
    "ctx_resolve",
    "ctx_resume",
    "ctx_show",
    "ctx_step",
    "ctx_tree",
    "ctx_writes",
    "resume_session_file",
]

PROJECTION = ContextTree.name
URI_PREFIX = "ot://context-node/"
LAYERS = ("system", "messages", "tool_registry", "runtime_state")
READ_ROLES = frozenset({"user", "system", "tool"})
CLAUDE = "claude-code"

class ContextNodeNotFound(UsageError):
    """No context node has this id."""

    code = "context_node_not_found"


class NoAnchor(OpentracesError):
    """No commit is anchored to any patch of the trace, so no step has a nearest commit."""

    code = "no_anchor"
    exit_code = 3


# ---------------------------------------------------------------------------------------------
# Opening the view


@dataclass
class _View:
    proj: ContextTree
    stale: bool
    ws: Workspace

    def tree(self, ref: str) -> TraceTree:
        trace_id = self.resolve(ref)
        tree = self.proj.tree(trace_id)
        assert tree is not None  # resolve() only returns ids the view holds
        return tree

    def resolve(self, ref: str) -> str:
        ref = ref.strip()
        if not ref:
            raise UsageError("a trace id (or the start of one) is required")
        known = self.proj.traces()
        matches = [ref] if ref in known else [t for t in known if t.startswith(ref)]
        if not matches:
            raise TraceNotFound(
                f"no trace matches {ref!r} in the context tree",
                hint="The view lags the log; the trace may be among the new events."
                if self.stale else "List the traces with `opentraces ctx list`.",
                next_command="opentraces repair" if self.stale else "opentraces ctx list")
        if len(matches) > 1:
            raise AmbiguousTrace(f"{len(matches)} traces start with {ref!r}: "
                                 + ", ".join(matches[:5]), candidates=matches,
                                 hint="Give more characters of the trace id.")
        return matches[0]

    def node(self, node_id: str) -> tuple[TraceTree, int]:
        node_id = node_id.strip().removeprefix(URI_PREFIX)
        found = self.proj.find_node(node_id)
        if found is None:
            raise ContextNodeNotFound(
                f"no context node {node_id!r}",
                hint="Node ids are in `opentraces ctx tree <trace>` and in each step's "
                     "context_node_id.")
        tree = self.proj.tree(found[0])
        assert tree is not None
        return tree, found[1]


@contextmanager
def _view(target: Target) -> Iterator[_View]:
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        runner = ws.runner()
        if PROJECTION not in runner.classes:
            raise MaintenanceNeeded(f"the {PROJECTION} projection is not registered in "
                                    "opentraces.projections.ALL")
        state = runner.states()[PROJECTION]
        proj = runner.open(PROJECTION)
        if proj is None and state.state == "fresh":  # an empty log: an empty view
            proj = ContextTree(ws.settings.projections_dir / ".empty-context-tree")
        if state.state not in ("fresh", "lagging") or proj is None:
            raise MaintenanceNeeded(
                f"the context tree view is {state.state.replace('_', ' ')}; it must be "
                "rebuilt before it can be read", next_command="opentraces repair")
        yield _View(proj=proj, stale=state.state == "lagging", ws=ws)


# ---------------------------------------------------------------------------------------------
# Listing


def ctx_list(target: Target) -> dict[str, Any]:
    """Every trace of the context tree with its node, layer and compaction counts.

    Returns:
        ``{"traces": [<ctx_info row>...], "stale": bool}``.
    """
    with _view(target) as view:
        rows = [_info_row(view, t) for t in view.proj.traces()]
        return {"traces": rows, "stale": view.stale}


def ctx_info(target: Target, trace: str) -> dict[str, Any]:
    """One trace's row: ``{"traces": [{trace_id, agent, node_count, active_path_length,
    layer_count, capture_methods, compactions, branches, subagents}], "stale"}``."""
    with _view(target) as view:
        return {"traces": [_info_row(view, view.resolve(trace))], "stale": view.stale}


def _info_row(view: _View, trace_id: str) -> dict[str, Any]:
    tree = view.proj.tree(trace_id)
    assert tree is not None
    leaf = tree.active_leaf()
    layer_ids: set[str] = set()
    branches: dict[str, int] = {}
    methods = {"transcript", "reconstructed"}  # the runtime layer, the tool registry
    for node in tree.nodes.values():
        layer_ids.update((node.messages_layer, node.runtime_layer, node.system_layer))
        branches[node.branch_type] = branches.get(node.branch_type, 0) + 1
        methods.add(node.capture_method)
    if tree.nodes:
        layer_ids.add(tool_registry(tree.state.tools)[0])
    return {"trace_id": trace_id, "agent": tree.state.agent, "node_count": len(tree.nodes),
            "active_path_length": len(tree.path(leaf)) if leaf is not None else 0,
            "layer_count": len(layer_ids),
            "capture_methods": sorted(methods) if tree.nodes else [],
            "compactions": len(tree.compactions), "branches": dict(sorted(branches.items())),
            "subagents": len(tree.children)}


def ctx_tree(target: Target, trace: str) -> dict[str, Any]:
    """The tree of one trace.

    Returns:
        ``{trace_id, root_node_id, active_leaf_id, nodes[{node_id, parent_node_id,
        branch_type, step_index, transcript_uuid, role, is_sidechain, on_active_path,
        message_count}], orphan_branch_roots, subagent_session_ids, subagents[{step_index,
        node_id, tool_call_id, trace_id}], parent{trace_id, step_index, node_id}|None,
        stale}``.
    """
    with _view(target) as view:
        tree = view.tree(trace)
        leaf = tree.active_leaf()
        active = set(tree.path(leaf)) if leaf is not None else set()
        nodes = tree.nodes
        roots = [n for n in nodes.values() if n.parent_step is None]
        parent = tree.parents[0] if tree.parents else None
        return {
            "trace_id": tree.trace_id,
            "root_node_id": roots[0].node_id if roots else None,
            "active_leaf_id": nodes[leaf].node_id if leaf is not None else None,
            "nodes": [{"node_id": n.node_id, "parent_node_id": _node_id(tree, n.parent_step),
                       "branch_type": n.branch_type, "step_index": i,
                       "transcript_uuid": n.source_uuid, "role": n.role,
                       "is_sidechain": n.is_sidechain, "on_active_path": i in active,
                       "message_count": n.msg_count}
                      for i, n in nodes.items()],
            "orphan_branch_roots": [n.node_id for n in roots[1:]],
            "subagent_session_ids": list(dict.fromkeys(c for _, _, c in tree.children)),
            "subagents": [{"step_index": s, "node_id": _node_id(tree, s), "tool_call_id": c,
                           "trace_id": t} for s, c, t in tree.children],
            "parent": None if parent is None else {
                "trace_id": parent[0], "step_index": parent[1],
                "node_id": _foreign_node_id(view, parent[0], parent[1])},
            "stale": view.stale,
        }


def _node_id(tree: TraceTree, step: int | None) -> str | None:
    node = tree.nodes.get(step) if step is not None else None
    return node.node_id if node else None


def _foreign_node_id(view: _View, trace_id: str, step: int) -> str | None:
    tree = view.proj.tree(trace_id)
    return _node_id(tree, step) if tree else None


# ---------------------------------------------------------------------------------------------
# One node


def ctx_step(target: Target, trace: str, step_index: int) -> dict[str, Any]:
    """What the model had before step ``step_index`` of a trace (see :func:`ctx_show`)."""
    with _view(target) as view:
        tree = view.tree(trace)
        if step_index not in tree.nodes:
            raise StepOutOfRange(f"trace {tree.trace_id} has no step {step_index} "
                               f"(it has {len(tree.nodes)} steps)")
        return _node_view(view, tree, step_index)


def ctx_show(target: Target, node_id: str) -> dict[str, Any]:
    """One context node: its layers, what the model saw before the step, and the messages.

    Returns:
        ``{view: "step", trace_id, node_id, step_index, parent_node_id, branch_type,
        on_active_path, layers{system, messages, tool_registry, runtime_state: {layer_id,
        byte_count, completeness, capture_method}}, saw{messages, system, tools},
        messages[{index, kind, role, step_index, node_id, uuid, content_hash, chars,
        tool_call_id, parts}], runtime{cwd, model, git_branch, agent_version}, stale}``.
        ``content_hash`` is the hash of a message's first item (a Claude Code response is
        written one block per line; each line is an item).
    """
    with _view(target) as view:
        tree, step = view.node(node_id)
        return _node_view(view, tree, step)


def _node_view(view: _View, tree: TraceTree, step: int) -> dict[str, Any]:
    node = tree.nodes[step]
    leaf = tree.active_leaf()
    layers = _layers(view, tree, step)
    messages = _message_rows(tree, tree.context(step))
    return {
        "view": "step", "trace_id": tree.trace_id, "node_id": node.node_id, "step_index": step,
        "parent_node_id": _node_id(tree, node.parent_step), "branch_type": node.branch_type,
        "on_active_path": leaf is not None and step in tree.path(leaf),
        "layers": {k: {f: v for f, v in layer.items() if f != "body"}
                   for k, layer in layers.items()},
        "saw": {"messages": len(messages),
                "system": 1 if layers["system"]["completeness"] == "complete" else 0,
                "tools": len(tree.state.tools)},
        "messages": messages,
        "runtime": layers["runtime_state"]["body"],
        "stale": view.stale,
    }


def _layers(view: _View, tree: TraceTree, step: int) -> dict[str, dict[str, Any]]:
    node = tree.nodes[step]
    stored = view.proj.layers([node.system_layer, node.messages_layer, node.runtime_layer])
    tools_id, tools_body = tool_registry(tree.state.tools)
    system = stored.get(node.system_layer, ("system", {}, 0))
    messages = stored.get(node.messages_layer, ("messages", {}, 0))
    runtime = stored.get(node.runtime_layer, ("runtime", {}, 0))
    has_prompt = bool(system[1].get("prompt_hash"))
    return {
        "system": {"layer_id": node.system_layer, "byte_count": system[2],
                   "completeness": "complete" if has_prompt else "absent",
                   "capture_method": "transcript", "body": system[1]},
        "messages": {"layer_id": node.messages_layer, "byte_count": messages[2],
                     "completeness": "complete" if node.capture_method == "transcript"
                     else "partial", "capture_method": node.capture_method,
                     "body": messages[1]},
        "tool_registry": {"layer_id": tools_id, "byte_count": len(json.dumps(tools_body)),
                          "completeness": "partial", "capture_method": "reconstructed",
                          "body": tools_body},
        "runtime_state": {"layer_id": node.runtime_layer, "byte_count": runtime[2],
                          "completeness": "partial", "capture_method": "transcript",
                          "body": runtime[1]},
    }


def _message_rows(tree: TraceTree, items: list[Item]) -> list[dict[str, Any]]:
    """Items as messages: later lines of a response and repeated results of one call join
    their message (``parts`` counts the items, ``chars`` adds up)."""
    rows: list[dict[str, Any]] = []
    by_key: dict[tuple[str, int | str | None], dict[str, Any]] = {}
    for item in items:
        key = ("result", item.call_id) if item.kind == "result" else ("step", item.step_index)
        row = by_key.get(key) if item.kind in ("ext", "result") else None
        if row is None:
            row = by_key[key] = _item_row(tree, len(rows), item) | {"parts": 1}
            rows.append(row)
        else:
            row["parts"] += 1
            row["chars"] += item.chars
    return rows


def _item_row(tree: TraceTree, index: int, item: Item) -> dict[str, Any]:
    owner = tree.nodes.get(item.step_index)
    return {"index": index, "kind": item.kind, "role": item.role, "step_index": item.step_index,
            "node_id": owner.node_id if owner else None,
            "uuid": owner.source_uuid if owner else None, "content_hash": item.hash,
            "chars": item.chars, "tool_call_id": item.call_id}


def ctx_resolve(target: Target, uri: str) -> dict[str, Any]:
    """Resolve ``ot://context-node/<id>``: ``{uri, kind: "context_node", object}``, where
    ``object`` is what :func:`ctx_show` returns."""
    if not uri.startswith(URI_PREFIX):
        raise UsageError(f"{uri!r} is not a context node address; expected "
                         f"{URI_PREFIX}<node id>")
    return {"uri": uri, "kind": "context_node", "object": ctx_show(target, uri)}


# ---------------------------------------------------------------------------------------------
# Reads, writes, diff, compactions


def ctx_reads(target: Target, trace: str, *, step: int | None = None,
              first: int | None = None, last: int | None = None) -> dict[str, Any]:
    """What entered the model's context from outside it: user, system and tool messages.

    ``step``: only what was in the context before that step. ``first``/``last``: only items of
    the active path's steps in that inclusive range. Neither: everything the active path's
    steps added, across compactions.

    Returns:
        ``{trace_id, step, range: [first, last]|None, reads[{node_id, step_index, uuid, role,
        kind, content_hash, chars, tool_call_id}], stale}``.
    """
    return _io(target, trace, step, first, last, reads=True)


def ctx_writes(target: Target, trace: str, *, step: int | None = None,
               first: int | None = None, last: int | None = None) -> dict[str, Any]:
    """What the model wrote into its context (its responses); arguments as :func:`ctx_reads`.

    Returns:
        ``{trace_id, step, range, writes[...], stale}`` with the rows of :func:`ctx_reads`.
    """
    return _io(target, trace, step, first, last, reads=False)


def _io(target: Target, trace: str, step: int | None, first: int | None, last: int | None,
        *, reads: bool) -> dict[str, Any]:
    if step is not None and (first is not None or last is not None):
        raise UsageError("give either a step or a range of steps, not both")
    with _view(target) as view:
        tree = view.tree(trace)
        if step is not None:
            if step not in tree.nodes:
                raise StepOutOfRange(f"trace {tree.trace_id} has no step {step}")
            items = tree.context(step)
        else:
            # Along the path, compactions included: what each step added (and any seed).
            leaf = tree.active_leaf()
            path = [] if leaf is None else tree.path(leaf)
            items = [i for s in path for i in (*tree.nodes[s].seed, *tree.nodes[s].tail)]
            low = -1 if first is None else first
            high = len(tree.nodes) if last is None else last
            items = [i for i in items if low <= i.step_index <= high]
        rows = [{k: v for k, v in _item_row(tree, n, i).items() if k != "index"}
                for n, i in enumerate(items) if (i.role in READ_ROLES) == reads]
        return {"trace_id": tree.trace_id, "step": step,
                "range": None if first is None and last is None else [first, last],
                "reads" if reads else "writes": rows, "stale": view.stale}


def ctx_diff(target: Target, node_a: str, node_b: str, *,
             layer: str | None = None) -> dict[str, Any]:
    """How the context of node ``b`` differs from node ``a``, per layer.

    Returns:
        ``{a, b, layers{<name>: {added, removed, changed}}, stale}``: for messages, the items
        only in ``b`` / only in ``a`` (by content hash, in order); for the other layers, the
        keys (or tools) added and removed and ``changed[{key, a, b}]``.
    """
    if layer is not None and layer not in LAYERS:
        raise UsageError(f"unknown layer {layer!r}; known: {', '.join(LAYERS)}")
    with _view(target) as view:
        tree_a, step_a = view.node(node_a)
        tree_b, step_b = view.node(node_b)
        la, lb = _layers(view, tree_a, step_a), _layers(view, tree_b, step_b)
        out: dict[str, Any] = {}
        for name in [layer] if layer else LAYERS:
            if name == "messages":
                out[name] = _diff_items(tree_a, tree_a.context(step_a),
                                        tree_b, tree_b.context(step_b))
            elif name == "tool_registry":
                ta, tb = la[name]["body"]["tools"], lb[name]["body"]["tools"]
                out[name] = {"added": [t for t in tb if t not in ta],
                             "removed": [t for t in ta if t not in tb], "changed": []}
            else:
                out[name] = _diff_maps(la[name]["body"], lb[name]["body"])
        return {"a": tree_a.nodes[step_a].node_id, "b": tree_b.nodes[step_b].node_id,
                "layers": out, "stale": view.stale}


def _diff_items(tree_a: TraceTree, a: list[Item], tree_b: TraceTree,
                b: list[Item]) -> dict[str, Any]:
    def only(tree: TraceTree, items: list[Item], other: list[Item]) -> list[dict[str, Any]]:
        left: dict[str, int] = {}
        for item in other:
            left[item.hash] = left.get(item.hash, 0) + 1
        rows = []
        for n, item in enumerate(items):
            if left.get(item.hash, 0):
                left[item.hash] -= 1
            else:
                rows.append(_item_row(tree, n, item))
        return rows

    return {"added": only(tree_b, b, a), "removed": only(tree_a, a, b), "changed": []}


def _diff_maps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"added": sorted(k for k in b if k not in a),
            "removed": sorted(k for k in a if k not in b),
            "changed": [{"key": k, "a": a[k], "b": b[k]} for k in sorted(a)
                        if k in b and a[k] != b[k]]}


def ctx_compactions(target: Target, trace: str) -> dict[str, Any]:
    """Every compaction of a trace and what it dropped.

    Returns:
        ``{trace_id, compactions[{index, form, step_index, node_id, boundary_uuid, pre_uuid,
        post_uuid, trigger, pre_tokens, summary_chars, kept, dropped{messages, chars,
        tokens_estimate}}], stale}``. ``form`` is ``boundary`` (a boundary record) or
        ``summary`` (known from its summary); ``kept`` is ``"none"`` when the whole context
        was replaced and ``"unknown"`` when the transcript keeps recent entries the events do
        not name.
    """
    with _view(target) as view:
        tree = view.tree(trace)
        rows = []
        for c in tree.compactions:
            dropped = _dropped(tree, c.parent_step)
            chars = sum(m["chars"] for m in dropped) if dropped is not None else None
            estimate = c.pre_tokens if c.pre_tokens is not None else (
                None if chars is None else chars // CHARS_PER_TOKEN)
            rows.append({"index": c.index, "form": c.form, "step_index": c.step_index,
                         "node_id": c.node_id, "boundary_uuid": c.boundary_uuid,
                         "pre_uuid": c.pre_uuid, "post_uuid": c.post_uuid,
                         "trigger": c.trigger, "pre_tokens": c.pre_tokens,
                         "summary_chars": c.summary_chars,
                         "kept": "unknown" if c.form == "summary" else "none",
                         "dropped": {"messages": None if dropped is None else len(dropped),
                                     "chars": chars, "tokens_estimate": estimate}})
        return {"trace_id": tree.trace_id, "compactions": rows, "stale": view.stale}


def _dropped(tree: TraceTree, step: int | None) -> list[dict[str, Any]] | None:
    """The messages a compaction replaced: the context of the step before it, that step and
    what followed it (its results)."""
    if step is None or step not in tree.nodes:
        return None
    return _message_rows(tree, [*tree.context(step), *tree.nodes[step].tail])


# ---------------------------------------------------------------------------------------------
# Resume, prune, anchors


def ctx_resume(target: Target, node_id: str) -> dict[str, Any]:
    """A packet to continue from a node: the messages before its step, with their content.

    Returns:
        ``{node_id, trace_id, step_index, messages[{role, content, step_index, ...}],
        system_layer{layer_id, capture_method, text}, tool_registry{layer_id, capture_method,
        tools}, runtime_state{...}, env{cwd, model}, stale}``.
    """
    with _view(target) as view:
        tree, step = view.node(node_id)
        layers = _layers(view, tree, step)
        items = tree.context(step)
        stale = view.stale
    record = trace_get(target, tree.trace_id)
    prompt_hash = layers["system"]["body"].get("prompt_hash")
    runtime = layers["runtime_state"]["body"]
    return {
        "node_id": tree.nodes[step].node_id, "trace_id": tree.trace_id, "step_index": step,
        "messages": _messages(record, items),
        "system_layer": {"layer_id": layers["system"]["layer_id"],
                         "capture_method": "transcript",
                         "completeness": layers["system"]["completeness"],
                         "text": record.system_prompts.get(prompt_hash) if prompt_hash else None},
        "tool_registry": {"layer_id": layers["tool_registry"]["layer_id"],
                          "capture_method": "reconstructed",
                          "tools": layers["tool_registry"]["body"]["tools"]},
        "runtime_state": runtime,
        "env": {"cwd": runtime.get("cwd"), "model": runtime.get("model")},
        "stale": stale,
    }


def _messages(record: TraceRecord, items: list[Item]) -> list[dict[str, Any]]:
    steps = {s.step_index: s for s in record.steps}
    summaries = {c.get("step_index"): c.get("summary")
                 for c in record.metadata.get("compactions", [])}
    out: list[dict[str, Any]] = []
    for item in items:
        step = steps.get(item.step_index)
        if item.kind == "summary":
            out.append({"role": "system", "kind": "compaction_summary",
                        "step_index": item.step_index,
                        "content": summaries.get(item.step_index)})
        elif item.kind == "step" and step is not None:
            message: dict[str, Any] = {"role": step.role, "step_index": step.step_index,
                                       "content": step.content}
            if step.reasoning_content:
                message["reasoning"] = step.reasoning_content
            if step.tool_calls:
                message["tool_calls"] = [{"id": c.tool_call_id, "name": c.tool_name,
                                          "input": c.input} for c in step.tool_calls]
            out.append(message)
        elif item.kind == "result" and step is not None:
            seen = {m.get("tool_call_id") for m in out if m["role"] == "tool"}
            if item.call_id in seen:
                continue  # several result records of one call: one message
            found = next((o for o in step.observations if o.source_call_id == item.call_id),
                         None)
            out.append({"role": "tool", "step_index": item.step_index,
                        "tool_call_id": item.call_id,
                        "content": found.content if found else None,
                        "is_error": bool(found and found.error == "tool_error")})
        # "ext" items are later lines of a response: the step's content already holds them
    return out


def ctx_prune(target: Target, node_id: str, source_jsonl: Path, *,
              to_session: str | None = None, write: bool = False) -> dict[str, Any]:
    """A Claude Code session file cut just before a node's step (a dry run unless ``write``).

    The new file holds the lines of ``source_jsonl`` that the step hangs from (its
    ``parentUuid`` chain, compactions bridged through ``logicalParentUuid``), in file order,
    with ``sessionId`` set to the new session id. It is written beside the source, as
    ``<session>.jsonl``, and never over an existing file.

    Returns:
        ``{node_id, trace_id, step_index, source_jsonl, output, session_id, lines_kept,
        lines_dropped, written, dry_run, stale}``.

    Raises:
        UsageError: the node has no transcript uuid or is not in ``source_jsonl``.
        Refused: ``write`` and the output file exists.
    """
    with _view(target) as view:
        tree, step = view.node(node_id)
        node = tree.nodes[step]
        stale = view.stale
    if not node.source_uuid:
        raise UsageError(f"node {node.node_id} has no transcript uuid; only Claude Code "
                         "sessions can be pruned")
    source = Path(source_jsonl)
    lines = source.read_bytes().splitlines(keepends=True)
    records = [_record(line) for line in lines]
    keep = _chain_before(records, node.source_uuid, source)
    session = to_session or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL,
                                              f"opentraces:{node.node_id}:{source}"))
    output = source.with_name(f"{session}.jsonl")
    if write and output.exists():
        raise Refused(f"{output} already exists; prune never overwrites a file",
                      hint="Name another session with --to-session.")
    if write:
        body = b"".join(_with_session(records[i], session) for i in keep)
        with open(output, "xb") as fh:  # "x": never over a file that appeared meanwhile
            fh.write(body)
    return {"node_id": node.node_id, "trace_id": tree.trace_id, "step_index": step,
            "source_jsonl": str(source), "output": str(output), "session_id": session,
            "lines_kept": len(keep), "lines_dropped": len(lines) - len(keep),
            "written": write, "dry_run": not write, "stale": stale}


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _chain_before(records: list[dict[str, Any] | None], step_uuid: str,
                  source: Path) -> list[int]:
    """Line numbers of the lines the step's line hangs from, in file order."""
    by_uuid = {r["uuid"]: n for n, r in enumerate(records)
               if r is not None and isinstance(r.get("uuid"), str)}
    start = by_uuid.get(step_uuid)
    if start is None:
        raise UsageError(f"{source} has no line with uuid {step_uuid}; give the session "
                         "file this trace was captured from")
    keep: list[int] = []
    current = _parent_line(records, start, by_uuid)
    while current is not None and current not in keep:
        keep.append(current)
        current = _parent_line(records, current, by_uuid)
    return sorted(keep)


def _parent_line(records: list[dict[str, Any] | None], n: int,
                 by_uuid: dict[str, int]) -> int | None:
    record = records[n]
    assert record is not None
    parent = record.get("parentUuid")
    if parent is None and record.get("subtype") == "compact_boundary":
        logical = record.get("logicalParentUuid")
        if logical in by_uuid:
            return by_uuid[logical]
        # The boundary names a line that is not in the file: bridge to the line before it.
        earlier = [m for m in by_uuid.values() if m < n]
        return max(earlier) if earlier else None
    return by_uuid.get(parent) if isinstance(parent, str) else None


def _with_session(record: dict[str, Any] | None, session: str) -> bytes:
    assert record is not None  # kept lines all have a uuid, so they decoded
    if "sessionId" in record:
        record = {**record, "sessionId": session}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def resume_session_file(target: Target, address: str, *, dry_run: bool = False
                        ) -> dict[str, Any]:
    """For ``trace get <t>:<n> --resume``: a new Claude Code session cut before step ``n``.

    The session file is written beside the trace's own transcript (same project folder), so
    ``claude --resume <session>`` run in the session's working folder finds it.

    Returns:
        ``{trace_id, step_index, node_id, session_id, session_file, command, written,
        dry_run}``; ``command`` is the shell line that resumes it.

    Raises:
        BadAddress: the address is not ``<trace>:<n>`` (``<trace>:last`` is the last step).
        UsageError: a trace not from Claude Code, or a transcript no longer on disk.
    """
    found = parse_address(address)
    if found.kind != "step" or found.start is None or found.end is None:
        raise BadAddress(f"--resume needs one step, <trace>:<n>; got {address!r}")
    record = trace_get(target, found.trace)
    step, _ = step_bounds(record, found.start, found.end)
    if record.agent.name != CLAUDE:
        raise UsageError(f"--resume writes Claude Code sessions; trace {record.trace_id} is "
                         f"from {record.agent.name}")
    view = ctx_step(target, record.trace_id, step)
    sources = [Path(p) for p in record.metadata.get("source_paths", [])]
    source = next((p for p in sources if p.exists()), None)
    if source is None:
        raise UsageError(f"the transcript of trace {record.trace_id} is no longer on disk "
                         f"({', '.join(map(str, sources)) or 'no path recorded'})")
    pruned = ctx_prune(target, view["node_id"], source, write=not dry_run)
    cwd = record.metadata.get("cwd") or view["runtime"].get("cwd")
    command = f"claude --resume {pruned['session_id']}"
    if cwd:
        command = f"cd {shlex.quote(cwd)} && {command}"
    return {"trace_id": record.trace_id, "step_index": step, "node_id": view["node_id"],
            "session_id": pruned["session_id"], "session_file": pruned["output"],
            "command": command, "written": pruned["written"], "dry_run": dry_run}


def ctx_anchor_for_step(target: Target, trace: str, step_index: int) -> dict[str, Any]:
    """The commit anchored nearest a step: of the trace's anchored patches, the one whose step
    is closest (ties go to the earlier step).

    Returns:
        ``{trace_id, step_index, node_id, commit, patch_id, patch_step_index, distance, path,
        evidence_tier, evidence_firmness}``.

    Raises:
        NoAnchor: no patch of the trace is anchored to a commit (exit code 3).
    """
    with _view(target) as view:
        tree = view.tree(trace)
        node_id = _node_id(tree, step_index)
    record = trace_get(target, tree.trace_id)
    anchored = [p for p in record.patches
                if p.anchor is not None and p.anchor.found and p.anchor.commit_sha
                and p.step_index is not None]
    if not anchored:
        raise NoAnchor(f"no commit is anchored to trace {record.trace_id}",
                       hint="Anchors appear once a commit contains the trace's edits.")
    best = min(anchored, key=_distance(step_index))
    anchor = best.anchor
    assert anchor is not None and best.step_index is not None
    return {"trace_id": record.trace_id, "step_index": step_index, "node_id": node_id,
            "commit": anchor.commit_sha, "patch_id": best.patch_id,
            "patch_step_index": best.step_index,
            "distance": abs(best.step_index - step_index), "path": anchor.path or best.file_path,
            "evidence_tier": anchor.evidence_tier, "evidence_firmness": anchor.evidence_firmness}


def _distance(step_index: int) -> Callable[[Any], tuple[int, int]]:
    def key(patch: Any) -> tuple[int, int]:
        return abs(patch.step_index - step_index), patch.step_index
    return key

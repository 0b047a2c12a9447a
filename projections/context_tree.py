"""Context tree: per step, what the model had in its context before that step, as a tree.

Every step of a trace is a *node*. A node's tree parent is the step its transcript line hangs
from (``parentUuid`` for Claude Code, ``parentId`` for pi v2/v3 trees, the previous step of the
same chain for formats without ids), so rewinds become sibling branches, a compaction becomes a
fork bridged to the step before it (``logicalParentUuid``), and an inline sub-agent becomes a
fork from the step whose Task call started it. The *active path* is the chain from the last
main-chain step back to the root; it is computed when read, not stored.

What the model had before step ``n`` is the node's ``messages`` layer: the items on the path
before ``n``, where an item is a step's first line, a later line of the same response
(``StepExtended``) or a tool result, each hashed by its content. Items are attached, in log
order, to the newest step of their chain (the tip), so node ``c`` with parent ``p`` has
``messages(c) = messages(p) + tail(p)`` as it was when ``c`` was recorded; a reset (root,
compaction, sub-agent, orphan) starts from its ``seed`` instead (a compaction's summary when
the event carries one).

Tables (``state.sqlite``):

- ``nodes``: one row per (trace, step): node id, tree parent step, branch type, the layer ids,
  message count and characters of the context, the tail of items and the seed;
- ``layers``: content-addressed layer bodies shared by every node and trace. A messages layer
  is ``{base, add}`` (its parent layer and the item hashes added), so a long session stores
  each item hash once, not once per later step; its id chains the parent's id with the added
  hashes. Runtime and system layers are small maps;
- ``trees``: per trace, the fold state (runtime facts, chain tips, tools used, compaction
  boundaries) and the trace's agent;
- ``uuids``: transcript uuid -> step, for step lines and for uuids of lines that are not steps
  (resolved once, to the tip of the referring chain, and remembered so that a later sibling
  resolves the same way);
- ``compactions`` and ``subagents``: one row per compaction and per sub-agent link.

Capture methods: messages and runtime layers are ``transcript`` (exact, as far as the events
go); a messages layer after a summary-form compaction (Codex ``compacted``, pi ``compaction``)
is ``reconstructed`` with completeness ``partial``, because the kept entries are not in the
events; the tool registry is always ``reconstructed`` (the tools the trace used, read with
:func:`tool_registry`); a system layer is ``transcript`` when the transcript has the prompt
(Codex) and ``absent`` otherwise.

Invariants:
- Rows are a function of the events alone (no clock, no page-boundary dependence): per-trace
  state and touched nodes are buffered for a page and written at its end; layers are only
  inserted, keyed by content; a node's layers are fixed when its step is recorded.
- A ``SourceSegmentRead`` that restarts a file (offset 0, higher generation) drops the trace's
  nodes, uuids, compactions, links and state; layers stay (they are shared and content-keyed).
- Node ids are :func:`context_node_id` of (trace id, step index, source uuid): any projection
  can compute them without reading this one.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import blake3
import msgspec

from opentraces import events as ev
from opentraces.events import Recorded, stable_id
from opentraces.projections.base import Handler, SqlProjection, in_trace_stream

#: Continuation text Claude Code writes as the first message of a compacted context.
CONTINUATION_PREFIX = "This session is being continued from a previous conversation"
#: Characters per token when a token count has to be estimated from text.
CHARS_PER_TOKEN = 4

_pack = msgspec.msgpack.encode
_unpack = msgspec.msgpack.decode


def context_node_id(trace_id: str, step_index: int, source_uuid: str | None) -> str:
    """The id of the context node of one step: ``ctxn_`` + 24 hex digits, stable everywhere."""
    return "ctxn_" + stable_id("ctxn", trace_id, step_index, source_uuid or "", length=24)


def content_hash(value: Any) -> str:
    """blake3 (128 bits, hex) of the canonical msgpack of ``value``."""
    return blake3.blake3(_pack(value)).hexdigest()[:32]


def tool_registry(tools: list[str]) -> tuple[str, dict[str, Any]]:
    """The reconstructed tool-registry layer (id, body) for the tools a trace used."""
    body = {"tools": sorted(tools)}
    return content_hash(["tools", body]), body


class Item(msgspec.Struct, frozen=True, array_like=True):
    """One piece of context: a step's first line, a later line of it, a result, a summary."""

    hash: str
    kind: str  # step | ext | result | summary
    step_index: int  # the step it belongs to (for a result: the step that made the call)
    role: str  # user | agent | system | tool
    chars: int
    call_id: str | None = None


class Node(msgspec.Struct, kw_only=True):
    """A node row as the projection works with it (mutable: its tail grows while it is tip)."""

    step_index: int
    node_id: str
    parent_step: int | None
    branch_type: str  # root | linear | rewind | compaction | subagent | orphan
    role: str
    source_uuid: str | None
    is_sidechain: bool
    calling_step: int | None  # for a sidechain step: the step whose call it serves
    messages_layer: str
    runtime_layer: str
    system_layer: str
    capture_method: str  # of the messages layer: transcript | reconstructed
    msg_count: int
    msg_chars: int
    item_count: int  # items in the context (a message may span several)
    base_len: int  # how much of the parent's tail this context holds
    seed: list[Item] = []
    tail: list[Item] = []


class TraceState(msgspec.Struct, kw_only=True):
    """The fold state of one trace, kept between pages."""

    agent: str | None = None
    parent_trace_id: str | None = None
    runtime: dict[str, str] = {}
    system_layer: str | None = None
    tips: dict[str, int] = {}
    tools: list[str] = []
    #: boundary uuid -> compaction ordinal; step index -> ordinal for compactions without one
    boundaries: dict[str, int] = {}
    pending: dict[int, int] = {}
    compactions: int = 0
    generation: dict[str, int] = {}
    partial: bool = False  # a summary-form compaction happened: later contexts are partial
    linked: bool = False  # steps name their parent line (Claude Code, pi trees)
    steps: int = 0


class Compaction(msgspec.Struct, kw_only=True):
    """A compaction: ``node_id`` is the step after it, once that step is recorded."""

    index: int
    step_index: int
    form: str  # boundary | summary
    boundary_uuid: str | None = None
    pre_uuid: str | None = None
    post_uuid: str | None = None
    trigger: str | None = None
    pre_tokens: int | None = None
    summary_chars: int = 0
    node_id: str | None = None
    parent_step: int | None = None  # the step whose context it replaced
    at: str | None = None
    summary_hash: str | None = None


_NODE = msgspec.msgpack.Decoder(Node)
_STATE = msgspec.msgpack.Decoder(TraceState)
_COMPACTION = msgspec.msgpack.Decoder(Compaction)



def _chain(is_sidechain: bool, parent_step: int | None) -> str:
    """The chain a step belongs to: the main chain, or one sidechain per calling step."""
    return f"side:{parent_step}" if is_sidechain else "main"


@dataclass
class _Page:
    """Rows read or changed during one page, written once by ``end_page``."""

    states: dict[str, TraceState] = field(default_factory=dict)
    nodes: dict[str, dict[int, Node]] = field(default_factory=dict)
    uuids: dict[str, dict[str, int]] = field(default_factory=dict)
    compactions: dict[str, dict[int, Compaction]] = field(default_factory=dict)
    layers: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)


class ContextTree(SqlProjection):
    name: ClassVar[str] = "context_tree"
    version: ClassVar[int] = 1
    SCHEMA: ClassVar[str] = """
    CREATE TABLE IF NOT EXISTS trees (
        trace_id TEXT PRIMARY KEY, state BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS nodes (
        trace_id TEXT NOT NULL, step_index INTEGER NOT NULL, node_id TEXT NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (trace_id, step_index));
    CREATE INDEX IF NOT EXISTS nodes_by_id ON nodes (node_id);
    CREATE TABLE IF NOT EXISTS layers (
        layer_id TEXT PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL,
        byte_count INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS uuids (
        trace_id TEXT NOT NULL, uuid TEXT NOT NULL, step_index INTEGER NOT NULL,
        PRIMARY KEY (trace_id, uuid));
    CREATE TABLE IF NOT EXISTS compactions (
        trace_id TEXT NOT NULL, ordinal INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (trace_id, ordinal));
    CREATE TABLE IF NOT EXISTS subagents (
        trace_id TEXT NOT NULL, position INTEGER NOT NULL, step_index INTEGER NOT NULL,
        tool_call_id TEXT, child_trace_id TEXT NOT NULL, PRIMARY KEY (trace_id, position));
    CREATE INDEX IF NOT EXISTS subagents_by_child ON subagents (child_trace_id);
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._page = _Page()

    def handlers(self) -> dict[type[ev.Event], Handler]:
        table: dict[type[ev.Event], Any] = {
            ev.SessionStarted: self._started,
            ev.SessionInfo: self._info,
            ev.SourceSegmentRead: self._segment,
            ev.StepRecorded: self._step,
            ev.StepExtended: self._extended,
            ev.ToolResultRecorded: self._result,
            ev.CompactionRecorded: self._compaction,
            ev.SubagentLinked: self._subagent,
        }
        return {t: in_trace_stream(h) for t, h in table.items()}

    # -- page buffering -------------------------------------------------------------------------

    def begin_page(self, conn: sqlite3.Connection) -> None:
        self._page = _Page()

    def end_page(self, conn: sqlite3.Connection) -> None:
        page, self._page = self._page, _Page()
        conn.executemany("INSERT OR REPLACE INTO trees VALUES (?, ?)",
                         [(t, _pack(s)) for t, s in page.states.items()])
        conn.executemany("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?)",
                         [(t, i, n.node_id, _pack(n)) for t, rows in page.nodes.items()
                          for i, n in rows.items()])
        conn.executemany("INSERT OR IGNORE INTO uuids VALUES (?, ?, ?)",
                         [(t, u, i) for t, rows in page.uuids.items() for u, i in rows.items()])
        conn.executemany("INSERT OR REPLACE INTO compactions VALUES (?, ?, ?)",
                         [(t, o, _pack(c)) for t, rows in page.compactions.items()
                          for o, c in rows.items()])
        conn.executemany("INSERT OR IGNORE INTO layers VALUES (?, ?, ?, ?)",
                         [(lid, kind, body, size)
                          for lid, (kind, body, size) in page.layers.items()])

    def _state(self, conn: sqlite3.Connection, trace_id: str) -> TraceState:
        state = self._page.states.get(trace_id)
        if state is None:
            row = conn.execute("SELECT state FROM trees WHERE trace_id = ?",
                               (trace_id,)).fetchone()
            state = _STATE.decode(row[0]) if row else TraceState()
            self._page.states[trace_id] = state
        return state

    def _node(self, conn: sqlite3.Connection, trace_id: str, step: int) -> Node | None:
        rows = self._page.nodes.setdefault(trace_id, {})
        node = rows.get(step)
        if node is None:
            row = conn.execute("SELECT data FROM nodes WHERE trace_id = ? AND step_index = ?",
                               (trace_id, step)).fetchone()
            if row is None:
                return None
            node = rows[step] = _NODE.decode(row[0])
        return node

    def _uuid(self, conn: sqlite3.Connection, trace_id: str, uuid: str) -> int | None:
        rows = self._page.uuids.setdefault(trace_id, {})
        if uuid in rows:
            return rows[uuid]
        row = conn.execute("SELECT step_index FROM uuids WHERE trace_id = ? AND uuid = ?",
                           (trace_id, uuid)).fetchone()
        return row[0] if row else None

    def _compaction_row(self, conn: sqlite3.Connection, trace_id: str,
                        ordinal: int) -> Compaction | None:
        rows = self._page.compactions.setdefault(trace_id, {})
        found = rows.get(ordinal)
        if found is None:
            row = conn.execute("SELECT data FROM compactions WHERE trace_id = ? AND ordinal = ?",
                               (trace_id, ordinal)).fetchone()
            if row is None:
                return None
            found = rows[ordinal] = _COMPACTION.decode(row[0])
        return found

    def _layer(self, kind: str, lid: str, body: Any, size: int) -> str:
        if lid not in self._page.layers:
            self._page.layers[lid] = (kind, _pack(body), size)
        return lid

    # -- handlers -------------------------------------------------------------------------------

    def _started(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionStarted = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        state.agent = e.agent.name
        state.parent_trace_id = e.parent_trace_id or state.parent_trace_id
        facts = {"cwd": e.cwd, "git_branch": e.git_branch or None, "model": e.agent.model,
                 "agent_version": e.agent.version}
        state.runtime = {**state.runtime, **{k: v for k, v in facts.items() if v}}

    def _info(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SessionInfo = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        facts = {"cwd": e.cwd, "git_branch": e.git_branch or None, "model": e.model,
                 "agent_version": e.agent_version}
        state.runtime = {**state.runtime, **{k: v for k, v in facts.items() if v}}
        if e.system_prompt:
            text = e.system_prompt.encode("utf-8", "backslashreplace")
            # The same key the traces projection gives the prompt (TraceRecord.system_prompts).
            body = {"prompt_hash": hashlib.sha256(text).hexdigest(), "chars": len(e.system_prompt)}
            state.system_layer = self._layer("system", content_hash(["system", body]), body,
                                             len(text))

    def _segment(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SourceSegmentRead = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        known = state.generation.get(e.path)
        if known is not None and e.start_offset == 0 and e.generation > known:
            # The file was rewritten and is read again from the start: its steps come again.
            for table in ("nodes", "uuids", "compactions", "subagents"):
                conn.execute(f"DELETE FROM {table} WHERE trace_id = ?", (trace_id,))
            for rows in (self._page.nodes, self._page.uuids, self._page.compactions):
                rows.pop(trace_id, None)
            state = self._page.states[trace_id] = TraceState(
                agent=state.agent, parent_trace_id=state.parent_trace_id,
                runtime=state.runtime, system_layer=state.system_layer,
                generation=state.generation)
        state.generation[e.path] = max(known or 0, e.generation)

    def _step(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepRecorded = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        chain = _chain(e.is_sidechain, e.parent_step)
        parent, branch, compaction = self._place(conn, trace_id, state, e, chain)
        item = _step_item(e)
        runtime = dict(state.runtime)
        if e.role == "agent" and e.model:
            runtime["model"] = e.model
        runtime_layer = self._layer("runtime", content_hash(["runtime", runtime]), runtime,
                                    len(_pack(runtime)))
        system_layer = state.system_layer or self._absent_system()
        node = self._make_node(conn, trace_id, state, e, parent, branch, compaction,
                               runtime_layer, system_layer)
        node.tail.append(item)
        self._page.nodes.setdefault(trace_id, {})[e.step_index] = node
        if e.source_uuid:
            self._page.uuids.setdefault(trace_id, {})[e.source_uuid] = e.step_index
        state.tips[chain] = e.step_index
        state.steps += 1
        self._note_tools(state, e.tool_calls)

    def _place(self, conn: sqlite3.Connection, trace_id: str, state: TraceState,
               e: ev.StepRecorded, chain: str) -> tuple[int | None, str, Compaction | None]:
        """The tree parent of a new step, its branch type and the compaction it follows."""
        tip = state.tips.get(chain)
        puuid = e.source_parent_uuid
        pending = state.pending.pop(e.step_index, None)
        ordinal = state.boundaries.get(puuid) if puuid is not None else None
        if ordinal is None and pending is not None and (
                puuid is None or self._uuid(conn, trace_id, puuid) is None):
            ordinal = pending
        if ordinal is not None:
            comp = self._compaction_row(conn, trace_id, ordinal)
            assert comp is not None
            parent = self._resolve(conn, trace_id, state, comp.pre_uuid, "main")
            return (state.tips.get("main") if parent is None else parent), "compaction", comp
        if puuid is None and (e.agent_role == "compact_summary" or (
                tip is not None and e.content.startswith(CONTINUATION_PREFIX))):
            return self._summary_form(trace_id, state, e, tip)
        if puuid is not None:
            state.linked = True
            parent = self._resolve(conn, trace_id, state, puuid, chain)
        elif e.is_sidechain and e.parent_step is not None:
            # An inline sub-agent's first line: it forks from the step whose call started it
            # (parallel sub-agents of one call each fork from that step).
            return e.parent_step, "subagent", None
        else:
            # No parent named: the previous step of the chain, unless the transcript links
            # its lines (then "no parent" means a new conversation starts here).
            parent = None if state.linked else tip
        if parent is None:
            return None, "orphan" if state.steps else "root", None
        if tip is None:
            return parent, "subagent" if e.is_sidechain else "linear", None
        return parent, "rewind" if parent != tip else "linear", None

    def _resolve(self, conn: sqlite3.Connection, trace_id: str, state: TraceState,
                 uuid: str | None, chain: str) -> int | None:
        """The step a uuid stands for; an unknown one is a line that is not a step (a tool
        result, a later line of a response, a progress or system line) and stands for the tip
        of the chain when first named, remembered so later siblings resolve alike."""
        if uuid is None:
            return None
        found = self._uuid(conn, trace_id, uuid)
        if found is not None:
            return found
        tip = state.tips.get(chain)
        if tip is not None:
            self._page.uuids.setdefault(trace_id, {})[uuid] = tip
        return tip

    def _summary_form(self, trace_id: str, state: TraceState, e: ev.StepRecorded,
                      tip: int | None
                      ) -> tuple[int | None, str, Compaction | None]:
        """A compaction known only from its summary message (no boundary record)."""
        ordinal = state.compactions
        state.compactions += 1
        comp = Compaction(index=ordinal, step_index=e.step_index, form="summary",
                          post_uuid=e.source_uuid, parent_step=tip, at=e.at)
        self._page.compactions.setdefault(trace_id, {})[ordinal] = comp
        return tip, "compaction", comp

    def _absent_system(self) -> str:
        body = {"prompt_hash": None, "chars": 0}
        return self._layer("system", content_hash(["system", body]), body, 0)

    def _make_node(self, conn: sqlite3.Connection, trace_id: str, state: TraceState,
                   e: ev.StepRecorded, parent: int | None, branch: str,
                   comp: Compaction | None, runtime_layer: str, system_layer: str) -> Node:
        pnode = self._node(conn, trace_id, parent) if parent is not None else None
        node_id = context_node_id(trace_id, e.step_index, e.source_uuid)
        method = "reconstructed" if state.partial else "transcript"
        reset = branch in ("root", "orphan", "subagent", "compaction") or pnode is None
        if reset:
            seed: list[Item] = []
            if comp is not None:
                seed = [Item(hash=comp.summary_hash, kind="summary", step_index=e.step_index,
                              role="system", chars=comp.summary_chars)] \
                    if comp.summary_hash else []
                self._close_compaction(comp, pnode, node_id, e, parent)
                if comp.form == "summary":
                    state.partial = True
                    method = "reconstructed"
            lid = _messages_layer(None, [i.hash for i in seed])
            count, chars, items = _count(seed), sum(i.chars for i in seed), len(seed)
            self._layer("messages", lid, {"base": None, "add": [i.hash for i in seed]}, chars)
            base_len = 0
        else:
            assert pnode is not None
            seed = []
            add = list(pnode.tail)
            lid = _messages_layer(pnode.messages_layer, [i.hash for i in add])
            count = pnode.msg_count + _count(add)
            chars = pnode.msg_chars + sum(i.chars for i in add)
            items = pnode.item_count + len(add)
            self._layer("messages", lid, {"base": pnode.messages_layer,
                                          "add": [i.hash for i in add]}, chars)
            base_len = len(add)
            method = pnode.capture_method
        return Node(step_index=e.step_index, node_id=node_id, parent_step=parent,
                    branch_type=branch, role=e.role, source_uuid=e.source_uuid,
                    is_sidechain=e.is_sidechain, calling_step=e.parent_step,
                    messages_layer=lid,
                    runtime_layer=runtime_layer, system_layer=system_layer,
                    capture_method=method, msg_count=count, msg_chars=chars,
                    item_count=items, base_len=base_len, seed=seed)

    @staticmethod
    def _close_compaction(comp: Compaction, pnode: Node | None, node_id: str,
                          e: ev.StepRecorded, parent: int | None) -> None:
        """Name the node after the compaction and the step whose context it replaced."""
        comp.node_id = node_id
        comp.post_uuid = comp.post_uuid or e.source_uuid
        comp.parent_step = parent
        if pnode is not None:
            comp.pre_uuid = comp.pre_uuid or pnode.source_uuid

    def _extended(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.StepExtended = rec.event  # type: ignore[assignment]
        if not (e.content or e.reasoning_content or e.tool_calls or e.images):
            return  # a usage update only (Codex token counts): nothing enters the context
        state = self._state(conn, trace_id)
        owner = self._node(conn, trace_id, e.step_index)
        if owner is None:
            return
        item = Item(hash=content_hash(["ext", e.content, e.reasoning_content,
                                       msgspec.to_builtins(e.tool_calls),
                                       [i.hash for i in e.images]]),
                    kind="ext", step_index=e.step_index, role=owner.role,
                    chars=len(e.content) + len(e.reasoning_content or ""))
        self._append(conn, trace_id, state, owner, item)
        self._note_tools(state, e.tool_calls)

    def _result(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.ToolResultRecorded = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        owner = self._node(conn, trace_id, e.step_index)
        if owner is None:
            return
        item = Item(hash=content_hash(["result", e.tool_call_id, e.content,
                                       e.content_blob.hash if e.content_blob else None,
                                       e.is_error]),
                    kind="result", step_index=e.step_index, role="tool",
                    chars=e.output_chars or len(e.content), call_id=e.tool_call_id)
        self._append(conn, trace_id, state, owner, item)

    def _append(self, conn: sqlite3.Connection, trace_id: str, state: TraceState, owner: Node,
                item: Item) -> None:
        """Add an item to the tip of the owner's chain (the step the context has reached)."""
        tip_step = state.tips.get(_chain(owner.is_sidechain, owner.calling_step),
                                  owner.step_index)
        tip = self._node(conn, trace_id, tip_step) or owner
        tip.tail.append(item)

    def _compaction(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.CompactionRecorded = rec.event  # type: ignore[assignment]
        state = self._state(conn, trace_id)
        ordinal = state.compactions
        state.compactions += 1
        # A boundary record (Claude Code) replaces the whole context and is followed by the
        # summary as a step; a summary record (Codex, pi) carries the summary and keeps recent
        # entries the events do not name.
        boundary = e.boundary_uuid is not None and e.summary is None
        comp = Compaction(index=ordinal, step_index=e.step_index,
                          form="boundary" if boundary else "summary",
                          parent_step=state.tips.get("main"),
                          boundary_uuid=e.boundary_uuid, pre_uuid=e.logical_parent_uuid,
                          trigger=e.trigger, pre_tokens=e.pre_tokens,
                          summary_chars=len(e.summary or ""), at=e.at,
                          summary_hash=content_hash(["summary", e.summary]) if e.summary
                          else None)
        self._page.compactions.setdefault(trace_id, {})[ordinal] = comp
        if e.boundary_uuid:
            state.boundaries[e.boundary_uuid] = ordinal
        state.pending[e.step_index] = ordinal

    def _subagent(self, conn: sqlite3.Connection, rec: Recorded, trace_id: str) -> None:
        e: ev.SubagentLinked = rec.event  # type: ignore[assignment]
        conn.execute("INSERT OR REPLACE INTO subagents VALUES (?, ?, ?, ?, ?)",
                     (trace_id, rec.position or 0, e.step_index, e.tool_call_id,
                      e.child_trace_id))

    @staticmethod
    def _note_tools(state: TraceState, calls: list[ev.ToolCall]) -> None:
        names = {c.tool_name for c in calls if c.tool_name} - set(state.tools)
        if names:
            state.tools = sorted({*state.tools, *names})

    # -- reading ------------------------------------------------------------------------------

    def traces(self) -> list[str]:
        """Every trace the view has a tree for, sorted."""
        if not self.path.exists():
            return []
        with self.reader() as conn:
            return [t for (t,) in conn.execute("SELECT trace_id FROM trees ORDER BY trace_id")]

    def tree(self, trace_id: str) -> TraceTree | None:
        """The whole tree of one trace (nodes, compactions, sub-agent links), or None."""
        with self.reader() as conn:
            row = conn.execute("SELECT state FROM trees WHERE trace_id = ?",
                               (trace_id,)).fetchone()
            if row is None:
                return None
            nodes = {i: _NODE.decode(d) for i, d in conn.execute(
                "SELECT step_index, data FROM nodes WHERE trace_id = ? ORDER BY step_index",
                (trace_id,))}
            compactions = [_COMPACTION.decode(d) for (d,) in conn.execute(
                "SELECT data FROM compactions WHERE trace_id = ? ORDER BY ordinal",
                (trace_id,))]
            children = list(conn.execute(
                "SELECT step_index, tool_call_id, child_trace_id FROM subagents "
                "WHERE trace_id = ? ORDER BY position", (trace_id,)))
            parents = list(conn.execute(
                "SELECT trace_id, step_index, tool_call_id FROM subagents "
                "WHERE child_trace_id = ? ORDER BY trace_id, position", (trace_id,)))
        return TraceTree(trace_id=trace_id, state=_STATE.decode(row[0]), nodes=nodes,
                         compactions=compactions, children=children, parents=parents)

    def find_node(self, node_id: str) -> tuple[str, int] | None:
        """(trace id, step index) of a node id, or None."""
        if not self.path.exists():
            return None
        with self.reader() as conn:
            row = conn.execute("SELECT trace_id, step_index FROM nodes WHERE node_id = ?",
                               (node_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def layers(self, layer_ids: list[str]) -> dict[str, tuple[str, Any, int]]:
        """layer id -> (kind, body, byte count) for the ids the view holds."""
        out: dict[str, tuple[str, Any, int]] = {}
        with self.reader() as conn:
            for lid in dict.fromkeys(layer_ids):
                row = conn.execute("SELECT kind, body, byte_count FROM layers WHERE layer_id = ?",
                                   (lid,)).fetchone()
                if row is not None:
                    out[lid] = (row[0], _unpack(row[1]), row[2])
        return out

    def layer_stats(self) -> dict[str, int]:
        """Stored layer rows and bytes, and what storing every node's layers whole would take.

        A messages layer stored whole is its full item list (32 hex each); the logical size
        counts that for every node, plus its runtime and system bodies."""
        with self.reader() as conn:
            stored_rows, stored_bytes = conn.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM layers").fetchone()
            sizes = dict(conn.execute("SELECT layer_id, length(body) FROM layers"))
            logical = nodes = 0
            for (data,) in conn.execute("SELECT data FROM nodes"):
                node = _NODE.decode(data)
                nodes += 1
                logical += len(_pack({"base": None,
                                      "add": [ITEM_HASH_PLACEHOLDER] * node.item_count}))
                logical += sizes.get(node.runtime_layer, 0) + sizes.get(node.system_layer, 0)
        return {"nodes": nodes, "layer_rows": stored_rows, "stored_bytes": stored_bytes,
                "logical_bytes": logical}


#: A stand-in hash, to size an item list as it would be stored whole.
ITEM_HASH_PLACEHOLDER = "0" * 32


@dataclass
class TraceTree:
    """One trace's tree as read from the view."""

    trace_id: str
    state: TraceState
    nodes: dict[int, Node]
    compactions: list[Compaction]
    children: list[tuple[int, str | None, str]]  # (step, tool call, child trace)
    parents: list[tuple[str, int, str | None]]  # (parent trace, step, tool call)

    def active_leaf(self) -> int | None:
        """The newest main-chain step (a sub-agent's own trace: the newest step)."""
        main = [i for i, n in self.nodes.items() if not n.is_sidechain]
        pool = main or list(self.nodes)
        return max(pool) if pool else None

    def path(self, step: int) -> list[int]:
        """Steps from the root to ``step`` along tree parents (compactions bridged)."""
        out: list[int] = []
        seen: set[int] = set()
        current: int | None = step
        while current is not None and current in self.nodes and current not in seen:
            seen.add(current)
            out.append(current)
            current = self.nodes[current].parent_step
        return out[::-1]

    def context(self, step: int) -> list[Item]:
        """The items the model had before ``step``, in order."""
        segments: list[list[Item]] = []
        current = self.nodes.get(step)
        while current is not None:
            parent = self.nodes.get(current.parent_step) \
                if current.parent_step is not None else None
            if current.base_len == 0 or parent is None:
                segments.append(current.seed)
                break
            segments.append(parent.tail[:current.base_len])
            current = parent
        return [item for seg in reversed(segments) for item in seg]


def _messages_layer(base: str | None, add: list[str]) -> str:
    """A messages layer id: the parent layer's id chained with the hashes added."""
    return content_hash(["messages", base, add])


def _count(items: list[Item]) -> int:
    """Messages among items: a later line of a response and a repeated result add none."""
    seen: set[str] = set()
    count = 0
    for item in items:
        if item.kind == "ext":
            continue
        if item.kind == "result":
            if item.call_id in seen:
                continue
            seen.add(item.call_id or "")
        count += 1
    return count


def _step_item(e: ev.StepRecorded) -> Item:
    chars = (e.content_blob.size if e.content_blob else len(e.content)) \
        + len(e.reasoning_content or "")
    return Item(hash=content_hash([
        "step", e.role, e.agent_role, e.content, e.content_blob.hash if e.content_blob else None,
        e.reasoning_content, msgspec.to_builtins(e.tool_calls), [i.hash for i in e.images]]),
        kind="step", step_index=e.step_index, role=e.role, chars=chars)

"""Claude Code transcripts (``~/.claude/projects``) turned into capture events.

Files. One session per ``<project slug>/<session id>.jsonl``. Sub-agents have their own files,
and each is its own trace with session id ``<parent session id>/agent-<agentId>``:
``<slug>/agent-<8 hex>.jsonl`` (2.0.x; the parent comes from the records' ``sessionId``) and
``<slug>/<session>/subagents/agent-<id>.jsonl`` (2.1.x; the parent is the ``<session>`` folder,
and ``agent-<id>.meta.json`` beside it gives ``agentType`` and ``description``). In 1.0.x the
sub-agent turns are written inline in the main file with ``isSidechain: true``.

What each line becomes (every decodable line yields at least one event):

- ``assistant``: lines sharing ``message.id`` (else ``requestId``) are one step, because Claude
  Code writes one content block per line. The first line is a ``StepRecorded`` (role ``agent``),
  later lines are ``StepExtended``, even when tool results sit between them (parallel calls).
  Each carries that line's ``usage``: every line repeats the usage so far, and
  ``StepExtended.token_usage`` replaces the step's usage, so the last line wins, which is the
  per-message de-duplication the format needs. ``StepExtended`` text carries its own ``"\\n\\n"``
  separator when the step already had text, so appending is all a reader does; having no blob
  field, it keeps its text whole (one block, usually short). Reasoning is never blobbed either.
- ``user``: text and images make a step (role ``user``); ``tool_result`` blocks become
  ``ToolResultRecorded`` on the step holding the ``tool_use`` (a line holding only results is not
  a step). A result whose call is unknown is kept whole as a ``MetadataRecorded`` of type
  ``tool_result_orphan``, because no step can own it. ``toolUseResult`` becomes ``detail``;
  above ``INLINE_CHARS`` of JSON only its small scalar keys stay and the whole JSON goes to a
  blob named in ``detail["blob"]``. Images inside a tool result are blobs listed in
  ``detail["images"]``.
- ``isMeta`` user lines (harness-injected: the "Caveat" line, skill bodies, ``/init`` prompts) are
  steps with role ``system`` and ``agent_role="meta"``: the model did see them, so the context
  stays complete, while role ``system`` keeps them out of titles and user-turn counts.
- Compaction: a ``system``/``compact_boundary`` line is a ``CompactionRecorded`` whose
  ``step_index`` is the index the *next* step gets, i.e. the first step of the compacted context
  (normally the summary). The ``isCompactSummary`` user line that follows is its own step, role
  ``system`` with ``agent_role="compact_summary"`` (not a field of the compaction: that would need
  a second ``CompactionRecorded`` and double-count compactions).
- Sidechains: steps get ``is_sidechain`` and ``call_type="subagent"`` (``"warmup"`` for the
  ``Warmup`` probe and the replies chained to it). Inline (1.0.x) sidechain steps get
  ``parent_step``: the step whose ``Task``/``Agent`` call they serve. The root prompt of a
  sidechain is matched to an unresolved call with the same ``input.prompt`` (parallel tasks make
  "most recent call" wrong); later entries inherit the root's link through ``parentUuid``; the
  most recent unresolved call is only the fallback. In the parent file a ``SubagentLinked`` is
  emitted once per agent, at the first evidence: ``agent_progress`` with ``agentId`` or a result
  whose ``toolUseResult`` has ``agentId``.
- ``summary``, ``custom-title``, ``ai-title``: ``MetadataRecorded`` plus a ``SessionInfo`` title
  (a custom title beats an AI title, which beats a summary).
- ``progress`` (~70% of long 2.1 sessions): a tiny ``MetadataRecorded`` (data type, tool use ids,
  agent id). Everything else (``file-history-snapshot``, ``queue-operation``, ``attachment``,
  other ``system`` subtypes, ``permission-mode``, unknown types, unreadable shapes) is a
  ``MetadataRecorded`` with a small, capped copy of the record.
- Slash commands typed by the user (``<command-name>/x</command-name>`` at the start of a prompt)
  and ``Skill`` tool calls are ``SkillInvoked`` (``via`` ``slash`` / ``tool``). 2.1.x writes some
  local commands (``/model``, ``/mcp``) as ``system``/``local_command`` records; those are not
  steps, so they stay metadata.
- ``SessionInfo`` is emitted when cwd, version, git branch, main-chain model or title is first
  seen or changes (``<synthetic>`` error models are ignored).

Invariants (see :mod:`opentraces.capture.base`): what a line yields depends only on it and the
lines before it in the file; nothing is buffered; step indexes are dense from 0 in file order;
``StepExtended`` and ``ToolResultRecorded`` name an existing step. The parser never raises on
record shape: every field is type-checked before use, and what is not understood becomes
metadata. Kept dicts are made storable (lone surrogates escaped, integers outside msgpack's range
turned into strings).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from opentraces.capture.base import INLINE_CHARS, Context, LineRef, SessionRef, clean
from opentraces.capture.values import as_dict as _dict
from opentraces.capture.values import count as _count
from opentraces.capture.values import nonempty_str as _text
from opentraces.capture.values import storable
from opentraces.events import (
    BlobRef,
    CompactionRecorded,
    Event,
    MetadataRecorded,
    SessionInfo,
    SkillInvoked,
    StepExtended,
    StepRecorded,
    SubagentLinked,
    TokenUsage,
    ToolCall,
    ToolResultRecorded,
    trace_id_for,
)

AGENT = "claude-code"

#: Tools whose calls start a sub-agent.
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
#: Keys only Claude Code records carry; a first record with none of them is another format.
CLAUDE_KEYS = frozenset({"sessionId", "uuid", "parentUuid", "leafUuid", "isSidechain",
                         "userType", "messageId", "requestId", "agentId"})
#: Envelope fields repeated on every line; SessionInfo carries what matters of them.
ENVELOPE = frozenset({"type", "sessionId", "session_id", "cwd", "version", "userType",
                      "gitBranch", "slug", "entrypoint", "timestamp", "isSidechain"})
SYNTHETIC_MODEL = "<synthetic>"

#: Metadata caps: strings are cut here, containers keep this many items, and a whole
#: MetadataRecorded.data above DATA_BYTES keeps only its key names.
FIELD_CHARS = 300
#: Session facts (paths, titles, descriptions) are cut here.
FACT_CHARS = 1000
MAX_ITEMS = 20
DATA_BYTES = 8000
#: Scalars kept beside a blob when a tool input or toolUseResult is too big to inline.
SCALAR_CHARS = 256
TITLE_RANK = {"summary": 1, "ai-title": 2, "custom-title": 3}
SLASH_PREFIX = 2000

_SLASH = re.compile(r"\s*(?:<command-message>.*?</command-message>\s*)?"
                    r"<command-name>\s*/?([^<]*?)\s*</command-name>", re.DOTALL)


class ClaudeCodeAdapter:
    """The Claude Code transcript format (see the module docstring)."""

    agent: ClassVar[str] = AGENT

    def default_roots(self, home: Path) -> list[Path]:
        return [home / ".claude" / "projects"]

    def discover(self, root: Path) -> Iterator[Path]:
        if not root.is_dir():
            return iter(())
        return iter(sorted(p for p in root.rglob("*.jsonl") if p.is_file()))

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        # An empty file (or an unreadable first line) is still tracked: it may grow.
        if first_record is not None and not _is_claude_record(first_record):
            return None
        stem = path.stem
        if not stem.startswith("agent-"):
            return SessionRef(agent=AGENT, session_id=stem, path=path)
        record = first_record if isinstance(first_record, dict) else {}
        agent_id = _text(record.get("agentId")) or stem[len("agent-"):]
        if path.parent.name == "subagents":
            # The folder names the parent file's stem, which is the parent's session id even
            # when the records say otherwise (renamed or trimmed copies).
            parent = path.parent.parent.name or None
        else:
            parent = _text(record.get("sessionId"))
        session_id = f"{parent}/agent-{agent_id}" if parent else stem
        return SessionRef(agent=AGENT, session_id=session_id, path=path,
                          parent_session_id=parent, is_subagent=True, extra=_read_meta(path))

    def parser(self, ref: SessionRef, ctx: Context) -> ClaudeCodeParser:
        return ClaudeCodeParser(ref, ctx)


@dataclass(frozen=True)
class _Side:
    """Where a line sits: main chain or sidechain, and which step called the sidechain."""

    is_sidechain: bool = False
    call_type: str | None = None
    parent_step: int | None = None


_MAIN = _Side()


class ClaudeCodeParser:
    """Events for one Claude Code file, line by line (state: only what earlier lines said)."""

    def __init__(self, ref: SessionRef, ctx: Context) -> None:
        self.ref = ref
        self.ctx = ctx
        self._steps = 0
        self._message_step: dict[tuple[str, str], int] = {}
        self._tool_step: dict[str, int] = {}
        self._has_text: set[int] = set()
        self._has_reasoning: set[int] = set()
        # Unresolved Task/Agent calls, oldest first: tool id -> (step, stripped prompt).
        self._open_agent_calls: dict[str, tuple[int, str]] = {}
        self._side_parent: dict[str, int | None] = {}
        self._warm: set[str] = set()
        self._linked: set[str] = set()
        self._info: dict[str, str] = {}
        self._title_rank = 0
        self._first_facts: dict[str, str | None] = {}
        if ref.is_subagent:
            self._first_facts = {"parent_session_id": ref.parent_session_id,
                                 "agent_type": _text(ref.extra.get("agentType")),
                                 "description": _text(ref.extra.get("description"))}
        link_root = ref.parent_session_id if ref.is_subagent else None
        self._link_root = link_root or ref.session_id

    # -- entry point ------------------------------------------------------------------------

    def feed(self, record: Any, line: LineRef) -> list[Event]:
        if not isinstance(record, dict):
            return [MetadataRecorded(record_type="non_object", data={"value": _small(record)})]
        at = _text(record.get("timestamp"))
        kind = _text(record.get("type")) or "unknown"
        side = self._sidechain(record, kind)
        if kind == "assistant":
            events = self._assistant(record, at, side)
        elif kind == "user":
            events = self._user(record, at, side)
        elif kind == "system":
            events = self._system(record, at)
        elif kind == "progress":
            events = self._progress(record, at)
        elif kind in TITLE_RANK:
            events = self._titled(record, kind, at)
        else:
            events = []
        if not events:
            events = [self._metadata(record, kind, at)]
        return self._session_info(record, kind, at) + events

    # -- session facts ----------------------------------------------------------------------

    def _session_info(self, record: dict[str, Any], kind: str, at: str | None) -> list[Event]:
        facts: dict[str, str | None] = self._first_facts
        self._first_facts = {}
        # Inline sidechains run in their own cwd and may use another model: the session's
        # facts come from the main chain (in a sub-agent file every line is its main chain).
        if self.ref.is_subagent or record.get("isSidechain") is not True:
            facts = {**facts, "cwd": _text(record.get("cwd")),
                     "agent_version": _text(record.get("version")),
                     "git_branch": _text(record.get("gitBranch"))}
            if kind == "assistant":
                model = _text(_dict(record.get("message")).get("model"))
                if model != SYNTHETIC_MODEL:
                    facts["model"] = model
        changed = {k: _cap(v, FACT_CHARS) for k, v in facts.items()
                   if v and self._info.get(k) != _cap(v, FACT_CHARS)}
        if not changed:
            return []
        self._info.update(changed)
        return [SessionInfo(at=at, **changed)]

    def _title(self, title: str | None, rank: int, at: str | None) -> list[Event]:
        if not title or rank < self._title_rank:
            return []
        self._title_rank = rank
        title = _cap(title, FACT_CHARS)
        if self._info.get("title") == title:
            return []
        self._info["title"] = title
        return [SessionInfo(at=at, title=title)]

    def _titled(self, record: dict[str, Any], kind: str, at: str | None) -> list[Event]:
        field = {"summary": "summary", "ai-title": "aiTitle", "custom-title": "customTitle"}[kind]
        title = self._title(_text(record.get(field)), TITLE_RANK[kind], at)
        return [*title, self._metadata(record, kind, at)]

    # -- sidechains -------------------------------------------------------------------------

    def _sidechain(self, record: dict[str, Any], kind: str) -> _Side:
        if not self.ref.is_subagent and record.get("isSidechain") is not True:
            return _MAIN
        uuid = _text(record.get("uuid"))
        parent = _text(record.get("parentUuid"))
        warm = self._is_warmup(record, kind, parent)
        if warm and uuid:
            self._warm.add(uuid)
        call_type = "warmup" if warm else "subagent"
        if self.ref.is_subagent:
            # The calling step lives in another trace (SessionStarted.parent_trace_id).
            return _Side(True, call_type, None)
        if parent is not None and parent in self._side_parent:
            parent_step = self._side_parent[parent]
        elif warm:
            parent_step = None
        else:
            parent_step = self._calling_step(_user_text(record) if kind == "user" else None)
        if uuid:
            self._side_parent[uuid] = parent_step
        return _Side(True, call_type, parent_step)

    def _is_warmup(self, record: dict[str, Any], kind: str, parent: str | None) -> bool:
        if kind == "user":
            text = _user_text(record)
            if text:
                return text.strip() == "Warmup"
        return parent is not None and parent in self._warm

    def _calling_step(self, prompt: str | None) -> int | None:
        """The step of the unresolved Task/Agent call with this prompt, else the latest one."""
        if prompt is not None:
            wanted = prompt.strip()
            for step, call_prompt in reversed(self._open_agent_calls.values()):
                if call_prompt == wanted:
                    return step
        latest = next(reversed(self._open_agent_calls.values()), None)
        return latest[0] if latest else None

    def _link(self, step: int, tool_call_id: str, agent_id: str, at: str | None) -> list[Event]:
        if agent_id in self._linked:
            return []
        self._linked.add(agent_id)
        child = trace_id_for(AGENT, f"{self._link_root}/agent-{agent_id}")
        return [SubagentLinked(at=at, step_index=step, tool_call_id=tool_call_id or None,
                               child_trace_id=child)]

    # -- steps ------------------------------------------------------------------------------

    def _new_step(self) -> int:
        index = self._steps
        self._steps += 1
        return index

    def _assistant(self, record: dict[str, Any], at: str | None, side: _Side) -> list[Event]:
        message = record.get("message")
        if not isinstance(message, dict):
            return []
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) \
            else content if isinstance(content, list) else []
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[tuple[ToolCall, dict[str, Any]]] = []
        odd: list[Any] = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                thoughts.append(block["thinking"])
            elif kind == "tool_use":
                calls.append(self._tool_call(block))
            else:
                odd.append(block)
        message_id = _text(message.get("id"))
        request_id = _text(record.get("requestId"))
        key = ("id", message_id) if message_id else ("request", request_id) if request_id else None
        step = self._message_step.get(key) if key else None
        text = "\n\n".join(t for t in texts if t)
        reasoning = "\n\n".join(t for t in thoughts if t)
        token_usage = _usage(message.get("usage"))
        tool_calls = [call for call, _ in calls]
        events: list[Event] = []
        if step is None:
            step = self._new_step()
            if key:
                self._message_step[key] = step
            inline, blob, _ = self.ctx.text(text)
            events.append(StepRecorded(
                at=at, step_index=step, role="agent", message_id=message_id, content=inline,
                content_blob=blob, reasoning_content=reasoning or None,
                model=_text(message.get("model")), call_type=side.call_type,
                parent_step=side.parent_step, source_uuid=_text(record.get("uuid")),
                source_parent_uuid=_text(record.get("parentUuid")), request_id=request_id,
                is_sidechain=side.is_sidechain, tool_calls=tool_calls, token_usage=token_usage))
        else:
            # StepExtended has no blob field: its text stays inline, whole.
            if text and step in self._has_text:
                text = "\n\n" + text
            if reasoning and step in self._has_reasoning:
                reasoning = "\n\n" + reasoning
            events.append(StepExtended(at=at, step_index=step, content=text,
                                       reasoning_content=reasoning or None,
                                       tool_calls=tool_calls, token_usage=token_usage))
        if text:
            self._has_text.add(step)
        if reasoning:
            self._has_reasoning.add(step)
        for call, raw_input in calls:
            events.extend(self._register_call(step, call, raw_input, at))
        if odd:
            events.append(MetadataRecorded(at=at, record_type="assistant_block", data={
                "message_id": message_id, "step_index": step,
                "blocks": _small(odd[:MAX_ITEMS])}))
        return events

    def _tool_call(self, block: dict[str, Any]) -> tuple[ToolCall, dict[str, Any]]:
        raw = block.get("input")
        value = raw if isinstance(raw, dict) else {} if raw is None else {"value": raw}
        call_id = _text(block.get("id")) or ""
        name = _text(block.get("name")) or ""
        data = _json(value)
        if len(data) <= INLINE_CHARS:
            return ToolCall(tool_call_id=call_id, tool_name=name, input=storable(value)), value
        # Big inputs (Write contents, long edits) live in a blob; the small keys such as
        # file_path stay visible for search and the trail.
        return ToolCall(tool_call_id=call_id, tool_name=name, input=storable(_scalars(value)),
                        input_blob=self.ctx.blob(data, "application/json")), value

    def _register_call(self, step: int, call: ToolCall, raw_input: dict[str, Any],
                       at: str | None) -> list[Event]:
        if call.tool_call_id:
            self._tool_step[call.tool_call_id] = step
            if call.tool_name in SUBAGENT_TOOLS:
                prompt = raw_input.get("prompt")
                self._open_agent_calls[call.tool_call_id] = (
                    step, prompt.strip() if isinstance(prompt, str) else "")
        if call.tool_name == "Skill":
            skill = _text(raw_input.get("skill")) or _text(raw_input.get("command"))
            if skill:
                return [SkillInvoked(at=at, step_index=step, skill=_cap(skill), via="tool")]
        return []

    def _user(self, record: dict[str, Any], at: str | None, side: _Side) -> list[Event]:
        message = record.get("message")
        if not isinstance(message, dict):
            return []
        content = message.get("content")
        if isinstance(content, str):
            blocks: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            blocks = content
        else:
            return []
        events: list[Event] = []
        texts: list[str] = []
        images: list[BlobRef] = []
        odd: list[Any] = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result":
                events.extend(self._tool_result(block, record, at))
            elif kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "image" and (image := self._image(block)) is not None:
                images.append(image)
            else:
                odd.append(block)
        text = "\n\n".join(t for t in texts if t)
        if text or images:
            events.extend(self._user_step(record, at, side, text, images))
        if odd:
            events.append(MetadataRecorded(at=at, record_type="user_block",
                                           data={"blocks": _small(odd[:MAX_ITEMS])}))
        return events

    def _user_step(self, record: dict[str, Any], at: str | None, side: _Side, text: str,
                   images: list[BlobRef]) -> list[Event]:
        if record.get("isCompactSummary") is True:
            role, agent_role = "system", "compact_summary"
        elif record.get("isMeta") is True:
            role, agent_role = "system", "meta"
        else:
            role, agent_role = "user", None
        step = self._new_step()
        inline, blob, _ = self.ctx.text(text)
        events: list[Event] = [StepRecorded(
            at=at, step_index=step, role=role, agent_role=agent_role, content=inline,
            content_blob=blob, call_type=side.call_type, parent_step=side.parent_step,
            source_uuid=_text(record.get("uuid")),
            source_parent_uuid=_text(record.get("parentUuid")),
            is_sidechain=side.is_sidechain, images=images)]
        # The wrapper opens the prompt; a bounded prefix keeps the regex linear on huge pastes.
        match = _SLASH.match(text[:SLASH_PREFIX])
        if match and match.group(1):
            events.append(SkillInvoked(at=at, step_index=step, skill=_cap(match.group(1)),
                                       via="slash"))
        return events

    def _tool_result(self, block: dict[str, Any], record: dict[str, Any],
                     at: str | None) -> list[Event]:
        call_id = _text(block.get("tool_use_id")) or ""
        text, images = self._result_content(block.get("content"))
        inline, blob, chars = self.ctx.text(text)
        is_error = block.get("is_error") is True
        result = record.get("toolUseResult")
        detail = self._detail(_without_copies(result, text)) if "toolUseResult" in record else {}
        if images:
            detail["images"] = [msgspec.to_builtins(image) for image in images]
        self._open_agent_calls.pop(call_id, None)
        step = self._tool_step.get(call_id)
        if step is None:
            # No step made this call (it is in another file, or the file is cut): keep it all.
            data: dict[str, Any] = {"tool_use_id": call_id, "content": inline,
                                    "output_chars": chars, "is_error": is_error,
                                    "detail": detail}
            if blob is not None:
                data["content_blob"] = msgspec.to_builtins(blob)
            return [MetadataRecorded(at=at, record_type="tool_result_orphan", data=data)]
        events: list[Event] = [ToolResultRecorded(
            at=at, step_index=step, tool_call_id=call_id, content=inline, content_blob=blob,
            output_chars=chars, is_error=is_error, detail=detail)]
        agent_id = _text(_dict(result).get("agentId"))
        if agent_id:
            events.extend(self._link(step, call_id, agent_id, at))
        return events

    def _result_content(self, content: Any) -> tuple[str, list[BlobRef]]:
        """A tool result's text (blocks joined by newlines) and its images."""
        if isinstance(content, str):
            return content, []
        if content is None:
            return "", []
        if not isinstance(content, list):
            return _json_text(content), []
        parts: list[str] = []
        images: list[BlobRef] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif kind == "image" and (image := self._image(block)) is not None:
                images.append(image)
            else:
                # tool_reference and anything new: its JSON, so nothing is dropped.
                parts.append(_json_text(block))
        return "\n".join(parts), images

    def _detail(self, result: Any) -> dict[str, Any]:
        value = result if isinstance(result, dict) else {"value": result}
        data = _json(value)
        if len(data) <= INLINE_CHARS:
            return storable(value)
        detail = storable(_scalars(value))
        detail["blob"] = msgspec.to_builtins(self.ctx.blob(data, "application/json"))
        return detail

    def _image(self, block: dict[str, Any]) -> BlobRef | None:
        source = _dict(block.get("source"))
        data = source.get("data")
        if source.get("type") != "base64" or not isinstance(data, str):
            return None
        media_type = _text(source.get("media_type")) or "application/octet-stream"
        try:
            raw = base64.b64decode(data)
        except ValueError:
            # Not base64 after all: keep the text as it was rather than lose the image.
            raw, media_type = data.encode("utf-8", "backslashreplace"), "text/plain"
        return self.ctx.blob(raw, media_type)

    # -- non-step records -------------------------------------------------------------------

    def _system(self, record: dict[str, Any], at: str | None) -> list[Event]:
        if record.get("subtype") != "compact_boundary":
            return []
        meta = _dict(record.get("compactMetadata"))
        pre_tokens = meta.get("preTokens")
        return [CompactionRecorded(
            at=at, step_index=self._steps, boundary_uuid=_text(record.get("uuid")),
            logical_parent_uuid=_text(record.get("logicalParentUuid")),
            trigger=_text(meta.get("trigger")) or _text(record.get("trigger")),
            pre_tokens=_count(pre_tokens) if _is_number(pre_tokens) else None)]

    def _progress(self, record: dict[str, Any], at: str | None) -> list[Event]:
        data = _dict(record.get("data"))
        small = {"type": _text(data.get("type")), "toolUseID": _text(record.get("toolUseID")),
                 "parentToolUseID": _text(record.get("parentToolUseID")),
                 "agentId": _text(data.get("agentId"))}
        kept = {k: _cap(v) for k, v in small.items() if v is not None}
        if kept.get("parentToolUseID") == kept.get("toolUseID"):
            # Progress lines are most of a long session; the same id twice is noise.
            kept.pop("parentToolUseID", None)
        events: list[Event] = [MetadataRecorded(at=at, record_type="progress", data=kept)]
        call_id, agent_id = small["parentToolUseID"], small["agentId"]
        if call_id and agent_id and call_id in self._tool_step:
            events.extend(self._link(self._tool_step[call_id], call_id, agent_id, at))
        return events

    def _metadata(self, record: dict[str, Any], kind: str, at: str | None) -> MetadataRecorded:
        if kind == "file-history-snapshot":
            snapshot = _dict(record.get("snapshot"))
            data: dict[str, Any] = {
                "messageId": _small(record.get("messageId")),
                "isSnapshotUpdate": record.get("isSnapshotUpdate") is True,
                "files": len(_dict(snapshot.get("trackedFileBackups")))}
        else:
            data = {k: _small(v) for k, v in record.items() if k not in ENVELOPE}
            if len(data) > MAX_ITEMS * 2 or len(_json(data)) > DATA_BYTES:
                data = {"omitted_bytes": len(_json(record)),
                        "keys": [_cap(k) for k in list(record)[:MAX_ITEMS]]}
        return MetadataRecorded(at=at, record_type=_cap(kind), data=data)


# ---------------------------------------------------------------------------------------------
# Helpers: typed access to untrusted records, and values made small and storable


def _is_claude_record(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("type"), str)
            and not CLAUDE_KEYS.isdisjoint(record))


def _read_meta(path: Path) -> dict[str, Any]:
    """``agent-<id>.meta.json`` beside a sub-agent file (2.1.1xx), or {}."""
    try:
        raw = path.with_name(f"{path.stem}.meta.json").read_bytes()
    except OSError:
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: _cap(clean(value[k])) for k in ("agentType", "description", "worktreePath")
            if isinstance(value.get(k), str)}


def _cap(value: str, limit: int = FIELD_CHARS) -> str:
    return value if len(value) <= limit else value[:limit]


def _user_text(record: dict[str, Any]) -> str | None:
    content = _dict(record.get("message")).get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(b["text"] for b in content if isinstance(b, dict)
                           and b.get("type") == "text" and isinstance(b.get("text"), str))
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and (isinstance(value, int) or math.isfinite(value))


def _usage(value: Any) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    return TokenUsage(input_tokens=_count(value.get("input_tokens")),
                      output_tokens=_count(value.get("output_tokens")),
                      cache_read_tokens=_count(value.get("cache_read_input_tokens")),
                      cache_write_tokens=_count(value.get("cache_creation_input_tokens")))


def _json(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except UnicodeEncodeError:
        return msgspec.json.encode(clean(value))


def _json_text(value: Any) -> str:
    return _json(value).decode("utf-8", "backslashreplace")


#: Claude Code shows file contents numbered: a right-aligned number, then a tab (1.0.x) or
#: an arrow (2.x).
_LINE_NUMBERS = re.compile("(?m)^ *\\d+[\t\u2192]")
#: Shorter strings are left alone: comparing them saves nothing worth the time.
COPY_MIN_CHARS = 256


def _without_copies(result: Any, output: str) -> Any:
    """``toolUseResult`` with the long strings that repeat the tool output replaced by a marker.

    Claude Code writes most outputs twice: as the tool_result text and inside toolUseResult
    (Read's ``file.content`` without the line numbers, Bash's ``stdout``, Grep's ``content``).
    Keeping both doubles the largest events; the marker says which copy to read instead.
    """
    if not isinstance(result, dict) or len(output) < COPY_MIN_CHARS:
        return result
    numbered = _LINE_NUMBERS.sub("", output) if _LINE_NUMBERS.match(output) else None

    def strip(value: Any, depth: int) -> Any:
        if isinstance(value, str) and len(value) >= COPY_MIN_CHARS:
            if value == output:
                return {"same_as": "content"}
            if value == numbered or value + "\n" == numbered:
                return {"same_as": "content_without_line_numbers"}
            return value
        if isinstance(value, dict) and depth < 2:
            return {k: strip(v, depth + 1) for k, v in value.items()}
        return value

    return strip(result, 0)


def _scalars(value: dict[str, Any]) -> dict[str, Any]:
    """The small scalar entries of a dict (what stays inline when the whole goes to a blob)."""
    return {k: v for k, v in value.items()
            if v is None or isinstance(v, bool | int | float)
            or (isinstance(v, str) and len(v) <= SCALAR_CHARS)}


def _small(value: Any, depth: int = 0) -> Any:
    """A capped, storable copy for metadata: long strings cut, big containers summarised."""
    if isinstance(value, str):
        if len(value) > FIELD_CHARS:
            return clean(value[:FIELD_CHARS]) + f"... [{len(value)} chars]"
        return clean(value)
    if value is None or isinstance(value, bool | int | float):
        return storable(value)
    if not isinstance(value, dict | list):
        return clean(str(value))[:FIELD_CHARS]
    size = len(_json(value))
    if size <= FIELD_CHARS:
        return storable(value)
    if depth >= 2:
        return f"[{type(value).__name__} of {size} bytes omitted]"
    if isinstance(value, dict):
        out = {clean(str(k)): _small(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
        if len(value) > MAX_ITEMS:
            out["_more_keys"] = len(value) - MAX_ITEMS
        return out
    items = [_small(v, depth + 1) for v in value[:MAX_ITEMS]]
    if len(value) > MAX_ITEMS:
        items.append(f"[{len(value) - MAX_ITEMS} more items]")
    return items

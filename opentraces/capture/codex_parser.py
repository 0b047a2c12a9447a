"""Codex CLI rollout lines to events: :class:`CodexParser`, one per file.

Every line is ``{"timestamp", "type", "payload"}`` with ``type`` one of ``session_meta``,
``turn_context``, ``response_item``, ``event_msg`` or ``compacted`` (newer versions add more,
which become metadata). The mapping, line by line (see ``opentraces.capture.base`` for the
contract):

Steps
    - ``response_item`` items are the source of truth for what the model saw and said.
    - *Agent side*: assistant ``message``, ``reasoning``, ``function_call``,
      ``custom_tool_call``, ``local_shell_call``, ``web_search_call``, ``tool_search_call`` and
      ``image_generation_call``. The first agent-side item after anything else opens a
      ``StepRecorded(role="agent")``; the following agent-side items are ``StepExtended`` on it.
      Codex writes the output items of one model response together, followed by the tool
      outputs, so an agent step is one model response.
    - *Closing items*: user, developer and system messages, tool outputs, inter-agent messages,
      ``compacted``, a user step made from ``event_msg`` ``user_message``, and the start of a turn
      (``task_started``/``turn_context``).
    - User messages are split by part: a part that is injected context becomes a ``system``
      step with ``agent_role="meta"`` (as Claude Code's ``isMeta`` lines), the rest a ``user``
      step (one of each at most per line). A part is injected when its text is
      ``# AGENTS.md instructions ...`` or one XML-like element, ``<tag ...>...</tag>``
      (``<environment_context>``, ``<permissions instructions>``, ``<user_instructions>``,
      ``<turn_aborted>``, ...). Developer messages are ``system`` steps with
      ``agent_role="developer"``; other roles keep their name there.
    - Inter-agent ``response_item`` ``agent_message`` (multi-agent versions) is a ``system``
      step whose ``agent_role`` is its author.

Duplicates
    - ``event_msg`` ``agent_message``, ``agent_reasoning``, ``agent_reasoning_raw_content`` and
      ``item_completed`` repeat ``response_item`` content: they become a tiny
      ``MetadataRecorded(record_type="event_msg:<type>")`` and never content.
    - ``event_msg`` ``user_message`` repeats the user's ``response_item`` message, usually on the
      next line, but filtered rollouts (the Codex Desktop sample) keep only the event. Whichever
      of the two comes first makes the user step; the other one, if its text matches a pending
      prompt of the same turn (before any agent-side item), is recorded as the tiny metadata
      ``user_message:duplicate`` (plus a ``StepExtended`` adding its images when the event only
      listed ``local_images``). So a prompt is counted once whatever the order or filtering.

Tools
    - ``function_call.arguments`` is a JSON string, decoded into ``ToolCall.input`` (an object;
      another JSON value becomes ``{"value": v}``, undecodable text ``{"raw": text}``).
      ``custom_tool_call`` ``apply_patch`` input is ``{"patch": text}``; other custom tools get
      the decoded object or ``{"input": text}``. Inputs above ``INLINE_CHARS`` are shortened and
      kept whole in ``input_blob``. A ``namespace`` is prefixed to the tool name: directly when
      it ends in a separator (``mcp__node_repl__`` + ``js``), else with a dot.
    - ``function_call_output``/``custom_tool_call_output``/``tool_search_output`` give a
      ``ToolResultRecorded`` on the step holding the call: content through ``ctx.text``
      (``output_chars`` is the full length). ``is_error`` comes from the exit code when one can
      be read (the exec preamble ``Process exited with code N`` or the JSON wrapper
      ``{"output", "metadata": {"exit_code"}}``, whose ``output`` becomes the content).
    - ``exec_command_end``, ``patch_apply_end``, ``mcp_tool_call_end`` and other ``*_end`` /
      ``*_response`` events that name a known ``call_id`` add a second ``ToolResultRecorded`` for
      the same call with empty content (MCP: the result text) and the execution facts in
      ``detail`` (capped; the whole detail is in a blob when large). The traces projection
      merges results by call id. ``aggregated_output`` is not copied (it repeats the outputs);
      its length is kept.
    - Web searches: ``web_search_call`` carries no call id in 0.125 and its ``web_search_end``
      event comes first. The call takes its own ``id``, else the ``call_id`` of a pending
      ``web_search_end`` with the same query, else ``web_search@<line>``; a matched end event
      becomes its ``ToolResultRecorded``.
    - A result whose call is unknown is never attached to a made-up step: it becomes
      ``MetadataRecorded(record_type="tool_result_orphan")`` with the content kept (the same
      record type as the Claude Code adapter).

Other records
    - ``session_meta`` gives ``SessionInfo`` (cwd, ``cli_version``, git, the full system prompt
      from ``base_instructions``, the parent thread of a sub-agent) and small metadata.
    - ``turn_context`` gives small metadata, and ``SessionInfo(model)`` when the model changes.
    - ``reasoning`` summary text is ``reasoning_content``; ``encrypted_content`` is kept opaque:
      a blob referenced by ``MetadataRecorded(record_type="encrypted_reasoning")``.
    - ``token_count``: when ``total_token_usage`` changes, ``UsageTotalsRecorded`` with those
      totals (``cached_input_tokens`` -> ``cache_read_tokens``, subtracted from OpenAI's
      ``input_tokens``, which include them), and the ``last_token_usage`` of that change is
      added to the current agent step (else the latest one) as
      ``StepExtended(token_usage=running sum)``.
      Repeated totals add nothing, so the step usages sum to the final totals.
    - ``compacted`` gives ``CompactionRecorded`` (``step_index`` is the index the next step will
      get, i.e. the boundary); its ``replacement_history`` is kept in a blob.
    - Slash commands: a user prompt whose first word is ``/name`` (letters, digits, ``-_:.``,
      and no further ``/``, so paths do not count) gives ``SkillInvoked(via="slash")``. No codex
      file in the corpus has one; beware that the TUI runs its built-in commands without writing
      a prompt, so such a prompt may be a command the TUI did not recognise (pi's genuine files
      show exactly that, which is why the pi adapter records them as metadata only).
    - Anything else, including unknown types, is ``MetadataRecorded``, and every record yields
      at least one event. A record's shape never raises: fields are type-checked, and should an
      unexpected shape still raise (``SHAPE_ERRORS``), the parser's state is rolled back (no
      step index skipped, no call left on a step that was never emitted) and the record
      becomes ``MetadataRecorded(record_type="adapter_error")``. Blob-store failures are not
      shape errors and propagate, so the importer never checkpoints past lost content.
    - Values the store cannot encode (integers outside msgpack's range, which the stdlib
      fallback decoder lets through, and nesting deeper than ``KEEP_DEPTH``) become text
      (:func:`storable`); token counts are clamped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from opentraces.capture.base import Context, LineRef, SessionRef, clean, non_object
from opentraces.capture.codex_rollout import (
    AGENT_ITEMS,
    DUPLICATE_EVENTS,
    ENVELOPE_TYPES,
    OUTPUT_ITEMS,
    as_int,
    data_url_blob,
    decode_arguments,
    duration_seconds,
    is_injected,
    parent_thread,
    record_at,
    same_prompt,
    slash_command,
    unwrap_output,
    usage_of,
)
from opentraces.capture.values import (
    COUNT_MAX,
    SHAPE_ERRORS,
    capped,
    json_bytes,
    storable,
    tool_input,
)
from opentraces.capture.values import as_dict as _d
from opentraces.capture.values import as_list as _l
from opentraces.capture.values import kind_of as _kind
from opentraces.capture.values import nonempty_str as _s
from opentraces.events import (
    BlobRef,
    CompactionRecorded,
    Event,
    MetadataRecorded,
    SessionInfo,
    SkillInvoked,
    StepExtended,
    StepRecorded,
    TokenUsage,
    ToolCall,
    ToolResultRecorded,
    UsageTotalsRecorded,
)


class CodexParser:
    """State: only what earlier lines of the same file determine (see the contract)."""

    def __init__(self, ref: SessionRef, ctx: Context) -> None:
        self.ref = ref
        self.ctx = ctx
        self.next_step = 0
        self.agent_step: int | None = None  # the open agent step
        self.last_agent_step: int | None = None
        self.has_content = False  # of the open agent step
        self.has_reasoning = False
        self.model: str | None = None
        self.cwd: str | None = None
        self.call_steps: dict[str, int] = {}
        self.last_totals: Any = None
        self.step_usage: dict[int, TokenUsage] = {}
        self.pending_items: list[str] = []  # user prompts from response_item, not yet mirrored
        #: user prompts from event_msg not yet mirrored: (text, step index, had images)
        self.pending_events: list[tuple[str, int, bool]] = []
        self.pending_search_ends: list[dict[str, Any]] = []
        self.search_calls: list[tuple[str, str]] = []  # (call id, query) without a result yet
        self.records = 0

    # -- entry point -----------------------------------------------------------------------

    def feed(self, record: Any, line: LineRef) -> list[Event]:
        self.records += 1
        if not isinstance(record, dict):
            return [non_object(record)]
        at = record_at(record)
        saved = self._state()
        try:
            events = self._dispatch(record, at, line)
        except SHAPE_ERRORS as e:  # an odd record must never stop the file
            self._restore(saved)  # no half-made step: indexes stay dense, calls stay real
            events = [MetadataRecorded(at=at, record_type="adapter_error",
                                       data={"error": f"{type(e).__name__}: {e}"[:500],
                                             "type": str(record.get("type"))[:100]})]
        if not events:
            events = [MetadataRecorded(at=at, record_type=str(record.get("type"))[:100])]
        return events

    def _state(self) -> tuple[Any, ...]:
        return (self.next_step, self.agent_step, self.last_agent_step, self.has_content,
                self.has_reasoning, self.model, self.cwd, self.last_totals,
                list(self.pending_items), list(self.pending_events),
                list(self.pending_search_ends), list(self.search_calls))

    def _restore(self, saved: tuple[Any, ...]) -> None:
        (self.next_step, self.agent_step, self.last_agent_step, self.has_content,
         self.has_reasoning, self.model, self.cwd, self.last_totals, self.pending_items,
         self.pending_events, self.pending_search_ends, self.search_calls) = saved
        self.call_steps = {k: v for k, v in self.call_steps.items() if v < self.next_step}
        self.step_usage = {k: v for k, v in self.step_usage.items() if k < self.next_step}

    def _dispatch(self, record: dict[str, Any], at: str | None, line: LineRef) -> list[Event]:
        kind = _kind(record.get("type"))
        payload = record.get("payload")
        if kind not in ENVELOPE_TYPES and "payload" not in record:
            # pre-envelope layout: a header, {"record_type": "state"} markers, bare items
            if self.records == 1 and "id" in record:
                return self._session_meta(record, at)
            if kind in AGENT_ITEMS or kind in OUTPUT_ITEMS or kind == "message":
                return self._response_item(record, at, line)
            name = _s(record.get("record_type")) or kind
            return [MetadataRecorded(at=at, record_type=(name or "unknown")[:100],
                                     data=capped(record, self.ctx))]
        if not isinstance(payload, dict):
            return [MetadataRecorded(at=at, record_type=f"{kind}"[:100],
                                     data={"payload_type": type(payload).__name__})]
        if kind == "session_meta":
            return self._session_meta(payload, at)
        if kind == "turn_context":
            return self._turn_context(payload, at)
        if kind == "response_item":
            return self._response_item(payload, at, line)
        if kind == "event_msg":
            return self._event_msg(payload, at, line)
        if kind == "compacted":
            return self._compacted(payload, at)
        return [MetadataRecorded(at=at, record_type=str(kind)[:100],
                                 data=capped(payload, self.ctx))]

    # -- steps -----------------------------------------------------------------------------

    def _close(self) -> None:
        self.agent_step = None

    def _step(self, role: str, at: str | None, content: str = "", **fields: Any) -> StepRecorded:
        index = self.next_step
        self.next_step += 1
        inline, blob, _ = self.ctx.text(content)
        return StepRecorded(at=at, step_index=index, role=role, content=inline,
                            content_blob=blob, **fields)

    def _agent(self, at: str | None, *, content: str = "", reasoning: str | None = None,
               tool_calls: list[ToolCall] | None = None,
               images: list[BlobRef] | None = None) -> tuple[Event, int]:
        """An agent-side item: opens the agent step or extends the open one."""
        self.pending_items.clear()
        self.pending_events.clear()
        tool_calls = tool_calls or []
        images = images or []
        if self.agent_step is None:
            step = self._step("agent", at, content, model=self.model,
                              reasoning_content=reasoning or None, tool_calls=tool_calls,
                              images=images)
            self.agent_step = self.last_agent_step = step.step_index
            self.has_content, self.has_reasoning = bool(content), bool(reasoning)
            index: int = step.step_index
            event: Event = step
        else:
            index = self.agent_step
            if content and self.has_content:
                content = "\n\n" + content
            if reasoning and self.has_reasoning:
                reasoning = "\n\n" + reasoning
            self.has_content = self.has_content or bool(content)
            self.has_reasoning = self.has_reasoning or bool(reasoning)
            event = StepExtended(at=at, step_index=index, content=content,
                                 reasoning_content=reasoning or None, tool_calls=tool_calls,
                                 images=images)
        for call in tool_calls:
            self.call_steps[call.tool_call_id] = index
        return event, index

    def _user_step(self, text: str, images: list[BlobRef], at: str | None) -> list[Event]:
        self._close()
        step = self._step("user", at, text, images=images)
        events: list[Event] = [step]
        name = slash_command(text)
        if name:
            events.append(SkillInvoked(at=at, step_index=step.step_index, skill=name,
                                       via="slash"))
        return events

    def _call(self, call_id: str, name: str, value: dict[str, Any]) -> ToolCall:
        data, blob = tool_input(value, self.ctx)
        return ToolCall(tool_call_id=call_id, tool_name=name, input=data, input_blob=blob)

    def _result(self, call_id: str | None, at: str | None, *, content: str = "",
                is_error: bool = False, detail: dict[str, Any] | None = None,
                source: str) -> list[Event]:
        inline, blob, chars = self.ctx.text(content)
        detail = capped(detail, self.ctx) if detail else {}
        step = self.call_steps.get(call_id) if call_id else None
        if step is None:
            data: dict[str, Any] = {"call_id": call_id, "source": source, "content": inline,
                                    "output_chars": chars, "is_error": is_error}
            if blob is not None:
                data["content_blob"] = blob.hash
            if detail:
                data["detail"] = detail
            return [MetadataRecorded(at=at, record_type="tool_result_orphan",
                                     data=storable(data))]
        return [ToolResultRecorded(at=at, step_index=step, tool_call_id=call_id or "",
                                   content=inline, content_blob=blob, output_chars=chars,
                                   is_error=is_error, detail=detail)]

    # -- session_meta / turn_context -------------------------------------------------------

    def _session_meta(self, meta: dict[str, Any], at: str | None) -> list[Event]:
        git = _d(meta.get("git"))
        instructions = meta.get("base_instructions")
        prompt = _s(_d(instructions).get("text")) if isinstance(instructions, dict) \
            else _s(instructions) or _s(meta.get("instructions"))
        source = meta.get("source")
        spawn = _d(_d(_d(source).get("subagent")).get("thread_spawn"))
        agent_type = _s(meta.get("agent_role")) or _s(spawn.get("agent_role")) \
            or ("subagent" if isinstance(source, dict) and "subagent" in source else None)
        self.cwd = _s(meta.get("cwd")) or self.cwd
        info = SessionInfo(
            at=at, cwd=_s(meta.get("cwd")), agent_version=_s(meta.get("cli_version")),
            git_commit=_s(git.get("commit_hash")), git_branch=_s(git.get("branch")),
            repository_url=_s(git.get("repository_url")), system_prompt=clean(prompt),
            parent_session_id=parent_thread(meta), agent_type=agent_type,
            description=_s(meta.get("agent_nickname")) or _s(spawn.get("agent_nickname")))
        tools = meta.get("dynamic_tools")
        data = {k: meta.get(k) for k in ("id", "timestamp", "originator", "model_provider",
                                         "thread_source", "forked_from_id", "agent_path",
                                         "history_mode", "memory_mode") if meta.get(k)}
        if source is not None:
            data["source"] = source
        if tools:
            data["dynamic_tools"] = len(tools) if isinstance(tools, list) else 1
        return [info, MetadataRecorded(at=at, record_type="session_meta",
                                       data=capped(data, self.ctx))]

    def _turn_context(self, tc: dict[str, Any], at: str | None) -> list[Event]:
        self._close()
        events: list[Event] = []
        model = _s(tc.get("model")) or _s(_d(_d(tc.get("collaboration_mode")).get("settings"))
                                          .get("model"))
        cwd = _s(tc.get("cwd"))
        if (model and model != self.model) or (cwd and cwd != self.cwd):
            events.append(SessionInfo(at=at, model=model if model != self.model else None,
                                      cwd=cwd if cwd != self.cwd else None))
            self.model = model or self.model
            self.cwd = cwd or self.cwd
        data: dict[str, Any] = {k: tc.get(k) for k in (
            "turn_id", "model", "effort", "summary", "approval_policy", "cwd", "current_date",
            "timezone", "personality") if tc.get(k) is not None}
        sandbox = tc.get("sandbox_policy")
        if isinstance(sandbox, dict) and (sandbox.get("type") or sandbox.get("mode")):
            data["sandbox"] = sandbox.get("type") or sandbox.get("mode")
        mode = _d(tc.get("collaboration_mode")).get("mode")
        if mode:
            data["collaboration_mode"] = mode
        events.append(MetadataRecorded(at=at, record_type="turn_context",
                                       data=capped(data, self.ctx)))
        return events

    # -- response_item ---------------------------------------------------------------------

    def _response_item(self, item: dict[str, Any], at: str | None,
                       line: LineRef) -> list[Event]:
        kind = _kind(item.get("type"))
        if kind == "message":
            return self._message(item, at)
        if kind == "reasoning":
            return self._reasoning(item, at)
        if kind in ("function_call", "custom_tool_call", "local_shell_call",
                    "tool_search_call"):
            return self._tool_call(item, at, line)
        if kind == "web_search_call":
            return self._web_search_call(item, at, line)
        if kind == "image_generation_call":
            return self._image_generation(item, at, line)
        if kind in OUTPUT_ITEMS:
            return self._output(item, at)
        if kind == "agent_message":
            return self._inter_agent(item, at)
        data = {k: v for k, v in item.items() if k != "type"}
        return [MetadataRecorded(at=at, record_type=f"response_item:{kind}"[:100],
                                 data=capped(data, self.ctx))]

    def _parts(self, content: Any,
               at: str | None = None) -> tuple[list[str], list[BlobRef], list[Event]]:
        """Texts and image blobs of message content; encrypted parts become metadata."""
        if isinstance(content, str):
            return [content], [], []
        texts: list[str] = []
        images: list[BlobRef] = []
        extra: list[Event] = []
        for part in _l(content):
            if not isinstance(part, dict):
                if isinstance(part, str):
                    texts.append(part)
                continue
            ptype = _kind(part.get("type"))
            if ptype in ("input_image", "output_image", "image"):
                blob = data_url_blob(part.get("image_url"), self.ctx)
                if blob is not None:
                    images.append(blob)
            elif ptype == "encrypted_content":
                opaque = self._opaque(part.get("encrypted_content"), None, at)
                if opaque is not None:
                    extra.append(opaque)
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("refusal"), str):
                texts.append(part["refusal"])
        return texts, images, extra

    def _message(self, item: dict[str, Any], at: str | None) -> list[Event]:
        role = _kind(item.get("role"))
        texts, images, extra = self._parts(item.get("content"), at)
        message_id = _s(item.get("id"))
        if role == "assistant":
            event, _ = self._agent(at, content="\n".join(texts), images=images)
            return [event, *extra]
        if role != "user":
            self._close()
            step = self._step("system", at, "\n".join(texts), images=images,
                              message_id=message_id,
                              agent_role=None if role == "system" else (role[:100] or None))
            return [step, *extra]
        injected = [t for t in texts if is_injected(t)]
        typed = [t for t in texts if not is_injected(t)]
        events: list[Event] = []
        if injected:
            self._close()
            events.append(self._step("system", at, "\n".join(injected), message_id=message_id,
                                     agent_role="meta"))
        if typed or images or not injected:
            text = "\n".join(typed)
            match = next((p for p in self.pending_events if same_prompt(p[0], text)), None)
            if match is not None:
                self.pending_events.remove(match)
                events.append(MetadataRecorded(at=at, record_type="user_message:duplicate",
                                               data={"of": "event_msg:user_message"}))
                if images and not match[2]:  # the event only named them (local_images)
                    events.append(StepExtended(at=at, step_index=match[1], images=images))
            else:
                events.extend(self._user_step(text, images, at))
                self.pending_items.append(text)
        return events + extra

    def _opaque(self, value: Any, step: int | None, at: str | None) -> MetadataRecorded | None:
        """Encrypted content, never decoded: a blob and a small pointer to it."""
        if not isinstance(value, str) or not value:
            return None
        data = value.encode("utf-8", "backslashreplace")
        blob = self.ctx.blob(data, "application/octet-stream")
        info: dict[str, Any] = {"blob": blob.hash, "size": len(data)}
        if step is not None:
            info["step_index"] = step
        return MetadataRecorded(at=at, record_type="encrypted_reasoning", data=info)

    def _reasoning(self, item: dict[str, Any], at: str | None) -> list[Event]:
        texts = [p.get("text") for p in _l(item.get("summary"))
                 if isinstance(p, dict) and isinstance(p.get("text"), str)]
        texts += [p.get("text") for p in _l(item.get("content"))
                  if isinstance(p, dict) and isinstance(p.get("text"), str)]
        reasoning = "\n\n".join(t for t in texts if t) or None
        event, index = self._agent(at, reasoning=reasoning)
        opaque = self._opaque(item.get("encrypted_content"), index, at)
        return [event] if opaque is None else [event, opaque]

    def _tool_call(self, item: dict[str, Any], at: str | None, line: LineRef) -> list[Event]:
        kind = _kind(item.get("type"))
        call_id = _s(item.get("call_id")) or _s(item.get("id")) or f"{kind}@{line.number}"
        name = _s(item.get("name")) or {"local_shell_call": "local_shell",
                                        "tool_search_call": "tool_search"}.get(kind, kind)
        namespace = _s(item.get("namespace"))
        if namespace and not name.startswith(namespace):
            # "mcp__node_repl__" + "js" is the usual MCP name; other namespaces get a dot
            name = namespace + name if namespace[-1] in "_.:/" else f"{namespace}.{name}"
        if kind == "custom_tool_call":
            raw = item.get("input")
            if name == "apply_patch" and isinstance(raw, str):
                value: dict[str, Any] = {"patch": raw}
            else:
                value = decode_arguments(raw)
                if "raw" in value and len(value) == 1:
                    value = {"input": value["raw"]}
        elif kind == "local_shell_call":
            value = _d(item.get("action"))
        else:
            value = decode_arguments(item.get("arguments"))
        event, _ = self._agent(at, tool_calls=[self._call(call_id, name, value)])
        return [event]

    def _web_search_call(self, item: dict[str, Any], at: str | None,
                         line: LineRef) -> list[Event]:
        action = _d(item.get("action"))
        query = _s(action.get("query")) or ""
        match = next((e for e in self.pending_search_ends
                      if e.get("query") == query or _d(e.get("action")) == action), None)
        if match is not None:
            self.pending_search_ends.remove(match)
        call_id = _s(item.get("id")) or (_s(match.get("call_id")) if match else None) \
            or f"web_search@{line.number}"
        value = dict(action) if action else {}
        event, _ = self._agent(at, tool_calls=[self._call(call_id, "web_search", value)])
        events: list[Event] = [event]
        if match is not None:
            events += self._search_result(call_id, match, at)
        else:
            self.search_calls.append((call_id, query))
        return events

    def _search_result(self, call_id: str, end: dict[str, Any], at: str | None) -> list[Event]:
        results = _l(end.get("results"))
        content = "\n".join(
            " ".join(str(r.get(k)) for k in ("title", "url", "snippet") if r.get(k))
            for r in results if isinstance(r, dict))
        detail = {k: end[k] for k in ("status", "query") if end.get(k)}
        if results:
            detail["results"] = len(results)
        detail["event"] = "web_search_end"
        return self._result(call_id, at, content=content, detail=detail,
                            is_error=end.get("status") == "failed", source="web_search_end")

    def _image_generation(self, item: dict[str, Any], at: str | None,
                          line: LineRef) -> list[Event]:
        call_id = _s(item.get("id")) or _s(item.get("call_id")) or f"image_generation@{line.number}"
        value = {"revised_prompt": item["revised_prompt"]} \
            if isinstance(item.get("revised_prompt"), str) else {}
        event, _ = self._agent(at, tool_calls=[self._call(call_id, "image_generation", value)])
        events: list[Event] = [event]
        result = item.get("result")
        status = _s(item.get("status"))
        if status or result:
            detail: dict[str, Any] = {"status": status} if status else {}
            if isinstance(result, str) and result:
                try:
                    data = base64.b64decode(result, validate=True)
                    blob = self.ctx.blob(data, "image/png")
                except (binascii.Error, ValueError):
                    blob = self.ctx.blob(result.encode("utf-8", "backslashreplace"),
                                         "text/plain; charset=utf-8")
                detail["image"] = {"blob": blob.hash, "size": blob.size,
                                   "media_type": blob.media_type}
            events += self._result(call_id, at, detail=detail, is_error=status == "failed",
                                   source="image_generation_call")
        return events

    def _output(self, item: dict[str, Any], at: str | None) -> list[Event]:
        self._close()
        call_id = _s(item.get("call_id")) or _s(item.get("id"))
        output = item.get("output")
        detail: dict[str, Any] = {}
        is_error = False
        images: list[BlobRef] = []
        if item.get("type") == "tool_search_output":
            content = json_bytes(storable(item.get("tools"))).decode("utf-8", "replace") \
                if item.get("tools") is not None else ""
            detail = {k: item[k] for k in ("status", "execution") if item.get(k)}
        elif isinstance(output, str):
            content, detail = unwrap_output(output)
        elif isinstance(output, list | dict):
            parts = output if isinstance(output, list) else [output]
            texts, images, _ = self._parts(parts)
            if not texts and isinstance(output, dict):
                inner = output.get("content")
                content = inner if isinstance(inner, str) else \
                    json_bytes(storable(output)).decode("utf-8", "replace")
                if output.get("success") is False:
                    is_error = True
            else:
                content = "\n".join(texts)
        else:
            content = "" if output is None else str(output)
        code = as_int(detail.get("exit_code"))
        if code is not None and code != 0:
            is_error = True
        if images:
            detail["images"] = [{"blob": b.hash, "size": b.size, "media_type": b.media_type}
                                for b in images]
        return self._result(call_id, at, content=content, is_error=is_error, detail=detail,
                            source=str(item.get("type")))

    def _inter_agent(self, item: dict[str, Any], at: str | None) -> list[Event]:
        self._close()
        texts, images, extra = self._parts(item.get("content"), at)
        step = self._step("system", at, "\n".join(texts), images=images,
                          message_id=_s(item.get("id")),
                          agent_role=(_s(item.get("author")) or "agent")[:200])
        data = {k: item[k] for k in ("author", "recipient") if _s(item.get(k))}
        events: list[Event] = [step, *extra]
        if data:
            data["step_index"] = step.step_index
            events.append(MetadataRecorded(at=at, record_type="inter_agent_message",
                                           data=storable(data)))
        return events

    # -- event_msg -------------------------------------------------------------------------

    def _event_msg(self, msg: dict[str, Any], at: str | None, line: LineRef) -> list[Event]:
        kind = _kind(msg.get("type"))
        name = f"event_msg:{kind}"[:100]
        if kind == "user_message":
            return self._user_message(msg, at)
        if kind in DUPLICATE_EVENTS:
            data: dict[str, Any] = {}
            if kind == "item_completed":
                item_type = _d(msg.get("item")).get("type")
                if isinstance(item_type, str):
                    data["item_type"] = item_type[:100]
            return [MetadataRecorded(at=at, record_type=name, data=data)]
        if kind == "token_count":
            return self._token_count(msg, at)
        if kind in ("task_started", "turn_started"):
            self._close()
            self.pending_items.clear()
            self.pending_events.clear()
        if kind == "web_search_end":
            return self._web_search_end(msg, at)
        call_id = _s(msg.get("call_id")) or _s(msg.get("callId"))
        if call_id and kind.endswith(("_end", "_response")) and call_id in self.call_steps:
            return self._end_event(kind, call_id, msg, at)
        if call_id and kind in ("exec_command_end", "patch_apply_end", "mcp_tool_call_end"):
            return self._end_event(kind, call_id, msg, at)  # unknown call: an orphan
        events: list[Event] = []
        if kind == "thread_name_updated" and _s(msg.get("thread_name")):
            events.append(SessionInfo(at=at, title=clean(msg["thread_name"])))
        data = {k: v for k, v in msg.items() if k != "type"}
        if kind == "task_complete" and isinstance(data.get("last_agent_message"), str):
            data["last_agent_message"] = {"chars": len(data["last_agent_message"])}
        events.append(MetadataRecorded(at=at, record_type=name, data=capped(data, self.ctx)))
        return events

    def _user_message(self, msg: dict[str, Any], at: str | None) -> list[Event]:
        text = msg.get("message") if isinstance(msg.get("message"), str) else ""
        match = next((p for p in self.pending_items if same_prompt(p, text)), None)
        if match is not None:
            self.pending_items.remove(match)
            return [MetadataRecorded(at=at, record_type="user_message:duplicate",
                                     data={"of": "response_item:message"})]
        images = [b for b in (data_url_blob(u, self.ctx) for u in _l(msg.get("images")))
                  if b is not None]
        events = self._user_step(text, images, at)
        self.pending_events.append((text, self.next_step - 1, bool(images)))
        local = [p for p in _l(msg.get("local_images")) if isinstance(p, str)]
        if local or msg.get("kind"):
            data: dict[str, Any] = {"step_index": events[0].step_index}  # type: ignore[attr-defined]
            if local:
                data["local_images"] = local
            if msg.get("kind"):
                data["kind"] = msg["kind"]
            events.append(MetadataRecorded(at=at, record_type="user_message",
                                           data=capped(data, self.ctx)))
        return events

    def _token_count(self, msg: dict[str, Any], at: str | None) -> list[Event]:
        info = msg.get("info")
        totals = _d(info).get("total_token_usage") if isinstance(info, dict) else None
        if not isinstance(totals, dict) or totals == self.last_totals:
            data: dict[str, Any] = {"info": None} if not isinstance(info, dict) else {}
            if totals is not None and totals == self.last_totals:
                data["repeated"] = True
            return [MetadataRecorded(at=at, record_type="event_msg:token_count", data=data)]
        self.last_totals = totals
        events: list[Event] = [UsageTotalsRecorded(at=at, usage=usage_of(totals))]
        last = _d(info).get("last_token_usage")
        target = self.agent_step if self.agent_step is not None else self.last_agent_step
        if isinstance(last, dict) and target is not None:
            add = usage_of(last)
            prev = self.step_usage.get(target)
            total = add if prev is None else TokenUsage(
                input_tokens=min(prev.input_tokens + add.input_tokens, COUNT_MAX),
                output_tokens=min(prev.output_tokens + add.output_tokens, COUNT_MAX),
                cache_read_tokens=min(prev.cache_read_tokens + add.cache_read_tokens, COUNT_MAX),
                cache_write_tokens=min(prev.cache_write_tokens + add.cache_write_tokens,
                                       COUNT_MAX))
            self.step_usage[target] = total
            events.append(StepExtended(at=at, step_index=target, token_usage=total))
        return events

    def _web_search_end(self, msg: dict[str, Any], at: str | None) -> list[Event]:
        call_id = _s(msg.get("call_id"))
        query = _s(msg.get("query")) or _s(_d(msg.get("action")).get("query")) or ""
        if call_id and call_id in self.call_steps:
            self.search_calls = [c for c in self.search_calls if c[0] != call_id]
            return self._search_result(call_id, msg, at)
        earlier = next((c for c in self.search_calls if c[1] == query), None)
        if earlier is not None:
            self.search_calls.remove(earlier)
            return self._search_result(earlier[0], msg, at)
        self.pending_search_ends.append(storable(msg) | {"query": query})
        return [MetadataRecorded(at=at, record_type="event_msg:web_search_end",
                                 data={"call_id": call_id, "pending": True})]

    def _end_event(self, kind: str, call_id: str, msg: dict[str, Any],
                   at: str | None) -> list[Event]:
        detail: dict[str, Any] = {}
        is_error = False
        content = ""
        if kind == "exec_command_end":
            code = as_int(msg.get("exit_code"))
            detail = {k: msg[k] for k in ("exit_code", "status", "command", "cwd", "parsed_cmd",
                                          "source", "process_id") if msg.get(k) is not None}
            if duration_seconds(msg.get("duration")) is not None:
                detail["duration"] = duration_seconds(msg.get("duration"))
            for k in ("aggregated_output", "stdout", "stderr", "formatted_output"):
                if isinstance(msg.get(k), str) and msg[k]:
                    detail[f"{k}_chars"] = len(msg[k])
            if isinstance(msg.get("stderr"), str) and msg["stderr"]:
                detail["stderr"] = msg["stderr"]
            is_error = (code is not None and code != 0) or msg.get("status") == "failed"
        elif kind == "patch_apply_end":
            detail = {k: msg[k] for k in ("success", "status", "stdout", "stderr", "changes")
                      if msg.get(k) not in (None, "")}
            is_error = msg.get("success") is False or msg.get("status") == "failed"
        elif kind == "mcp_tool_call_end":
            result = msg.get("result")
            ok = _d(result).get("Ok") if isinstance(result, dict) else None
            if isinstance(ok, dict):
                texts = [c.get("text") for c in _l(ok.get("content"))
                         if isinstance(c, dict) and isinstance(c.get("text"), str)]
                content = "\n".join(texts)
                is_error = ok.get("isError") is True
                if ok.get("structuredContent") is not None:
                    detail["structured_content"] = ok["structuredContent"]
            elif isinstance(result, dict) and "Err" in result:
                is_error = True
                detail["error"] = result["Err"]
            detail["invocation"] = msg.get("invocation")
            if duration_seconds(msg.get("duration")) is not None:
                detail["duration"] = duration_seconds(msg.get("duration"))
        else:
            detail = {k: v for k, v in msg.items() if k not in ("type", "call_id", "callId")}
            if isinstance(detail.get("duration"), dict):
                detail["duration"] = duration_seconds(detail["duration"])
            is_error = msg.get("success") is False or msg.get("status") == "failed"
        detail["event"] = kind
        return self._result(call_id, at, content=content, is_error=is_error, detail=detail,
                            source=f"event_msg:{kind}")

    # -- compacted -------------------------------------------------------------------------

    def _compacted(self, payload: dict[str, Any], at: str | None) -> list[Event]:
        self._close()
        self.pending_items.clear()
        self.pending_events.clear()
        message = payload.get("message")
        events: list[Event] = [CompactionRecorded(
            at=at, step_index=self.next_step,
            summary=clean(message) if isinstance(message, str) and message else None)]
        history = payload.get("replacement_history")
        data: dict[str, Any] = {k: v for k, v in payload.items()
                                if k not in ("message", "replacement_history")}
        if isinstance(history, list):
            blob = self.ctx.blob(json_bytes(storable(history)), "application/json")
            data["replacement_history"] = {"items": len(history), "blob": blob.hash,
                                           "size": blob.size}
        events.append(MetadataRecorded(at=at, record_type="compacted",
                                       data=capped(data, self.ctx)))
        return events

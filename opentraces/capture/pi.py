"""Pi coding agent sessions (``~/.pi/agent/sessions/--<cwd>--/<time>_<uuid>.jsonl``).

Line 1 is the header ``{"type": "session", "id", "timestamp", "cwd", ...}``. Format v1 (every
genuine file seen) is linear; v2/v3 give every entry an ``id`` and a ``parentId`` (a tree in one
file). The mapping, record by record (contract: ``opentraces.capture.base``):

- ``session`` header: ``SessionInfo(cwd, model=modelId)`` and metadata (format ``version``,
  ``provider``, ``thinkingLevel``, ``branchedFrom`` and the session id in its file name).
- ``message`` entries, by ``message.role``:
    - ``user``: a user step (text blocks joined; image blocks become blobs). No
      ``SkillInvoked`` is derived from the text: pi runs its built-in commands without writing a
      message and expands prompt templates before saving, so a saved prompt starting with
      ``/name`` is a command pi did NOT run (the genuine files hold ``/mode``, ``/them``,
      ``/the``: half-typed ``/model``/``/theme``, each answered by an aborted empty response).
      Such a prompt gets ``MetadataRecorded(record_type="slash_text", data={step_index,
      command})`` instead.
    - ``assistant``: ONE ``StepRecorded(role="agent")``, since pi writes a whole response on one
      line: text blocks -> ``content``, thinking blocks -> ``reasoning_content``, ``toolCall``
      blocks -> ``ToolCall(id, name, arguments)`` (when ``arguments`` is missing, an aborted
      call's ``partialJson`` is decoded or kept as ``{"raw": ...}``), ``usage`` ->
      ``token_usage`` (input, output, cacheRead, cacheWrite), ``usage.cost.total`` ->
      ``cost_usd``, ``model``, ``responseId`` -> ``message_id``. Thinking signatures are opaque:
      each is a blob referenced by ``MetadataRecorded(record_type="thinking_signature")``. A
      ``stopReason`` other than ``stop``/``toolUse`` (``aborted``, ``error``, ``length``) adds
      ``MetadataRecorded(record_type="assistant_stop")`` with the error message.
    - ``toolResult``: ``ToolResultRecorded`` on the step holding ``toolCallId`` (text through
      ``ctx.text``; image blocks become blobs listed in ``detail["images"]``; ``details``
      capped into ``detail``; ``isError``). A result whose call is unknown is
      ``MetadataRecorded(record_type="tool_result_orphan")`` (as for Claude Code); a call
      without a result is left for the traces projection.
    - ``bashExecution`` (a ``!`` command the user typed): a ``user`` step whose content is
      ``!<command>`` holding ``ToolCall(tool_name="bash")`` with a generated id
      (``bash-execution:<entry id or ordinal>``), and its ``ToolResultRecorded`` (output,
      ``is_error`` when the exit code is non-zero or the run was cancelled).
    - other roles (``custom``, ``branchSummary``, ``compactionSummary``): metadata.
- ``model_change``: ``SessionInfo(model)`` and metadata with the provider.
- ``compaction``: ``CompactionRecorded(summary, pre_tokens=tokensBefore, trigger "hook" when
  fromHook)`` at ``step_index`` = the index the next step will get (the boundary), plus metadata
  (``firstKeptEntryIndex``/``firstKeptEntryId``, ``details``).
- ``session_info`` (``name``) gives ``SessionInfo(title)``; a ``label`` with no target gives the
  title too. ``thinking_level_change``, ``branch_summary``, ``custom``, ``custom_message``,
  ``label`` and unknown types are metadata.
- Tree files: steps carry ``source_uuid`` (entry id) and ``source_parent_uuid`` (parentId);
  ``parent_step`` is the step of the nearest ancestor entry that is a step.

Two JSON records run together on one line (a real pi writer artifact) are split by
``lines.decode`` before they get here; each is fed on its own. Every record yields at least one
event. A record's shape never raises: fields are type-checked, and should an unexpected shape
still raise (``SHAPE_ERRORS``), the parser's state is rolled back (no step index skipped) and the
record becomes ``MetadataRecorded(record_type="adapter_error")``; blob-store failures propagate.
Values the store cannot encode (huge integers, very deep nesting) become text (``storable``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from opentraces.capture.base import Context, LineRef, SessionRef, clean, non_object
from opentraces.capture.values import (
    SHAPE_ERRORS,
    capped,
    count,
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
    StepRecorded,
    TokenUsage,
    ToolCall,
    ToolResultRecorded,
)

AGENT = "pi"

#: A ``detail`` or metadata dict whose JSON is longer than this is shortened; the whole is a blob.

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_SLASH = re.compile(r"^/([A-Za-z][\w:.\-]*)(?=\s|$)")
_NORMAL_STOPS = ("stop", "toolUse", None)  # a tuple: stopReason may be any JSON value










def _num(value: Any) -> float | None:
    """A finite number as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _at(record: dict[str, Any]) -> str | None:
    ts = record.get("timestamp")
    return ts if isinstance(ts, str) and ts[:1].isdigit() else None




def image_blob(block: dict[str, Any], ctx: Context) -> BlobRef | None:
    """A pi image block ``{"type": "image", "data": <base64>, "mimeType"}`` as a blob."""
    data = block.get("data")
    if not isinstance(data, str) or not data:
        return None
    media = _s(block.get("mimeType")) or "application/octet-stream"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return ctx.blob(data.encode("utf-8", "backslashreplace"), "text/plain; charset=utf-8")
    return ctx.blob(raw, media)


def slash_command(text: str) -> str | None:
    m = _SLASH.match(text.lstrip())
    return m.group(1) if m else None


def _blob_info(blob: BlobRef) -> dict[str, Any]:
    return {"blob": blob.hash, "size": blob.size, "media_type": blob.media_type}


class PiAdapter:
    agent: ClassVar[str] = AGENT

    def default_roots(self, home: Path) -> list[Path]:
        return [home / ".pi" / "agent" / "sessions"]

    def discover(self, root: Path) -> Iterator[Path]:
        if root.is_file():
            yield root
            return
        yield from sorted(p for p in root.rglob("*.jsonl") if p.is_file())

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        if not isinstance(first_record, dict) or first_record.get("type") != "session":
            return None
        session_id = _s(first_record.get("id"))
        if session_id is None:
            return None
        extra: dict[str, Any] = {}
        if _s(first_record.get("cwd")):
            extra["cwd"] = first_record["cwd"]
        if first_record.get("version") is not None:
            extra["format_version"] = first_record["version"]
        return SessionRef(agent=AGENT, session_id=session_id, path=path, extra=extra)

    def parser(self, ref: SessionRef, ctx: Context) -> PiParser:
        return PiParser(ref, ctx)


class PiParser:
    def __init__(self, ref: SessionRef, ctx: Context) -> None:
        self.ref = ref
        self.ctx = ctx
        self.next_step = 0
        self.call_steps: dict[str, int] = {}
        self.entry_steps: dict[str, int | None] = {}  # entry id -> nearest step at or above it
        self.bash_runs = 0
        self.model: str | None = None

    def feed(self, record: Any, line: LineRef) -> list[Event]:
        if not isinstance(record, dict):
            return [non_object(record)]
        at = _at(record)
        saved = (self.next_step, self.bash_runs, self.model)
        try:
            events = self._dispatch(record, at)
        except SHAPE_ERRORS as e:  # an odd record must never stop the file
            # no half-made step: indexes stay dense, calls and parents stay real
            self.next_step, self.bash_runs, self.model = saved
            self.call_steps = {k: v for k, v in self.call_steps.items() if v < self.next_step}
            self.entry_steps = {k: v for k, v in self.entry_steps.items()
                                if v is None or v < self.next_step}
            events = [MetadataRecorded(at=at, record_type="adapter_error",
                                       data={"error": f"{type(e).__name__}: {e}"[:500],
                                             "type": str(record.get("type"))[:100]})]
        entry = _s(record.get("id"))
        if entry is not None and record.get("type") != "session" and entry not in self.entry_steps:
            self.entry_steps[entry] = self._parent_step(record)
        if not events:
            events = [MetadataRecorded(at=at, record_type=str(record.get("type"))[:100])]
        return events

    # -- helpers ---------------------------------------------------------------------------

    def _parent_step(self, record: dict[str, Any]) -> int | None:
        parent = _s(record.get("parentId"))
        return self.entry_steps.get(parent) if parent else None

    def _step(self, record: dict[str, Any], role: str, at: str | None, content: str = "",
              **fields: Any) -> StepRecorded:
        index = self.next_step
        self.next_step += 1
        inline, blob, _ = self.ctx.text(content)
        entry = _s(record.get("id"))
        parent_step = self._parent_step(record) if entry else None
        if entry is not None:
            self.entry_steps[entry] = index
        return StepRecorded(at=at, step_index=index, role=role, content=inline,
                            content_blob=blob, source_uuid=entry,
                            source_parent_uuid=_s(record.get("parentId")),
                            parent_step=parent_step, **fields)

    def _meta(self, record: dict[str, Any], at: str | None, name: str,
              drop: tuple[str, ...] = ("type",)) -> MetadataRecorded:
        data = {k: v for k, v in record.items() if k not in drop}
        return MetadataRecorded(at=at, record_type=name[:100], data=capped(data, self.ctx))

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, record: dict[str, Any], at: str | None) -> list[Event]:
        kind = _kind(record.get("type"))
        if kind == "session":
            return self._header(record, at)
        if kind == "message":
            message = record.get("message")
            if not isinstance(message, dict):
                return [self._meta(record, at, "message:invalid")]
            role = _kind(message.get("role"))
            if role == "user":
                return self._user(record, message, at)
            if role == "assistant":
                return self._assistant(record, message, at)
            if role == "toolResult":
                return self._tool_result(record, message, at)
            if role == "bashExecution":
                return self._bash(record, message, at)
            return [MetadataRecorded(at=at, record_type=f"message:{role}"[:100],
                                     data=capped({k: v for k, v in message.items()
                                                  if k != "role"}
                                                 | {"id": record.get("id"),
                                                    "parentId": record.get("parentId")},
                                                 self.ctx))]
        if kind == "model_change":
            model = _s(record.get("modelId"))
            events: list[Event] = []
            if model:
                self.model = model
                events.append(SessionInfo(at=at, model=clean(model)))
            events.append(self._meta(record, at, "model_change"))
            return events
        if kind == "compaction":
            return self._compaction(record, at)
        if kind == "session_info" and _s(record.get("name")):
            return [SessionInfo(at=at, title=clean(record["name"])),
                    self._meta(record, at, "session_info")]
        if kind == "label" and _s(record.get("label")) and not record.get("targetId"):
            return [SessionInfo(at=at, title=clean(record["label"])),
                    self._meta(record, at, "label")]
        return [self._meta(record, at, kind or "unknown")]

    def _header(self, record: dict[str, Any], at: str | None) -> list[Event]:
        model = _s(record.get("modelId"))
        self.model = model or self.model
        info = SessionInfo(at=at, cwd=_s(record.get("cwd")), model=model)
        data = {k: record[k] for k in ("version", "provider", "thinkingLevel", "branchedFrom",
                                       "parentSession") if record.get(k) is not None}
        branched = _s(record.get("branchedFrom")) or _s(record.get("parentSession"))
        if branched:
            ids = _UUID.findall(branched.rsplit("/", 1)[-1])
            if ids:
                data["branched_from_session_id"] = ids[-1]
        return [info, MetadataRecorded(at=at, record_type="session",
                                       data=capped(data, self.ctx))]

    def _blocks(self, content: Any) -> tuple[list[str], list[BlobRef]]:
        if isinstance(content, str):
            return [content], []
        texts: list[str] = []
        images: list[BlobRef] = []
        for block in _l(content):
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict):
                if block.get("type") == "image":
                    blob = image_blob(block, self.ctx)
                    if blob is not None:
                        images.append(blob)
                elif isinstance(block.get("text"), str):
                    texts.append(block["text"])
        return texts, images

    def _user(self, record: dict[str, Any], message: dict[str, Any],
              at: str | None) -> list[Event]:
        texts, images = self._blocks(message.get("content"))
        text = "\n".join(texts)
        step = self._step(record, "user", at, text, images=images)
        events: list[Event] = [step]
        name = slash_command(text)
        if name:
            events.append(MetadataRecorded(at=at, record_type="slash_text",
                                           data={"step_index": step.step_index,
                                                 "command": clean(name)}))
        return events

    def _assistant(self, record: dict[str, Any], message: dict[str, Any],
                   at: str | None) -> list[Event]:
        texts: list[str] = []
        thoughts: list[str] = []
        signatures: list[str] = []
        calls: list[ToolCall] = []
        images: list[BlobRef] = []
        for block in _l(message.get("content")):
            if not isinstance(block, dict):
                if isinstance(block, str):
                    texts.append(block)
                continue
            btype = _kind(block.get("type"))
            if btype == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif btype == "thinking":
                if isinstance(block.get("thinking"), str) and block["thinking"]:
                    thoughts.append(block["thinking"])
                if _s(block.get("thinkingSignature")):
                    signatures.append(block["thinkingSignature"])
            elif btype == "toolCall":
                calls.append(self._tool_call(block, record, len(calls)))
            elif btype == "image":
                blob = image_blob(block, self.ctx)
                if blob is not None:
                    images.append(blob)
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        u = _d(message.get("usage"))
        token_usage = TokenUsage(input_tokens=count(u.get("input")),
                                 output_tokens=count(u.get("output")),
                                 cache_read_tokens=count(u.get("cacheRead")),
                                 cache_write_tokens=count(u.get("cacheWrite"))) if u else None
        cost = _num(_d(u.get("cost")).get("total"))
        model = _s(message.get("model")) or self.model
        step = self._step(record, "agent", at, "\n".join(texts),
                          reasoning_content="\n\n".join(thoughts) or None, tool_calls=calls,
                          token_usage=token_usage, cost_usd=cost, model=clean(model),
                          message_id=clean(_s(message.get("responseId"))), images=images)
        for call in calls:
            self.call_steps[call.tool_call_id] = step.step_index
        events: list[Event] = [step]
        for sig in signatures:
            raw = sig.encode("utf-8", "backslashreplace")
            blob = self.ctx.blob(raw, "application/octet-stream")
            events.append(MetadataRecorded(at=at, record_type="thinking_signature",
                                           data={"blob": blob.hash, "size": len(raw),
                                                 "step_index": step.step_index}))
        stop = message.get("stopReason")
        if stop not in _NORMAL_STOPS or message.get("errorMessage"):
            data: dict[str, Any] = {"step_index": step.step_index, "stop_reason": stop}
            if message.get("errorMessage"):
                data["error_message"] = message["errorMessage"]
            events.append(MetadataRecorded(at=at, record_type="assistant_stop",
                                           data=capped(data, self.ctx)))
        return events

    def _tool_call(self, block: dict[str, Any], record: dict[str, Any], n: int) -> ToolCall:
        args = block.get("arguments")
        if not isinstance(args, dict):
            partial = block.get("partialJson")
            if args is None and isinstance(partial, str):
                try:
                    decoded = json.loads(partial)
                except (ValueError, RecursionError):
                    decoded = {"raw": partial}
                args = decoded if isinstance(decoded, dict) else {"value": decoded}
            else:
                args = {} if args is None else {"value": args}
        call_id = _s(block.get("id")) or f"{_s(record.get('id')) or _at(record)}:{n}"
        value, blob = tool_input(args, self.ctx)
        return ToolCall(tool_call_id=clean(call_id), tool_name=clean(_s(block.get("name"))
                                                                     or "unknown"),
                        input=value, input_blob=blob)

    def _result(self, call_id: str | None, at: str | None, content: str, is_error: bool,
                detail: dict[str, Any]) -> list[Event]:
        inline, blob, chars = self.ctx.text(content)
        detail = capped(detail, self.ctx) if detail else {}
        step = self.call_steps.get(call_id) if call_id else None
        if step is None:
            data: dict[str, Any] = {"call_id": call_id, "content": inline,
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

    def _tool_result(self, record: dict[str, Any], message: dict[str, Any],
                     at: str | None) -> list[Event]:
        texts, images = self._blocks(message.get("content"))
        detail: dict[str, Any] = {}
        if message.get("details") is not None:
            detail["details"] = message["details"]
        if _s(message.get("toolName")):
            detail["tool_name"] = message["toolName"]
        if images:
            detail["images"] = [_blob_info(b) for b in images]
        return self._result(_s(message.get("toolCallId")), at, "\n".join(texts),
                            message.get("isError") is True, detail)

    def _bash(self, record: dict[str, Any], message: dict[str, Any],
              at: str | None) -> list[Event]:
        self.bash_runs += 1
        command = message.get("command") if isinstance(message.get("command"), str) else ""
        call_id = f"bash-execution:{_s(record.get('id')) or self.bash_runs}"
        call = ToolCall(tool_call_id=call_id, tool_name="bash",
                        input=clean({"command": command}))
        step = self._step(record, "user", at, f"!{command}", tool_calls=[call])
        self.call_steps[call_id] = step.step_index
        code = message.get("exitCode")
        detail = {k: message[k] for k in ("exitCode", "cancelled", "truncated",
                                          "fullOutputPath", "excludeFromContext")
                  if message.get(k) is not None}
        is_error = (isinstance(code, int) and not isinstance(code, bool) and code != 0) \
            or message.get("cancelled") is True
        output = message.get("output") if isinstance(message.get("output"), str) else ""
        return [step, *self._result(call_id, at, output, is_error, detail)]

    def _compaction(self, record: dict[str, Any], at: str | None) -> list[Event]:
        before = record.get("tokensBefore")
        summary = record.get("summary")
        event = CompactionRecorded(
            at=at, step_index=self.next_step,
            boundary_uuid=clean(_s(record.get("id"))),
            logical_parent_uuid=clean(_s(record.get("parentId"))),
            trigger="hook" if record.get("fromHook") is True else None,
            pre_tokens=count(before) if isinstance(before, int) and not isinstance(before, bool)
            else None,
            summary=clean(summary) if isinstance(summary, str) and summary else None)
        return [event, self._meta(record, at, "compaction",
                                  drop=("type", "summary", "tokensBefore"))]

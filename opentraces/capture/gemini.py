"""Gemini CLI sessions (``~/.gemini/tmp/<projectHash>/chats/``).

Which files are captured, and which are not:

- CAPTURED: chat documents ``session-*.json``, as Gemini CLI writes them: ONE JSON document
  ``{sessionId, projectHash, startTime, lastUpdated, [kind, summary,] messages: [...]}``,
  indented over many lines (or on one line: the layout does not matter) and rewritten in place
  on every message. This adapter is a ``base.DocumentAdapter`` (``document_glob = "*.json"``):
  the importer reads such a file whole, ``split`` gives the header (the document minus
  ``messages``) and the messages, and the importer checkpoints them by message (growth appends
  only new messages; the last message revised in place is fed again and extends its step; any
  other change is a new generation; a half-written document is one rejection, its session
  found by ``identify_partial`` in the header before ``"messages"``). ``discover`` yields every
  ``session-*.json``; an explicit folder import also takes other ``*.json`` files that
  ``identify`` accepts (renamed copies, fixtures) or ``refusal`` explains.
- CAPTURED: the JSONL session files (``*.jsonl``; the newer layout), read by line: line 1 is a
  header ``{"sessionId", "projectHash", "startTime", "lastUpdated", "kind"}``, then one message
  per line, interleaved with ``{"$set": {...}}`` lines that patch the header.
- REFUSED, with the reason reported under ``skipped`` (``refusal``): ``logs.json`` (a JSON array
  of the user prompts only, no responses) and documents without ``sessionId`` and
  ``projectHash`` (the older ``{"history": [...]}`` shape of the catalogue's
  ``schema_drift.json``): there is no session to file them under. ``discover`` does not list
  ``logs.json``.
- NOT CAPTURED: header changes after a generation's first read (``lastUpdated``, a ``summary``
  added late): they stay in the raw bytes the importer keeps, not in events. Gemini CLI records
  no working folder (only its hash), so a project-limited import does not take its sessions.

The mapping, record by record (contract: ``opentraces.capture.base``):

- header (JSONL line 1, or a document minus its ``messages``):
  ``MetadataRecorded(record_type="session")`` with its fields; ``summary`` (when present)
  gives ``SessionInfo(title)``. There is no working folder in the format (only its hash).
- ``{"$set": {...}}``: ``MetadataRecorded(record_type="session_update")``; ``summary`` gives
  ``SessionInfo(title)``. Any other ``{"$<op>": ...}`` record: metadata ``$<op>``.
- messages, by ``type``:
    - ``user``: a user step; ``content`` is a string or a list of parts (``text`` parts are
      joined; ``inlineData`` parts become image blobs).
    - ``gemini`` (and ``model``, whose text is in ``parts``): ONE agent step: ``content`` ->
      content, ``thoughts[{subject, description}]`` -> ``reasoning_content`` (``subject``
      then ``description``, thoughts separated by a blank line), ``model``, ``id`` ->
      ``message_id``, ``toolCalls`` -> ``ToolCall(id, name, args)``. ``tokens`` ->
      ``token_usage``: Gemini's ``input`` is the prompt count and INCLUDES ``cached`` (seen in
      the corpus: ``total = input + output + thoughts + tool`` and ``cached <= input``), so
      ``input_tokens = input - cached + tool`` (tool-use prompt tokens are input),
      ``cache_read_tokens = cached``, ``output_tokens = output + thoughts`` (thinking is output,
      as in the Anthropic convention). The first model seen, and each change, also gives
      ``SessionInfo(model)``.
    - Each tool call carries its own result (``result[{functionResponse: {id, name,
      response}}]``, ``status``, ``resultDisplay``): a ``ToolResultRecorded`` on the same step,
      text through ``ctx.text`` (``response.output``, else ``response.error``, else the
      response as JSON; text parts are joined; ``inlineData`` parts become blobs listed in
      ``detail["images"]``). ``is_error`` when ``status`` is ``error``/``cancelled`` or the
      response holds an ``error``. ``detail`` keeps status, name, displayName, description and
      resultDisplay (capped). A call with no result, no resultDisplay and a non-final status
      gets no result (left for the traces projection).
    - ``info``, ``error``, ``warning``: a system step with the text (``type`` is kept in
      ``call_type``).
    - other types: metadata ``message:<type>``.
- A message whose ``id`` was seen before (a re-written message in an appended log, or the last
  message of a document revised in place: Gemini CLI adds thoughts, token counts, tool calls
  and their results to the message it last wrote) does not make a second step: new tool calls,
  text that extends the earlier text, thoughts that extend the earlier ones and changed token
  counts go in a ``StepExtended`` of its step (its usage replaces the step's), results of calls
  not answered yet follow; anything else is ``MetadataRecorded(record_type="message_repeat")``.
  (A whole document whose first record still holds ``messages``, as a one-line document in a
  ``.jsonl`` file would, is expanded message by message.)

Every record yields at least one event. Should an unexpected shape raise (``SHAPE_ERRORS``), the
parser's state is rolled back (no step index skipped) and the record becomes
``MetadataRecorded(record_type="adapter_error")``; blob-store failures propagate.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from opentraces.capture.base import Context, LineRef, SessionRef, clean, non_object
from opentraces.capture.values import SHAPE_ERRORS, capped, count, storable, tool_input
from opentraces.capture.values import as_dict as _d
from opentraces.capture.values import as_list as _l
from opentraces.capture.values import nonempty_str as _s
from opentraces.events import (
    BlobRef,
    Event,
    MetadataRecorded,
    SessionInfo,
    StepExtended,
    StepRecorded,
    TokenUsage,
    ToolCall,
    ToolResultRecorded,
)

AGENT = "gemini-cli"

_USER = ("user",)
_AGENT = ("gemini", "model")
_SYSTEM = ("info", "error", "warning")
_FINAL = ("success", "error", "cancelled")
_HEADER_KEYS = ("sessionId", "projectHash", "startTime", "lastUpdated", "kind", "summary")
#: A header id as the start of a half-written document shows it (before ``"messages"``).
_HEADER_ID = {key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*("(?:[^"\\]|\\.)*")')
              for key in ("sessionId", "projectHash")}


def _at(record: dict[str, Any], key: str = "timestamp") -> str | None:
    ts = record.get(key)
    return ts if isinstance(ts, str) and ts[:1].isdigit() else None


def is_header(record: Any) -> bool:
    """A Gemini session header (or whole chat document): no ``type``, string ids."""
    return (isinstance(record, dict) and "type" not in record
            and _s(record.get("sessionId")) is not None
            and _s(record.get("projectHash")) is not None)


def _blob(part: dict[str, Any], ctx: Context) -> BlobRef | None:
    """An ``inlineData`` part ``{"mimeType", "data": <base64>}`` as a blob."""
    inline = _d(part.get("inlineData"))
    data = inline.get("data")
    if not isinstance(data, str) or not data:
        return None
    media = _s(inline.get("mimeType")) or "application/octet-stream"
    try:
        return ctx.blob(base64.b64decode(data, validate=True), media)
    except (binascii.Error, ValueError):
        return ctx.blob(data.encode("utf-8", "backslashreplace"), "text/plain; charset=utf-8")


def _blob_info(blob: BlobRef) -> dict[str, Any]:
    return {"blob": blob.hash, "size": blob.size, "media_type": blob.media_type}


def _prompt_log(document: Any) -> bool:
    """``logs.json``: a list of ``{sessionId, messageId, type, message, timestamp}``."""
    return (isinstance(document, list) and bool(document)
            and all(isinstance(e, dict) and "sessionId" in e and "message" in e
                    for e in document))


class GeminiAdapter:
    agent: ClassVar[str] = AGENT
    #: Chat documents, read whole by the importer (``base.DocumentAdapter``).
    document_glob: ClassVar[str] = "*.json"

    def default_roots(self, home: Path) -> list[Path]:
        return [home / ".gemini" / "tmp"]

    def discover(self, root: Path) -> Iterator[Path]:
        if root.is_file():
            yield root
            return
        files = [p for p in root.rglob("*.jsonl") if p.is_file()]
        files += [p for p in root.rglob("session-*.json") if p.is_file()]
        yield from sorted(files)

    def split(self, document: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        header = {k: v for k, v in document.items() if k != "messages"}
        return header, _l(document.get("messages"))

    def item_key(self, item: Any) -> str | None:
        return _s(item.get("id")) if isinstance(item, dict) else None

    def refusal(self, path: Path, document: Any) -> str | None:
        if _prompt_log(document):
            return ("Gemini CLI prompt log (logs.json): the user's prompts only, no responses; "
                    "the session itself is in chats/session-*.json")
        if (isinstance(document, dict) and isinstance(document.get("history"), list)
                and not is_header(document)):
            return ('older Gemini chat shape ({"history": [...]}) without sessionId and '
                    "projectHash: no session to file it under")
        return None

    def identify_partial(self, path: Path, data: bytes) -> SessionRef | None:
        cut = data.find(b'"messages"')
        head = data[:cut] if cut >= 0 else data
        ids: dict[str, Any] = {}
        for key, pattern in _HEADER_ID.items():
            found = pattern.search(head)
            if found is None:
                return None
            try:
                ids[key] = json.loads(found.group(1))
            except ValueError:
                return None
        return self.identify(path, ids)

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        if not is_header(first_record):
            return None
        extra: dict[str, Any] = {"project_hash": first_record["projectHash"]}
        if _s(first_record.get("kind")):
            extra["kind"] = first_record["kind"]
        if isinstance(first_record.get("messages"), list):
            extra["document"] = True
        return SessionRef(agent=AGENT, session_id=first_record["sessionId"], path=path,
                          extra=extra)

    def parser(self, ref: SessionRef, ctx: Context) -> GeminiParser:
        return GeminiParser(ref, ctx)


@dataclass
class _Seen:
    """What a message id already produced, for a message written again."""

    step: int
    content: str
    calls: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    reasoning: str = ""
    usage: TokenUsage | None = None


class GeminiParser:
    def __init__(self, ref: SessionRef, ctx: Context) -> None:
        self.ref = ref
        self.ctx = ctx
        self.next_step = 0
        self.model: str | None = None
        self.messages: dict[str, _Seen] = {}
        self.records = 0

    def feed(self, record: Any, line: LineRef) -> list[Event]:
        self.records += 1
        if not isinstance(record, dict):
            return [non_object(record)]
        if self.records == 1 and is_header(record):
            events = self._guarded(self._header, record)
            for message in _l(record.get("messages")):
                events += self._guarded(self._message, message)
            return events
        return self._guarded(self._record, record)

    def _guarded(self, handle: Any, record: Any) -> list[Event]:
        saved = (self.next_step, self.model)
        seen = {k: replace(v, calls=set(v.calls), answered=set(v.answered))
                for k, v in self.messages.items()}
        try:
            events: list[Event] = handle(record)
        except SHAPE_ERRORS as e:  # an odd record must never stop the file
            self.next_step, self.model = saved
            self.messages = seen
            kind = record.get("type") if isinstance(record, dict) else None
            events = [MetadataRecorded(
                at=_at(record) if isinstance(record, dict) else None,
                record_type="adapter_error",
                data={"error": f"{type(e).__name__}: {e}"[:500], "type": str(kind)[:100]})]
        return events

    # -- records ---------------------------------------------------------------------------

    def _record(self, record: dict[str, Any]) -> list[Event]:
        if "type" in record:
            return self._message(record)
        ops = [k for k in record if isinstance(k, str) and k.startswith("$")]
        if len(ops) == 1 and len(record) == 1:
            op = ops[0]
            if op == "$set" and isinstance(record[op], dict):
                patch = record[op]
                events: list[Event] = []
                if _s(patch.get("summary")):
                    events.append(SessionInfo(at=_at(patch, "lastUpdated"),
                                              title=clean(patch["summary"])))
                events.append(MetadataRecorded(at=_at(patch, "lastUpdated"),
                                               record_type="session_update",
                                               data=capped(patch, self.ctx)))
                return events
            return [MetadataRecorded(record_type=clean(op[:100]),
                                     data=capped({"value": record[op]}, self.ctx))]
        return [MetadataRecorded(record_type="unknown", data=capped(record, self.ctx))]

    def _header(self, record: dict[str, Any]) -> list[Event]:
        at = _at(record, "startTime")
        data = {k: v for k, v in record.items() if k != "messages"}
        if isinstance(record.get("messages"), list):
            data["message_count"] = len(record["messages"])
        events: list[Event] = []
        if _s(record.get("summary")):
            events.append(SessionInfo(at=at, title=clean(record["summary"])))
        events.append(MetadataRecorded(at=at, record_type="session", data=capped(data, self.ctx)))
        return events

    def _message(self, message: Any) -> list[Event]:
        if not isinstance(message, dict):
            return [MetadataRecorded(record_type="message:invalid",
                                     data={"json_type": type(message).__name__})]
        at = _at(message)
        kind = message.get("type")
        kind = kind if isinstance(kind, str) else ""
        mid = _s(message.get("id"))
        if mid is not None and mid in self.messages:
            return self._repeat(message, self.messages[mid], at)
        if kind in _USER:
            texts, images = self._parts(message.get("content"))
            step = self._step("user", at, "\n".join(texts), mid, images=images)
            self._remember(mid, step, [])
            return [step]
        if kind in _AGENT:
            return self._agent(message, at, mid)
        if kind in _SYSTEM:
            texts, images = self._parts(message.get("content"))
            step = self._step("system", at, "\n".join(texts), mid, images=images,
                              call_type=kind)
            self._remember(mid, step, [])
            return [step]
        data = {k: v for k, v in message.items() if k != "type"}
        return [MetadataRecorded(at=at, record_type=f"message:{kind or 'unknown'}"[:100],
                                 data=capped(data, self.ctx))]

    # -- helpers ---------------------------------------------------------------------------

    def _step(self, role: str, at: str | None, content: str, mid: str | None,
              **fields: Any) -> StepRecorded:
        index = self.next_step
        self.next_step += 1
        inline, blob, _ = self.ctx.text(content)
        return StepRecorded(at=at, step_index=index, role=role, content=inline,
                            content_blob=blob, source_uuid=clean(mid), **fields)

    def _remember(self, mid: str | None, step: StepRecorded, calls: list[ToolCall],
                  content: str | None = None) -> None:
        if mid is not None:
            self.messages[mid] = _Seen(step.step_index,
                                       step.content if content is None else content,
                                       {c.tool_call_id for c in calls})

    def _parts(self, content: Any) -> tuple[list[str], list[BlobRef]]:
        if isinstance(content, str):
            return [content], []
        texts: list[str] = []
        images: list[BlobRef] = []
        for part in _l(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif "inlineData" in part:
                    blob = _blob(part, self.ctx)
                    if blob is not None:
                        images.append(blob)
        return texts, images

    def _agent_text(self, message: dict[str, Any]) -> tuple[str, list[BlobRef]]:
        texts, images = self._parts(message.get("content"))
        more, more_images = self._parts(message.get("parts"))
        return "\n".join(t for t in texts + more if t), images + more_images

    def _thoughts(self, message: dict[str, Any]) -> str:
        thoughts = []
        for thought in _l(message.get("thoughts")):
            if isinstance(thought, str):
                thoughts.append(thought)
                continue
            thought = _d(thought)
            bits = [b for b in (_s(thought.get("subject")), _s(thought.get("description"))) if b]
            if bits:
                thoughts.append("\n".join(bits))
        return clean("\n\n".join(thoughts))

    def _agent(self, message: dict[str, Any], at: str | None, mid: str | None) -> list[Event]:
        text, images = self._agent_text(message)
        thoughts = self._thoughts(message)
        calls, pending = self._calls(message, set())
        model = _s(message.get("model"))
        usage = self._usage(message.get("tokens"))
        events: list[Event] = []
        if model and model != self.model:
            self.model = model
            events.append(SessionInfo(at=at, model=clean(model)))
        step = self._step("agent", at, text, mid, message_id=clean(mid),
                          reasoning_content=thoughts or None, tool_calls=calls,
                          token_usage=usage, model=clean(model or self.model), images=images)
        self._remember(mid, step, calls, text)
        if mid is not None:
            self.messages[mid].reasoning, self.messages[mid].usage = thoughts, usage
        events.append(step)
        events += self._results(pending, step.step_index, mid)
        return events

    def _usage(self, tokens: Any) -> TokenUsage | None:
        if not isinstance(tokens, dict):
            return None
        cached = count(tokens.get("cached"))
        return TokenUsage(
            input_tokens=max(count(tokens.get("input")) - cached, 0) + count(tokens.get("tool")),
            output_tokens=count(tokens.get("output")) + count(tokens.get("thoughts")),
            cache_read_tokens=cached)

    def _calls(self, message: dict[str, Any], known: set[str]
               ) -> tuple[list[ToolCall], list[tuple[str, dict[str, Any]]]]:
        """New ToolCalls of a message, and (call id, raw call) of those to answer."""
        calls: list[ToolCall] = []
        pending: list[tuple[str, dict[str, Any]]] = []
        mid = _s(message.get("id")) or _at(message) or str(self.next_step)
        for n, raw in enumerate(_l(message.get("toolCalls"))):
            raw = _d(raw)
            call_id = _s(raw.get("id")) or f"{mid}:{n}"
            if call_id in known:
                pending.append((call_id, raw))
                continue
            known.add(call_id)
            args = raw.get("args")
            args = args if isinstance(args, dict) else ({} if args is None else {"value": args})
            value, blob = tool_input(args, self.ctx)
            calls.append(ToolCall(tool_call_id=clean(call_id),
                                  tool_name=clean(_s(raw.get("name")) or "unknown"),
                                  input=value, input_blob=blob))
            pending.append((call_id, raw))
        return calls, pending

    def _results(self, pending: list[tuple[str, dict[str, Any]]], step: int,
                 mid: str | None) -> list[Event]:
        seen = self.messages.get(mid) if mid is not None else None
        events: list[Event] = []
        for call_id, raw in pending:
            if seen is not None and call_id in seen.answered:
                continue
            event = self._result(call_id, raw, step)
            if event is not None:
                events.append(event)
                if seen is not None:
                    seen.answered.add(call_id)
        return events

    def _result(self, call_id: str, raw: dict[str, Any], step: int) -> ToolResultRecorded | None:
        result = _l(raw.get("result"))
        status = raw.get("status")
        display = raw.get("resultDisplay")
        if not result and display is None and status not in _FINAL:
            return None
        texts: list[str] = []
        images: list[BlobRef] = []
        error = False
        for part in result:
            if isinstance(part, str):
                texts.append(part)
                continue
            part = _d(part)
            response = part.get("functionResponse")
            if isinstance(response, dict):
                body = response.get("response")
                if isinstance(body, dict):
                    if isinstance(body.get("output"), str):
                        texts.append(body["output"])
                    elif isinstance(body.get("error"), str):
                        texts.append(body["error"])
                    else:
                        texts.append(json.dumps(storable(body), ensure_ascii=False))
                    error = error or body.get("error") not in (None, "")
                elif isinstance(body, str):
                    texts.append(body)
                elif body is not None:
                    texts.append(json.dumps(storable(body), ensure_ascii=False))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif "inlineData" in part:
                blob = _blob(part, self.ctx)
                if blob is not None:
                    images.append(blob)
        if not result and isinstance(display, str):
            texts.append(display)
        inline, blob, chars = self.ctx.text(clean("\n".join(texts)))
        detail = {k: raw[k] for k in ("status", "name", "displayName", "description",
                                      "resultDisplay") if raw.get(k) is not None}
        if images:
            detail["images"] = [_blob_info(b) for b in images]
        return ToolResultRecorded(at=_at(raw), step_index=step, tool_call_id=clean(call_id),
                                  content=inline, content_blob=blob, output_chars=chars,
                                  is_error=error or status in ("error", "cancelled"),
                                  detail=capped(detail, self.ctx) if detail else {})

    def _repeat(self, message: dict[str, Any], seen: _Seen, at: str | None) -> list[Event]:
        mid = _s(message.get("id"))
        text, _ = self._agent_text(message) if message.get("type") in _AGENT \
            else ("\n".join(self._parts(message.get("content"))[0]), None)
        calls, pending = self._calls(message, seen.calls)
        extra = ""
        if text != seen.content and text.startswith(seen.content):
            extra = text[len(seen.content):]
            seen.content = text
        # A response revised in place gains its thoughts and token counts after it is written.
        reasoning, usage = "", None
        if message.get("type") in _AGENT:
            thoughts = self._thoughts(message)
            if thoughts != seen.reasoning and thoughts.startswith(seen.reasoning):
                reasoning, seen.reasoning = thoughts[len(seen.reasoning):], thoughts
            usage = self._usage(message.get("tokens"))
            if usage is None or usage == seen.usage:
                usage = None
            else:
                seen.usage = usage
        events: list[Event] = []
        if extra or calls or reasoning or usage is not None:
            events.append(StepExtended(at=at, step_index=seen.step, content=clean(extra),
                                       reasoning_content=reasoning or None, tool_calls=calls,
                                       token_usage=usage))
        events += self._results(pending, seen.step, mid)
        if not events:
            events.append(MetadataRecorded(at=at, record_type="message_repeat",
                                           data=capped({"id": mid, "step_index": seen.step,
                                                        "message": message}, self.ctx)))
        return events

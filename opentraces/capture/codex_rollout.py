"""What Codex CLI rollout lines hold: the kinds of their items and readers of their values.

Helpers of :mod:`opentraces.capture.codex_parser` (and, for :func:`parent_thread`, of the
adapter) that keep no parser state. They are shared in spirit with the pi adapter and kept
local so each adapter stands alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from opentraces.capture.base import Context
from opentraces.capture.values import as_dict as _d
from opentraces.capture.values import count
from opentraces.capture.values import nonempty_str as _s
from opentraces.events import BlobRef, TokenUsage

_EXIT = re.compile(r"^Process exited with code (-?\d+)\s*$", re.M)
_ELEMENT = re.compile(r"^<([A-Za-z_][\w\- ]*)>.*</\1>$", re.S)
_SLASH = re.compile(r"^/([A-Za-z][\w:.\-]*)(?=\s|$)")
_WS = re.compile(r"\s+")

#: Items the model produced (see the ``codex_parser`` docstring).
AGENT_ITEMS = frozenset({"reasoning", "function_call", "custom_tool_call", "local_shell_call",
                         "web_search_call", "tool_search_call", "image_generation_call"})
#: Tool outputs written back into the conversation.
OUTPUT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output",
                          "tool_search_output", "local_shell_call_output"})
#: event_msg types that only repeat response_item content.
DUPLICATE_EVENTS = frozenset({"agent_message", "agent_reasoning", "agent_reasoning_raw_content",
                              "agent_reasoning_section_break", "item_completed",
                              "raw_response_item"})
#: Top-level types of the envelope layout.
ENVELOPE_TYPES = frozenset({"session_meta", "turn_context", "response_item", "event_msg",
                            "compacted"})


def record_at(record: dict[str, Any]) -> str | None:
    ts = record.get("timestamp")
    return ts if isinstance(ts, str) and ts[:1].isdigit() else None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def decode_arguments(raw: Any) -> dict[str, Any]:
    """``function_call.arguments``: a JSON string (usually), an object, or nothing."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            return {"raw": raw}
        return value if isinstance(value, dict) else {"value": value}
    return {"value": raw}


def data_url_blob(url: Any, ctx: Context) -> BlobRef | None:
    """The bytes of a ``data:<type>;base64,...`` URL as a blob (None for anything else)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    head, sep, body = url.partition(",")
    if not sep:
        return None
    media = head[5:].split(";")[0] or "application/octet-stream"
    if ";base64" in head:
        try:
            data = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return ctx.blob(url.encode("utf-8", "backslashreplace"), "text/plain")
    else:
        data = body.encode("utf-8", "backslashreplace")
    return ctx.blob(data, media)


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def same_prompt(a: str, b: str) -> bool:
    a, b = _norm(a), _norm(b)
    if a == b:
        return True
    return bool(a) and bool(b) and min(len(a), len(b)) >= 8 and (a in b or b in a)


def is_injected(text: str) -> bool:
    """Context Codex adds to the conversation rather than words the user typed."""
    t = text.strip()
    return t.startswith("# AGENTS.md instructions") or bool(_ELEMENT.match(t))


def slash_command(text: str) -> str | None:
    m = _SLASH.match(text.lstrip())
    return m.group(1) if m else None


def duration_seconds(value: Any) -> float | None:
    """Seconds from ``{"secs", "nanos"}`` (or a plain number); None if unreadable."""
    try:
        if isinstance(value, dict):
            secs, nanos = value.get("secs"), value.get("nanos")
            if isinstance(secs, int | float) and isinstance(nanos, int | float):
                return round(secs + nanos / 1e9, 6)
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    except (OverflowError, ValueError):
        return None
    return None


def parent_thread(meta: dict[str, Any]) -> str | None:
    parent = _s(meta.get("parent_thread_id"))
    if parent is None:
        spawn = _d(_d(_d(meta.get("source")).get("subagent")).get("thread_spawn"))
        parent = _s(spawn.get("parent_thread_id"))
    return parent


def usage_of(u: dict[str, Any]) -> TokenUsage:
    # OpenAI's input_tokens include the cached ones; ours count only uncached input.
    cached = count(u.get("cached_input_tokens"))
    return TokenUsage(input_tokens=max(count(u.get("input_tokens")) - cached, 0),
                      output_tokens=count(u.get("output_tokens")),
                      cache_read_tokens=cached,
                      cache_write_tokens=count(u.get("cache_write_input_tokens")))


def unwrap_output(output: str) -> tuple[str, dict[str, Any]]:
    """The text of a string output and what it says about the run (exit code...)."""
    head = output[:1000]
    if head.startswith('{"output"') or head.startswith('{"metadata"'):
        try:
            value = json.loads(output)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict) and isinstance(value.get("output"), str):
            meta = _d(value.get("metadata"))
            detail = {k: meta[k] for k in ("exit_code", "duration_seconds") if k in meta}
            return value["output"], detail
    m = _EXIT.search(head)
    if m:
        return output, {"exit_code": int(m.group(1))}
    return output, {}

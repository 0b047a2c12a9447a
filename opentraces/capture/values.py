"""Making decoded transcript values storable and small, shared by the adapters.

- :func:`storable`: strings made safe, integers outside msgpack's range and nesting deeper than
  ``KEEP_DEPTH`` turned into text, so the store can always encode the value.
- :func:`capped` / :func:`tool_input`: small values stay inline; large ones are shortened and
  the whole kept in a blob (referenced as ``{"blob": hash}``, which prune and verify find).
- :func:`count`: a token count from a loosely typed value.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

from opentraces.capture.base import INLINE_CHARS, Context, clean
from opentraces.events import BlobRef
from opentraces.text import INT_MAX, INT_MIN

#: A detail dict whose JSON is longer than this is shortened, the whole kept in a blob.
DETAIL_CHARS = 2000

def json_bytes(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return json.dumps(value, default=repr, ensure_ascii=False).encode("utf-8",
                                                                          "backslashreplace")


COUNT_MAX = 2**63 - 1
KEEP_DEPTH = 64

#: What an unexpected record shape can raise. Anything else (an OSError from the blob store, a
#: MemoryError) is not a property of the line: it propagates, so the importer stops before its
#: checkpoint instead of marking the line read with its content lost.
SHAPE_ERRORS = (TypeError, ValueError, LookupError, AttributeError, ArithmeticError,
                RecursionError, UnicodeError)


def storable(value: Any, depth: int = 0) -> Any:
    """A copy the store can encode: strings made safe, integers outside msgpack's range and
    nesting deeper than ``KEEP_DEPTH`` turned into text."""
    if isinstance(value, str):
        return clean(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if INT_MIN <= value <= INT_MAX else str(value)
    if depth >= KEEP_DEPTH:
        try:
            return json_bytes(value).decode("utf-8", "backslashreplace")
        except RecursionError:
            return f"[{type(value).__name__} nested too deeply]"
    if isinstance(value, dict):
        return {clean(str(k)): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, depth + 1) for v in value]
    return clean(str(value))


def count(value: Any) -> int:
    """A token count from a loosely typed value: non-numbers are 0, clamped to what is storable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return min(max(int(value), 0), COUNT_MAX)


def _shorten(value: Any, chars: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + "…"
    if isinstance(value, dict):
        if depth >= 4:
            return {"keys": len(value)}
        items = list(value.items())
        out = {k: _shorten(v, chars, depth + 1) for k, v in items[:30]}
        if len(items) > 30:
            out["more_keys"] = len(items) - 30
        return out
    if isinstance(value, list):
        if depth >= 4:
            return [f"{len(value)} items"]
        out_list = [_shorten(v, chars, depth + 1) for v in value[:20]]
        if len(value) > 20:
            out_list.append(f"+{len(value) - 20} more")
        return out_list
    return value


def capped(data: dict[str, Any], ctx: Context, limit: int = DETAIL_CHARS) -> dict[str, Any]:
    """``data`` made storable; if its JSON exceeds ``limit``, a shortened copy whose
    ``capped`` entry points to a blob holding the whole of it."""
    data = storable(data)
    raw = json_bytes(data)
    if len(raw) <= limit:
        return data
    blob = ctx.blob(raw, "application/json")
    short = _shorten(data, 200)
    short["capped"] = {"blob": blob.hash, "size": blob.size}
    return short


def tool_input(value: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], BlobRef | None]:
    """A tool input for ``ToolCall``: whole when small, else shortened plus a blob of the whole."""
    value = storable(value)
    raw = json_bytes(value)
    if len(raw) <= INLINE_CHARS:
        return value, None
    return _shorten(value, 1000), ctx.blob(raw, "application/json")


def nonempty_str(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def kind_of(value: Any) -> str:
    """A record's ``type`` (or ``role``) as a string; anything else is ``""``."""
    return value if isinstance(value, str) else ""


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (records come in any shape)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []

"""Make hostile text storable without losing it.

Transcripts are JSON, and JSON happily carries lone surrogates (``"\\ud800"``) that UTF-8 cannot
encode; raw files may hold invalid UTF-8. Both are *escaped* into visible text (``\\ud800``,
``\\x80``) rather than dropped or replaced, so the evidence stays readable and nothing crashes
the store. NUL characters are valid and kept as they are.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_str(value: str) -> str:
    """Return ``value`` with every lone surrogate replaced by its ``\\uXXXX`` escape."""
    if value.isascii():
        return value
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def decode_bytes(raw: bytes) -> str:
    """Decode UTF-8, escaping invalid bytes as ``\\xNN`` instead of dropping them."""
    return safe_str(raw.decode("utf-8", "backslashreplace"))


#: msgpack integers are 64-bit; JSON's are not. Larger ones are kept as their decimal text.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def safe_value(value: Any) -> Any:
    """Apply :func:`safe_str` to every string inside a JSON-like value (dict keys included),
    and turn integers msgpack cannot hold into text."""
    if isinstance(value, str):
        return safe_str(value)
    if isinstance(value, int) and not isinstance(value, bool) \
            and not INT_MIN <= value <= INT_MAX:
        return str(value)
    if isinstance(value, dict):
        return {safe_value(k): safe_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_value(v) for v in value]
    return value


def safe_struct(obj: msgspec.Struct) -> msgspec.Struct:
    """Rebuild a Struct with every string made storable (used only after an encode failure)."""
    builtins = msgspec.to_builtins(obj, builtin_types=(bytes,))
    return msgspec.convert(safe_value(builtins), type=type(obj), builtin_types=(bytes,))

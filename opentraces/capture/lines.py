"""Split transcript bytes into complete lines and decode each into JSON records.

Policy (the same for every agent):
- Only complete lines (ending in ``\\n``) are read; a trailing partial line waits.
- Blank lines are skipped. A line is decoded with msgspec, then with the stdlib (which accepts
  lone surrogate escapes that msgspec refuses); strings are made storable afterwards.
- A line holding several JSON values run together (``{...}{...}``) yields each of them.
- A line that still does not decode is a :class:`Rejected` with its raw bytes and the reason;
  it is never dropped silently and never stops the file.

Whole JSON documents (a transcript that is one indented JSON value rewritten in place, read by
the importer's document path) decode with :func:`decode_document`, under the same policy: msgspec
first, then the stdlib; what does not decode is :class:`Undecodable` with the line and byte
offset of the error (msgspec names a byte; a truncated document fails at its last line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from opentraces.capture.base import LineRef
from opentraces.text import safe_value

_DECODER = msgspec.json.Decoder()
_AT_BYTE = re.compile(r"\(byte (\d+)\)")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# JSON has no NaN or Infinity; the stdlib would accept them and the store could not keep them.
_STDLIB = json.JSONDecoder(parse_constant=_refuse_constant)


@dataclass(frozen=True)
class Rejected:
    reason: str
    raw: bytes


def complete_length(data: bytes) -> int:
    """Length of the prefix of ``data`` that ends with the last newline (0 if none)."""
    return data.rfind(b"\n") + 1


def iter_lines(data: bytes, start: int = 0) -> Iterator[tuple[LineRef, bytes]]:
    """Complete lines of ``data`` from byte ``start`` (a line start), with their positions.

    Line numbers count from the start of ``data``.
    """
    number = data.count(b"\n", 0, start)
    end = complete_length(data)
    offset = start
    while offset < end:
        nl = data.index(b"\n", offset)
        number += 1
        yield LineRef(number=number, offset=offset), data[offset:nl]
        offset = nl + 1


def decode(raw: bytes) -> list[Any] | Rejected:
    """The JSON values on one line (usually one), or why it cannot be read."""
    text = raw.rstrip(b"\r")
    if not text.strip():
        return []
    try:
        return [_DECODER.decode(text)]
    except msgspec.DecodeError:
        pass
    except RecursionError:
        return Rejected("JSON nested too deeply", raw)
    try:
        string = text.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(f"invalid UTF-8 at byte {e.start}", raw)
    values: list[Any] = []
    index = 0
    string = string.strip()
    while index < len(string):
        try:
            value, index = _STDLIB.raw_decode(string, index)
        except json.JSONDecodeError as e:
            return Rejected(f"invalid JSON at column {e.colno}: {e.msg}", raw)
        except ValueError as e:
            return Rejected(f"invalid JSON: {e}", raw)
        except RecursionError:
            return Rejected("JSON nested too deeply", raw)
        values.append(safe_value(value))
        while index < len(string) and string[index].isspace():
            index += 1
    return values


@dataclass(frozen=True)
class Undecodable:
    """Why a whole document does not decode, and where: 1-based line, byte offset of its start
    and the bytes of that line."""

    reason: str
    line: int
    offset: int
    raw: bytes


def decode_document(data: bytes) -> Any:
    """The one JSON value ``data`` holds, or :class:`Undecodable`."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as e:
        error = str(e)
    except RecursionError:
        return _undecodable("JSON nested too deeply", data, 0)
    try:
        return safe_value(_STDLIB.decode(data.decode("utf-8")))
    except (ValueError, RecursionError):
        pass  # msgspec's reason and position are the ones reported
    at = _AT_BYTE.search(error)
    # A truncated document fails at its end: report the last line that holds something.
    position = int(at.group(1)) if at else len(data.rstrip())
    return _undecodable(f"invalid JSON document: {error}", data,
                        min(position, max(len(data) - 1, 0)))


def _undecodable(reason: str, data: bytes, position: int) -> Undecodable:
    start = data.rfind(b"\n", 0, position) + 1
    end = data.find(b"\n", start)
    return Undecodable(reason, data.count(b"\n", 0, start) + 1, start,
                       data[start:end if end >= 0 else len(data)])

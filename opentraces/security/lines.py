"""``security sanitize`` input: JSON lines of ``{"text": …}``, ``{"row": {…}}`` or
``{"record": {…}}``, each sanitized on its own.

A bad line (not UTF-8, not JSON, not one of the three shapes, a lone surrogate, longer than
:data:`MAX_LINE`) gets an error that names its line number, and the lines after it are still
read: one bad line never costs the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from opentraces.security import Sanitized, Tool, record_only, sanitize

#: Longest line read (bytes); a longer one is skipped, in chunks, and reported.
MAX_LINE = 32 * 1024 * 1024
_CHUNK = 1024 * 1024
KINDS = ("text", "row", "record")


class LineError(msgspec.Struct, frozen=True):
    code: str
    message: str


class LineResult(msgspec.Struct, frozen=True):
    line: int
    result: Sanitized | None = None
    error: LineError | None = None


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; bytes None for a line longer than MAX_LINE."""
    number = 0
    while True:
        data = stream.readline(MAX_LINE + 1)
        if not data:
            return
        number += 1
        if len(data) > MAX_LINE and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):
                data = stream.readline(_CHUNK)
            yield number, None
            continue
        yield number, data.rstrip(b"\r\n")


def sanitize_stream(stream: IO[bytes], tools: list[Tool]) -> Iterator[LineResult]:
    for number, data in read_lines(stream):
        if data is None:
            yield LineResult(number, error=LineError(
                "line_too_large", f"line {number}: longer than {MAX_LINE} bytes; skipped"))
            continue
        if not data.strip():
            continue
        try:
            kind, value = _parse(number, data)
        except _BadLine as e:
            yield LineResult(number, error=LineError(e.code, str(e)))
            continue
        if kind == "row" and (wrong := record_only(tools)):
            yield LineResult(number, error=LineError("wrong_scope", (
                f"line {number}: {', '.join(wrong)} run on whole records, not on rows")))
            continue
        yield LineResult(number, sanitize(value, tools, kind=kind))


class _BadLine(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parse(number: int, data: bytes) -> tuple[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine("invalid_utf8", f"line {number}: not UTF-8 at byte {e.start}") from e
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise _BadLine("invalid_json", f"line {number}: not JSON ({e})") from e
    if not isinstance(obj, dict) or len(obj) != 1 or next(iter(obj)) not in KINDS:
        raise _BadLine("invalid_shape", f"line {number}: expected one of "
                       '{"text": ...}, {"row": {...}}, {"record": {...}}')
    kind, value = next(iter(obj.items()))
    if (kind == "text") != isinstance(value, str) or (kind != "text"
                                                      and not isinstance(value, dict)):
        raise _BadLine("invalid_shape", f"line {number}: {kind!r} must hold "
                       + ("a string" if kind == "text" else "an object"))
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise _BadLine("invalid_text", f"line {number}: a lone surrogate "
                       f"(\\u{ord(e.object[e.start]):04x}) is not text") from e
    return kind, value

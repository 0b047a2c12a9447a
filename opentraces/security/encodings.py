"""Decoded forms of a string, so a secret that an encoding hides is found where it sits.

Each view is the decoded text plus a function that maps a span of it back to the span of the
original string it came from. Views are made only when the string shows the encoding:

- JSON escapes (``\\"``, ``\\n``, ``\\\\``, ``\\uXXXX``): JSON inside a JSON string, a tool
  output that printed JSON; a PEM block folded onto one line with ``\\n``.
- percent-encoding (``%2F``, ``%3D``): URLs and query strings.
- base64 runs of 24+ characters that decode to text: ``echo … | base64``, docker ``auths``,
  Kubernetes secrets. A span found inside maps to the whole run.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_right
from collections.abc import Callable

Span = Callable[[int, int], tuple[int, int]]

_JSON_ESCAPE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})')
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: decoded base64 must be this share printable to be shown as text
_PRINTABLE = 0.9


def decoded_views(text: str) -> list[tuple[str, Span]]:
    views: list[tuple[str, Span]] = []
    if "\\" in text and _JSON_ESCAPE.search(text):
        views.append(_mapped(text, _JSON_ESCAPE, _unescape))
    if "%" in text and _PERCENT.search(text):
        views.append(_mapped(text, re.compile(r"(?:%[0-9a-fA-F]{2})+"), _unpercent))
    views += _base64_views(text)
    return views


def _unescape(token: str) -> str:
    if token[1] == "u":
        return chr(int(token[2:], 16))
    return _SIMPLE[token[1]]


def _unpercent(token: str) -> str:
    raw = bytes(int(token[i + 1:i + 3], 16) for i in range(0, len(token), 3))
    return raw.decode("utf-8", "replace")


def _mapped(text: str, pattern: re.Pattern[str], decode: Callable[[str], str]
            ) -> tuple[str, Span]:
    """``text`` with each match of ``pattern`` decoded, and the span map back. Offsets are
    kept per piece (a run of plain text or one decoded token), not per character, so a
    10 MB string costs a list of its escapes, not of its characters."""
    parts: list[str] = []
    starts: list[int] = []  # decoded offset where each piece starts
    pieces: list[tuple[int, int, bool]] = []  # (original start, original length, decoded?)
    pos = decoded_len = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            starts.append(decoded_len)
            pieces.append((pos, m.start() - pos, False))
            parts.append(text[pos:m.start()])
            decoded_len += m.start() - pos
        decoded = decode(m.group())
        starts.append(decoded_len)
        pieces.append((m.start(), m.end() - m.start(), True))
        parts.append(decoded)
        decoded_len += len(decoded)
        pos = m.end()
    if pos < len(text):
        starts.append(decoded_len)
        pieces.append((pos, len(text) - pos, False))
        parts.append(text[pos:])
        decoded_len += len(text) - pos

    def at(offset: int, end: bool) -> int:
        i = bisect_right(starts, offset) - 1
        origin, length, token = pieces[i]
        if token:
            return origin + length if end else origin
        return origin + offset - starts[i] + end

    def to_original(start: int, end: int) -> tuple[int, int]:
        if start >= decoded_len:
            return len(text), len(text)
        return at(start, False), at(max(start, min(end, decoded_len) - 1), True)
    return "".join(parts), to_original


def _base64_views(text: str) -> list[tuple[str, Span]]:
    views: list[tuple[str, Span]] = []
    for m in _BASE64_RUN.finditer(text):
        run = m.group()
        # plain words and paths are runs too; real base64 mixes cases and digits
        if run.isalpha() or run.isdigit() or run.islower() or run.isupper():
            continue
        decoded = _b64(run)
        if decoded is None:
            continue
        start, end = m.start(), m.end()
        views.append((decoded, lambda _s, _e, a=start, b=end: (a, b)))
    return views


def _b64(run: str) -> str | None:
    padded = run + "=" * (-len(run) % 4)
    try:
        raw = (base64.urlsafe_b64decode(padded) if "-" in run or "_" in run
               else base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < 8:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in decoded)
    return decoded if printable >= _PRINTABLE * len(decoded) else None

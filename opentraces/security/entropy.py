"""``entropy``: opaque high-entropy values where a key is expected.

Only values in a key-like context count (after ``secret``, ``token``, ``auth``, ``password``,
``signature``, ``credential`` or ``key`` and an ``=``/``:``), because random-looking strings
are everywhere in agent work: digests, UUIDs, git SHAs, lockfile integrity strings, base64
images. Those are allowed by shape; the ``regex`` tool handles tokens with known prefixes.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from opentraces.security.base import Match, Rule, Tool

_CONTEXT = re.compile(
    r"(?i)(?:secret|token|auth|credential|passw(?:or)?d|signature|[_-]key|apikey|\bkey)"
    r"[\w.-]{0,24}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
    r"([A-Za-z0-9+/_\-]{20,256}={0,2})")
_TRIGGERS = ("secret", "token", "auth", "credential", "pass", "signature", "key", "KEY",
             "Key", "SECRET", "TOKEN", "AUTH", "PASS", "Secret", "Token", "Auth", "Pass")
_HEX = re.compile(r"[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_WORDY = re.compile(r"[A-Za-z]+(?:[_-][A-Za-z]+)*|[a-z]+(?:[A-Z][a-z]+)+")
#: bits per character a random value of the alphabet reaches easily at these lengths
BASE64_BITS = 4.0


def entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


class EntropyTool(Tool):
    name = "entropy"
    scope = "row"
    default_enabled = True
    description = ("High-entropy values after key-like words (secret, token, auth, password, "
                   "key); digests, UUIDs, SHAs and integrity strings are left alone.")

    def rules(self) -> list[Rule]:
        return [Rule("entropy.base64", "high_entropy",
                     "A random-looking value of 20+ characters assigned to a key-like name")]

    def scan(self, path: str, text: str) -> list[Match]:
        if not any(t in text for t in _TRIGGERS):
            return []
        found = []
        for m in _CONTEXT.finditer(text):
            value = m.group(1)
            if self._allowed(text, m.start(1), value):
                continue
            found.append(Match(m.start(1), m.end(1), "entropy.base64", "high_entropy",
                               "[REDACTED:high_entropy]"))
        return found

    @staticmethod
    def _allowed(text: str, start: int, value: str) -> bool:
        before = text[max(0, start - 12):start].lower()
        return bool(
            _HEX.fullmatch(value)  # digests and SHAs
            or _UUID.search(value)
            or _WORDY.fullmatch(value)  # identifiers in code: api_key = get_api_key
            or "integrity" in before or "sha" in before or "base64," in before
            or value.startswith(("sha512-", "sha384-", "sha256-"))
            or not any(c.isdigit() for c in value)
            or entropy(value) < BASE64_BITS)

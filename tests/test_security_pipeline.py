"""The pipeline under every tool: decoded views, merged spans, paths, keyed placeholders."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from urllib.parse import quote

from opentraces.security import Context, Match, Tool, context_for, placeholder, sanitize
from opentraces.security.encodings import decoded_views


class Word(Tool):
    """Finds one word: the smallest real tool, to watch the pipeline alone."""

    name = "word"

    def __init__(self, word: str, replacement: str | None = "[X]") -> None:
        super().__init__()
        self.word, self.replacement = word, replacement

    def scan(self, path: str, text: str) -> list[Match]:
        found, start = [], text.find(self.word)
        while start >= 0:
            found.append(Match(start, start + len(self.word), "word.1", "word",
                               self.replacement))
            start = text.find(self.word, start + 1)
        return found


SECRET = "Zq9sEcReTvAlUe"


def test_findings_point_into_the_original_string_and_every_string_is_walked() -> None:
    record = {"a": [f"x {SECRET} y", {"b": "clean"}], f"key-{SECRET}": "v"}
    result = sanitize(record, [Word(SECRET)])
    assert result.output == {"a": ["x [X] y", {"b": "clean"}], "key-[X]": "v"}
    assert [(f.path, f.span, f.action) for f in result.findings] == [
        ("a[0]", (2, 2 + len(SECRET)), "redacted"), (f"key-{SECRET}#key", (4, 18), "redacted")]
    assert record["a"][0] == f"x {SECRET} y"  # the input is left as it was
    assert sanitize("plain", [Word(SECRET)]).output == "plain"


def test_encoded_secrets_are_found_where_they_sit() -> None:
    doc = json.dumps({"cfg": f'token="{SECRET}"\nnext'})  # JSON inside a string
    b64 = base64.b64encode(f"password={SECRET} more text".encode()).decode()
    encoded = "".join(f"%{b:02X}" for b in SECRET.encode()) + quote("/é")
    for text in (doc, f"https://x/?q={encoded}", f"echo {b64} | d"):
        out = sanitize(text, [Word(SECRET)]).output
        assert SECRET not in out and encoded not in out and b64 not in out, text
    assert sanitize(f"echo {b64} | d", [Word(SECRET)]).output == "echo [REDACTED:word] | d"


def test_overlapping_spans_merge_and_flags_never_edit() -> None:
    text = f"aa {SECRET} bb"
    longer = Word(f"{SECRET} b", "[LONG]")
    out = sanitize(text, [Word(SECRET), longer]).output
    assert out == "aa [LONG]b"
    flagged = sanitize(text, [Word(SECRET, None)])
    assert flagged.output == text and flagged.findings[0].action == "flagged"


def test_views_map_spans_back() -> None:
    (view, back), = decoded_views("a%2Fhome%2Falice%2Fb")
    start = view.index("alice")
    assert back(start, start + 5) == (len("a%2Fhome%2F"), len("a%2Fhome%2Falice"))
    assert decoded_views("nothing encoded here, just words and paths/like/this") == []


def test_placeholders_are_keyed_per_install(tmp_path: Path) -> None:
    one = context_for(tmp_path / "one")
    again = context_for(tmp_path / "one")
    other = context_for(tmp_path / "two")
    key = tmp_path / "one" / "security" / "install.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert placeholder(one, "user", "alice") == placeholder(again, "user", "alice")
    assert placeholder(one, "user", "alice") != placeholder(other, "user", "alice")
    assert placeholder(one, "user", "alice") != placeholder(one, "user", "bob")
    assert placeholder(Context(install_key=b"k"), "user", "alice").startswith("<user-")

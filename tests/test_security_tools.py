"""The floor's identity and address tools, entropy, classifier and capsule scope."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from opentraces.security import Context, load_tools, sanitize
from tests.conftest import CORPUS

ALICE = Context(install_key=b"k" * 32, identifiers={
    "login": "alice", "home": "/Users/alice", "hostname": "alice-mbp",
    "git_name": "Alice Liddell", "git_email": "alice@wonder.land"},
    options={"capsule_scope": {"fields": ["metadata.cwd", "steps[*].secret_note"]}})


def _out(value: object, *tools: str, context: Context = ALICE) -> object:
    return sanitize(value, load_tools(tools, context)).output


@pytest.mark.parametrize("text", [
    "/Users/alice/p/app.py", "C:\\Users\\alice\\p", "C:\\\\Users\\\\alice\\\\p",
    "C:/Users/alice/p", "/mnt/c/Users/alice/p", "file:///Users/alice/p",
    "~/.claude/projects/-Users-alice-p/x.jsonl", "alice@alice-mbp:~$ ls",
    "Author: Alice Liddell <alice@wonder.land>", "%2FUsers%2Falice%2Fp",
    json.dumps({"cwd": "/Users/alice/p"})])
def test_own_identity_is_gone_in_every_form(text: str) -> None:
    out = _out(text, "path_anonymizer", "business_logic")
    assert "alice" not in str(out).lower(), out


def test_other_homes_placeholders_and_what_is_kept() -> None:
    out = _out("/home/bob/x and /Users/carol/y and /home/runner/work and /root/z",
               "path_anonymizer")
    assert "bob" not in out and "carol" not in out
    assert "/home/runner/work" in out and "/root/z" in out
    assert _out("/home/bob/x", "path_anonymizer") == _out("/home/bob/q", "path_anonymizer"
                                                          ).replace("/q", "/x")
    other = Context(install_key=b"z" * 32)
    assert _out("/home/bob/x", "path_anonymizer") != _out("/home/bob/x", "path_anonymizer",
                                                          context=other)
    # a short login is a path segment or word, never a piece of another word
    short = Context(install_key=b"k" * 32, identifiers={"login": "al"})
    assert _out("algebra al", "path_anonymizer", context=short) == "algebra al"


def test_business_logic_keeps_public_and_example_values() -> None:
    kept = ("mail me at someone@example.com or noreply@github.com; 127.0.0.1, 8.8.8.8, "
            "version 1.2.3, https://github.com/org/repo")
    assert _out(kept, "business_logic") == kept
    out = _out("ssh 10.1.2.3 or db.corp, arn:aws:iam::123456789012:user/x, "
               "https://acme.slack.com/archives/C123/p456, bob@acme.io", "business_logic")
    for gone in ("10.1.2.3", "db.corp", "123456789012", "C123", "bob@acme.io"):
        assert gone not in out, out


def test_entropy_takes_keyed_random_values_and_leaves_digests() -> None:
    digests = (f"sha=4f2a9c0e1b7d3a5f8e6c2b9a0d1f3e5c7b9a2d4f token_id={uuid.uuid4()} "
               "integrity sha512-Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV4cXV1eA== api_key = get_api_key")
    assert _out(digests, "entropy") == digests
    assert "q8Zr2Lk9Pw3Xv7Bn5Mt1Yc4" not in _out("secret: q8Zr2Lk9Pw3Xv7Bn5Mt1Yc4", "entropy")


def test_classifier_flags_and_capsule_scope_blanks() -> None:
    record = {"metadata": {"cwd": "/work/p"},
              "steps": [{"command": "cat .env", "secret_note": "keep me out"},
                        {"text": "this is confidential"}]}
    result = sanitize(record, load_tools(["classifier", "capsule_scope"], ALICE))
    assert result.output["metadata"]["cwd"] == "" and result.output["steps"][0][
        "secret_note"] == ""
    assert result.output["steps"][0]["command"] == "cat .env"
    flagged = {(f.path, f.family) for f in result.findings if f.action == "flagged"}
    assert flagged == {("steps[0].command", "credential_file"),
                       ("steps[1].text", "confidential")}


def test_floor_tools_are_bounded_and_quiet_on_corpus_text() -> None:
    tools = load_tools(["entropy", "path_anonymizer", "business_logic"], ALICE)
    for text in ("a" * 1_000_000, "@." * 500_000, "key=" * 250_000, "/Users/" * 140_000,
                 "1." * 500_000, "arn:aws:" * 120_000):
        start = time.perf_counter()
        sanitize(text, tools)
        assert time.perf_counter() - start < 2, text[:10]
    path = CORPUS / "claude-code" / "spotter-transcripts" / "short.jsonl"
    values = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    result = sanitize(values, load_tools(["entropy"], ALICE))
    assert result.findings == []

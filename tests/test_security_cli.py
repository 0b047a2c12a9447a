"""`opentraces security …` and `opentraces bucket security` through click."""

from __future__ import annotations

import json
import random
import string
from typing import Any

from click.testing import CliRunner

from opentraces.commands.main import cli
from opentraces.config import Settings
from opentraces.security import FLOOR, SECURITY_VERSION, TOOLS


def _run(args: list[str], stdin: bytes | None = None, code: int = 0) -> Any:
    result = CliRunner().invoke(cli, args, input=stdin)
    assert result.exit_code == code, result.output
    return result


def _json(args: list[str], stdin: bytes | None = None, code: int = 0) -> dict[str, Any]:
    return json.loads(_run(["--json", *args], stdin, code).stdout)


def _token() -> str:
    rng = random.Random(5)
    return "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36))


def test_tools_list_and_info() -> None:
    body = _json(["security", "tools", "list"])
    assert body["schema_version"] == "opentraces.security.tools.v1"
    assert body["security_version"] == SECURITY_VERSION
    tools = {t["name"]: t for t in body["tools"]}
    assert list(tools) == list(TOOLS)
    for t in tools.values():
        assert set(t) >= {"name", "kind", "scope", "available", "enabled", "default_enabled",
                          "setup_command", "description"}
        assert t["kind"] in ("inline", "external", "model") and t["scope"] in ("row", "record")
    assert all(tools[n]["enabled"] and tools[n]["available"] for n in FLOOR)
    assert {n for n, t in tools.items() if t["scope"] == "row"} >= {
        "regex", "entropy", "privacy_filter", "business_logic", "path_anonymizer"}
    assert {n for n, t in tools.items() if t["scope"] == "record"} >= {
        "trufflehog", "llm_pii", "capsule_scope", "classifier"}
    assert not tools["llm_pii"]["available"] and tools["llm_pii"]["setup_command"]
    info = _json(["security", "tools", "info", "regex"])
    assert info["schema_version"] == "opentraces.security.tool.v1"
    families = {r["family"] for r in info["tool"]["rules"]}
    assert len(families) >= 30
    unknown = _json(["security", "tools", "info", "nope"], code=2)
    assert unknown["error"]["code"] == "usage_error"


def test_sanitize_text_rows_and_records_and_keeps_going_past_bad_lines() -> None:
    token = _token()
    lines = [json.dumps({"text": f"GITHUB_TOKEN={token}"}).encode(),
             b"not json",
             json.dumps({"row": {"path": "/Users/alice/project/app.py"}}).encode(),
             b"[1, 2]",
             b'{"text": "\\ud800 lone"}',
             b'{"text": "caf\xe9"}',
             b"x" * (40 * 1024 * 1024),
             json.dumps({"record": {"steps": [{"input": {"command": f"curl -H "
                                    f"'Authorization: token {token}' x"}}]}}).encode()]
    body = _json(["security", "sanitize", "--tools", "regex,path_anonymizer"],
                 b"\n".join(lines) + b"\n", code=1)
    assert body["schema_version"] == "opentraces.security.sanitize.v1"
    results = {r["line"]: r for r in body["results"]}
    assert sorted(results) == list(range(1, 9))
    assert token not in json.dumps(body)
    first = results[1]
    assert first["input_kind"] == "text" and first["output"].startswith("GITHUB_TOKEN=[REDACTED")
    (finding,) = [f for f in first["findings"] if f["tool"] == "regex"]
    assert finding["span"] == [13, 13 + len(token)] and finding["action"] == "redacted"
    assert "alice" not in results[3]["output"]["path"]
    errors = {n: results[n]["error"]["code"] for n in (2, 4, 5, 6, 7)}
    assert errors == {2: "invalid_json", 4: "invalid_shape", 5: "invalid_text",
                      6: "invalid_utf8", 7: "line_too_large"}
    assert all(f"line {n}" in results[n]["error"]["message"] for n in errors)
    assert results[8]["input_kind"] == "record" and results[8]["findings"]
    # human mode: the sanitized line on stdout, findings on stderr
    plain = _run(["security", "sanitize", "--tools", "regex"], lines[0] + b"\n")
    assert json.loads(plain.stdout)["text"].startswith("GITHUB_TOKEN=[REDACTED:")
    assert token not in plain.output and "line 1: redacted" in plain.stderr


def test_sanitize_needs_tools_or_config_and_refuses_record_tools_on_rows() -> None:
    assert _json(["security", "sanitize"], b"", code=2)["error"]["code"] == "usage_error"
    body = _json(["security", "sanitize", "--tools", "classifier"],
                 b'{"row": {"a": "b"}}\n', code=1)
    assert "records" in body["results"][0]["error"]["message"]
    unavailable = _json(["security", "sanitize", "--tools", "llm_pii"], b"", code=2)
    assert unavailable["error"]["code"] == "tool_unavailable"
    assert unavailable["next_command"]
    configured = _json(["security", "sanitize", "--use-config", "--jsonl"],
                       json.dumps({"text": f"token: {_token()}"}).encode() + b"\n")
    assert set(configured["tools_applied"]) >= set(FLOOR)


def test_bucket_security_flags(settings: Settings) -> None:
    body = _json(["bucket", "security"])
    assert body["schema_version"] == "opentraces.bucket.security.v1"
    assert body["policy"]["floor"] == list(FLOOR)
    assert body["pending"] == {"traces": 0, "reason": None}
    on = _json(["bucket", "security", "--enable", "classifier"])
    assert "classifier" in on["policy"]["enabled"]
    config = json.loads((settings.home / "config.json").read_text())
    assert config["security"]["enabled"] == ["classifier"]
    off = _json(["bucket", "security", "--disable", "classifier"])
    assert "classifier" not in off["policy"]["enabled"]
    refused = _json(["bucket", "security", "--disable", "regex"], code=2)
    assert refused["status"] == "refused"
    again = _json(["bucket", "security"])
    assert again["policy"] == off["policy"]

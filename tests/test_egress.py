"""The egress gate: fresh fake credentials planted in a real session never reach an export."""

from __future__ import annotations

import base64
import importlib
import json
import random
import string
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from opentraces import api, egress
from opentraces import events as ev
from opentraces.commands.main import cli
from opentraces.config import Settings, load_settings
from opentraces.errors import Refused
from opentraces.security import SECURITY_VERSION
from opentraces.workspace import open_workspace
from tests.conftest import CORPUS

SHORT = CORPUS / "claude-code" / "spotter-transcripts" / "short.jsonl"


def _canaries(seed: int) -> dict[str, str]:
    """Fresh fake credentials of real shapes (built here: the repo holds none)."""
    rng = random.Random(seed)

    def chars(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return {
        "github": "ghp_" + chars(36),
        "aws": "AKIA" + chars(16, string.ascii_uppercase + "234567"),  # base32, as AWS has
        "slack": f"xoxb-{chars(12, string.digits)}-{chars(12, string.digits)}-{chars(24)}",
        "openai": "sk-proj-" + chars(48),
        "db_password": chars(20),
        "stripe": "sk_live_" + chars(32),
    }


def _plant(tmp_path: Path, canaries: dict[str, str]) -> Path:
    """A copy of a real Claude Code session whose first prompt and a tool result carry the
    canaries, as a user pastes them and as a command prints them."""
    lines = SHORT.read_text(encoding="utf-8").splitlines()
    prompt = (f"deploy with GITHUB_TOKEN={canaries['github']} and "
              f"AWS_ACCESS_KEY_ID={canaries['aws']}; the db is "
              f"postgres://app:{canaries['db_password']}@db.internal:5432/prod")
    result = json.dumps({"slack": canaries["slack"], "openai_api_key": canaries["openai"]})
    done = set()
    for i, line in enumerate(lines):
        record = json.loads(line)
        content = record.get("message", {}).get("content")
        if record.get("type") == "user" and isinstance(content, str) and "prompt" not in done:
            record["message"]["content"] = f"{content}\n{prompt}"
            done.add("prompt")
        elif record.get("type") == "user" and isinstance(content, list) and "result" not in done:
            content[0]["content"] = (f"{content[0]['content']}\n{result}\nexport STRIPE_KEY="
                                     + base64.b64encode(canaries["stripe"].encode()).decode())
            done.add("result")
        lines[i] = json.dumps(record)
    assert done == {"prompt", "result"}
    path = tmp_path / "sessions" / "planted.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _import(settings: Settings, path: Path) -> str:
    api.import_sessions(settings, api.import_sources(settings, [path]))
    (row,) = api.bucket_manifest(settings).traces
    return row["trace_id"]


def _leaks(folder: Path, secrets: list[str]) -> list[str]:
    """Canaries any of whose halves appears in any file under ``folder``."""
    data = b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
    found = []
    for secret in secrets:
        half = max(8, len(secret) // 2)
        pieces = {secret[i:i + half] for i in range(0, len(secret) - half + 1)}
        if any(p.encode() in data for p in pieces):
            found.append(secret)
    return found


@pytest.mark.parametrize("path", egress.EGRESS_PATHS)
def test_every_outgoing_path_leaves_no_planted_credential(settings: Settings, tmp_path: Path,
                                                          path: str) -> None:
    canaries = _canaries(zlib.crc32(path.encode()))
    trace_id = _import(settings, _plant(tmp_path, canaries))
    module, name = path.split(":")
    send = getattr(importlib.import_module(module), name)
    assert name == "teleport_export", "a new egress path needs its own run here"
    for include_raw in (False, True):
        out = tmp_path / f"out-{include_raw}"
        send(settings, trace_id, out, include_raw=include_raw)
        assert _leaks(out, list(canaries.values())) == []
        # what was planted is still there to find: the export is not empty of the session
        assert b"mix phx.server" in b"".join(p.read_bytes() for p in out.rglob("*")
                                            if p.is_file())
    with open_workspace(settings, readonly=True) as ws:
        runs = [r.event for r in ws.log.read(egress.EGRESS_STREAM)]
    sanitized = [e for e in runs if isinstance(e, ev.SanitizationRun)]
    assert [e.item for e in sanitized] == [f"trace:{trace_id}"] * 2
    assert all(e.security_version == SECURITY_VERSION and e.redactions >= len(canaries)
               for e in sanitized)
    families = {f for e in sanitized for f in e.families}
    assert {"github", "aws-access-key", "slack", "openai", "stripe"} <= families
    recorded = b"".join(msgspec.msgpack.encode(e) for e in runs)
    assert not any(c.encode() in recorded for c in canaries.values())


def test_the_opened_bundle_is_the_sanitized_trace(settings: Settings, tmp_path: Path) -> None:
    canaries = _canaries(7)
    trace_id = _import(settings, _plant(tmp_path, canaries))
    out = tmp_path / "bundle"
    exported = api.teleport_export(settings, trace_id, out)
    assert exported.security_version == SECURITY_VERSION and exported.findings > 0
    other = load_settings(tmp_path / "other")
    api.teleport_open(other, out)
    mine, theirs = api.trace_get(settings, trace_id), api.trace_get(other, trace_id)
    assert len(theirs.steps) == len(mine.steps)
    text = json.dumps(api.to_builtins(theirs))
    assert not any(c in text for c in canaries.values())
    assert "[REDACTED:" in text and "mix phx.server doesnt seem to start" in text


def test_raw_transcripts_stay_behind_unless_asked(settings: Settings, tmp_path: Path) -> None:
    with open_workspace(settings) as ws:
        items = [egress.Outgoing("raw:a", b'{"type": "user"}\n', "raw"),
                 egress.Outgoing("text:b", "nothing to see", "text")]
        with pytest.raises(egress.EgressBlocked) as blocked:
            egress.clear(ws, "test:target", items)
        assert [(w.item, w.reason) for w in blocked.value.withheld] == [
            ("raw:a", "raw_transcript")]
        partial = egress.clear(ws, "test:target", items, partial=True)
        assert [r.item for r in partial.released] == ["text:b"]
        both = egress.clear(ws, "test:target", items, include_raw=True)
        assert [r.item for r in both.released] == ["raw:a", "text:b"]
        binary = egress.clear(ws, "test:target", [egress.Outgoing("blob:c", b"\xff\xfe", "blob")],
                              partial=True)
        assert [w.reason for w in binary.withheld] == ["binary_content"]
        stale = egress.clear(ws, "test:target", [egress.Outgoing(
            "row:d", {"x": "y"}, "row", sanitized_under="sec-0")])
        assert stale.released[0].resanitized and stale.released[0].security_version == \
            SECURITY_VERSION


def test_writers_refuse_what_did_not_come_out_of_the_gate(settings: Settings) -> None:
    with open_workspace(settings) as ws:
        (released,) = egress.clear(ws, "hub:me/data", [
            egress.Outgoing("row:1", {"text": "hello"}, "row")]).released
    egress.verify("hub:me/data", released)
    with pytest.raises(Refused):
        egress.verify("hub:someone/else", released)
    with pytest.raises(Refused):
        egress.verify("hub:me/data", msgspec.structs.replace(
            released, content={"text": "hello, changed"}))
    forged: Any = {"item": "row:1", "content": {"text": "hello"}, "seal": released.seal}
    with pytest.raises(Refused):
        egress.verify("hub:me/data", forged)


def test_an_unavailable_required_tool_refuses_with_the_envelope(settings: Settings,
                                                                tmp_path: Path) -> None:
    trace_id = _import(settings, _plant(tmp_path, _canaries(3)))
    (settings.home / "config.json").write_text(json.dumps(
        {"security": {"enabled": ["llm_pii"]}}), encoding="utf-8")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["--json", "trace", "teleport", "export", trace_id,
                                      "--output", str(out)])
    assert result.exit_code == 2, result.output
    body = json.loads(result.output)
    assert body["status"] == "refused" and body["error"]["code"] == "egress_refused"
    assert body["withheld"] and {w["reason"] for w in body["withheld"]} == {
        "required_security_tools_missing"}
    assert not out.exists() or not any(out.iterdir())

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from opentraces import __version__, api
from opentraces import events as ev
from opentraces.blobs import BlobStore
from opentraces.commands.main import cli
from opentraces.config import Settings
from tests.helpers import age_blob, delete_blob, session_events


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output + result.stderr
    return result.stdout


def run_json(*args: str, code: int = 0) -> dict:
    out = run(*args, code=code)
    return json.loads(out)  # exactly one JSON object and nothing else


def _capture(settings: Settings, n: int = 2) -> list[str]:
    ids = []
    for i in range(n):
        trace_id, events = session_events("pi", f"cli-{i}", steps=3)
        api.append(settings, ev.stream("trace", trace_id), events)
        ids.append(trace_id)
    return ids


def test_status_on_a_fresh_home(isolated_home: Path) -> None:
    text = run("status")
    assert text == (
        "opentraces empty: 0 traces, 0 projects, 0 events\n"
        f"store: {isolated_home}/bucket/events.sqlite\n"
        "bucket_manifest  fresh  0/0\n"
        "context_tree     fresh  0/0\n"
        "search_index     fresh  0/0\n"
        "traces           fresh  0/0\n"
        "trail            fresh  0/0\n"
        "  - No sessions are captured yet; the store is ready.\n")
    body = run_json("--json", "status")
    assert body["status"] == "ok" and body["schema_version"] == "opentraces.status.v1"
    assert body["store"]["event_count"] == 0 and body["verdict"] == "empty"
    assert body["next_command"] is None and body["freshness"] == "fresh"
    assert run_json("status", "--json") == body  # the flag works in either place


def test_status_counts_and_projection_fields(settings: Settings) -> None:
    _capture(settings)
    body = run_json("status", "--json")
    assert body["store"] | {"root": None, "location": None} == {
        "root": None, "location": None, "backend": "sqlite", "exists": True,
        "trace_count": 2, "project_count": 1, "event_count": 12, "head": 12}
    proj = body["projections"]["bucket_manifest"]
    assert (proj["position"], proj["head"], proj["lag"], proj["state"]) == (12, 12, 0, "fresh")
    assert re.fullmatch(r"[0-9a-f]{64}", proj["digest"])
    assert body["verdict"] == "ok"


def test_doctor_exit_codes(settings: Settings) -> None:
    body = run_json("--json", "doctor")
    assert body["doctor"]["ok"] is True and body["next_command"] is None
    assert body["cli"]["installed_version"]
    _capture(settings, 1)
    api.append(settings, "trace:extra", [ev.StepRecorded(step_index=0, role="user")],
               catch_up=False)
    body = run_json("--json", "doctor", code=3)
    assert body["status"] == "error" and body["next_command"] == "opentraces repair"
    assert any("lagging" in step for step in body["next_steps"])
    run("repair")
    assert run_json("doctor", "--json")["doctor"]["ok"] is True


def test_rebuild_and_repair_envelopes(settings: Settings) -> None:
    _capture(settings)
    body = run_json("--json", "rebuild")
    assert body["schema_version"] == "opentraces.rebuild.v1"
    entry = body["projections"]["bucket_manifest"]
    assert entry["events_applied"] == 12 and entry["position"] == 12
    assert set(entry) >= {"events_applied", "position", "digest", "seconds"}
    again = run_json("bucket", "rebuild", "bucket_manifest", "--json")
    assert again["schema_version"] == "opentraces.bucket.rebuild.v1"
    assert again["projections"]["bucket_manifest"]["digest"] == entry["digest"]
    repair = run_json("repair", "--json")
    assert repair["schema_version"] == "opentraces.bucket.repair.v1"
    assert repair["repair"] == {"blobs_checked": 0, "events_checked": 12,
                                "projections_caught_up": [], "projections_rebuilt": [],
                                "errors": []}
    assert run_json("bucket", "repair", "--json")["repair"] == repair["repair"]


def test_unknown_projection_is_exit_2_with_an_error_envelope(settings: Settings) -> None:
    body = run_json("--json", "rebuild", "nope", code=2)
    assert body["status"] == "error"
    assert body["error"]["code"] == "unknown_projection"
    assert "known: bucket_manifest" in body["error"]["message"]
    result = CliRunner().invoke(cli, ["rebuild", "nope"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: unknown projection nope; known: bucket_manifest")


def test_usage_error_in_json_mode_is_an_envelope(settings: Settings) -> None:
    body = run_json("--json", "bucket", "prune", "--min-age", "soon", code=2)
    assert body["error"]["code"] == "usage_error" and body["status"] == "error"


def test_bucket_manifest_and_status(settings: Settings) -> None:
    ids = _capture(settings)
    body = run_json("bucket", "manifest", "--json")
    assert body["schema_version"] == "opentraces.bucket.manifest.v2"
    assert [t["trace_id"] for t in body["traces"]] == sorted(ids)
    row = body["traces"][0]
    assert set(row) >= {"trace_id", "project_slug", "title", "agent_name", "agent_version",
                        "agent_model", "lifecycle", "summary", "status"}
    assert row["summary"]["step_count"] == 3 and row["summary"]["patch_count"] == 1
    assert row["status"]["scanned"] is False and row["status"]["sync"] == "local"
    status = run_json("bucket", "status", "--json")
    assert status["schema_version"] == "opentraces.bucket.status.v1"
    assert (status["trace_count"], status["safety"]) == (2, "unscanned")
    text = run("bucket", "manifest")
    assert text.count("\n") == 2 and "user message 0" in text


def test_bucket_verify_reports_a_missing_blob(settings: Settings) -> None:
    ref = api.put_blob(settings, b"raw bytes", local_only=True)
    api.append(settings, "trace:t1", [ev.SourceSegmentRead(
        path="/x.jsonl", generation=0, start_offset=0, end_offset=9, line_count=1, raw=ref)])
    body = run_json("bucket", "verify", "--json")
    assert body["ok"] is True
    assert body["verify"] == {"blobs_checked": 1, "events_checked": 1, "dangling_count": 0,
                              "full": False}
    delete_blob(settings.blobs_dir, ref.hash)
    body = run_json("bucket", "verify", "--full", "--json", code=1)
    assert body["ok"] is False and body["verify"]["dangling_count"] == 1
    assert body["errors"] == [f"blob {ref.hash} is referenced by an event but missing"]
    assert body["next_command"] == "opentraces repair"


def test_bucket_prune_dry_run_then_delete(settings: Settings) -> None:
    kept = api.put_blob(settings, b"kept")
    api.append(settings, "trace:t1", [ev.StepRecorded(step_index=0, role="user",
                                                      content_blob=kept)])
    loose = api.put_blob(settings, b"loose")
    body = run_json("bucket", "prune", "--dry-run", "--min-age", "0", "--json")
    assert body["would_delete"] == [loose.hash] and body["bytes"] > 0
    assert run_json("bucket", "prune", "--json")["deleted"] == []  # too young by default
    age_blob(settings.blobs_dir, loose.hash, 7200)
    assert run_json("bucket", "prune", "--json")["deleted"] == [loose.hash]
    assert not BlobStore(settings.blobs_dir).has(loose.hash)
    assert api.bucket_verify(settings, full=True).ok


def test_version_and_help() -> None:
    assert run("--version") == f"opentraces, version {__version__}\n"
    text = run("--help")
    for name in ("bucket", "doctor", "rebuild", "repair", "status"):
        assert f"  {name} " in text
    bucket = run("bucket", "--help")
    for name in ("manifest", "prune", "rebuild", "repair", "status", "verify"):
        assert f"  {name} " in bucket


@pytest.mark.parametrize("args", [["status"], ["bucket", "manifest"], ["doctor"]])
def test_read_commands_never_create_a_store(isolated_home: Path, args: list[str]) -> None:
    CliRunner().invoke(cli, args, catch_exceptions=False)
    assert not isolated_home.exists()

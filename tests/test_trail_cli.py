"""`opentraces trail …` and `opentraces trace teleport …` through click, on real repositories.

The commands run under the real root group (global ``--json``, error envelopes, exit codes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from opentraces import api
from opentraces.commands.main import cli
from opentraces.commands.trail import since_iso, trail
from opentraces.config import Settings
from tests.test_trail_views import ASK, Scenario, build, fake_gh, gh_calls


@pytest.fixture
def sc(settings: Settings, tmp_path: Path) -> Scenario:
    return build(settings, tmp_path)


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), prog_name="opentraces")
    assert result.exit_code == code, (result.output, result.exception)
    return result


def envelope(*args: str, code: int = 0) -> dict[str, Any]:
    body = json.loads(run("--json", *args, code=code).stdout)
    assert body["status"] == ("ok" if code == 0 else body["status"])
    return body


# ---------------------------------------------------------------------------------------------
# blame


def test_blame_commit_envelope_and_text(sc: Scenario) -> None:
    body = envelope("trail", "blame", "commit", sc.c1[:10], "--repo", str(sc.g.root))
    assert body["schema_version"] == "opentraces.trail.blame.v1"
    assert body["commit"]["sha"] == sc.c1 and body["commit"]["subject"] == "add alpha"
    assert body["coverage"] == {"attributed": 8, "total": 8, "ratio": 1.0}
    assert body["files"] == {"app.py": [[1, 8]]}
    assert [t["trace_id"] for t in body["traces"]] == [sc.a.trace_id]
    (e,) = body["evidence"]
    assert (e["patch_id"], e["step_index"], e["evidence_tier"], e["evidence_firmness"]) == (
        sc.pa, 1, "exact_hunk", "firm")
    text = run("trail", "blame", "commit", sc.c1, "--repo", str(sc.g.root)).output
    assert text.splitlines()[:2] == [f"{sc.c1[:12]} add alpha",
                                     "coverage: 8/8 added lines (100%)"]
    human = envelope("trail", "blame", "commit", sc.c2, "--repo", str(sc.g.root))
    assert human["evidence"] == [] and human["coverage"]["attributed"] == 0


def test_blame_commit_of_a_trace(sc: Scenario) -> None:
    body = envelope("trail", "blame", "commit", f"t:{sc.a.trace_id[:10]}")
    assert body["schema_version"] == "opentraces.trail.blame_trace.v1"
    assert body["trace_id"] == sc.a.trace_id
    assert [(c["sha"], c["patches"]) for c in body["commits"]] == [(sc.c1, [sc.pa])]
    missing = envelope("trail", "blame", "commit", "t:ffffffffff", code=2)
    assert missing["error"]["code"] == "trace_not_found"


def test_blame_unknown_commit_is_a_usage_error(sc: Scenario) -> None:
    body = envelope("trail", "blame", "commit", "deadbeef", "--repo", str(sc.g.root), code=2)
    assert body["error"]["code"] == "commit_not_found"


# ---------------------------------------------------------------------------------------------
# pr


def test_pr_render_text_is_the_markdown(sc: Scenario, settings: Settings) -> None:
    body = envelope("trail", "blame", "pr", "render", "--base", "main", "--repo",
                    str(sc.g.root))
    assert body["schema_version"] == "opentraces.trail.pr.v1"
    assert [c["sha"] for c in body["commits"]] == [sc.c1, sc.c2, sc.c3, sc.c4]
    assert [c["reason"] for c in body["commits"]] == [None, "uncaptured", "no_patch_matched",
                                                      "no_patch_matched"]
    assert ASK in body["markdown"]
    text = run("trail", "blame", "pr", "render", "--repo", str(sc.g.root)).output
    assert text == body["markdown"]


def test_pr_create_and_update_with_gh(sc: Scenario, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state = fake_gh(tmp_path, monkeypatch)
    root = str(sc.g.root)
    refused = envelope("trail", "blame", "pr", "update", "--repo", root, code=2)
    assert refused["status"] == "refused"
    assert refused["next_command"] == "opentraces trail blame pr create --base main"
    created = envelope("trail", "blame", "pr", "create", "--repo", root, "--title", "Alpha")
    assert created["schema_version"] == "opentraces.trail.pr_create.v1"
    assert created["action"] == "created" and created["title"] == "Alpha"
    first = envelope("trail", "blame", "pr", "update", "--repo", root)
    second = envelope("trail", "blame", "pr", "update", "--repo", root)
    assert (first["action"], second["action"]) == ("unchanged", "unchanged")
    assert [c["argv"][1] for c in gh_calls(state)].count("edit") == 0
    assert [c["argv"][1] for c in gh_calls(state)].count("create") == 1


def test_pr_create_without_gh(sc: Scenario, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    body = envelope("trail", "blame", "pr", "create", "--repo", str(sc.g.root), code=2)
    assert body["error"]["code"] == "gh_not_found"
    assert body["next_command"] == "opentraces trail blame pr render"


# ---------------------------------------------------------------------------------------------
# graph and track


def test_graph_text_and_json(sc: Scenario) -> None:
    body = envelope("trail", "graph", "--repo", str(sc.g.root), "--limit", "4")
    assert body["schema_version"] == "opentraces.trail.graph.v1"
    assert [c["sha"] for c in body["commits"]] == [sc.c4, sc.c3, sc.c2, sc.c1]
    assert body["commits"][3]["traces"] == [{"trace_id": sc.a.trace_id, "lines": 8}]
    text = run("trail", "graph", "--repo", str(sc.g.root), "--limit", "4").output
    assert text.splitlines() == [f"* {sc.c4[:12]}  header", f"* {sc.c3[:12]}  rework lib",
                                 f"* {sc.c2[:12]}  docs", f"* {sc.c1[:12]}  add alpha",
                                 f"|   {sc.a.trace_id[:12]}  8 lines"]
    everywhere = envelope("trail", "graph")
    assert [c["sha"] for c in everywhere["commits"]] == [sc.c1]
    by_trace = envelope("trail", "graph", "--trace", sc.a.trace_id[:8])
    assert by_trace["trace_id"] == sc.a.trace_id
    assert [(p["path"], p["commit"]) for p in by_trace["patches"]] == [("app.py", sc.c1)]
    assert [c["sha"] for c in by_trace["commits"]] == [sc.c1]
    text = run("trail", "graph", "--trace", sc.a.trace_id).output
    assert f"step 1  app.py  -> * {sc.c1[:12]} add alpha" in text


def test_track_single_envelope_and_batch_json_lines(sc: Scenario) -> None:
    one = envelope("trail", "track", sc.a.trace_id[:8])
    assert one["schema_version"] == "opentraces.trail.track.v1"
    assert one["trace_id"] == sc.a.trace_id and one["head"] == sc.c4
    (p,) = one["patches"]
    assert p["anchor"]["commit"] == sc.c1
    assert p["current_survival"]["survival_state"] == "alive_on_path"
    lines = run("--json", "trail", "track", "--all").stdout.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) == 1  # only a's patch is anchored
    assert parsed[0]["schema_version"] == "opentraces.trail.track.v1"
    assert parsed[0]["patches"][0]["patch_id"] == sc.pa and parsed[0]["head"] == sc.c4
    since = [json.loads(line) for line in
             run("trail", "track", "--since", "2026-05-28T00:00:00Z", "--json").stdout
             .splitlines()]
    assert [d["patches"][0]["patch_id"] for d in since] == [sc.pa]
    later = [json.loads(line) for line in
             run("trail", "track", "--since", "2030-01-01", "--json").stdout.splitlines()]
    assert len(later) == 1 and later[0]["patches"] == []  # an empty batch still answers
    run("trail", "track", "--since", "12h", "--json")
    assert envelope("trail", "track", code=2)["error"]["code"] == "usage_error"
    text = run("trail", "track", "--patch", sc.pa).output
    assert text.splitlines()[0] == f"{sc.pa[:12]}  app.py  {sc.c1[:12]}  alive_on_path 100%"


def test_since_iso() -> None:
    assert since_iso("2026-05-28") == "2026-05-28T00:00:00Z"
    assert since_iso("2026-05-28T02:00:00+02:00") == "2026-05-28T00:00:00Z"
    assert since_iso(None) is None
    with pytest.raises(click.BadParameter):
        since_iso("yesterday")


# ---------------------------------------------------------------------------------------------
# hidden verbs


def test_hidden_verbs_are_callable_but_not_listed(sc: Scenario) -> None:
    listed = run("trail", "--help").output
    for name in ("blame", "graph", "track"):
        assert f"  {name} " in listed
    for name in ("sync", "explain", "timeline", "attach", "resolve", "rebuild"):
        assert f"  {name} " not in listed
        assert trail.commands[name].hidden
        run("trail", name, "--help")


def test_sync_explain_timeline(sc: Scenario) -> None:
    synced = envelope("trail", "sync")
    assert synced["schema_version"] == "opentraces.trail.sync.v1"
    assert synced["sync"]["anchors_recorded"] == 0 and synced["sync"]["traces_scanned"] == 2
    one = envelope("trail", "sync", "--patch", sc.pa)
    assert one["track"]["patches"][0]["patch_id"] == sc.pa
    assert envelope("trail", "sync", "--patch", "0000", code=2)["error"]["code"] == (
        "trail_object_not_found")
    step = envelope("trail", "explain", "--trace", sc.a.trace_id, "--step", "1")
    assert step["schema_version"] == "opentraces.trail.explain.v1" and step["kind"] == "step"
    assert step["instruction"] == ASK and step["patches"][0]["patch_id"] == sc.pa
    line = envelope("trail", "explain", f"{sc.g.root / 'app.py'}:4")
    assert line["kind"] == "line" and line["commit"] == sc.c1
    assert [p["trace_id"] for p in line["patches"]] == [sc.a.trace_id]
    assert envelope("trail", "explain", code=2)["error"]["code"] == "usage_error"
    tl = envelope("trail", "timeline", sc.a.trace_id)
    assert tl["schema_version"] == "opentraces.trail.timeline.v1"
    assert [e["kind"] for e in tl["events"]] == ["patch", "anchor", "survival"]


def test_attach_is_idempotent(sc: Scenario, settings: Settings) -> None:
    args = ("trail", "attach", "--trace", sc.b.trace_id, "--commit", sc.c3, "--repo",
            str(sc.g.root))
    first = envelope(*args)
    assert first["schema_version"] == "opentraces.trail.attach.v1"
    assert first["attached"] == [sc.pb]
    head = api.event_count(settings)
    second = envelope(*args)
    assert second["attached"] == [] and second["already"] == [sc.pb]
    assert api.event_count(settings) == head
    blame = envelope("trail", "blame", "commit", sc.c3, "--repo", str(sc.g.root))
    assert [(e["trace_id"], e["evidence_tier"], e["evidence_firmness"])
            for e in blame["evidence"]] == [(sc.b.trace_id, "manual", "asserted")]


def test_resolve_each_kind_and_unknown(sc: Scenario) -> None:
    t = envelope("trail", "resolve", f"ot://trace/{sc.a.trace_id}")
    assert t["schema_version"] == "opentraces.trail.resolve.v1"
    assert (t["uri"], t["kind"]) == (f"ot://trace/{sc.a.trace_id}", "trace")
    trail_uri = f"ot://trace/{sc.a.trace_id}/patches/{sc.pa}/trail"
    pt = envelope("trail", "resolve", trail_uri)
    assert pt["kind"] == "patch_trail"
    anchor_id = pt["object"]["patch"]["anchor"]["anchor_id"]
    assert envelope("trail", "resolve", f"ot://patch/{sc.pa}")["kind"] == "patch"
    a = envelope("trail", "resolve", f"ot://anchor/{anchor_id}")
    assert a["kind"] == "anchor" and a["object"]["commit"] == sc.c1
    bad = envelope("trail", "resolve", "ot://commit/abc", code=2)
    assert bad["status"] == "error" and bad["error"]["code"] == "bad_uri"
    gone = envelope("trail", "resolve", "ot://anchor/0000", code=2)
    assert gone["error"]["code"] == "trail_object_not_found"


def test_rebuild_gives_the_same_digest(sc: Scenario) -> None:
    first = envelope("trail", "rebuild")
    second = envelope("trail", "rebuild")
    assert first["schema_version"] == "opentraces.trail.rebuild.v1"
    assert list(first["projections"]) == ["trail"]
    assert first["projections"]["trail"]["digest"] == second["projections"]["trail"]["digest"]


# ---------------------------------------------------------------------------------------------
# teleport


def test_teleport_export_open_between_homes(sc: Scenario, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    out = envelope("trace", "teleport", "export", sc.a.trace_id[:8], "--output", str(bundle))
    assert out["schema_version"] == "opentraces.trace.teleport_export.v1"
    assert out["trace_id"] == sc.a.trace_id and out["repo_events"] == 2
    blame_here = envelope("trail", "blame", "commit", sc.c1, "--repo", str(sc.g.root))
    record_here = envelope("trace", "get", sc.a.trace_id)["record"]
    monkeypatch.setenv("OPENTRACES_HOME", str(tmp_path / "home2"))
    opened = envelope("trace", "teleport", "open", str(bundle), "--project",
                      str(tmp_path / "blank"))
    assert opened["schema_version"] == "opentraces.trace.teleport_open.v1"
    assert opened["readme"] == str(tmp_path / "blank" / "README.md")
    assert envelope("trail", "blame", "commit", sc.c1, "--repo", str(sc.g.root)) == blame_here
    assert envelope("trace", "get", sc.a.trace_id)["record"] == record_here
    again = envelope("trace", "teleport", "open", str(bundle))
    assert again["events_written"] == 0 and again["repo_events_appended"] == 0
    (bundle / "events.msgpack").write_bytes(b"\x90")
    monkeypatch.setenv("OPENTRACES_HOME", str(tmp_path / "home3"))
    tampered = envelope("trace", "teleport", "open", str(bundle), code=2)
    assert tampered["status"] == "refused" and tampered["error"]["code"] == "refused"


# ---------------------------------------------------------------------------------------------
# start-up cost


def test_command_modules_do_not_import_dulwich() -> None:
    code = ("import sys, opentraces.commands.trail, opentraces.commands.teleport; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dulwich', 'huggingface_hub', 'whoosh')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_current_folder_is_the_default_repository(sc: Scenario,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sub = sc.g.root / "docs"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert envelope("trail", "blame", "commit", "HEAD")["commit"]["sha"] == sc.c4
    monkeypatch.chdir(sc.g.root)
    line = envelope("trail", "explain", "app.py:4")
    assert line["path"] == "app.py" and line["commit"] == sc.c1
    assert [c["sha"] for c in envelope("trail", "graph", "--repo", ".")["commits"]][:1] == [
        sc.c4]

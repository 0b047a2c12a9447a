"""Trail views on a real repository built by the test: explain, timeline, attach, resolve,
graphs, PR bodies (with a fake `gh` program on PATH) and teleport bundles between two homes."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings, load_settings
from opentraces.errors import Refused, UsageError
from opentraces.tracing import TraceNotFound
from opentraces.trail import (
    BadTrailUri,
    BundleRejected,
    GhUnavailable,
    TrailObjectNotFound,
    attach,
    blame_commit,
    blame_trace,
    commit_rail,
    explain,
    explain_line,
    pr_create,
    pr_render,
    pr_update,
    render_commit_graph,
    render_trace_graph,
    resolve,
    teleport_export,
    teleport_open,
    timeline,
    trace_graph,
    trail_sync,
    trail_track,
)
from opentraces.trail.views import map_line
from tests.gitbuild import AGENT, BASE_TIME, GitBuilder, Session, code, iso

T = BASE_TIME
ASK = ("Add an alpha function to app.py that scales the value by several factors and returns "
       "the last one")
LIB = "x = 1\n"


@dataclass
class Scenario:
    """A feature branch over main: an agent commit, a human commit nobody captured, a commit
    whose file an agent edited differently, and a human header added on top."""

    g: GitBuilder
    a: Session  # wrote app.py, committed as c1
    b: Session  # edited lib.py; c3 changed lib.py otherwise
    base: str
    c1: str
    c2: str
    c3: str
    c4: str
    pa: str  # a's patch
    pb: str  # b's patch


def with_instruction(s: Session, text: str) -> Session:
    s.events[1] = ev.StepRecorded(at=iso(s.t), step_index=0, role="user", content=text)
    return s


def only_patch(settings: Settings, s: Session) -> str:
    with api.open_workspace(settings) as ws:
        (pid,) = [r.event.patch_id for r in ws.log.read(s.stream())
                  if isinstance(r.event, ev.PatchRecorded)]
    return pid


def build(settings: Settings, tmp: Path, *, raw: bool = False) -> Scenario:
    g = GitBuilder(tmp / "proj", branch="feature")
    base = g.commit("initial", {"README.md": "hello\n", "lib.py": LIB}, t=T)
    g.repo.refs[b"refs/heads/main"] = base.encode()
    a = with_instruction(Session("claude-code", "s-alpha", g.root, T + 100), ASK)
    a.write("app.py", code("alpha"), t=T + 110)
    if raw:  # what the importer keeps of the transcript: raw bytes, local only
        ref = api.put_blob(settings, b'{"type": "user"}\n', "application/x-ndjson",
                           local_only=True)
        a.events.insert(1, ev.SourceSegmentRead(at=iso(T + 100), path="/x/s.jsonl",
                                                generation=0, start_offset=0, end_offset=17,
                                                line_count=1, raw=ref))
    b = Session("codex", "s-beta", g.root, T + 100)
    b.write("lib.py", LIB + code("beta"), t=T + 120, before=LIB)
    for s in (a, b):
        with api.open_workspace(settings) as ws:
            ws.log.write(s.records())
    c1 = g.commit("add alpha", {"app.py": code("alpha")}, t=T + 200, author=AGENT)
    c2 = g.commit("docs", {"README.md": "hello\nmore words\n"}, t=T + 300)
    c3 = g.commit("rework lib", {"lib.py": LIB + "def other():\n    return 42\n"}, t=T + 400)
    c4 = g.commit("header", {"app.py": "# header\n\n" + code("alpha")}, t=T + 500)
    trail_sync(settings)
    trail_track(settings, all=True)
    return Scenario(g, a, b, base, c1, c2, c3, c4, only_patch(settings, a),
                    only_patch(settings, b))


@pytest.fixture
def sc(settings: Settings, tmp_path: Path) -> Scenario:
    return build(settings, tmp_path)


# ---------------------------------------------------------------------------------------------
# explain, timeline


def test_explain_step_names_patch_anchor_and_instruction(settings: Settings,
                                                         sc: Scenario) -> None:
    found = explain(settings, sc.a.trace_id[:8], 1)
    assert found.trace_id == sc.a.trace_id and found.instruction == ASK
    (p,) = found.patches
    assert (p.patch_id, p.path, p.anchor.commit) == (sc.pa, "app.py", sc.c1)
    assert p.current_survival.survival_state == "alive_on_path"
    assert explain(settings, sc.a.trace_id, 0).patches == []


def test_explain_line_follows_the_line_back_to_its_commit(settings: Settings,
                                                          sc: Scenario) -> None:
    # Two header lines came later: line 4 at HEAD is line 2 of the agent's commit.
    found = explain_line(settings, sc.g.root / "app.py", 4)
    assert (found.commit, found.commit_path, found.commit_line) == (sc.c1, "app.py", 2)
    assert found.text == code("alpha").splitlines()[1] and found.reason is None
    assert [(p.trace_id, p.patch_id) for p in found.patches] == [(sc.a.trace_id, sc.pa)]
    header = explain_line(settings, sc.g.root / "app.py", 1)
    assert header.commit == sc.c4 and header.patches == [] and header.reason
    human = explain_line(settings, sc.g.root / "README.md", 2)
    assert human.commit == sc.c2 and human.patches == []
    with pytest.raises(UsageError):
        explain_line(settings, sc.g.root / "app.py", 99)


def test_map_line() -> None:
    assert map_line(["a", "b", "c"], ["x", "a", "b", "y"], 3) == 2
    assert map_line(["a", "b"], ["a", "z"], 2) is None


def test_timeline_orders_patch_anchor_survival(settings: Settings, sc: Scenario) -> None:
    events = timeline(settings, sc.a.trace_id).events
    assert [e.kind for e in events] == ["patch", "anchor", "survival"]
    assert events[1].commit == sc.c1 and events[1].evidence_tier == "exact_hunk"
    assert events[2].survival_state == "alive_on_path" and events[2].commit == sc.c1
    assert [e.position for e in events] == sorted(e.position for e in events)
    # b's patch never found a commit: only the patch.
    assert [e.kind for e in timeline(settings, sc.b.trace_id).events] == ["patch"]
    with pytest.raises(TraceNotFound):
        timeline(settings, "ffffffff")


# ---------------------------------------------------------------------------------------------
# attach


def test_attach_records_a_manual_anchor_once(settings: Settings, sc: Scenario) -> None:
    report = attach(settings, sc.b.trace_id, sc.c3[:10], sc.g.root)
    assert report.attached == [sc.pb] and report.already == [] and report.commit == sc.c3
    with api.open_workspace(settings) as ws:
        head = ws.log.head()
        anchors = [r.event for s in ws.log.stream_ids("repo") for r in ws.log.read(s)
                   if isinstance(r.event, ev.AnchorRecorded) and r.event.patch_id == sc.pb]
    (manual,) = anchors
    assert (manual.evidence_tier, manual.evidence_firmness) == ("manual", "asserted")
    again = attach(settings, sc.b.trace_id, sc.c3, sc.g.root)
    assert again.attached == [] and again.already == [sc.pb]
    with api.open_workspace(settings) as ws:
        assert ws.log.head() == head
    assert [e.trace_id for e in blame_commit(settings, sc.c3, sc.g.root).evidence] == [
        sc.b.trace_id]
    # A later sync keeps the manual anchor: its commit is reachable.
    assert trail_sync(settings).anchors_recorded == 0
    with pytest.raises(UsageError, match="changes none of the files"):
        attach(settings, sc.b.trace_id, sc.c2, sc.g.root)


# ---------------------------------------------------------------------------------------------
# resolve


def test_resolve_every_address_kind(settings: Settings, sc: Scenario) -> None:
    t = resolve(settings, f"ot://trace/{sc.a.trace_id}")
    assert t.kind == "trace" and t.object["commits"] == [sc.c1]
    assert t.object["patches"] == [sc.pa]
    trail = resolve(settings, f"ot://trace/{sc.a.trace_id}/patches/{sc.pa}/trail")
    assert trail.kind == "patch_trail" and trail.object["patch"]["patch_id"] == sc.pa
    assert [e["kind"] for e in trail.object["timeline"]] == ["patch", "anchor", "survival"]
    p = resolve(settings, f"ot://patch/{sc.pb}")
    assert p.kind == "patch" and p.object["anchor"] is None
    anchor_id = trail.object["patch"]["anchor"]["anchor_id"]
    a = resolve(settings, f"ot://anchor/{anchor_id}")
    assert a.kind == "anchor" and a.object["commit"] == sc.c1 and a.object["current"]
    assert a.object["current_survival"]["survival_state"] == "alive_on_path"
    for bad in ("ot://nothing/here", "https://example.com", "ot://trace"):
        with pytest.raises(BadTrailUri):
            resolve(settings, bad)
    with pytest.raises(TrailObjectNotFound):
        resolve(settings, "ot://patch/0000")
    with pytest.raises(TrailObjectNotFound):
        resolve(settings, f"ot://trace/{sc.b.trace_id}/patches/{sc.pa}/trail")


# ---------------------------------------------------------------------------------------------
# graphs


def test_commit_rail_and_trace_graph(settings: Settings, sc: Scenario) -> None:
    rail = commit_rail(settings, sc.g.root)
    assert [c.sha for c in rail.commits] == [sc.c4, sc.c3, sc.c2, sc.c1, sc.base]
    assert [(t.trace_id, t.lines) for t in rail.commits[3].traces] == [(sc.a.trace_id, 8)]
    text = render_commit_graph(rail)
    assert text.splitlines()[3:5] == [f"* {sc.c1[:12]}  add alpha",
                                      f"|   {sc.a.trace_id[:12]}  8 lines"]
    assert [c.sha for c in commit_rail(settings, sc.g.root, 2).commits] == [sc.c4, sc.c3]
    assert [c.sha for c in commit_rail(settings).commits] == [sc.c1]  # evidence only
    tg = trace_graph(settings, sc.a.trace_id)
    assert [(p.path, p.commit) for p in tg.patches] == [("app.py", sc.c1)]
    assert render_trace_graph(tg).splitlines()[1] == (
        f"  step 1  app.py  -> * {sc.c1[:12]} add alpha  [exact_hunk, alive_on_path]")
    assert "(no commit carries it)" in render_trace_graph(trace_graph(settings, sc.b.trace_id))


# ---------------------------------------------------------------------------------------------
# PR bodies


def test_pr_render_gives_each_commit_its_lineage_or_reason(settings: Settings,
                                                           sc: Scenario) -> None:
    body = pr_render(settings, sc.g.root, "main")
    by_sha = {c["sha"]: c for c in body["commits"]}
    assert list(by_sha) == [sc.c1, sc.c2, sc.c3, sc.c4]
    assert [t["trace_id"] for t in by_sha[sc.c1]["traces"]] == [sc.a.trace_id]
    assert by_sha[sc.c1]["coverage"] == {"attributed": 8, "total": 8, "ratio": 1.0}
    assert (by_sha[sc.c1]["reason"], by_sha[sc.c2]["reason"], by_sha[sc.c3]["reason"],
            by_sha[sc.c4]["reason"]) == (None, "uncaptured", "no_patch_matched",
                                      "no_patch_matched")
    assert body["intent"][0]["intent"] == ASK
    assert body["provenance"]["evidence_tiers"] == {"exact_hunk/firm": 1}
    assert body["provenance"]["commits_with_lineage"] == 1
    md = body["markdown"]
    for c in (sc.c1, sc.c2, sc.c3, sc.c4):
        assert f"### `{c[:12]}`" in md
    assert ASK in md and "(`no_patch_matched`)" in md and "(`uncaptured`)" in md
    assert f"claude-code session `{sc.a.trace_id[:12]}`" in md
    assert "| `app.py` | 10 | 0 |" in md
    assert pr_render(settings, sc.g.root, "main") == body  # deterministic
    assert pr_render(settings, sc.g.root, sc.c3)["commits"][0]["sha"] == sc.c4


FAKE_GH = """#!{python}
import json, os, pathlib, sys
state = pathlib.Path({state!r})
args = sys.argv[1:]
entry = {{"argv": args, "cwd": os.getcwd()}}
if "--body-file" in args:
    entry["body"] = pathlib.Path(args[args.index("--body-file") + 1]).read_text()
with (state / "calls.jsonl").open("a") as f:
    f.write(json.dumps(entry) + "\\n")
pr = state / "pr.json"
if args[:2] == ["pr", "view"]:
    if not pr.exists():
        print("no pull requests found for branch", file=sys.stderr)
        sys.exit(1)
    print(pr.read_text())
elif args[:2] == ["pr", "create"]:
    pr.write_text(json.dumps({{"number": 7, "body": entry["body"],
                              "url": "https://github.com/o/r/pull/7"}}))
    print("https://github.com/o/r/pull/7")
elif args[:2] == ["pr", "edit"]:
    data = json.loads(pr.read_text())
    data["body"] = entry["body"]
    pr.write_text(json.dumps(data))
else:
    sys.exit(2)
"""


def fake_gh(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gh` program first on PATH that records its calls and keeps one PR in a file."""
    bindir, state = tmp / "bin", tmp / "gh-state"
    bindir.mkdir()
    state.mkdir()
    gh = bindir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable, state=str(state)))
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return state


def gh_calls(state: Path) -> list[dict[str, object]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_pr_create_then_update_is_idempotent(settings: Settings, sc: Scenario, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state = fake_gh(tmp_path, monkeypatch)
    with pytest.raises(Refused):
        pr_update(settings, sc.g.root)
    created = pr_create(settings, sc.g.root, "main")
    assert created["action"] == "created" and created["url"].endswith("/pull/7")
    create = gh_calls(state)[-1]
    assert create["argv"][:6] == ["pr", "create", "--base", "main", "--title", "header"]
    assert create["body"] == created["render"]["markdown"]
    assert create["cwd"] == str(sc.g.root)
    with pytest.raises(Refused):
        pr_create(settings, sc.g.root, "main")
    calls = len(gh_calls(state))
    assert pr_update(settings, sc.g.root)["action"] == "unchanged"
    assert [c["argv"][:2] for c in gh_calls(state)[calls:]] == [["pr", "view"]]
    pr = json.loads((state / "pr.json").read_text())
    (state / "pr.json").write_text(json.dumps(pr | {"body": "old text"}))
    assert pr_update(settings, sc.g.root)["action"] == "updated"
    edit = gh_calls(state)[-1]
    assert edit["argv"][:3] == ["pr", "edit", "7"] and edit["body"] == created["render"][
        "markdown"]
    calls = len(gh_calls(state))
    assert pr_update(settings, sc.g.root)["action"] == "unchanged"
    assert all(c["argv"][:2] != ["pr", "edit"] for c in gh_calls(state)[calls:])


def test_pr_create_without_gh_is_a_clear_error(settings: Settings, sc: Scenario,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GhUnavailable, match="gh"):
        pr_create(settings, sc.g.root)


# ---------------------------------------------------------------------------------------------
# teleport


def test_teleport_carries_trace_and_evidence_to_another_home(settings: Settings,
                                                             tmp_path: Path) -> None:
    sc = build(settings, tmp_path, raw=True)
    out = tmp_path / "bundle"
    exported = teleport_export(settings, sc.a.trace_id, out)
    assert exported.trace_events == len(sc.a.events) + 1  # + its patch
    assert exported.repo_events == 2  # anchor + survival
    assert [o.reason for o in exported.omitted_blobs] == ["raw_transcript"]
    assert not list(sc.g.root.glob("**/manifest.json"))
    home2 = load_settings(tmp_path / "home2")
    opened = teleport_open(home2, out, project=tmp_path / "blank")
    assert (opened.events_written, opened.repo_events_appended) == (
        exported.trace_events, exported.repo_events)
    assert sorted(p.name for p in (tmp_path / "blank").iterdir()) == ["README.md"]
    assert api.trace_get(home2, sc.a.trace_id) == api.trace_get(settings, sc.a.trace_id)
    assert blame_commit(home2, sc.c1, sc.g.root) == blame_commit(settings, sc.c1, sc.g.root)
    assert blame_trace(home2, sc.a.trace_id) == blame_trace(settings, sc.a.trace_id)
    again = teleport_open(home2, out)
    assert (again.events_written, again.repo_events_appended) == (0, 0)
    with_raw = teleport_export(settings, sc.a.trace_id, tmp_path / "raw", include_raw=True)
    assert with_raw.omitted_blobs == [] and with_raw.blobs == exported.blobs + 1


def test_teleport_refuses_tampered_bundles_and_unsafe_folders(settings: Settings,
                                                              sc: Scenario,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    teleport_export(settings, sc.a.trace_id, out)
    blob = next((out / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes() + b"x")
    home3 = load_settings(tmp_path / "home3")
    with pytest.raises(BundleRejected):
        teleport_open(home3, out)
    assert api.event_count(home3) == 0
    with pytest.raises(Refused):
        teleport_export(settings, sc.a.trace_id, out)  # not empty
    with pytest.raises(Refused):
        teleport_export(settings, sc.a.trace_id, sc.g.root / "bundle")  # inside a repository
    assert not (sc.g.root / "bundle").exists()

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.config import Settings, StoreConfig
from opentraces.errors import UnknownProjection
from opentraces.projections.bucket_manifest import BucketManifest
from opentraces.projections.runner import Runner
from opentraces.store import EventLog
from tests.helpers import session_events


def _fill(settings: Settings, sessions: int = 3, *, catch_up: bool = True) -> list[str]:
    ids = []
    for i in range(sessions):
        trace_id, events = session_events("claude-code", f"s{i}", steps=2 + i)
        api.append(settings, ev.stream("trace", trace_id), events, catch_up=catch_up)
        ids.append(trace_id)
    return ids


def test_manifest_rows_follow_the_events(settings: Settings) -> None:
    ids = _fill(settings)
    with EventLog(settings.store) as log:
        log.append("repo:r1", [ev.AnchorRecorded(
            anchor_id="a1", patch_id=f"{ids[0]}-p0", trace_id=ids[0], repo_key="r1",
            commit="c" * 40, path="src/app.py", evidence_tier="exact",
            evidence_firmness="firm")])
        log.append("bucket:default", [
            ev.SanitizationRun(trace_id=ids[0], security_version="s1", verdict="clean"),
            ev.SanitizationRun(trace_id=ids[1], security_version="s1", verdict="findings"),
            ev.TraceExcluded(trace_id=ids[2], reason="private"),
            ev.BucketPushed(remote="hf", trace_ids=[ids[0]])])
    api.repair(settings)
    rows = {t["trace_id"]: t for t in api.bucket_manifest(settings).traces}
    first = rows[ids[0]]
    assert first["agent_name"] == "claude-code" and first["agent_model"] == "model-x"
    assert first["title"] == "user message 0" and first["project_slug"] == "work-proj"
    assert first["lifecycle"] == "ended"
    assert first["summary"] == {"step_count": 2, "patch_count": 1, "anchored_count": 1,
                                "rejected_lines": 0}
    assert first["status"]["syncable"] is True and first["status"]["sync"] == "pushed"
    assert rows[ids[1]]["status"]["syncable"] is False  # findings
    assert rows[ids[2]]["status"]["excluded"] is True
    assert rows[ids[2]]["summary"]["step_count"] == 4
    status = api.bucket_status(settings)
    assert (status.trace_count, status.scanned_count, status.syncable_count) == (3, 2, 1)
    assert status.safety == "findings"


def test_a_later_change_makes_a_pushed_trace_behind(settings: Settings) -> None:
    ids = _fill(settings, 1)
    api.append(settings, "bucket:default", [ev.BucketPushed(remote="hf", trace_ids=ids)])
    api.append(settings, ev.stream("trace", ids[0]),
               [ev.StepRecorded(step_index=9, role="user", content="more")])
    (row,) = api.bucket_manifest(settings).traces
    assert row["status"]["sync"] == "behind"


def test_lagging_projection_is_reported_not_written_by_reads(settings: Settings) -> None:
    _fill(settings, 1)
    _fill(settings, 2, catch_up=False)
    before = api.status(settings).projections["bucket_manifest"]
    assert before["state"] == "lagging" and before["lag"] > 0
    api.bucket_manifest(settings)
    api.doctor(settings)
    after = api.status(settings)
    assert after.projections["bucket_manifest"]["position"] == before["position"]
    assert after.verdict == "needs_maintenance" and after.next_command == "opentraces repair"
    repaired = api.repair(settings)
    assert repaired.projections_caught_up == sorted(api.projection_names())
    assert api.status(settings).verdict == "ok"


def test_reads_leave_the_projection_folders_untouched(settings: Settings) -> None:
    trace_ids = _fill(settings, 2)

    def files() -> dict[str, tuple[int, int]]:
        root = settings.projections_dir
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(root.rglob("*")) if p.is_file()}

    before = files()
    assert not [f for f in before if f.endswith(("-wal", "-shm"))]
    api.status(settings)
    api.doctor(settings)
    api.bucket_manifest(settings)
    api.trace_get(settings, trace_ids[0])
    api.ctx_list(settings)
    api.trail_graph(settings)
    assert files() == before


def test_reads_on_a_fresh_home_create_nothing(settings: Settings) -> None:
    assert api.status(settings).verdict == "empty"
    api.doctor(settings)
    api.bucket_manifest(settings)
    api.bucket_status(settings)
    api.bucket_verify(settings, full=True)
    assert not settings.home.exists()


def test_rebuild_swaps_atomically_and_sweeps_old_builds_later(settings: Settings) -> None:
    _fill(settings)
    link = settings.projections_dir / "bucket_manifest"
    first = link.resolve()
    digest = api.status(settings).projections["bucket_manifest"]["digest"]
    report = api.rebuild(settings, ["bucket_manifest"])
    assert link.is_symlink() and link.resolve() != first
    assert report.projections["bucket_manifest"]["digest"] == digest
    assert report.projections["bucket_manifest"]["events_applied"] == api.event_count(settings)
    # A reader that resolved the old build just before the swap can still finish.
    assert (first / "manifest.json").exists()
    past = time.time() - 3600
    os.utime(first, (past, past))
    crashed = settings.projections_dir / ".builds" / "bucket_manifest-deadbeef-1"
    crashed.mkdir()
    os.utime(crashed, (past, past))
    api.rebuild(settings, ["bucket_manifest"])
    builds = sorted(p.name for p in (settings.projections_dir / ".builds").iterdir())
    assert first.name not in builds and crashed.name not in builds
    mine = [b for b in builds if b.startswith("bucket_manifest-")]
    assert link.resolve().name in mine and len(mine) == 2  # live + the one just replaced


def test_a_view_built_from_another_store_is_rebuilt(settings: Settings,
                                                    isolated_home: Path) -> None:
    _fill(settings)
    other = Settings(home=settings.home, store=StoreConfig(
        sqlite_path=isolated_home / "elsewhere.sqlite"))
    state = api.status(other).projections["bucket_manifest"]
    assert state["state"] == "other_store" and state["position"] > state["head"] == 0
    assert api.status(other).verdict == "needs_maintenance"
    assert api.repair(other).projections_rebuilt == sorted(api.projection_names())
    assert api.bucket_manifest(other).traces == []
    assert api.status(settings).projections["bucket_manifest"]["state"] == "other_store"


def test_unknown_projection_name_is_a_usage_error(settings: Settings) -> None:
    with pytest.raises(UnknownProjection, match="unknown projection nope"):
        api.rebuild(settings, ["nope"])


class ManifestNext(BucketManifest):
    version: ClassVar[int] = BucketManifest.version + 1


def test_version_change_rebuilds_automatically(settings: Settings) -> None:
    _fill(settings)
    with EventLog(settings.store) as log:
        runner = Runner(log, settings.projections_dir, [ManifestNext])
        assert runner.states()["bucket_manifest"].state == "version_changed"
        results = runner.catch_up()
        assert results["bucket_manifest"].rebuilt is True
        assert runner.states()["bucket_manifest"].state == "fresh"
        assert runner.open("bucket_manifest").stored_version() == BucketManifest.version + 1


def test_replayed_page_is_a_no_op(settings: Settings) -> None:
    _fill(settings)
    with EventLog(settings.store) as log:
        runner = Runner(log, settings.projections_dir, [BucketManifest])
        proj = runner.open("bucket_manifest")
        digest = proj.digest()
        assert proj.apply_page(log.page(0)) == 0
        assert proj.digest() == digest


def test_repair_rebuilds_a_tampered_projection(settings: Settings) -> None:
    _fill(settings)
    proj_dir = (settings.projections_dir / "bucket_manifest").resolve()
    with sqlite3.connect(proj_dir / "state.sqlite") as conn:
        conn.execute("UPDATE traces SET step_count = 999")
    doctor = api.doctor(settings)
    assert not doctor.ok and doctor.next_command == "opentraces repair"
    report = api.repair(settings)
    assert report.projections_rebuilt == ["bucket_manifest"]
    assert all(t["summary"]["step_count"] < 999 for t in api.bucket_manifest(settings).traces)
    assert api.doctor(settings).ok


def test_repair_restores_a_deleted_manifest_file(settings: Settings) -> None:
    _fill(settings)
    manifest = settings.projections_dir / "bucket_manifest" / "manifest.json"
    good = json.loads(manifest.read_bytes())
    manifest.unlink()
    assert not api.doctor(settings).ok
    api.repair(settings)
    assert json.loads(manifest.read_bytes()) == good


def test_deleting_projections_and_rebuilding_gives_the_same_bytes(settings: Settings) -> None:
    _fill(settings)
    manifest = settings.projections_dir / "bucket_manifest" / "manifest.json"
    before = manifest.read_bytes()
    import shutil

    shutil.rmtree(settings.projections_dir)
    api.rebuild(settings)
    assert manifest.read_bytes() == before


def test_projection_positions_tolerate_gaps(tmp_path: Path) -> None:
    class GappyLog:
        """A source whose positions skip numbers, as PostgreSQL's may."""

        def __init__(self, records: list[ev.Recorded]) -> None:
            self.records = records

        def page(self, after: int, limit: int = 1000, upto: int | None = None):
            return [r for r in self.records
                    if r.position > after and (upto is None or r.position <= upto)][:limit]

        def head(self) -> int:
            return self.records[-1].position

    trace_id, events = session_events("codex-cli", "gaps", steps=4)
    records = [ev.Recorded(f"trace:{trace_id}", i, e, position=10 * (i + 1))
               for i, e in enumerate(events)]
    runner = Runner(GappyLog(records[:3]), tmp_path, [BucketManifest])
    runner.catch_up()
    runner.source = GappyLog(records)
    runner.catch_up()
    proj = runner.open("bucket_manifest")
    assert proj.position() == records[-1].position
    (row,) = proj.read_manifest()["traces"]
    assert row["summary"]["step_count"] == 4

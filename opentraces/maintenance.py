"""Maintenance and bucket views: status, doctor, rebuild, repair, manifest, verify, prune.

Read functions (:func:`status`, :func:`doctor`, :func:`bucket_manifest`, :func:`bucket_status`,
:func:`bucket_verify`) never write; :func:`rebuild`, :func:`repair` and a non-dry-run
:func:`bucket_prune` do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from opentraces import __version__
from opentraces.blobs import blob_refs
from opentraces.config import Settings
from opentraces.errors import EventDecodeError, OpentracesError
from opentraces.store import EventLog, sqlite_integrity_ok
from opentraces.workspace import Progress, Workspace, open_workspace, projection_names

__all__ = [
    "BucketStatus", "DoctorCheck", "DoctorReport", "ManifestView", "PruneResult",
    "RebuildReport", "RepairReport", "StatusReport", "StoreSummary", "VerifyResult",
    "bucket_manifest", "bucket_prune", "bucket_status", "bucket_verify", "doctor", "rebuild",
    "repair", "status",
]

#: A blob temp file older than this was left by a write that died (prune removes it).
STRAY_TEMP_SECONDS = 3600.0


class StoreSummary(msgspec.Struct, frozen=True):
    root: str
    backend: str
    location: str
    exists: bool
    trace_count: int
    project_count: int
    event_count: int
    head: int


class StatusReport(msgspec.Struct, frozen=True):
    store: StoreSummary
    projections: dict[str, Any]
    verdict: str
    freshness: str
    next_command: str | None
    next_steps: list[str]


def status(target: Settings | Path | Workspace) -> StatusReport:
    """A one-glance verdict: counts, projection freshness and what to do next (read-only)."""
    with open_workspace(target, readonly=True) as ws:
        source = ws.source()
        head = source.head()
        states = ws.runner().states(head)
        manifest = _manifest(ws)
        traces = manifest["traces"] if manifest else []
        store = StoreSummary(
            root=str(ws.settings.home), backend=ws.settings.store.backend,
            location=ws.settings.store.describe(), exists=ws.store_exists,
            trace_count=len(traces),
            project_count=len({t["project_slug"] for t in traces if t["project_slug"]}),
            event_count=source.count() if isinstance(source, EventLog) else 0, head=head)
    lazy = _lazy_lagging(ws.runner(), states)
    stale = sorted(n for n, s in states.items() if s.state != "fresh" and n not in lazy)
    if stale:
        verdict, nxt = "needs_maintenance", "opentraces repair"
        steps = [f"Projection {n} is {states[n].state.replace('_', ' ')}." for n in stale]
    elif lazy:
        verdict, nxt = "ok", next(iter(lazy.values()))
        steps = [f"Projection {n} is {states[n].lag} events behind; `{cmd}` catches it up."
                 for n, cmd in lazy.items()]
    elif store.event_count == 0:
        verdict, nxt = "empty", None
        steps = ["No sessions are captured yet; the store is ready."]
    else:
        verdict, nxt = "ok", None
        steps = []
    return StatusReport(store=store, projections={n: msgspec.to_builtins(s)
                                                  for n, s in states.items()},
                        verdict=verdict, freshness="stale" if stale or lazy else "fresh",
                        next_command=nxt, next_steps=steps)


class DoctorCheck(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str
    next_command: str | None = None


class DoctorReport(msgspec.Struct, frozen=True):
    ok: bool
    needs_maintenance: bool
    version: str
    checks: list[DoctorCheck]
    next_command: str | None
    next_steps: list[str]


def doctor(target: Settings | Path | Workspace) -> DoctorReport:
    """Check configuration, store, blobs and projections; say what to run when one fails."""
    with open_workspace(target, readonly=True) as ws:
        checks = [_check_config(ws), _check_store(ws), _check_blobs(ws)]
        if checks[1].ok:
            checks.extend(_check_projections(ws))
    failed = [c for c in checks if not c.ok]
    nxt = next((c.next_command for c in failed if c.next_command), None)
    return DoctorReport(ok=not failed,
                        needs_maintenance=bool(failed) and all(
                            c.next_command == "opentraces repair" for c in failed),
                        version=__version__, checks=checks, next_command=nxt,
                        next_steps=[f"{c.name}: {c.detail}" for c in failed])


def _check_config(ws: Workspace) -> DoctorCheck:
    home = ws.settings.home
    if home.exists() and not home.is_dir():
        return DoctorCheck("config", False, f"{home} exists but is not a folder")
    return DoctorCheck("config", True, f"home {home}, store {ws.settings.store.backend}")


def _check_store(ws: Workspace) -> DoctorCheck:
    if not ws.store_exists:
        return DoctorCheck("store", True, "no event store yet (created on first capture)")
    try:
        head = ws.log.head()
    except OpentracesError as e:
        return DoctorCheck("store", False, e.message, "opentraces doctor")
    path = ws.settings.store.sqlite_path
    if path is not None and not sqlite_integrity_ok(path):
        return DoctorCheck("store", False, f"{path} fails PRAGMA integrity_check")
    return DoctorCheck("store", True, f"{ws.settings.store.describe()} at position {head}")


def _check_blobs(ws: Workspace) -> DoctorCheck:
    root = ws.blobs.root
    cutoff = time.time() - STRAY_TEMP_SECONDS
    stray = [t for t in root.glob("*/*/.tmp-*") if t.stat().st_mtime <= cutoff]
    if stray:
        return DoctorCheck("blobs", False, f"{len(stray)} unfinished blob writes in {root}",
                           "opentraces bucket prune")
    return DoctorCheck("blobs", True, f"blob store at {root}")


def _lazy_lagging(runner: Any, states: dict[str, Any]) -> dict[str, str]:
    """Lazy projections that only lag (not broken): name -> the command that catches it up.

    Lagging is their normal state between refreshes, so it is not a maintenance need."""
    return {n: getattr(runner.classes[n], "refresh_command", "opentraces repair")
            for n, s in sorted(states.items())
            if s.state == "lagging" and not runner.classes[n].eager}


def _check_projections(ws: Workspace) -> list[DoctorCheck]:
    runner = ws.runner()
    checks = []
    states = runner.states(ws.source().head())
    lazy = _lazy_lagging(runner, states)
    for name, state in states.items():
        proj = runner.open(name)
        problems = proj.problems() if proj is not None else []
        if state.state == "fresh" and not problems:
            checks.append(DoctorCheck(f"projection {name}", True,
                                      f"fresh at position {state.position}"))
        elif name in lazy and not problems:
            checks.append(DoctorCheck(f"projection {name}", True,
                                      f"{state.lag} events behind (refreshed on demand by "
                                      f"`{lazy[name]}`)"))
        else:
            detail = "; ".join(problems) or f"{state.state.replace('_', ' ')} " \
                                            f"(position {state.position} of {state.head})"
            checks.append(DoctorCheck(f"projection {name}", False, detail, "opentraces repair"))
    return checks


# ---------------------------------------------------------------------------------------------
# Rebuild and repair


class RebuildReport(msgspec.Struct, frozen=True):
    projections: dict[str, Any]
    seconds: float


def rebuild(target: Settings | Path | Workspace, names: Sequence[str] | None = None,
            progress: Progress | None = None) -> RebuildReport:
    """Rebuild projections (default: all) from the start of the log and swap them in."""
    began = time.perf_counter()
    with open_workspace(target) as ws:
        results = ws.runner().rebuild(names, progress)
    return RebuildReport(projections={n: msgspec.to_builtins(r) for n, r in results.items()},
                         seconds=round(time.perf_counter() - began, 3))


class RepairReport(msgspec.Struct, frozen=True):
    blobs_checked: int
    events_checked: int
    projections_caught_up: list[str]
    projections_rebuilt: list[str]
    errors: list[str]


def repair(target: Settings | Path | Workspace,
           progress: Progress | None = None) -> RepairReport:
    """Check blobs and event decoding, catch up lagging projections, rebuild broken ones."""
    with open_workspace(target) as ws:
        errors, referenced, checked = _scan_events(ws)
        missing = sorted(h for h in referenced if not ws.blobs.has(h))
        errors += [f"blob {h} is referenced but missing" for h in missing]
        blob_report = ws.blobs.verify(iter(sorted(referenced - set(missing))))
        errors += [f"blob {h} does not match its hash" for h in blob_report.corrupt]
        errors += [f"blob {h} is unreadable" for h in blob_report.unreadable]
        runner = ws.runner()
        broken = [n for n in projection_names()
                  if (p := runner.open(n)) is not None and p.problems()]
        rebuilt = list(runner.rebuild(broken, progress)) if broken else []
        results = runner.catch_up(progress=progress)
        rebuilt += [n for n, r in results.items() if r.rebuilt]
        caught_up = [n for n, r in results.items() if not r.rebuilt and r.events_applied]
    return RepairReport(blobs_checked=blob_report.blobs_checked, events_checked=checked,
                        projections_caught_up=sorted(caught_up),
                        projections_rebuilt=sorted(set(rebuilt)), errors=errors)


def _scan_events(ws: Workspace) -> tuple[list[str], set[str], int]:
    """Decode every stored event; collect decode errors and referenced blob hashes."""
    errors: list[str] = []
    referenced: set[str] = set()
    checked = 0
    if not ws.store_exists:
        return errors, referenced, checked
    position = 0
    while True:
        notes = ws.log.raw_page(position)
        if not notes:
            break
        for note in notes:
            checked += 1
            try:
                rec = ws.log.mapper.to_domain_event(note)
            except EventDecodeError as e:
                errors.append(e.message)
                continue
            referenced.update(ref.hash for ref in blob_refs(rec.event))
        position = notes[-1].id
    return errors, referenced, checked


# ---------------------------------------------------------------------------------------------
# Bucket


class ManifestView(msgspec.Struct, frozen=True):
    digest: str | None
    position: int
    stale: bool
    traces: list[dict[str, Any]]


def _manifest(ws: Workspace) -> dict[str, Any] | None:
    proj = ws.runner().open("bucket_manifest")
    return proj.read_manifest() if proj is not None else None  # type: ignore[attr-defined]


def bucket_manifest(target: Settings | Path | Workspace) -> ManifestView:
    """The bucket manifest as last built (read-only; ``stale`` says if the log moved on)."""
    with open_workspace(target, readonly=True) as ws:
        manifest = _manifest(ws) or {"digest": None, "position": 0, "traces": []}
        head = ws.source().head()
    return ManifestView(digest=manifest["digest"], position=manifest["position"],
                        stale=manifest["position"] < head, traces=manifest["traces"])


class BucketStatus(msgspec.Struct, frozen=True):
    trace_count: int
    blob_count: int
    blob_bytes: int
    event_count: int
    scanned_count: int
    syncable_count: int
    excluded_count: int
    safety: str
    sync: dict[str, int]
    remote: str | None
    stale: bool


def bucket_status(target: Settings | Path | Workspace) -> BucketStatus:
    """Counts, the safety verdict and the sync state of the local bucket (read-only)."""
    with open_workspace(target, readonly=True) as ws:
        view = bucket_manifest(ws)
        source = ws.source()
        events = source.count() if isinstance(source, EventLog) else 0
        hashes = list(ws.blobs.hashes())
        blob_bytes = sum(ws.blobs.size_on_disk(h) for h in hashes)
    statuses = [t["status"] for t in view.traces]
    scanned = sum(s["scanned"] for s in statuses)
    sync: dict[str, int] = {}
    for s in statuses:
        sync[s["sync"]] = sync.get(s["sync"], 0) + 1
    unsafe = sum(1 for s in statuses if s["scanned"] and s["security_verdict"] != "clean")
    if not statuses:
        safety = "empty"
    elif unsafe:
        safety = "findings"
    elif scanned < len(statuses):
        safety = "unscanned"
    else:
        safety = "clean"
    return BucketStatus(trace_count=len(view.traces), blob_count=len(hashes),
                        blob_bytes=blob_bytes, event_count=events, scanned_count=scanned,
                        syncable_count=sum(s["syncable"] for s in statuses),
                        excluded_count=sum(s["excluded"] for s in statuses), safety=safety,
                        sync=sync, remote=None, stale=view.stale)


class VerifyResult(msgspec.Struct, frozen=True):
    ok: bool
    errors: list[str]
    blobs_checked: int
    events_checked: int
    dangling_count: int
    full: bool


def bucket_verify(target: Settings | Path | Workspace, *, full: bool = False) -> VerifyResult:
    """Decode every event and check every referenced blob is present and hashes to its name.

    ``full`` also re-hashes unreferenced blobs and runs SQLite's integrity check.
    """
    with open_workspace(target, readonly=True) as ws:
        errors, referenced, checked = _scan_events(ws)
        dangling = sorted(h for h in referenced if not ws.blobs.has(h))
        errors += [f"blob {h} is referenced by an event but missing" for h in dangling]
        present = sorted(referenced - set(dangling))
        report = ws.blobs.verify(ws.blobs.hashes() if full else iter(present))
        errors += [f"blob {h} does not hash to its name" for h in report.corrupt]
        errors += [f"blob {h} cannot be read" for h in report.unreadable]
        path = ws.settings.store.sqlite_path
        if full and ws.store_exists and path is not None and not sqlite_integrity_ok(path):
            errors.append(f"{path} fails PRAGMA integrity_check")
    return VerifyResult(ok=not errors, errors=errors, blobs_checked=report.blobs_checked,
                        events_checked=checked, dangling_count=len(dangling), full=full)


class PruneResult(msgspec.Struct, frozen=True):
    dry_run: bool
    hashes: list[str]
    bytes: int
    temp_files: int


def bucket_prune(target: Settings | Path | Workspace, *, dry_run: bool,
                 min_age_seconds: float = 3600.0) -> PruneResult:
    """Delete blobs that no event references (or, with ``dry_run``, list them).

    Blobs younger than ``min_age_seconds`` are kept: a capture writes its blobs just before
    the events that reference them.
    """
    with open_workspace(target, readonly=dry_run) as ws:
        errors, referenced, _ = _scan_events(ws)
        if errors:
            raise EventDecodeError(
                f"{len(errors)} events cannot be decoded, so references are unknown; "
                "nothing was pruned", next_command="opentraces bucket verify")
        report = ws.blobs.prune(referenced, dry_run=dry_run, min_age_seconds=min_age_seconds)
    return PruneResult(dry_run=dry_run, hashes=report.hashes, bytes=report.bytes,
                       temp_files=report.temp_files)

"""The opentraces Python API: everything the CLI does, as functions returning msgspec Structs.

Every function takes a *target*: a :class:`~opentraces.config.Settings`, a home folder
(:class:`pathlib.Path`) or an already open :class:`Workspace`, and closes only what it opened.
Nothing here prints, and only :func:`settings_from_environment` (re-exported from
:mod:`opentraces.config` for the CLI and scripts) reads the process environment.

Write functions (:func:`append`, :func:`rebuild`, :func:`repair`, ``bucket_repair``/``_prune``)
catch the projections up before returning; read functions (:func:`status`, :func:`doctor`,
:func:`bucket_manifest`, :func:`bucket_verify`) never write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from opentraces import __version__
from opentraces.blobs import BlobStore, blob_refs
from opentraces.config import Settings, load_settings, settings_from_environment
from opentraces.errors import EventDecodeError, MaintenanceNeeded, OpentracesError
from opentraces.events import BlobRef, Event, Recorded
from opentraces.store import EventLog, sqlite_integrity_ok, store_exists

__all__ = [
    "BucketStatus",
    "DoctorCheck",
    "DoctorReport",
    "ImportSource",
    "MaintenanceNeeded",
    "ManifestView",
    "OpentracesError",
    "PruneResult",
    "RebuildReport",
    "RepairReport",
    "StatusReport",
    "StoreSummary",
    "VerifyResult",
    "Workspace",
    "append",
    "bucket_manifest",
    "bucket_prune",
    "bucket_status",
    "bucket_verify",
    "doctor",
    "event_count",
    "import_from_spool",
    "import_sessions",
    "import_sources",
    "open_workspace",
    "projection_names",
    "put_blob",
    "rebuild",
    "repair",
    "sample_sources",
    "settings_from_environment",
    "status",
    "to_builtins",
]

Progress = Callable[[int], None]
#: A blob temp file older than this was left by a write that died (prune removes it).
STRAY_TEMP_SECONDS = 3600.0


class Workspace:
    """An open opentraces home: settings, event log, blobs and projection runner.

    With ``readonly=True`` a missing SQLite store is treated as empty and never created.
    """

    def __init__(self, settings: Settings, *, readonly: bool = False) -> None:
        self.settings = settings
        self.readonly = readonly
        self.blobs = BlobStore(settings.blobs_dir)
        self._log: EventLog | None = None
        self._exists: bool | None = None

    @property
    def store_exists(self) -> bool:
        if self._exists is None:
            self._exists = store_exists(self.settings.store)
        return self._exists

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = EventLog.open(self.settings.store, create=not self.readonly)
        return self._log

    def source(self) -> Any:
        """The event source for the runner (an empty one for a read of a store not yet made)."""
        if self.readonly and not self.store_exists:
            return _EmptyLog()
        return self.log

    def runner(self) -> Any:
        from opentraces.projections import ALL
        from opentraces.projections.runner import Runner

        return Runner(self.source(), self.settings.projections_dir, ALL,
                      store_id=self.settings.store_id)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self.blobs.close()


class _EmptyLog:
    def page(self, after: int, limit: int = 0, upto: int | None = None) -> list[Recorded]:
        return []

    def head(self) -> int:
        return 0


@contextmanager
def open_workspace(target: Settings | Path | Workspace, *,
                   readonly: bool = False) -> Iterator[Workspace]:
    """Yield a workspace for ``target``; close it afterwards only if it was opened here."""
    if isinstance(target, Workspace):
        yield target
        return
    settings = load_settings(target) if isinstance(target, Path) else target
    ws = Workspace(settings, readonly=readonly)
    try:
        yield ws
    finally:
        ws.close()


def to_builtins(value: Any) -> Any:
    """Plain JSON-ready data from API results (Structs, dicts of Structs)."""
    return msgspec.to_builtins(value)


def event_count(target: Settings | Path | Workspace) -> int:
    """How many events the log holds (0 when no store exists yet)."""
    with open_workspace(target, readonly=True) as ws:
        source = ws.source()
        return source.count() if isinstance(source, EventLog) else 0


def projection_names() -> list[str]:
    from opentraces.projections import ALL

    return [p.name for p in ALL]


# ---------------------------------------------------------------------------------------------
# Writing

__all__ += ["LAZY_CATCH_UP_EVENTS", "catch_up_after_write"]
_LAZY_CAPTURE = {"ImportReport": ("opentraces.capture.importer", "ImportReport")}

#: After a write, a lazy projection (the search index) is caught up too when it is at most this
#: many events behind: hook-driven imports keep it current, a bulk import leaves it to
#: `trace index refresh`.
LAZY_CATCH_UP_EVENTS = 2_000


def catch_up_after_write(ws: Workspace, progress: Progress | None = None) -> None:
    """Catch up the eager projections, and the lazy ones that are only a little behind."""
    runner = ws.runner()
    eager = runner.eager()
    head = ws.source().head()
    lazy = [n for n in runner.classes if n not in eager
            and (s := runner.state(n, head)).state in ("fresh", "lagging", "missing")
            and s.lag <= LAZY_CATCH_UP_EVENTS]
    runner.catch_up(eager + lazy, progress=progress)



def append(target: Settings | Path | Workspace, stream: str, events: Sequence[Event], *,
           catch_up: bool = True) -> list[int]:
    """Append events to the end of a stream and (by default) catch the projections up.

    Returns:
        The positions (notification ids) of the appended events.
    """
    with open_workspace(target) as ws:
        positions = ws.log.append(stream, events)
        if catch_up:
            catch_up_after_write(ws)
        return positions


def put_blob(target: Settings | Path | Workspace, data: bytes,
             media_type: str = "application/octet-stream", *, local_only: bool = False) -> BlobRef:
    """Store content in the blob store and return its reference."""
    with open_workspace(target) as ws:
        return ws.blobs.put(data, media_type, local_only=local_only)


# ---------------------------------------------------------------------------------------------
# Import


class ImportSource(msgspec.Struct, frozen=True):
    """A file to import; ``agent`` is None when no adapter recognised it."""

    agent: str | None
    path: str


def import_sources(target: Settings | Path | Workspace, paths: Sequence[Path] | None = None,
                   *, agents: Sequence[str] | None = None,
                   since: float | None = None) -> list[ImportSource]:
    """The transcript files an import would read: the given paths (files or folders), or the
    agents' standard folders under the user's home. ``since`` is a Unix time: older files are
    left out."""
    from opentraces.capture import ADAPTERS
    from opentraces.capture.importer import candidates

    with open_workspace(target, readonly=True) as ws:
        user_home = ws.settings.user_home
    chosen = list(agents or ADAPTERS)
    return [ImportSource(agent=ad.agent if ad else None, path=str(path))
            for ad, path in candidates(paths, chosen, user_home, since)]


SAMPLES_DIR = Path(__file__).parent / "samples"


def sample_sources() -> list[ImportSource]:
    """The sample sessions bundled with opentraces (one per supported agent)."""
    from opentraces.capture.importer import candidates

    found = []
    for agent_dir in sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir()):
        found += [ImportSource(agent=ad.agent if ad else None, path=str(path))
                  for ad, path in candidates([agent_dir], [agent_dir.name], None)]
    return found


def import_sessions(target: Settings | Path | Workspace,
                    sources: Sequence[ImportSource] | None = None, *,
                    project: Path | None = None, progress: Progress | None = None) -> Any:
    """Import transcript files (default: everything :func:`import_sources` finds).

    ``project`` limits the import to sessions whose working folder is inside it. Re-importing
    is safe: unchanged files add nothing, grown files add only their new lines. Projections
    are caught up before returning.

    Returns:
        An :class:`opentraces.capture.importer.ImportReport`.
    """
    from opentraces.capture import adapter
    from opentraces.capture.importer import import_files

    with open_workspace(target) as ws:
        if sources is None:
            sources = import_sources(ws)
        files = [(adapter(s.agent) if s.agent else None, Path(s.path)) for s in sources]
        blobs = BlobStore(ws.blobs.root, defer_sync=True)  # one sync per batch of events
        report = import_files(ws.log, blobs, files, accept=_capture_filter(ws, project),
                              progress=progress)
        if report.trace_ids:  # new edits become patches, anchored in their repositories
            from opentraces.trail import trail_sync

            # trail_sync catches the projections up after its own writes, the import's too
            report.trail = to_builtins(trail_sync(ws, trace_ids=report.trace_ids))
        else:
            catch_up_after_write(ws)
    return report


def _capture_filter(ws: Workspace, project: Path | None = None,
                    ) -> Callable[[str | None, str, str | None], bool]:
    """Tracking mode and enrollment decide which sessions are captured (folded once)."""
    from opentraces import enrollment

    state = enrollment.enrollment_state(ws)

    def accept(cwd: str | None, agent: str, started_at: str | None) -> bool:
        if project is not None and (cwd is None or not _inside(Path(cwd), project)):
            return False
        return enrollment.should_capture(state, cwd, agent=agent, started_at=started_at)

    return accept


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def import_from_spool(target: Settings | Path | Workspace,
                      progress: Progress | None = None) -> Any:
    """Import the transcripts that agent hooks named in the spool, then drain what was read.

    Hooks fire often (Claude Code's Stop ends every turn): when another import is already
    running this returns at once with an empty report, since that import covers the work.
    """
    import fcntl

    from opentraces import hooks
    from opentraces.capture.importer import ImportReport

    with open_workspace(target) as ws:
        home = ws.settings.home
        home.mkdir(parents=True, exist_ok=True)
        with open(home / ".import.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return ImportReport()
            entries = hooks.read_spool(home)
            wanted: dict[str, str] = {}
            for entry in entries:
                path = entry.get("transcript_path")
                if isinstance(path, str) and entry.get("agent") and Path(path).is_file():
                    wanted.setdefault(path, entry["agent"])
            sources = [ImportSource(agent=agent, path=path) for path, agent in wanted.items()]
            report = import_sessions(ws, sources, progress=progress)
            _record_ends(ws, [e for e in entries
                              if e.get("event") in hooks.SESSION_ENDS.get(e.get("agent"), ())])
            _record_commits(ws, [e for e in entries if e.get("agent") == "git"])
            hooks.drain_spool(home, hooks.spool_marks(entries))
    return report


def _record_ends(ws: Workspace, entries: Sequence[dict[str, Any]]) -> None:
    """Record ``SessionEnded`` for the session-end hook lines, once per line.

    The line names the transcript, not the trace: the agent's adapter reads which trace the
    file's lines go to. A session that was not captured (nothing in its stream, or capture
    refused for its folder) gets nothing.
    """
    from opentraces import events as ev
    from opentraces.capture import adapter
    from opentraces.capture.importer import trace_of_file

    accept = _capture_filter(ws)
    wrote = False
    for entry in entries:
        path, agent, at = entry.get("transcript_path"), entry["agent"], entry.get("received_at")
        if not (isinstance(path, str) and accept(entry.get("cwd"), agent, None)):
            continue
        trace_id = trace_of_file(adapter(agent), Path(path))
        if trace_id is None:
            continue
        stream_id = ev.stream("trace", trace_id)
        recorded = [r.event for r in ws.log.read(stream_id)]
        if not recorded or any(isinstance(e, ev.SessionEnded) and e.at == at for e in recorded):
            continue  # not captured, or this line was recorded by an earlier drain
        reason = (entry.get("payload") or {}).get("reason")
        ws.log.append(stream_id, [ev.SessionEnded(
            reason=reason if isinstance(reason, str) else None, at=at)])
        wrote = True
    if wrote:
        catch_up_after_write(ws)


def _record_commits(ws: Workspace, entries: Sequence[dict[str, Any]]) -> None:
    """Turn the git post-commit hook's spool lines into anchor searches, and run them."""
    if not entries:
        return
    from opentraces.trail import request_anchor_search, trail_sync

    searched: set[str] = set()
    for entry in entries:
        cwd, commit = entry.get("cwd"), (entry.get("payload") or {}).get("commit")
        if not (isinstance(cwd, str) and isinstance(commit, str) and commit):
            continue  # a hook that could not name its commit: the next sync still finds it
        if request_anchor_search(ws, Path(cwd), commit) is not None and cwd not in searched:
            searched.add(cwd)
            trail_sync(ws, repo=Path(cwd))


# ---------------------------------------------------------------------------------------------
# Status and doctor


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


# ---------------------------------------------------------------------------------------------
# Traces (defined in opentraces.tracing; re-exported here)

from opentraces.tracing import (  # noqa: E402
    LAST,
    Address,
    AmbiguousTrace,
    BadAddress,
    RangeView,
    StepOutOfRange,
    StepView,
    TraceNotFound,
    TraceView,
    parse_address,
    trace_card,
    trace_get,
    trace_range,
    trace_step,
    trace_view,
)

__all__ += [
    "LAST", "Address", "AmbiguousTrace", "BadAddress", "RangeView",
    "StepOutOfRange", "StepView", "TraceNotFound", "TraceView", "parse_address",
    "trace_card", "trace_get", "trace_range", "trace_step", "trace_view",
]


# ---------------------------------------------------------------------------------------------
# Trace Intelligence (defined in opentraces.intel; re-exported here)

# Imported on first use: compiling the detectors' and the map's patterns costs ~30 ms and the
# git layer ~100 ms, which every command importing this module would otherwise pay.
_LAZY = {**_LAZY_CAPTURE,
         "BURST_GAP": ("opentraces.trace_map", "BURST_GAP"),
         "bursts": ("opentraces.trace_map", "bursts"),
         "record_card": ("opentraces.trace_map", "record_card"),
         "trace_map": ("opentraces.trace_map", "trace_map"),
         "trace_slice": ("opentraces.trace_map", "trace_slice"),
         "CONTEXT_WASTE_SCHEMA": ("opentraces.intel", "CONTEXT_WASTE_SCHEMA"),
         "RUN_INTEL_SCHEMA": ("opentraces.intel", "RUN_INTEL_SCHEMA"),
         "TRACE_COMPARE_SCHEMA": ("opentraces.intel", "TRACE_COMPARE_SCHEMA"),
         "context_waste": ("opentraces.intel", "context_waste"),
         "run_intel": ("opentraces.intel", "run_intel"),
         "trace_compare": ("opentraces.intel", "compare"),
         # Trace Trails: dulwich alone takes ~100 ms to import
         **{name: ("opentraces.trail", name) for name in (
             "BlameCommit", "BlameTrace", "CommitNotFound", "NotARepository", "SyncReport",
             "TrackReport", "TrailGraph", "blame_commit", "blame_trace",
             "request_anchor_search", "trail_graph", "trail_sync", "trail_track",
             "AttachReport", "BadTrailUri", "BundleRejected", "GhFailed", "GhUnavailable",
             "LineExplain", "Resolved", "StepExplain", "TeleportExport", "TeleportOpen",
             "Timeline", "TraceGraph", "TrailObjectNotFound", "pr_create", "pr_render",
             "pr_update", "render_commit_graph", "render_trace_graph", "teleport_export",
             "teleport_open")},
         **{f"trail_{name}": ("opentraces.trail", name) for name in (
             "attach", "commit_rail", "explain", "explain_line", "resolve", "sync_patch",
             "timeline", "trace_graph")},
         # Context tree
         **{name: ("opentraces.context", name) for name in (
             "ContextNodeNotFound", "NoAnchor", "ctx_anchor_for_step", "ctx_compactions",
             "ctx_diff", "ctx_info", "ctx_list", "ctx_prune", "ctx_reads", "ctx_resolve",
             "ctx_resume", "ctx_show", "ctx_step", "ctx_tree", "ctx_writes",
             "resume_session_file")},
         # Search (whoosh is imported by the functions that need it)
         **{name: ("opentraces.search", name) for name in (
             "Candidate", "Freshness", "IndexReport", "QueryResult", "SkillUsage",
             "SkillsResult", "index_rebuild", "index_refresh", "index_status", "trace_query",
             "trace_skills")}}

__all__ += list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


# ---------------------------------------------------------------------------------------------
# Capture settings: tracking mode, enrollment, agent hooks (defined in opentraces.enrollment
# and opentraces.agent_setup; re-exported here)

from opentraces.agent_setup import (  # noqa: E402
    SetupReport,
    default_hook_command,
    setup_agent,
)
from opentraces.enrollment import (  # noqa: E402
    EnrollmentState,
    EnrollResult,
    ProjectState,
    RemoveResult,
    TrackingModeResult,
    enroll,
    enrolled_projects,
    enrollment_state,
    remove,
    set_tracking_mode,
    should_capture,
    tracking_mode,
)
from opentraces.git_hook import setup_git  # noqa: E402

__all__ += [
    "EnrollResult",
    "EnrollmentState",
    "ProjectState",
    "RemoveResult",
    "SetupReport",
    "TrackingModeResult",
    "default_hook_command",
    "enroll",
    "enrolled_projects",
    "enrollment_state",
    "remove",
    "set_tracking_mode",
    "setup_agent",
    "setup_git",
    "should_capture",
    "tracking_mode",
]

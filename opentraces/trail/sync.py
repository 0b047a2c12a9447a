"""The trail's API: derive patches, anchor them, track their survival, and read the views.

Streams: patches go into their trace's stream (``trace:<trace_id>``, appended after the
capture events, like any later fact about the trace); anchors, survival observations and
anchor-search requests go into ``repo:<repo key>`` (see :mod:`opentraces.trail.gitrepo`).

Invariants:
- Idempotent: patch ids and anchor ids are deterministic, a patch already in its stream is not
  derived again, a patch is searched only while it has no anchor reachable from HEAD, and a
  survival observation is appended only when it differs from the last one for that anchor.
  Re-running :func:`trail_sync` or :func:`trail_track` with nothing changed appends nothing.
- Repositories are only read. Write functions catch the trail projection up before returning;
  read functions (:func:`blame_commit`, :func:`blame_trace`, :func:`trail_graph`) never write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from opentraces import events as ev
from opentraces.blobs import BlobStore
from opentraces.errors import UsageError, VersionConflict
from opentraces.store import EventLog
from opentraces.trail import anchor as an
from opentraces.trail import survival as sv
from opentraces.trail.gitrepo import GitRepo, find_repo_root
from opentraces.trail.patches import authored_lines

#: ``progress(done, total)``: ``done`` more units finished out of ``total`` (for a bar).
Progress = Callable[[int, int], None]

# ---------------------------------------------------------------------------------------------
# Results


class RepoSync(msgspec.Struct, frozen=True):
    root: str
    repo_key: str
    head: str | None
    patches: int
    anchors_recorded: int
    unanchored: int


class SyncReport(msgspec.Struct, frozen=True):
    traces_scanned: int
    patches_derived: int
    anchors_recorded: int
    patches_without_repo: int
    repos: list[RepoSync]


class AnchorView(msgspec.Struct, frozen=True):
    anchor_id: str
    commit: str
    subject: str | None
    path: str
    range: list[int] | None
    evidence_tier: str
    evidence_firmness: str
    similarity: float


class SurvivalView(msgspec.Struct, frozen=True):
    survival_state: str
    retention_fraction: float | None
    current_path: str | None
    observed_head: str
    killing_commit: str | None = None


class TrackedPatch(msgspec.Struct, frozen=True):
    patch_id: str
    trace_id: str
    step_index: int
    path: str
    range: list[int] | None
    anchor: AnchorView | None
    current_survival: SurvivalView | None
    repo_key: str | None = None


class TrackReport(msgspec.Struct, frozen=True):
    trace_id: str | None
    head: str | None
    heads: dict[str, str]
    patches: list[TrackedPatch]
    observations_appended: int


class CommitView(msgspec.Struct, frozen=True):
    sha: str
    subject: str
    timestamp: str


class Coverage(msgspec.Struct, frozen=True):
    attributed: int
    total: int
    ratio: float


class TraceRef(msgspec.Struct, frozen=True):
    trace_id: str
    title: str | None
    agent: str | None


class Evidence(msgspec.Struct, frozen=True):
    trace_id: str
    step_index: int
    patch_id: str
    anchor_id: str
    path: str
    range: list[int] | None
    evidence_tier: str
    evidence_firmness: str


class BlameCommit(msgspec.Struct, frozen=True):
    commit: CommitView
    coverage: Coverage
    traces: list[TraceRef]
    files: dict[str, list[list[int]]]
    evidence: list[Evidence]


class TraceCommit(msgspec.Struct, frozen=True):
    sha: str
    subject: str | None
    timestamp: str | None
    patches: list[str]


class BlameTrace(msgspec.Struct, frozen=True):
    trace_id: str
    commits: list[TraceCommit]


class GraphTrace(msgspec.Struct, frozen=True):
    trace_id: str
    lines: int


class GraphCommit(msgspec.Struct, frozen=True):
    sha: str
    subject: str | None
    timestamp: str | None
    traces: list[GraphTrace]


class TrailGraph(msgspec.Struct, frozen=True):
    commits: list[GraphCommit]


# ---------------------------------------------------------------------------------------------
# Folding streams


class RepoState(msgspec.Struct):
    """What a ``repo:<key>`` stream says: current anchor per patch, last survival per anchor."""

    anchors: dict[str, ev.AnchorRecorded] = {}
    survival: dict[tuple[str, str], ev.SurvivalObserved] = {}
    requests: list[ev.AnchorSearchRequested] = []


def fold_repo(log: EventLog, key: str) -> RepoState:
    state = RepoState(anchors={}, survival={}, requests=[])
    for rec in log.read(ev.stream("repo", key)):
        e = rec.event
        if isinstance(e, ev.AnchorRecorded):
            state.anchors[e.patch_id] = e
        elif isinstance(e, ev.SurvivalObserved):
            state.survival[(e.patch_id, e.anchor_id)] = e
        elif isinstance(e, ev.AnchorSearchRequested):
            state.requests.append(e)
    return state


def _derive(log: EventLog, blobs: BlobStore, trace_id: str) -> tuple[
        list[ev.PatchRecorded], list[ev.PatchRecorded], int]:
    """A trace's patches: those its stream holds, those it implies and lacks (their blobs
    stored, not yet synced), and the version the new ones go at."""
    from opentraces.trail.patches import derive_patches

    records = list(log.read(ev.stream("trace", trace_id)))
    have = [r.event for r in records if isinstance(r.event, ev.PatchRecorded)]
    return have, derive_patches(trace_id, records, blobs), (
        records[-1].version + 1 if records else 0)


def _append_patches(log: EventLog, blobs: BlobStore, trace_id: str) -> tuple[
        list[ev.PatchRecorded], int]:
    """Derive the trace's missing patches and write them after its last event."""
    stream_id = ev.stream("trace", trace_id)
    for _attempt in range(5):
        have, new, start = _derive(log, blobs, trace_id)
        if not new:
            return have, 0
        blobs.sync()
        try:
            log.write([ev.Recorded(stream_id, start + i, e) for i, e in enumerate(new)])
        except VersionConflict:
            continue  # an import grew the trace meanwhile: derive again from what is there
        return have + new, len(new)
    raise VersionConflict(f"trace {trace_id} keeps changing while its patches are derived; "
                          "try again")


#: Patch events written per transaction when many traces get patches at once.
WRITE_BATCH = 20_000


def _derive_all(log: EventLog, blobs: BlobStore, ids: Sequence[str],
                progress: Progress | None) -> list[tuple[list[ev.PatchRecorded], int]]:
    """Derive the missing patches of many traces; write them after one blob sync.

    One sync and a few large writes instead of one of each per trace: after a bulk import the
    per-trace syncs (one fsync per blob below the syncfs threshold) cost more than the rest.
    """
    found: list[tuple[str, list[ev.PatchRecorded], list[ev.PatchRecorded], int]] = []
    for trace_id in ids:
        found.append((trace_id, *_derive(log, blobs, trace_id)))
        if progress is not None:
            progress(1, len(ids))
    writes = [ev.Recorded(ev.stream("trace", t), start + i, e)
              for t, _, new, start in found for i, e in enumerate(new)]
    blobs.sync()
    try:
        for at in range(0, len(writes), WRITE_BATCH):
            log.write(writes[at:at + WRITE_BATCH])
    except VersionConflict:  # an import grew a trace meanwhile: one trace at a time, afresh
        redone = [_append_patches(log, blobs, trace_id) for trace_id, _, _, _ in found]
        # Earlier batches may have landed: count against what each trace had before the sync.
        return [(patches, len(patches) - len(have))
                for (patches, _), (_, have, _, _) in zip(redone, found, strict=True)]
    return [(have + new, len(new)) for _, have, new, _ in found]


def _trace_ids(log: EventLog, trace_ids: Sequence[str] | None) -> list[str]:
    if trace_ids is not None:
        return list(trace_ids)
    return [s.split(":", 1)[1] for s in log.stream_ids("trace")]


def _repo_of(patch: ev.PatchRecorded, roots: dict[str, Path | None]) -> Path | None:
    if not patch.file_path:
        return None
    folder = str(PurePosixPath(patch.file_path).parent)
    if folder not in roots:
        roots[folder] = find_repo_root(folder)
    return roots[folder]


def _relative(patch: ev.PatchRecorded, root: Path) -> str:
    return str(PurePosixPath(patch.file_path or patch.path).relative_to(str(root)))


def _authored(blobs: BlobStore, patch: ev.PatchRecorded) -> list[str]:
    return authored_lines(blobs, patch.hunks.hash if patch.hunks else None)


# ---------------------------------------------------------------------------------------------
# Sync


def _catch_up(ws: Any) -> None:
    from opentraces.workspace import catch_up_after_write

    catch_up_after_write(ws)


def trail_sync(target: Any, *, repo: Path | None = None,
               trace_ids: Sequence[str] | None = None,
               progress: Progress | None = None) -> SyncReport:
    """Derive missing patch events for traces, then anchor unanchored patches in their repos.

    Args:
        target: settings, home folder or open workspace.
        repo: only this repository (default: every repository a patch's file lies in, plus
            those named by pending ``AnchorSearchRequested`` events).
        trace_ids: only these traces (default: all).
        progress: called once per trace with ``(1, number of traces)``.

    Returns:
        A :class:`SyncReport`; re-running with nothing changed appends nothing.
    """
    from opentraces.workspace import open_workspace

    with open_workspace(target) as ws:
        ids = _trace_ids(ws.log, trace_ids)
        by_root: dict[Path, list[ev.PatchRecorded]] = {}
        roots: dict[str, Path | None] = {}
        derived = without = 0
        wanted = find_repo_root(Path(repo).absolute()) if repo is not None else None
        if repo is not None and wanted is None:
            from opentraces.trail.gitrepo import NotARepository

            raise NotARepository(f"{repo} is not inside a git repository")
        blobs = BlobStore(ws.blobs.root, defer_sync=True)  # synced once, before the writes
        for patches, added in _derive_all(ws.log, blobs, ids, progress):
            derived += added
            for p in patches:
                root = _repo_of(p, roots)
                if root is None:
                    without += 1
                elif wanted is None or root == wanted:
                    by_root.setdefault(root, []).append(p)
        if wanted is not None:
            by_root.setdefault(wanted, [])
        else:
            for root in _requested_roots(ws.log):
                by_root.setdefault(root, [])
        reports = [_sync_repo(ws.log, ws.blobs, root, by_root[root]) for root in sorted(by_root)]
        _catch_up(ws)
    return SyncReport(traces_scanned=len(ids), patches_derived=derived,
                      anchors_recorded=sum(r.anchors_recorded for r in reports),
                      patches_without_repo=without, repos=reports)


def _requested_roots(log: EventLog) -> list[Path]:
    """Repositories named by ``AnchorSearchRequested`` events (the post-commit hook's)."""
    found: set[Path] = set()
    for stream_id in log.stream_ids("repo"):
        for rec in log.read(stream_id):
            e = rec.event
            if isinstance(e, ev.AnchorSearchRequested) and e.path:
                root = find_repo_root(e.path)
                if root is not None:
                    found.add(root)
    return sorted(found)


def _sync_repo(log: EventLog, blobs: BlobStore, root: Path,
               patches: list[ev.PatchRecorded]) -> RepoSync:
    with GitRepo(root) as repo:
        head = repo.head()
        if head is None:
            return RepoSync(str(root), "", None, len(patches), 0, len(patches))
        key = repo.key()
        if not patches:
            return RepoSync(str(root), key, head, 0, 0, 0)
        state = fold_repo(log, key)
        times = [an.epoch(p.at) for p in patches]
        since = None if not times or None in times else \
            min(t for t in times if t is not None) - an.CLOCK_SLACK_SECONDS
        reachable = set(repo.ancestors(head, since=since))
        pending = []
        for p in patches:
            current = state.anchors.get(p.patch_id)
            if p.authored_lines and (current is None or current.commit not in reachable):
                pending.append(an.Pending(p, _relative(p, root), _authored(blobs, p),
                                          an.epoch(p.at)))
        found = an.find_anchors(repo, pending, an.topo_oldest_first(repo, reachable))
        events: list[ev.Event] = []
        for p in pending:
            m = found.get(p.patch.patch_id)
            if m is None:
                continue
            anchor_id = ev.stable_id("anchor", p.patch.patch_id, m.commit)
            current = state.anchors.get(p.patch.patch_id)
            if current is not None and current.anchor_id == anchor_id:
                continue
            info = repo.commit(m.commit)
            events.append(ev.AnchorRecorded(
                at=info.at, anchor_id=anchor_id, patch_id=p.patch.patch_id,
                trace_id=p.patch.trace_id, repo_key=key, commit=m.commit, path=m.path,
                evidence_tier=m.tier, evidence_firmness=an.FIRM if m.firm else an.TENTATIVE,
                range=ev.LineRange(m.start, m.end), similarity=m.similarity,
                subject=info.subject, lines=m.lines))
        if events:
            log.append(ev.stream("repo", key), events)
        anchored = sum(1 for p in patches if p.patch_id in state.anchors) + len(events)
        return RepoSync(str(root), key, head, len(patches), len(events),
                        sum(1 for p in patches if p.authored_lines) - anchored)


def request_anchor_search(target: Any, folder: Path, commit: str, *,
                          source: str = "post-commit") -> ev.AnchorSearchRequested | None:
    """Record that ``commit`` was made in the repository holding ``folder`` (what the git
    post-commit hook reports), so that the next :func:`trail_sync` searches that repository.

    Returns the event appended, or None when ``folder`` is not in a repository or the request
    is already recorded.
    """
    from opentraces.workspace import open_workspace

    root = find_repo_root(folder)
    if root is None:
        return None
    with GitRepo(root) as repo:
        if repo.head() is None:
            return None
        key = repo.key()
    with open_workspace(target) as ws:
        if any(r.commit == commit for r in fold_repo(ws.log, key).requests):
            return None
        event = ev.AnchorSearchRequested(repo_key=key, commit=commit, source=source,
                                         path=str(root))
        ws.log.append(ev.stream("repo", key), [event])
        _catch_up(ws)
    return event


# ---------------------------------------------------------------------------------------------
# Track


def trail_track(target: Any, *, trace: str | None = None, patch: str | None = None,
                anchor: str | None = None, since: str | None = None, all: bool = False,
                limit: int | None = None, progress: Progress | None = None) -> TrackReport:
    """Walk anchored patches to HEAD and record their survival (when it changed).

    Choose what to track with exactly one of ``trace`` (an id or unique prefix), ``patch``,
    ``anchor``, ``since`` (an ISO-8601 time: patches authored at or after it) or ``all``.
    ``limit`` keeps the newest patches only. ``progress`` is called per repository walked
    with ``(patches, total)``.

    Raises:
        UsageError: no selector, or more than one.
    """
    from opentraces.workspace import open_workspace

    chosen = [x for x in (trace, patch, anchor, since) if x is not None] + ([True] if all else [])
    if len(chosen) != 1:
        raise UsageError("track needs exactly one of a trace, --patch, --anchor, --since or "
                         "--all")
    with open_workspace(target) as ws:
        _catch_up(ws)
        view = ws.runner().open("trail")
        rows = view.anchored() if view is not None else []
        if trace is not None:
            trace = resolve_trace(ws, trace)
            rows = view.patches_of_trace(trace) if view is not None else []
        elif patch is not None:
            rows = [r for r in rows if r["patch_id"] == patch]
        elif anchor is not None:
            rows = [r for r in rows if r["anchor_id"] == anchor]
        elif since is not None:
            rows = [r for r in rows if (r["at"] or "") >= since]
        if limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        heads, appended, observed = _track_rows(ws.log, ws.blobs, rows, progress)
        if appended:
            _catch_up(ws)
    patches = [_tracked(r, observed.get(r["patch_id"])) for r in rows]
    single = next(iter(heads.values())) if len(heads) == 1 else None
    return TrackReport(trace_id=trace, head=single, heads=heads, patches=patches,
                       observations_appended=appended)


def _track_rows(log: EventLog, blobs: BlobStore, rows: list[dict[str, Any]],
                progress: Progress | None = None
                ) -> tuple[dict[str, str], int, dict[str, SurvivalView]]:
    by_root: dict[Path, list[dict[str, Any]]] = {}
    roots: dict[str, Path | None] = {}
    for r in rows:
        if r["anchor_id"] is None or not r["file_path"]:
            continue
        folder = str(PurePosixPath(r["file_path"]).parent)
        if folder not in roots:
            roots[folder] = find_repo_root(folder)
        if roots[folder] is not None:
            by_root.setdefault(roots[folder], []).append(r)  # type: ignore[arg-type]
    heads: dict[str, str] = {}
    observed: dict[str, SurvivalView] = {}
    appended = 0
    total = sum(len(v) for v in by_root.values())
    for root in sorted(by_root):
        if progress is not None:
            progress(len(by_root[root]), total)
        with GitRepo(root) as repo:
            head = repo.head()
            if head is None:
                continue
            key = repo.key()
            state = fold_repo(log, key)
            items = []
            for r in by_root[root]:
                current = state.anchors.get(r["patch_id"])
                if current is None or current.repo_key != key:
                    continue
                items.append(sv.Tracked(current, authored_lines(blobs, r["hunks"])))
            heads[key] = head
            sv.track(repo, head, items)
            events: list[ev.Event] = []
            at = repo.commit(head).at
            for t in items:
                stat, value, path, kill = sv.state_of(t, repo)
                last = state.survival.get((t.anchor.patch_id, t.anchor.anchor_id))
                if last is None or (last.survival_state, last.retention_fraction,
                                    last.current_path, last.killing_commit) != (
                        stat, value, path, kill):
                    last = ev.SurvivalObserved(
                        at=at, patch_id=t.anchor.patch_id, anchor_id=t.anchor.anchor_id,
                        head=head, survival_state=stat, retention_fraction=value,
                        current_path=path, killing_commit=kill)
                    events.append(last)
                observed[t.anchor.patch_id] = SurvivalView(
                    survival_state=last.survival_state,
                    retention_fraction=last.retention_fraction,
                    current_path=last.current_path, observed_head=last.head,
                    killing_commit=last.killing_commit)
            if events:
                log.append(ev.stream("repo", key), events)
                appended += len(events)
    return heads, appended, observed


def _span(start: int | None, end: int | None) -> list[int] | None:
    return [start, end] if start is not None and end is not None else None


def _tracked(r: dict[str, Any], survival: SurvivalView | None) -> TrackedPatch:
    anchor = None
    if r["anchor_id"] is not None:
        anchor = AnchorView(anchor_id=r["anchor_id"], commit=r["commit_sha"],
                            subject=r["subject"], path=r["anchor_path"],
                            range=_span(r["anchor_start"], r["anchor_end"]),
                            evidence_tier=r["evidence_tier"],
                            evidence_firmness=r["evidence_firmness"],
                            similarity=r["similarity"])
    if survival is None and r.get("survival_state") is not None:
        survival = SurvivalView(survival_state=r["survival_state"],
                                retention_fraction=r["retention_fraction"],
                                current_path=r["current_path"],
                                observed_head=r["observed_head"],
                                killing_commit=r["killing_commit"])
    return TrackedPatch(patch_id=r["patch_id"], trace_id=r["trace_id"],
                        step_index=r["step_index"], path=r["path"],
                        range=_span(r["range_start"], r["range_end"]), anchor=anchor,
                        current_survival=survival, repo_key=r["repo_key"])


# ---------------------------------------------------------------------------------------------
# Reading: blame and graph


def _view(ws: Any) -> Any:
    return ws.runner().open("trail")


def resolve_trace(ws: Any, ref: str) -> str:
    """A full trace id from an id or a unique prefix (traces view first, then the trail's).

    Raises:
        TraceNotFound, AmbiguousTrace: no trace, or several, start with ``ref``.
    """
    from opentraces.tracing import AmbiguousTrace, TraceNotFound

    proj = ws.runner().open("traces")
    matches = proj.resolve(ref) if proj is not None else []
    if not matches:
        view = _view(ws)
        known = view.trace_ids() if view is not None else []
        matches = [ref] if ref in known else [t for t in known if t.startswith(ref)]
    if not matches:
        raise TraceNotFound(f"no trace matches {ref!r}",
                            next_command="opentraces bucket manifest")
    if len(matches) > 1:
        raise AmbiguousTrace(f"{len(matches)} traces start with {ref!r}: "
                             f"{', '.join(matches[:5])}", candidates=matches,
                             hint="Give more characters of the trace id.")
    return matches[0]


def _trace_refs(ws: Any, trace_ids: list[str]) -> list[TraceRef]:
    """Title and agent of traces, from the traces projection when it is built."""
    proj = ws.runner().open("traces")
    known: dict[str, tuple[str | None, str | None]] = {}
    if proj is not None and proj.path.exists() and trace_ids:
        marks = ",".join("?" * len(trace_ids))
        with proj.reader() as conn:
            for tid, title, agent in conn.execute(
                    f"SELECT trace_id, title, agent_name FROM traces WHERE trace_id IN ({marks})",
                    trace_ids):
                known[tid] = (title, agent)
    return [TraceRef(trace_id=t, title=known.get(t, (None, None))[0],
                     agent=known.get(t, (None, None))[1]) for t in trace_ids]


def blame_commit(target: Any, sha: str, repo: Path) -> BlameCommit:
    """Which traces wrote commit ``sha`` of ``repo``: coverage of its added lines, per-file
    ranges and the evidence for each patch (read-only)."""
    from opentraces.workspace import open_workspace

    root = find_repo_root(Path(repo).absolute())  # a user's folder, maybe relative
    if root is None:
        from opentraces.trail.gitrepo import NotARepository

        raise NotARepository(f"{repo} is not inside a git repository")
    with open_workspace(target, readonly=True) as ws, GitRepo(root) as git:
        full = git.resolve(sha)
        info = git.commit(full)
        view = _view(ws)
        rows = view.patches_in_commit(full) if view is not None else []
        by_path: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_path.setdefault(r["anchor_path"], []).append(r)
        total = attributed = 0
        files: dict[str, list[list[int]]] = {}
        for change in ([] if info.is_merge else git.changes(full)):
            from opentraces.trail.gitrepo import change_paths

            old, new = change_paths(change)
            if new is None:
                continue
            added = an.added_lines(git, full, old, new)
            numbers = [n for n, line in zip(added.numbers, added.lines, strict=True)
                       if line.strip()]
            total += len(numbers)
            marked = _attributed(ws.blobs, added, by_path.get(new, []))
            attributed += len(marked)
            if marked:
                files[new] = _ranges(sorted(marked))
        trace_ids = list(dict.fromkeys(r["trace_id"] for r in rows))
        traces = _trace_refs(ws, trace_ids)
    evidence = [Evidence(trace_id=r["trace_id"], step_index=r["step_index"],
                         patch_id=r["patch_id"], anchor_id=r["anchor_id"],
                         path=r["anchor_path"], range=_span(r["anchor_start"], r["anchor_end"]),
                         evidence_tier=r["evidence_tier"],
                         evidence_firmness=r["evidence_firmness"]) for r in rows]
    return BlameCommit(
        commit=CommitView(sha=full, subject=info.subject, timestamp=info.at),
        coverage=Coverage(attributed=attributed, total=total,
                          ratio=round(attributed / total, 4) if total else 0.0),
        traces=traces, files=files, evidence=evidence)


def _attributed(blobs: BlobStore, added: an.Added, rows: list[dict[str, Any]]) -> set[int]:
    """The added line numbers that the anchored patches' authored lines account for."""
    marked: set[int] = set()
    for r in rows:
        authored = authored_lines(blobs, r["hunks"])
        if r["evidence_tier"] == an.TIER_EXACT:
            need: dict[str, int] = {}
            for line in authored:
                need[line] = need.get(line, 0) + 1
            for n, line in zip(added.numbers, added.lines, strict=True):
                key = line.rstrip()
                if need.get(key, 0) > 0 and n not in marked:
                    need[key] -= 1
                    marked.add(n)
        else:
            lo, hi = r["anchor_start"], r["anchor_end"]
            marked.update(n for n, line in zip(added.numbers, added.lines, strict=True)
                          if line.strip() and lo is not None and lo <= n <= hi)
    return marked


def _ranges(numbers: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for n in numbers:
        if out and out[-1][1] + 1 == n:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def blame_trace(target: Any, trace: str) -> BlameTrace:
    """Which commits carry a trace's patches (read-only); ``trace`` may be a unique prefix.

    Raises:
        TraceNotFound, AmbiguousTrace: no trace, or several, match ``trace``.
    """
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        trace = resolve_trace(ws, trace)
        view = _view(ws)
        rows = view.anchored(trace) if view is not None else []
    commits: dict[str, TraceCommit] = {}
    for r in rows:
        c = commits.setdefault(r["commit_sha"], TraceCommit(
            sha=r["commit_sha"], subject=r["subject"], timestamp=r["committed_at"],
            patches=[]))
        c.patches.append(r["patch_id"])
    ordered = sorted(commits.values(), key=lambda c: (c.timestamp or "", c.sha))
    return BlameTrace(trace_id=trace, commits=ordered)


def trail_graph(target: Any, *, trace: str | None = None) -> TrailGraph:
    """Commits with the traces that wrote them and how many lines each (read-only)."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        if trace is not None:
            trace = resolve_trace(ws, trace)
        view = _view(ws)
        rows = view.anchored(trace) if view is not None else []
    lines: dict[str, dict[str, int]] = {}
    heads: dict[str, dict[str, Any]] = {}
    for r in rows:
        heads.setdefault(r["commit_sha"], r)
        per = lines.setdefault(r["commit_sha"], {})
        per[r["trace_id"]] = per.get(r["trace_id"], 0) + r["lines"]
    commits = [GraphCommit(sha=sha, subject=heads[sha]["subject"],
                           timestamp=heads[sha]["committed_at"],
                           traces=[GraphTrace(trace_id=t, lines=n)
                                   for t, n in sorted(per.items())])
               for sha, per in lines.items()]
    commits.sort(key=lambda c: (c.timestamp or "", c.sha))
    return TrailGraph(commits=commits)

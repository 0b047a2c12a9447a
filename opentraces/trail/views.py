"""Trail views for people and scripts: explain a step or a line, a trace's timeline, manual
anchors, ``ot://`` addresses and the graph (see docs/trail.md).

Invariants:
- Read functions (:func:`explain`, :func:`explain_line`, :func:`timeline`, :func:`resolve`,
  :func:`trace_graph`, :func:`commit_rail`) never write: they read the trail projection, the
  log and repositories (dulwich plumbing, no blame).
- :func:`attach` is the one writer here. A manual anchor is an ``AnchorRecorded`` with
  ``evidence_tier`` ``manual`` and ``evidence_firmness`` ``asserted``; its id is the same
  ``stable_id("anchor", patch, commit)`` an evidence anchor would get, so attaching twice (or
  attaching what sync already found) appends nothing.
- Repositories are only read.
"""

from __future__ import annotations

import difflib
import heapq
from pathlib import Path
from typing import Any

import msgspec

from opentraces import events as ev
from opentraces.errors import UsageError
from opentraces.projections.base import rows_as_dicts
from opentraces.trail import anchor as an
from opentraces.trail.gitrepo import (
    CommitNotFound,
    GitRepo,
    NotARepository,
    change_paths,
    find_repo_root,
)
from opentraces.trail.patches import authored_lines
from opentraces.trail.sync import (
    GraphCommit,
    GraphTrace,
    SyncReport,
    TrackedPatch,
    TrackReport,
    TrailGraph,
    _catch_up,
    _trace_refs,
    _tracked,
    fold_repo,
    resolve_trace,
    trail_graph,
    trail_sync,
    trail_track,
)

TIER_MANUAL = "manual"
FIRMNESS_ASSERTED = "asserted"
URI_SCHEME = "ot://"
#: Commits shown by :func:`commit_rail` when no limit is given.
RAIL_LIMIT = 20


class BadTrailUri(UsageError):
    """An ``ot://`` address of a kind the trail does not know."""

    code = "bad_uri"


class TrailObjectNotFound(UsageError):
    """A well-formed address (patch, anchor, trace) that names nothing in this store."""

    code = "trail_object_not_found"


# ---------------------------------------------------------------------------------------------
# Results


class StepExplain(msgspec.Struct, frozen=True):
    trace_id: str
    step_index: int
    instruction: str | None
    patches: list[TrackedPatch]


class LineExplain(msgspec.Struct, frozen=True):
    path: str
    line: int
    text: str
    head: str
    commit: str
    commit_path: str
    commit_line: int
    subject: str
    patches: list[TrackedPatch]
    reason: str | None


class TimelineEvent(msgspec.Struct, frozen=True):
    kind: str  # patch | anchor | survival
    at: str | None
    position: int
    patch_id: str
    step_index: int | None = None
    path: str | None = None
    commit: str | None = None
    anchor_id: str | None = None
    evidence_tier: str | None = None
    evidence_firmness: str | None = None
    head: str | None = None
    survival_state: str | None = None
    retention_fraction: float | None = None


class Timeline(msgspec.Struct, frozen=True):
    trace_id: str
    events: list[TimelineEvent]


class AttachReport(msgspec.Struct, frozen=True):
    trace_id: str
    commit: str
    repo_key: str
    attached: list[str]
    already: list[str]


class Resolved(msgspec.Struct, frozen=True):
    uri: str
    kind: str
    object: dict[str, Any]


class GraphPatch(msgspec.Struct, frozen=True):
    patch_id: str
    step_index: int
    path: str
    commit: str | None
    subject: str | None
    lines: int
    evidence_tier: str | None
    survival_state: str | None


class TraceGraph(msgspec.Struct, frozen=True):
    trace_id: str
    title: str | None
    agent: str | None
    patches: list[GraphPatch]
    commits: list[GraphCommit]


# ---------------------------------------------------------------------------------------------
# Helpers


def _view(ws: Any) -> Any:
    return ws.runner().open("trail")


def _rows(ws: Any, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Patch rows (with current anchor and survival) of the trail projection."""
    view = _view(ws)
    return view._query(where, params) if view is not None else []


def _record(ws: Any, trace_id: str) -> Any:
    """The trace's TraceRecord, or None when the traces view cannot give it."""
    from opentraces.errors import MaintenanceNeeded
    from opentraces.tracing import TraceNotFound, trace_get

    try:
        return trace_get(ws, trace_id)
    except (TraceNotFound, MaintenanceNeeded):
        return None


def instruction_before(record: Any, step: int) -> str | None:
    """The last user instruction at or before ``step`` (None without a record)."""
    if record is None:
        return None
    from opentraces.trace_map import instructions

    said = [text for i, text in instructions(record) if i <= step]
    return said[-1] if said else None


def _repo_root(path: Path) -> Path:
    """The repository holding a folder the user named (relative: from the current one)."""
    root = find_repo_root(Path(path).absolute())
    if root is None:
        raise NotARepository(f"{path} is not inside a git repository")
    return root


# ---------------------------------------------------------------------------------------------
# Explain


def explain(target: Any, trace: str, step: int) -> StepExplain:
    """What step ``step`` of a trace wrote: its patches with their anchor and survival, and
    the instruction the agent was following (read-only)."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        trace_id = resolve_trace(ws, trace)
        rows = _rows(ws, "p.trace_id = ? AND p.step_index = ?", (trace_id, step))
        said = instruction_before(_record(ws, trace_id), step)
    return StepExplain(trace_id=trace_id, step_index=step, instruction=said,
                       patches=[_tracked(r, None) for r in rows])


def explain_line(target: Any, path: Path, line: int) -> LineExplain:
    """Which patch, anchor and trace wrote line ``line`` of ``path`` as it is at HEAD.

    The line is followed back through history (first parent first; a merge follows the parent
    that has the line) to the commit that introduced it; the patches anchored in that commit
    whose authored lines hold it (exact anchors) or whose anchored range covers it (the other
    tiers) are the answer. Read-only; no blame.

    Raises:
        NotARepository: ``path`` is not in a repository.
        UsageError: the file is not at HEAD or has no such line.
    """
    from opentraces.workspace import open_workspace

    path = Path(path)
    root = _repo_root(path.parent)
    rel = path.relative_to(root).as_posix() if path.is_absolute() else path.as_posix()
    with GitRepo(root) as git:
        head = git.head()
        if head is None:
            raise CommitNotFound(f"{root} has no commits")
        lines = git.file_lines(head, rel)
        if lines is None:
            raise UsageError(f"{rel} is not a file at HEAD of {root}")
        if not 1 <= line <= len(lines):
            raise UsageError(f"{rel} has {len(lines)} lines at HEAD; line {line} is outside")
        sha, at_path, at_line = introduced(git, head, rel, line)
        subject = git.commit(sha).subject
    text = lines[line - 1]
    with open_workspace(target, readonly=True) as ws:
        rows = _rows(ws, "a.commit_sha = ? AND a.path = ?", (sha, at_path))
        found = [r for r in rows if _wrote(ws.blobs, r, text, at_line)]
    reason = None
    if not found:
        reason = ("no captured patch is anchored in the commit that introduced this line"
                  if not rows else "the patches anchored in that commit did not write this line")
    return LineExplain(path=rel, line=line, text=text, head=head, commit=sha,
                       commit_path=at_path, commit_line=at_line, subject=subject,
                       patches=[_tracked(r, None) for r in found], reason=reason)


def _wrote(blobs: Any, row: dict[str, Any], text: str, at_line: int) -> bool:
    if not text.strip():
        return False
    if row["evidence_tier"] == an.TIER_EXACT:
        return text.rstrip() in authored_lines(blobs, row["hunks"])
    lo, hi = row["anchor_start"], row["anchor_end"]
    return lo is not None and lo <= at_line <= hi


def introduced(git: GitRepo, head: str, path: str, line: int) -> tuple[str, str, int]:
    """(commit, path there, line there) of the commit that introduced ``path:line`` at
    ``head``, following unchanged lines back through parents (renames via the first
    parent)."""
    sha, line_path, n = head, path, line
    while True:
        info = git.commit(sha)
        blob = git.blob_id(sha, line_path)
        same = next((p for p in info.parents
                     if blob is not None and git.blob_id(p, line_path) == blob), None)
        if same is not None:  # the file is untouched by this commit on that side
            sha = same
            continue
        step = _mapped_in_parent(git, sha, info.parents, line_path, blob, n)
        if step is None:
            return sha, line_path, n
        sha, line_path, n = step


def _mapped_in_parent(git: GitRepo, sha: str, parents: list[str], path: str,
                      blob: bytes | None, n: int) -> tuple[str, str, int] | None:
    new = git.lines(blob)
    for i, parent in enumerate(parents):
        old_path = path
        old_blob = git.blob_id(parent, path)
        if old_blob is None and i == 0:
            old_path = _renamed_from(git, sha, path) or path
            old_blob = git.blob_id(parent, old_path)
        if old_blob is None:
            continue
        mapped = map_line(git.lines(old_blob), new, n)
        if mapped is not None:
            return parent, old_path, mapped
    return None


def _renamed_from(git: GitRepo, sha: str, path: str) -> str | None:
    for change in git.changes(sha, renames=True):
        old, new = change_paths(change)
        if new == path and old is not None and old != path:
            return old
    return None


def map_line(old: list[str], new: list[str], n: int) -> int | None:
    """Line ``n`` (1-based) of ``new`` in ``old`` when it is unchanged there, else None."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" and j1 < n <= j2:
            return i1 + (n - j1)
    return None


# ---------------------------------------------------------------------------------------------
# Timeline


def timeline(target: Any, trace: str, *, patch: str | None = None) -> Timeline:
    """A trace's trail facts in the order they were recorded: each patch, then its anchors
    (re-anchors included) and survival observations (read-only). ``patch`` keeps one patch."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        trace_id = resolve_trace(ws, trace)
        out: list[TimelineEvent] = []
        patches: set[str] = set()
        if ws.store_exists:
            for rec in ws.log.read(ev.stream("trace", trace_id)):
                e = rec.event
                if isinstance(e, ev.PatchRecorded) and patch in (None, e.patch_id):
                    patches.add(e.patch_id)
                    out.append(TimelineEvent(kind="patch", at=e.at, position=rec.position or 0,
                                             patch_id=e.patch_id, step_index=e.step_index,
                                             path=e.path))
            for key in _repo_keys(ws, trace_id):
                out += _repo_events(ws.log, key, patches)
    out.sort(key=lambda t: t.position)
    return Timeline(trace_id=trace_id, events=out)


def _repo_keys(ws: Any, trace_id: str) -> list[str]:
    view = _view(ws)
    if view is None or not view.path.exists():
        return []
    with view.reader() as conn:
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT repo_key FROM anchors WHERE trace_id = ? ORDER BY repo_key",
            (trace_id,))]


def _repo_events(log: Any, key: str, patches: set[str]) -> list[TimelineEvent]:
    out: list[TimelineEvent] = []
    commits: dict[str, tuple[str, str]] = {}
    for rec in log.read(ev.stream("repo", key)):
        e = rec.event
        if isinstance(e, ev.AnchorRecorded) and e.patch_id in patches:
            commits[e.anchor_id] = (e.commit, e.path)
            out.append(TimelineEvent(kind="anchor", at=e.at, position=rec.position or 0,
                                     patch_id=e.patch_id, path=e.path, commit=e.commit,
                                     anchor_id=e.anchor_id, evidence_tier=e.evidence_tier,
                                     evidence_firmness=e.evidence_firmness))
        elif isinstance(e, ev.SurvivalObserved) and e.patch_id in patches:
            out.append(TimelineEvent(kind="survival", at=e.at, position=rec.position or 0,
                                     patch_id=e.patch_id, path=e.current_path,
                                     commit=commits.get(e.anchor_id, (None, None))[0],
                                     anchor_id=e.anchor_id, head=e.head,
                                     survival_state=e.survival_state,
                                     retention_fraction=e.retention_fraction))
    return out


# ---------------------------------------------------------------------------------------------
# Attach (manual anchors)


def attach(target: Any, trace: str, commit: str, repo: Path) -> AttachReport:
    """Assert that ``commit`` carries ``trace``'s edits: a manual anchor for every patch of
    the trace whose file the commit changed (the newest anchor is a patch's current one).

    Idempotent: patches already anchored to this commit are reported in ``already``.

    Raises:
        NotARepository, CommitNotFound: ``repo`` or ``commit`` is not there.
        TraceNotFound, AmbiguousTrace: ``trace`` names no trace, or several.
        UsageError: the commit changes none of the files the trace edited.
    """
    from opentraces.workspace import open_workspace

    root = _repo_root(Path(repo))
    with open_workspace(target) as ws, GitRepo(root) as git:
        _catch_up(ws)
        trace_id = resolve_trace(ws, trace)
        sha = git.resolve(commit)
        info = git.commit(sha)
        key = git.key()
        changed = {new: old for new, old in
                   ((change_paths(c)[1], change_paths(c)[0]) for c in git.changes(sha))
                   if new is not None}
        current = fold_repo(ws.log, key).anchors
        events: list[ev.Event] = []
        already: list[str] = []
        for r in _rows(ws, "p.trace_id = ?", (trace_id,)):
            rel = _inside(r["file_path"], root)
            if rel is None or rel not in changed:
                continue
            anchor_id = ev.stable_id("anchor", r["patch_id"], sha)
            known = current.get(r["patch_id"])
            if known is not None and known.anchor_id == anchor_id:
                already.append(r["patch_id"])
                continue
            events.append(_manual_anchor(git, sha, info, key, trace_id, r, rel,
                                         changed[rel], anchor_id, ws.blobs))
        if not events and not already:
            raise UsageError(f"commit {sha[:12]} changes none of the files trace {trace_id} "
                             "edited in this repository; nothing to attach",
                             hint="Check the commit and --repo, or run `opentraces trail "
                                  f"blame commit t:{trace_id}`.")
        if events:
            ws.log.append(ev.stream("repo", key), events)
            _catch_up(ws)
    return AttachReport(trace_id=trace_id, commit=sha, repo_key=key,
                        attached=[e.patch_id for e in events],  # type: ignore[attr-defined]
                        already=already)


def _inside(file_path: str | None, root: Path) -> str | None:
    if not file_path:
        return None
    path = Path(file_path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _manual_anchor(git: GitRepo, sha: str, info: Any, key: str, trace_id: str,
                   r: dict[str, Any], rel: str, old: str | None, anchor_id: str,
                   blobs: Any) -> ev.AnchorRecorded:
    added = an.added_lines(git, sha, old, rel)
    score, where = an.coverage(authored_lines(blobs, r["hunks"]), added.lines)
    hit = sorted(added.numbers[i] for i in where)
    return ev.AnchorRecorded(
        at=info.at, anchor_id=anchor_id, patch_id=r["patch_id"], trace_id=trace_id,
        repo_key=key, commit=sha, path=rel, evidence_tier=TIER_MANUAL,
        evidence_firmness=FIRMNESS_ASSERTED,
        range=ev.LineRange(hit[0], hit[-1]) if hit else None, similarity=round(score, 4),
        subject=info.subject, lines=sum(1 for i in where if added.lines[i].strip()))


# ---------------------------------------------------------------------------------------------
# Sync one patch or anchor


def sync_patch(target: Any, *, patch: str | None = None,
               anchor: str | None = None) -> tuple[SyncReport, TrackReport]:
    """Bring one patch (or the patch of one anchor) up to date: anchor its trace's patches,
    then track the patch's survival.

    Raises:
        UsageError: neither or both of ``patch`` and ``anchor``.
        TrailObjectNotFound: no such patch or anchor.
    """
    from opentraces.workspace import open_workspace

    if (patch is None) == (anchor is None):
        raise UsageError("give exactly one of --patch or --anchor")
    with open_workspace(target) as ws:
        _catch_up(ws)
        if patch is not None:
            rows = _rows(ws, "p.patch_id = ?", (patch,))
        else:
            rows = _anchor_rows(ws, anchor or "")
        if not rows:
            what = f"patch {patch}" if patch is not None else f"anchor {anchor}"
            raise TrailObjectNotFound(f"no {what} in this store")
        row = rows[0]
        synced = trail_sync(ws, trace_ids=[row["trace_id"]])
        tracked = trail_track(ws, patch=row["patch_id"])
    return synced, tracked


def _anchor_rows(ws: Any, anchor_id: str) -> list[dict[str, Any]]:
    """The patch row of an anchor (current or superseded)."""
    view = _view(ws)
    if view is None or not view.path.exists():
        return []
    with view.reader() as conn:
        found = conn.execute("SELECT patch_id FROM anchors WHERE anchor_id = ?",
                             (anchor_id,)).fetchone()
    return _rows(ws, "p.patch_id = ?", (found[0],)) if found else []


# ---------------------------------------------------------------------------------------------
# ot:// addresses


def resolve(target: Any, uri: str) -> Resolved:
    """The object an ``ot://`` address names.

    Forms: ``ot://trace/<id>`` (kind ``trace``), ``ot://trace/<id>/patches/<pid>/trail``
    (``patch_trail``: the patch and its timeline), ``ot://patch/<pid>`` (``patch``),
    ``ot://anchor/<aid>`` (``anchor``).

    Raises:
        BadTrailUri: another scheme or form.
        TrailObjectNotFound, TraceNotFound: it names nothing here.
    """
    from opentraces.workspace import open_workspace

    if not uri.startswith(URI_SCHEME):
        raise BadTrailUri(f"{uri!r} is not an ot:// address",
                          hint="Addresses look like ot://trace/<id>, ot://patch/<id> or "
                               "ot://anchor/<id>.")
    parts = uri[len(URI_SCHEME):].strip("/").split("/")
    with open_workspace(target, readonly=True) as ws:
        match parts:
            case ["trace", ref]:
                return Resolved(uri, "trace", _trace_object(ws, resolve_trace(ws, ref)))
            case ["trace", ref, "patches", pid, "trail"]:
                trace_id = resolve_trace(ws, ref)
                row = _one_patch(ws, pid, trace_id)
                events = timeline(ws, trace_id, patch=row["patch_id"]).events
                return Resolved(uri, "patch_trail", {
                    "patch": msgspec.to_builtins(_tracked(row, None)),
                    "timeline": msgspec.to_builtins(events)})
            case ["patch", pid]:
                return Resolved(uri, "patch",
                                msgspec.to_builtins(_tracked(_one_patch(ws, pid, None), None)))
            case ["anchor", aid]:
                return Resolved(uri, "anchor", _anchor_object(ws, aid))
    raise BadTrailUri(f"{uri!r} is not a trail address",
                      hint="Known forms: ot://trace/<id>, ot://trace/<id>/patches/<pid>/trail, "
                           "ot://patch/<id>, ot://anchor/<id>.")


def _one_patch(ws: Any, pid: str, trace_id: str | None) -> dict[str, Any]:
    rows = _rows(ws, "p.patch_id = ?", (pid,))
    if not rows or (trace_id is not None and rows[0]["trace_id"] != trace_id):
        where = f" of trace {trace_id}" if trace_id else ""
        raise TrailObjectNotFound(f"no patch {pid}{where} in this store")
    return rows[0]


def _trace_object(ws: Any, trace_id: str) -> dict[str, Any]:
    (ref,) = _trace_refs(ws, [trace_id])
    rows = _rows(ws, "p.trace_id = ?", (trace_id,))
    commits = list(dict.fromkeys(r["commit_sha"] for r in rows if r["commit_sha"]))
    return {"trace_id": trace_id, "title": ref.title, "agent": ref.agent,
            "patches": [r["patch_id"] for r in rows], "commits": commits}


def _anchor_object(ws: Any, anchor_id: str) -> dict[str, Any]:
    view = _view(ws)
    row = None
    if view is not None and view.path.exists():
        with view.reader() as conn:
            found = rows_as_dicts(conn.execute("SELECT * FROM anchors WHERE anchor_id = ?",
                                               (anchor_id,)))
        row = found[0] if found else None
    if row is None:
        raise TrailObjectNotFound(f"no anchor {anchor_id} in this store")
    current = _rows(ws, "p.patch_id = ?", (row["patch_id"],))
    survival = None
    if current and current[0]["anchor_id"] == anchor_id:
        survival = msgspec.to_builtins(_tracked(current[0], None).current_survival)
    return {"anchor_id": anchor_id, "patch_id": row["patch_id"], "trace_id": row["trace_id"],
            "repo_key": row["repo_key"], "commit": row["commit_sha"], "path": row["path"],
            "range": [row["range_start"], row["range_end"]]
            if row["range_start"] is not None else None,
            "evidence_tier": row["evidence_tier"],
            "evidence_firmness": row["evidence_firmness"], "similarity": row["similarity"],
            "subject": row["subject"], "lines": row["lines"],
            "current": bool(current and current[0]["anchor_id"] == anchor_id),
            "current_survival": survival}


# ---------------------------------------------------------------------------------------------
# Graphs


def trace_graph(target: Any, trace: str) -> TraceGraph:
    """Trace-primary graph: the trace's patches and the commits they went into (read-only)."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        trace_id = resolve_trace(ws, trace)
        rows = _rows(ws, "p.trace_id = ?", (trace_id,))
        (ref,) = _trace_refs(ws, [trace_id])
    commits = trail_graph(target, trace=trace_id).commits
    patches = [GraphPatch(patch_id=r["patch_id"], step_index=r["step_index"], path=r["path"],
                          commit=r["commit_sha"], subject=r["subject"], lines=r["lines"] or 0,
                          evidence_tier=r["evidence_tier"], survival_state=r["survival_state"])
               for r in rows]
    return TraceGraph(trace_id=trace_id, title=ref.title, agent=ref.agent, patches=patches,
                      commits=commits)


def commit_rail(target: Any, repo: Path | None = None, limit: int | None = None) -> TrailGraph:
    """Commit-primary graph, newest first (read-only).

    With ``repo``: its newest ``limit`` commits reachable from HEAD (default
    :data:`RAIL_LIMIT`), each with the traces anchored in it and their lines (none for a
    commit no session wrote). Without: every commit that carries trace evidence, in any
    repository (the newest ``limit`` when given).
    """
    from opentraces.workspace import open_workspace

    if repo is None:
        commits = list(reversed(trail_graph(target).commits))
        return TrailGraph(commits=commits[:limit] if limit is not None else commits)
    root = _repo_root(Path(repo))
    with GitRepo(root) as git:
        head = git.head()
        shas = recent_commits(git, head, limit or RAIL_LIMIT) if head else []
        infos = [git.commit(s) for s in shas]
    out = []
    with open_workspace(target, readonly=True) as ws:
        for info in infos:
            per: dict[str, int] = {}
            for r in _rows(ws, "a.commit_sha = ?", (info.sha,)):
                per[r["trace_id"]] = per.get(r["trace_id"], 0) + (r["lines"] or 0)
            out.append(GraphCommit(sha=info.sha, subject=info.subject, timestamp=info.at,
                                   traces=[GraphTrace(trace_id=t, lines=n)
                                           for t, n in sorted(per.items())]))
    return TrailGraph(commits=out)


def recent_commits(git: GitRepo, head: str, limit: int) -> list[str]:
    """The newest ``limit`` commits reachable from ``head`` (commit time, then id, newest
    first), walking no further than needed."""
    seen = {head}
    queue = [(-git.commit(head).time, head)]
    out: list[str] = []
    while queue and len(out) < limit:
        _, sha = heapq.heappop(queue)
        out.append(sha)
        for parent in git.commit(sha).parents:
            if parent not in seen:
                seen.add(parent)
                heapq.heappush(queue, (-git.commit(parent).time, parent))
    return out


def render_commit_graph(graph: TrailGraph) -> str:
    """The commit rail as text: ``*`` per commit, ``|`` lines for the traces in it."""
    if not graph.commits:
        return "no commits with trail evidence"
    lines = []
    for c in graph.commits:
        lines.append(f"* {c.sha[:12]}  {c.subject or ''}".rstrip())
        lines += [f"|   {t.trace_id[:12]}  {t.lines} lines" for t in c.traces]
    return "\n".join(lines)


def render_trace_graph(graph: TraceGraph) -> str:
    """The trace-primary graph as text: each patch -> its commit (or why none)."""
    about = " ".join(x for x in (graph.title, f"({graph.agent})" if graph.agent else None) if x)
    lines = [f"trace {graph.trace_id[:12]}  {about}".rstrip()]
    for p in graph.patches:
        where = (f"* {p.commit[:12]} {p.subject or ''}".rstrip() if p.commit
                 else "(no commit carries it)")
        note = f"  [{p.evidence_tier}, {p.survival_state or 'not tracked'}]" if p.commit else ""
        lines.append(f"  step {p.step_index}  {p.path}  -> {where}{note}")
    if not graph.patches:
        lines.append("  (no patches)")
    return "\n".join(lines)

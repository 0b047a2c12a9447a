"""Survival: what is left at HEAD of the lines an anchored patch added.

One pass over the first-parent chain from the oldest anchor to HEAD follows every tracked
patch at once: each commit's tree changes are computed once, renames are looked for only when
a tracked path disappears, and a file's text is read once per blob.

States (``SurvivalObserved.survival_state``); retention = preserved / authored, counting
non-blank lines on both sides (exact text, trailing whitespace ignored):

- ``alive_on_path``: every authored line is in the file at the anchor's path.
- ``alive_moved``: every authored line is there, but the file was renamed (``current_path``).
- ``alive_transformed``: fewer lines are exact, but every line is there with the same tokens
  (re-indented, re-quoted, re-spaced), or none is exact but the code keeps >= 0.85 of its
  tokens in order (reworked by a formatter that also wraps lines).
- ``partially_preserved``: some authored lines remain exactly (0 < retention < 1).
- ``repaired``: the lines were lost at some commit and are all back at HEAD.
- ``reverted``: nothing remains and the commit that removed the last of them is a revert.
- ``lost``: nothing remains (``killing_commit`` removed the last line or deleted the file).
- ``unknown``: the anchor commit is not reachable from HEAD (amended or rebased away,
  another branch) or is older than the walk.

Invariant: the result depends only on the repository's objects and the anchors, so tracking
twice at the same HEAD observes the same states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from dulwich.diff_tree import CHANGE_COPY, CHANGE_DELETE, CHANGE_RENAME

from opentraces import events as ev
from opentraces.trail.anchor import SIMILARITY_THRESHOLD, coverage, tokens
from opentraces.trail.gitrepo import CommitNotFound, GitRepo, change_paths, reverted_commit

ALIVE_ON_PATH = "alive_on_path"
ALIVE_MOVED = "alive_moved"
ALIVE_TRANSFORMED = "alive_transformed"
PARTIALLY_PRESERVED = "partially_preserved"
REPAIRED = "repaired"
REVERTED = "reverted"
LOST = "lost"
UNKNOWN = "unknown"
STATES = (ALIVE_ON_PATH, ALIVE_MOVED, ALIVE_TRANSFORMED, PARTIALLY_PRESERVED, REPAIRED,
          REVERTED, LOST, UNKNOWN)


@dataclass
class Tracked:
    """One anchored patch being followed through history."""

    anchor: ev.AnchorRecorded
    authored: list[str]  # non-blank authored lines, trailing whitespace stripped
    path: str | None = None
    retention: float = 0.0
    was_lost: bool = False
    killing_commit: str | None = None
    started: bool = False
    head_lines: list[str] | None = None


def retention(authored: Sequence[str], lines: Sequence[str] | None) -> float:
    """preserved / authored over non-blank lines (0 when the file is gone)."""
    if not authored or lines is None:
        return 0.0
    have = Counter(line.rstrip() for line in lines if line.strip())
    kept = sum(min(n, have[line]) for line, n in Counter(authored).items())
    return kept / len(authored)


def _update(t: Tracked, repo: GitRepo, sha: str) -> None:
    lines = repo.file_lines(sha, t.path) if t.path is not None else None
    value = retention(t.authored, lines)
    if t.started and value == 0.0 and t.retention > 0.0:
        t.killing_commit = sha
        t.was_lost = True
    t.retention = value
    t.started = True


def _entry_points(repo: GitRepo, chain: list[str]) -> dict[str, str]:
    """commit -> the chain commit (oldest first) at which it joins the chain.

    Commits on the chain map to themselves; a commit of a merged side branch maps to the merge
    commit that brought it in. Ancestors of the chain's oldest commit are not mapped.
    """
    entry = {sha: sha for sha in chain}
    covered = set(chain)
    for sha in reversed(chain):  # oldest first
        for parent in repo.commit(sha).parents[1:]:
            todo = [parent]
            while todo:
                side = todo.pop()
                if side in covered:
                    continue
                covered.add(side)
                entry[side] = sha
                todo.extend(repo.commit(side).parents)
    return entry


def track(repo: GitRepo, head: str, items: Sequence[Tracked]) -> None:
    """Follow ``items`` from their anchor commits to ``head`` (updates them in place)."""
    times = [repo.commit(t.anchor.commit).time for t in items if _known(repo, t.anchor.commit)]
    if not times:
        return
    chain = repo.first_parent_chain(head, since=min(times))
    entry = _entry_points(repo, chain)
    starts: dict[str, list[Tracked]] = {}
    for t in items:
        joined = entry.get(t.anchor.commit)
        if joined is not None:
            starts.setdefault(joined, []).append(t)
    active: list[Tracked] = []
    for sha in reversed(chain):
        if active:
            _advance(repo, sha, active)
        for t in starts.get(sha, []):
            t.path = t.anchor.path
            _update(t, repo, sha)
            active.append(t)
    for t in active:
        t.head_lines = repo.file_lines(head, t.path) if t.path is not None else None


def _advance(repo: GitRepo, sha: str, active: list[Tracked]) -> None:
    """Apply one chain commit to the tracked patches whose file it touched."""
    paths = {t.path for t in active if t.path is not None}
    changes = [c for c in repo.changes(sha) if change_paths(c)[0] in paths]
    if not changes:
        return
    if any(c.type == CHANGE_DELETE for c in changes):
        # Renames are searched only when a tracked file disappears: rename detection is the
        # costly part of a tree diff.
        changes = [c for c in repo.changes(sha, renames=True) if change_paths(c)[0] in paths]
    moved: dict[str, str | None] = {}
    for c in changes:
        old, new = change_paths(c)
        if old is None:
            continue
        if c.type == CHANGE_RENAME:
            moved[old] = new
        elif c.type != CHANGE_COPY:
            moved.setdefault(old, new)
    for t in active:
        if t.path is not None and t.path in moved:
            t.path = moved[t.path]
            _update(t, repo, sha)


def _known(repo: GitRepo, sha: str) -> bool:
    try:
        repo.commit(sha)
    except CommitNotFound:
        return False
    return True


def _normalized(lines: Sequence[str]) -> list[str]:
    return ["".join(tokens([line])) for line in lines]


def state_of(t: Tracked, repo: GitRepo) -> tuple[str, float | None, str | None, str | None]:
    """(state, retention, current path, killing commit) after :func:`track`."""
    if not t.started:
        return UNKNOWN, None, None, None
    value = round(t.retention, 4)
    if value >= 1.0:
        if t.was_lost:
            return REPAIRED, 1.0, t.path, None
        return (ALIVE_ON_PATH if t.path == t.anchor.path else ALIVE_MOVED), 1.0, t.path, None
    if t.head_lines is not None and t.authored:
        # Same tokens line for line (re-indented, re-quoted): transformed, not damaged.
        if retention(_normalized(t.authored), _normalized(t.head_lines)) >= 1.0:
            return ALIVE_TRANSFORMED, value, t.path, None
        if value > 0.0:
            return PARTIALLY_PRESERVED, value, t.path, None
        score, _ = coverage(t.authored, t.head_lines)
        if score >= SIMILARITY_THRESHOLD:
            return ALIVE_TRANSFORMED, value, t.path, None
    if value > 0.0:
        return PARTIALLY_PRESERVED, value, t.path, None
    kill = t.killing_commit
    if kill is not None and reverted_commit(repo.commit(kill).message):
        return REVERTED, 0.0, t.path, kill
    return LOST, 0.0, t.path, kill

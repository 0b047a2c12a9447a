"""Anchoring: finding the commit that carries a patch's authored lines.

Evidence, strongest first (``AnchorRecorded.evidence_tier``):

- ``exact_hunk``: every non-blank line the patch added is among the lines the commit added to
  that path (multiset containment, trailing whitespace ignored).
- ``structural``: at least :data:`SIMILARITY_THRESHOLD` of the patch's added tokens (quotes
  unified, whitespace dropped) appear, in order, in the lines the commit added to that path:
  the same code after a formatter or a small touch-up before committing.

Firmness (``evidence_firmness``): ``firm`` for an exact match that no other searched commit
also matches exactly; ``tentative`` otherwise (structural, or the lines were added again later
by another commit, e.g. a cherry-pick).

Invariants:
- Candidates are the non-merge, non-revert commits reachable from HEAD, searched oldest first
  (parents before children), no older than the patch minus :data:`CLOCK_SLACK_SECONDS`. The
  first match wins: a later commit that reworks or re-adds the lines never takes the anchor;
  it is seen by survival instead.
- A patch is searched again only when its anchor commit is no longer reachable from HEAD
  (amend, rebase, squash): the rewritten commit then becomes its anchor.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from opentraces import events as ev
from opentraces.trail.gitrepo import GitRepo, change_paths, reverted_commit

SIMILARITY_THRESHOLD = 0.85
#: Clocks of the agent's machine and of the committer may disagree a little.
CLOCK_SLACK_SECONDS = 3600
TIER_EXACT = "exact_hunk"
TIER_STRUCTURAL = "structural"
FIRM = "firm"
TENTATIVE = "tentative"

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(lines: Sequence[str]) -> list[str]:
    """Code tokens of some lines, quotes unified (formatters swap them)."""
    return [t if t not in "'`" else '"' for line in lines for t in _TOKEN.findall(line)]


def token_lines(lines: Sequence[str]) -> tuple[list[str], list[int]]:
    """Tokens of ``lines`` and, for each token, the index of its line."""
    out: list[str] = []
    where: list[int] = []
    for i, line in enumerate(lines):
        for t in _TOKEN.findall(line):
            out.append(t if t not in "'`" else '"')
            where.append(i)
    return out, where


def coverage(authored: Sequence[str], target: Sequence[str]) -> tuple[float, set[int]]:
    """How much of ``authored``'s tokens appear in order in ``target`` (0..1), and which lines
    of ``target`` hold them."""
    a = tokens(authored)
    if not a:
        return 0.0, set()
    b, where = token_lines(target)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    matched = 0
    lines: set[int] = set()
    for block in matcher.get_matching_blocks():
        matched += block.size
        lines.update(where[block.b + k] for k in range(block.size))
    return matched / len(a), lines


def epoch(at: str | None) -> int | None:
    if not at:
        return None
    try:
        return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


@dataclass
class Pending:
    """A patch looking for its commit in one repository."""

    patch: ev.PatchRecorded
    path: str  # relative to this repository
    authored: list[str]  # non-blank added lines, trailing whitespace stripped
    time: int | None


@dataclass
class Match:
    commit: str
    path: str
    tier: str
    similarity: float
    start: int
    end: int
    lines: int
    firm: bool = True


@dataclass
class Added:
    """The lines one commit added to one path (1-based line numbers in the new file)."""

    numbers: list[int]
    lines: list[str]


def added_lines(repo: GitRepo, sha: str, old_path: str | None, new_path: str) -> Added:
    info = repo.commit(sha)
    old = repo.file_lines(info.parents[0], old_path) if info.parents and old_path else None
    new = repo.file_lines(sha, new_path) or []
    numbers: list[int] = []
    matcher = difflib.SequenceMatcher(None, old or [], new, autojunk=False)
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            numbers.extend(range(j1 + 1, j2 + 1))
    return Added(numbers, [new[n - 1] for n in numbers])


def match(p: Pending, added: Added, commit: str) -> Match | None:
    """The evidence that ``commit`` carries patch ``p`` (None when it does not)."""
    if not p.authored or not added.lines:
        return None
    have = Counter(line.rstrip() for line in added.lines if line.strip())
    need = Counter(p.authored)
    if not need - have:
        taken: Counter[str] = Counter()
        hit = []
        for n, line in zip(added.numbers, added.lines, strict=True):
            key = line.rstrip()
            if taken[key] < need.get(key, 0):
                taken[key] += 1
                hit.append(n)
        return Match(commit, "", TIER_EXACT, 1.0, min(hit), max(hit), len(p.authored))
    score, where = coverage(p.authored, added.lines)
    if score >= SIMILARITY_THRESHOLD:
        hit = sorted(added.numbers[i] for i in where)
        return Match(commit, "", TIER_STRUCTURAL, round(score, 4), hit[0], hit[-1],
                     sum(1 for i in where if added.lines[i].strip()), firm=False)
    return None


def topo_oldest_first(repo: GitRepo, shas: set[str]) -> list[str]:
    """``shas`` ordered parents before children (ties by commit time, then id)."""
    order: list[str] = []
    done: set[str] = set()
    for start in sorted(shas, key=lambda s: (repo.commit(s).time, s)):
        stack = [(start, False)]
        while stack:
            sha, expanded = stack.pop()
            if sha in done:
                continue
            if expanded:
                done.add(sha)
                order.append(sha)
                continue
            stack.append((sha, True))
            stack.extend((p, False) for p in reversed(repo.commit(sha).parents)
                         if p in shas and p not in done)
    return order


def find_anchors(repo: GitRepo, pending: Sequence[Pending],
                 commits: Sequence[str]) -> dict[str, Match]:
    """patch_id -> the first commit (in ``commits`` order, oldest first) carrying it."""
    by_path: dict[str, list[Pending]] = {}
    for p in pending:
        if p.authored:
            by_path.setdefault(p.path, []).append(p)
    found: dict[str, Match] = {}
    for sha in commits:
        info = repo.commit(sha)
        if info.is_merge or reverted_commit(info.message):
            continue
        wanted = None
        for change in repo.changes(sha):
            old_path, new_path = change_paths(change)
            waiting = by_path.get(new_path or "")
            if not waiting:
                continue
            eligible = [p for p in waiting if p.time is None
                        or info.time >= p.time - CLOCK_SLACK_SECONDS]
            if not eligible:
                continue
            wanted = added_lines(repo, sha, old_path, new_path or "")
            for p in eligible:
                m = match(p, wanted, sha)
                if m is None:
                    continue
                m.path = new_path or ""
                first = found.get(p.patch.patch_id)
                if first is None:
                    found[p.patch.patch_id] = m
                elif m.tier == TIER_EXACT:
                    first.firm = False  # another commit adds the same lines again
    return found

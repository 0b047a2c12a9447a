"""Read-only git access for the trail, through dulwich's plumbing.

Invariants:
- Nothing here writes to a repository: no refs, no objects, no index, no config.
- Diffs are computed between trees (``tree_changes``) and between blob texts (difflib); blame
  is never used (dulwich's blame is ~22x slower than git's).
- The repository key is ``stable_id("repo", <root commit>)`` where the root commit is the one
  reached by following first parents from HEAD: stable across clones, fetches and new commits,
  and the same on every machine that has the history.
- Commit, tree-entry and blob-text lookups are cached for the life of one :class:`GitRepo`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from dulwich.diff_tree import CHANGE_DELETE, RenameDetector, TreeChange, tree_changes
from dulwich.errors import NotGitRepository
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Commit
from dulwich.repo import Repo

from opentraces.errors import UsageError
from opentraces.events import stable_id
from opentraces.text import decode_bytes

REPO_KEY_LENGTH = 20


class NotARepository(UsageError):
    """A folder that is not inside a git repository."""

    code = "not_a_repository"


class CommitNotFound(UsageError):
    """A commit id (or prefix) that the repository does not hold."""

    code = "commit_not_found"


def find_repo_root(folder: str | Path) -> Path | None:
    """The nearest folder at or above ``folder`` holding ``.git`` (None when there is none).

    Folders that no longer exist are skipped upward: a patch may name a deleted folder.
    """
    path = Path(folder)
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


class CommitInfo(msgspec.Struct, frozen=True):
    sha: str
    subject: str
    message: str
    time: int
    parents: list[str]

    @property
    def at(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


_REVERT = re.compile(r"This reverts commit ([0-9a-f]{7,40})")


def reverted_commit(message: str) -> str | None:
    """The commit a ``git revert`` message names, if the message is one."""
    m = _REVERT.search(message)
    return m.group(1) if m else None


class GitRepo:
    """One repository opened for reading."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.repo = Repo(str(self.root))
        except NotGitRepository as e:
            raise NotARepository(f"{root} is not a git repository") from e
        self.store = self.repo.object_store
        self._commits: dict[str, CommitInfo] = {}
        self._trees: dict[str, bytes] = {}
        self._texts: dict[bytes, list[str]] = {}
        self._key: str | None = None

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> GitRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commits ------------------------------------------------------------------------------

    def head(self) -> str | None:
        try:
            return self.repo.head().decode("ascii")
        except KeyError:
            return None  # an empty repository

    def commit(self, sha: str) -> CommitInfo:
        info = self._commits.get(sha)
        if info is None:
            try:
                obj = self.store[sha.encode("ascii")]
            except KeyError as e:
                raise CommitNotFound(f"commit {sha} is not in {self.root}") from e
            if not isinstance(obj, Commit):
                raise CommitNotFound(f"{sha} in {self.root} is not a commit")
            message = decode_bytes(obj.message)
            info = CommitInfo(sha=sha, subject=message.split("\n", 1)[0].strip(),
                              message=message, time=obj.commit_time,
                              parents=[p.decode("ascii") for p in obj.parents])
            self._trees[sha] = obj.tree
            self._commits[sha] = info
        return info

    def resolve(self, ref: str) -> str:
        """A full commit id from a full id, a unique prefix, or ``HEAD``."""
        if ref == "HEAD":
            head = self.head()
            if head is None:
                raise CommitNotFound(f"{self.root} has no commits")
            return head
        if len(ref) == 40:
            return self.commit(ref).sha
        found = [s.decode("ascii") for s in self.store if s.decode("ascii").startswith(ref)]
        commits = [s for s in found if isinstance(self.store[s.encode("ascii")], Commit)]
        if len(commits) != 1:
            raise CommitNotFound(f"{ref!r} names {len(commits)} commits in {self.root}")
        return commits[0]

    def tree(self, sha: str) -> bytes:
        if sha not in self._trees:
            self.commit(sha)
        return self._trees[sha]

    def key(self) -> str:
        """The repository key (see the module docstring)."""
        if self._key is None:
            sha = self.head()
            if sha is None:
                raise NotARepository(f"{self.root} has no commits yet")
            while self.commit(sha).parents:
                sha = self.commit(sha).parents[0]
            self._key = stable_id("repo", sha, length=REPO_KEY_LENGTH)
        return self._key

    def first_parent_chain(self, head: str, since: int | None = None) -> list[str]:
        """Commits from ``head`` back along first parents, newest first, down to the first
        commit older than ``since`` (kept, so the chain has a base)."""
        chain = [head]
        sha = head
        while self.commit(sha).parents:
            if since is not None and self.commit(sha).time < since:
                break
            sha = self.commit(sha).parents[0]
            chain.append(sha)
        return chain

    def ancestors(self, head: str, since: int | None = None) -> Iterator[str]:
        """Every commit reachable from ``head`` (down to commits older than ``since``)."""
        seen: set[str] = set()
        todo = [head]
        while todo:
            sha = todo.pop()
            if sha in seen:
                continue
            seen.add(sha)
            yield sha
            info = self.commit(sha)
            if since is None or info.time >= since:
                todo.extend(info.parents)

    # -- content ------------------------------------------------------------------------------

    def blob_id(self, sha: str, path: str) -> bytes | None:
        """The blob of ``path`` at commit ``sha`` (None when the path is not a file there)."""
        try:
            mode, blob = tree_lookup_path(self.store.__getitem__, self.tree(sha),
                                          path.encode("utf-8"))
        except KeyError:
            return None
        return blob if mode is not None and mode & 0o170000 == 0o100000 else None

    def lines(self, blob: bytes | None) -> list[str]:
        """The text lines of a blob (empty for None)."""
        if blob is None:
            return []
        text = self._texts.get(blob)
        if text is None:
            text = self._texts[blob] = decode_bytes(self.store[blob].data).splitlines()
        return text

    def file_lines(self, sha: str, path: str) -> list[str] | None:
        blob = self.blob_id(sha, path)
        return None if blob is None else self.lines(blob)

    def changes(self, sha: str, *, renames: bool = False) -> list[TreeChange]:
        """What ``sha`` changed against its first parent (everything, for a root commit)."""
        info = self.commit(sha)
        parent_tree = self.tree(info.parents[0]) if info.parents else None
        detector = RenameDetector(self.store) if renames else None
        return list(tree_changes(self.store, parent_tree, self.tree(sha),
                                 rename_detector=detector))


def change_paths(change: TreeChange) -> tuple[str | None, str | None]:
    """(old path, new path) of a tree change, as text."""
    old = change.old.path.decode("utf-8", "surrogateescape") \
        if change.old is not None and change.old.path is not None else None
    new = change.new.path.decode("utf-8", "surrogateescape") \
        if change.new is not None and change.new.path is not None else None
    if change.type == CHANGE_DELETE:
        new = None
    return old, new

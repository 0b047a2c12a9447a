"""Builders for trail tests: real git repositories made with dulwich, and agent sessions as
capture events whose edits the tests then commit. (No tests here.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dulwich.index import commit_tree
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from opentraces import events as ev

BASE_TIME = 1_780_000_000  # 2026-05-28, fixed so ids and digests repeat
AGENT = b"Agent Person <agent@example.com>"
HUMAN = b"Human Person <human@example.com>"


def iso(t: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitBuilder:
    """A repository under ``root`` whose commits are made from in-memory file contents."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.repo = Repo.init(str(root))
        self.repo.refs.set_symbolic_ref(b"HEAD", f"refs/heads/{branch}".encode())
        self.branch = branch
        self.files: dict[str, str] = {}

    def head(self) -> str | None:
        try:
            return self.repo.refs[f"refs/heads/{self.branch}".encode()].decode()
        except KeyError:
            return None

    def files_at(self, sha: str) -> dict[str, str]:
        from dulwich.object_store import iter_tree_contents

        commit = self.repo[sha.encode()]
        return {e.path.decode(): self.repo[e.sha].data.decode()
                for e in iter_tree_contents(self.repo.object_store, commit.tree)}

    def commit(self, message: str, changes: dict[str, str | None], *, t: int,
               author: bytes = HUMAN, parents: list[str] | None = None,
               base: dict[str, str] | None = None, move_ref: bool = True) -> str:
        """Commit ``changes`` (path -> text, None deletes) on top of ``base`` (default: the
        current files); parents default to the branch head."""
        files = dict(self.files if base is None else base)
        for path, text in changes.items():
            if text is None:
                files.pop(path, None)
            else:
                files[path] = text
        store = self.repo.object_store
        entries = []
        for path, text in sorted(files.items()):
            blob = Blob.from_string(text.encode())
            store.add_object(blob)
            entries.append((path.encode(), blob.id, 0o100644))
        c = Commit()
        c.tree = commit_tree(store, entries)
        head = self.head()
        c.parents = [p.encode() for p in parents] if parents is not None else (
            [head.encode()] if head else [])
        c.author = c.committer = author
        c.author_time = c.commit_time = t
        c.author_timezone = c.commit_timezone = 0
        c.message = message.encode()
        store.add_object(c)
        sha = c.id.decode()
        if move_ref:
            self.repo.refs[f"refs/heads/{self.branch}".encode()] = c.id
            self.files = files
        return sha

    def reset(self, sha: str) -> None:
        """Point the branch at ``sha`` (amend, rebase and squash rewrite it this way)."""
        self.repo.refs[f"refs/heads/{self.branch}".encode()] = sha.encode()
        self.files = self.files_at(sha)


@dataclass
class Session:
    """An agent session whose Claude Code style edits become capture events."""

    agent: str
    session_id: str
    cwd: Path
    t: int
    events: list[ev.Event] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    step: int = 0

    def __post_init__(self) -> None:
        self.trace_id = ev.trace_id_for(self.agent, self.session_id)
        self.events.append(ev.SessionStarted(
            at=iso(self.t), trace_id=self.trace_id, session_id=self.session_id,
            agent=ev.AgentInfo(name=self.agent), cwd=str(self.cwd)))
        self.events.append(ev.StepRecorded(at=iso(self.t), step_index=0, role="user",
                                           content="please change the code"))
        self.step = 1

    def write(self, path: str, text: str, *, t: int, before: str | None = None) -> str:
        """An Edit (file known) or Write (new file) of ``path`` to ``text``; returns the
        tool call id."""
        old = self.files.get(path, before)
        call_id = f"toolu_{self.session_id}_{self.step}"
        file_path = str(self.cwd / path)
        if old is None:
            call = ev.ToolCall(tool_call_id=call_id, tool_name="Write",
                               input={"file_path": file_path, "content": text})
            detail = {"type": "create", "filePath": file_path, "content": text,
                      "structuredPatch": []}
        else:
            call = ev.ToolCall(tool_call_id=call_id, tool_name="Edit",
                               input={"file_path": file_path, "old_string": old,
                                      "new_string": text})
            detail = {"filePath": file_path, "oldString": old, "newString": text,
                      "originalFile": old, "structuredPatch": []}
        self.events.append(ev.StepRecorded(at=iso(t), step_index=self.step, role="agent",
                                           model="model-x", tool_calls=[call]))
        self.events.append(ev.ToolResultRecorded(at=iso(t), step_index=self.step,
                                                 tool_call_id=call_id, content="ok",
                                                 detail=detail))
        self.files[path] = text
        self.step += 1
        return call_id

    def stream(self) -> str:
        return ev.stream("trace", self.trace_id)

    def records(self) -> list[ev.Recorded]:
        return [ev.Recorded(self.stream(), i, e) for i, e in enumerate(self.events)]


def code(name: str, body_lines: int = 6, indent: str = "    ", quote: str = "'") -> str:
    """A small Python function with distinctive lines."""
    lines = [f"def {name}(value):"]
    for i in range(body_lines):
        lines.append(f"{indent}step_{name}_{i} = value * {i + 2} + len({quote}{name}{i}{quote})")
    lines.append(f"{indent}return step_{name}_{body_lines - 1}")
    return "\n".join(lines) + "\n"

"""Views of one TraceRecord for navigation: the map, change bursts with their intent, slices.

Everything here is a pure function of a record, except the commit lookup of :func:`bursts`,
which may *read* a Git repository (never write it) when asked to.

- **User instructions** are the user steps a person wrote to the agent: harness markup
  (``<ide_opened_file>``, ``<system-reminder>``…) is removed, and command output echoed back
  (``<local-command-stdout>``, ``<bash-stdout>``), shell commands the user ran (``<bash-input>``,
  ``!ls``), interruption notices, task notifications, sub-agent warm-ups and argument-less slash
  commands (``/clear``) are not instructions. A slash command with arguments is, as ``/name args``.
  In a sub-agent's own trace (all steps on the side chain) its prompts count.
- **Edit calls** are Edit/MultiEdit/Write/NotebookEdit (Claude Code), apply_patch (Codex CLI),
  edit/write (Pi) and replace/write_file (Gemini CLI). A call whose result is a tool error
  changed nothing and is left out. Paths are made relative to the trace's working folder, so the
  absolute and relative spellings of one file are one entry.
- **Bursts** cluster edit steps: a new burst starts when the next edit step is more than ``gap``
  steps after the previous one, or when a user instruction comes between them. A burst's id is
  its range address ``<trace>:<A>-<B>``; a step's node id is its context node id when the
  context tree gave it one, else its address ``<trace>:<n>``.
- **Intent**: ``most_substantive_spec`` is the latest instruction of more than
  ``TRIGGER_WORDS`` words before the burst; ``spec_chain`` the instructions from it up to the
  burst (and up to the burst's commit); ``trigger`` the approval that set the work going: the
  last short instruction (not a question) after the spec and before the burst, or, when the
  user asked for the commit after the edits, the last instruction there that says "commit".
- **Burst commit**: the modal anchor commit of the burst's patches when the trail anchored any;
  else, with ``commit_lookup``, the first commit a successful ``git`` command reported in its
  output (``[main abc1234] subject``, as ``git commit`` and ``git rebase --continue`` print
  it) from the burst's first step up to the next burst. With a repository
  (given, or found at the trace's working folder) the short sha is resolved to the full one
  with its message, reading objects only. Without ``commit_lookup`` no repository is opened and
  no output is scanned.
- Slice ids are range addresses too, so they are deterministic and can be passed to
  ``trace get``.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from opentraces.errors import UsageError
from opentraces.record import Step, ToolCall, TraceRecord
from opentraces.tracing import LAST, parse_steps, step_bounds, trace_view

__all__ = [
    "BURST_GAP",
    "SLICE_RADIUS",
    "bursts",
    "instructions",
    "record_card",
    "trace_card",
    "trace_map",
    "trace_slice",
]

#: Edit steps further apart than this (in steps) belong to different bursts.
BURST_GAP = 5
#: Default half-width of an ``around`` slice.
SLICE_RADIUS = 5
#: An instruction of at most this many words can be a trigger ("ok", "go ahead and commit").
TRIGGER_WORDS = 8
PREVIEW_CHARS = 120
SPEC_CHARS = 1000
CARD_FILES = 10
CARD_STEPS = 12

EDIT_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit", "apply_patch", "edit",
                        "write", "replace", "write_file"})
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
#: Tool input keys that hold a shell command (Claude, Pi, Codex, Gemini).
COMMAND_KEYS = ("command", "cmd")

_HARNESS = re.compile(r"<(ide_opened_file|ide_selection|system-reminder)>.*?</\1>", re.DOTALL)
_NOT_INSTRUCTION = ("<local-command-stdout>", "<local-command-stderr>", "<bash-input>",
                    "<bash-stdout>", "<bash-stderr>", "<task-notification>",
                    "[Request interrupted by user", "Caveat: ", "!")
_COMMAND_NAME = re.compile(r"<command-name>\s*/?([^<]*?)\s*</command-name>", re.DOTALL)
_COMMAND_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.DOTALL)
_GIT = re.compile(r"\bgit\b")
_COMMIT_LINE = re.compile(r"^\[(?P<branch>[^\]\n]+?) (?:\(root-commit\) )?(?P<sha>[0-9a-f]{7,40})\]"
                          r" (?P<subject>[^\n]*)$", re.MULTILINE)
_COMMIT_WORD = re.compile(r"\bcommit\b", re.IGNORECASE)
_PATCH_FILE = re.compile(r"^\*\*\* (Update|Add|Delete) File: (.+)$")


# ---------------------------------------------------------------------------------------------
# Reading steps


def instructions(record: TraceRecord) -> list[tuple[int, str]]:
    """The user instructions of a trace as ``(step_index, text)``, in step order."""
    side_only = not any(s.call_type not in ("subagent", "warmup")
                        for s in record.steps if s.role == "user")
    out = []
    for step in record.steps:
        if step.role != "user" or step.call_type == "warmup":
            continue
        if step.call_type == "subagent" and not side_only:
            continue
        text = _instruction_text(step.content or "")
        if text:
            out.append((step.step_index, text))
    return out


def _instruction_text(content: str) -> str | None:
    text = _HARNESS.sub("", content).strip()
    name = _COMMAND_NAME.search(text)
    if name:
        args = _COMMAND_ARGS.search(text)
        rest = args.group(1).strip() if args else ""
        return f"/{name.group(1)} {rest}" if rest else None
    if not text or text.startswith(_NOT_INSTRUCTION):
        return None
    return text


def _node_id(record: TraceRecord, step: Step) -> str:
    return step.context_node_id or f"{record.trace_id}:{step.step_index}"


def _preview(text: str, chars: int = PREVIEW_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= chars else line[:chars - 1] + "…"


def _words(text: str) -> int:
    return len(text.split())


def _errored(step: Step, call: ToolCall) -> bool:
    return any(o.source_call_id == call.tool_call_id and o.error == "tool_error"
               for o in step.observations)


def _output(step: Step, call: ToolCall) -> str:
    return next((o.content or "" for o in step.observations
                 if o.source_call_id == call.tool_call_id), "")


def _command(call: ToolCall) -> str:
    for key in COMMAND_KEYS:
        value = call.input.get(key)
        if isinstance(value, list):
            return " ".join(str(v) for v in value)
        if isinstance(value, str):
            return value
    return ""


def repo_path(path: str, cwd: str | None) -> str:
    """``path`` relative to the trace's working folder when it lies inside it, else normalized."""
    norm = posixpath.normpath(path.strip())
    if cwd and posixpath.isabs(norm):
        root = posixpath.normpath(cwd).rstrip("/")
        if norm.startswith(root + "/"):
            return norm[len(root) + 1:]
    return norm


def edit_files(call: ToolCall) -> dict[str, int]:
    """The files one edit call writes, as raw path -> hunk count (empty for other tools)."""
    if call.tool_name not in EDIT_TOOLS:
        return {}
    if call.tool_name == "apply_patch":
        text = next((v for v in call.input.values()
                     if isinstance(v, str) and "*** Begin Patch" in v), "")
        return _patch_files(text)
    path = next((v for k in ("file_path", "path", "notebook_path")
                 if isinstance(v := call.input.get(k), str) and v.strip()), None)
    if path is None:
        return {}
    edits = call.input.get("edits")
    return {path: len(edits) if isinstance(edits, list) and edits else 1}


def _patch_files(text: str) -> dict[str, int]:
    files: dict[str, int] = {}
    current: str | None = None
    for line in text.splitlines():
        found = _PATCH_FILE.match(line)
        if found:
            current = found.group(2).strip()
            files[current] = 0
        elif line.startswith("*** Move to: ") and current is not None:
            files[line.removeprefix("*** Move to: ").strip()] = files.pop(current)
            current = line.removeprefix("*** Move to: ").strip()
        elif line.startswith("@@") and current is not None:
            files[current] += 1
    return {path: max(hunks, 1) for path, hunks in files.items()}


class _Commit(msgspec.Struct, frozen=True):
    step: int
    sha: str
    subject: str | None
    body: str | None = None


def commits_seen(record: TraceRecord) -> list[_Commit]:
    """Commits a successful ``git`` command reported (``git commit``, ``git rebase
    --continue``, ``git cherry-pick``… print ``[branch sha] subject``), in step order."""
    found = []
    for step in record.steps:
        for call in step.tool_calls:
            if _errored(step, call) or not _GIT.search(_command(call)):
                continue
            found += [_Commit(step.step_index, m.group("sha"), m.group("subject"))
                      for m in _COMMIT_LINE.finditer(_output(step, call))]
    return found


# ---------------------------------------------------------------------------------------------
# Bursts


def bursts(record: TraceRecord, *, gap: int = BURST_GAP, commit_lookup: bool = True,
           repo: Path | None = None) -> list[dict[str, Any]]:
    """One change burst per cluster of nearby edit steps (see the module docstring).

    Args:
        record: the trace.
        gap: edit steps more than this many steps apart start a new burst.
        commit_lookup: look for the burst's commit in ``git commit`` outputs and, when a
            repository is at hand, resolve it there (read-only). False opens no repository.
        repo: the repository to resolve commits in; by default the trace's working folder
            when it is a Git repository.

    Raises:
        UsageError: ``gap`` is negative, or ``repo`` is not a Git repository.
    """
    if gap < 0:
        raise UsageError(f"the burst gap must be 0 or more, not {gap}")
    cwd = record.metadata.get("cwd") if isinstance(record.metadata.get("cwd"), str) else None
    said = instructions(record)
    groups = _clusters(record, gap, {i for i, _ in said}, cwd)
    commits = commits_seen(record) if commit_lookup else []
    starts = [g[0]["step_index"] for g in groups] + [None]
    with _Resolver(repo, cwd, commit_lookup) as resolver:
        return [_burst(record, patches, said, commits, nxt, resolver)
                for patches, nxt in zip(groups, starts[1:], strict=True)]


def _clusters(record: TraceRecord, gap: int, said: set[int],
              cwd: str | None) -> list[list[dict[str, Any]]]:
    by_call: dict[str, list[str]] = {}
    for p in record.patches:
        if p.tool_call_id:
            by_call.setdefault(p.tool_call_id, []).append(p.patch_id)
    groups: list[list[dict[str, Any]]] = []
    last: int | None = None
    for step in record.steps:
        calls = [(c, edit_files(c)) for c in step.tool_calls if not _errored(step, c)]
        calls = [(c, f) for c, f in calls if f]
        if not calls:
            continue
        i = step.step_index
        if last is None or i - last > gap or any(last < s < i for s in said):
            groups.append([])
        for call, files in calls:
            rel: dict[str, int] = {}
            for path, hunks in files.items():
                key = repo_path(path, cwd)
                rel[key] = rel.get(key, 0) + hunks
            groups[-1].append({"step_index": i, "tool_call_id": call.tool_call_id,
                               "tool_name": call.tool_name, "files": rel,
                               "patch_ids": by_call.get(call.tool_call_id, [])})
        last = i
    return groups


def _burst(record: TraceRecord, patches: list[dict[str, Any]], said: list[tuple[int, str]],
           commits: list[_Commit], next_start: int | None,
           resolver: _Resolver) -> dict[str, Any]:
    first, last = patches[0]["step_index"], patches[-1]["step_index"]
    files: dict[str, int] = {}
    for p in patches:
        for path, hunks in p["files"].items():
            files[path] = files.get(path, 0) + hunks
    commit, source = _anchor_commit(record, patches), "anchor"
    if commit is None:
        seen = next((c for c in commits
                     if c.step >= first and (next_start is None or c.step < next_start)), None)
        commit, source = seen, "tool_output" if seen else None
    if commit is not None:
        commit = resolver.resolve(commit)
    intent = _intent(said, first, commit.step if commit and source == "tool_output" else None)
    sha = commit.sha if commit else None
    intent.update(burst_commit_sha=sha, commit_subject=commit.subject if commit else None,
                  commit_body=commit.body if commit else None)
    return {"node_id": f"{record.trace_id}:{first}-{last}", "step_range": [first, last],
            "unique_files": files, "patches": patches, "burst_commit_sha": sha,
            "commit_source": source, "intent": intent}


def _anchor_commit(record: TraceRecord, patches: list[dict[str, Any]]) -> _Commit | None:
    ids = {pid for p in patches for pid in p["patch_ids"]}
    shas = [p.anchor.commit_sha for p in record.patches
            if p.patch_id in ids and p.anchor is not None and p.anchor.commit_sha]
    if not shas:
        return None
    counts = Counter(shas)
    top = max(counts.values())
    sha = next(s for s in shas if counts[s] == top)  # ties: the first seen
    return _Commit(step=patches[0]["step_index"], sha=sha, subject=None)


def _intent(said: list[tuple[int, str]], first: int, commit_step: int | None) -> dict[str, Any]:
    before = [x for x in said if x[0] < first]
    spec = next((x for x in reversed(before) if _words(x[1]) > TRIGGER_WORDS), None)
    chain = [x for x in before if spec is None or x[0] >= spec[0]]
    triggers = [x for x in chain if x != spec and _words(x[1]) <= TRIGGER_WORDS
                and not x[1].rstrip().endswith("?")]
    if commit_step is not None:  # said after the edits, before their commit
        after = [x for x in said if first <= x[0] < commit_step]
        chain += after
        triggers += [x for x in after if _COMMIT_WORD.search(x[1])]
    return {"trigger": _said(triggers[-1]) if triggers else None,
            "most_substantive_spec": _said(spec) if spec else None,
            "spec_chain": [_said(x) for x in chain]}


def _said(item: tuple[int, str]) -> dict[str, Any]:
    step, text = item
    return {"text": text if len(text) <= SPEC_CHARS else text[:SPEC_CHARS - 1] + "…",
            "step": step}


class _Resolver:
    """Short shas to full ones, with subject and body, from a repository opened read-only."""

    def __init__(self, repo: Path | None, cwd: str | None, enabled: bool) -> None:
        self._given = repo is not None
        self._path = (repo if repo is not None else Path(cwd) if cwd else None) if enabled \
            else None
        self._repo: Any = None

    def __enter__(self) -> _Resolver:
        if self._path is None or not (self._given or self._path.is_dir()):
            return self
        from dulwich.errors import NotGitRepository
        from dulwich.repo import Repo

        try:
            self._repo = Repo.discover(str(self._path))
        except NotGitRepository as e:
            if self._given:
                raise UsageError(f"{self._path} is not in a Git repository") from e
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._repo is not None:
            self._repo.close()

    def resolve(self, commit: _Commit) -> _Commit:
        if self._repo is None:
            return commit
        from dulwich.objects import Commit

        store = self._repo.object_store
        found = [obj for sha in store.iter_prefix(commit.sha.encode("ascii"))
                 if isinstance(obj := store[sha], Commit)]
        if len(found) != 1:  # unknown here, or an ambiguous short sha: keep what was seen
            return commit
        subject, _, body = found[0].message.decode("utf-8", "backslashreplace").partition("\n")
        return _Commit(step=commit.step, sha=found[0].id.decode("ascii"),
                       subject=subject.strip(), body=body.strip() or None)


# ---------------------------------------------------------------------------------------------
# The map


def trace_map(record: TraceRecord, *, candidate: str | None = None) -> dict[str, Any]:
    """Facets, landmarks, sections, scope and a hand-off command for one trace.

    Args:
        record: the trace.
        candidate: a unit to focus on: a step (``12``), a range (``10-20``), ``last``, or any
            of these after ``<trace>:``. The scope is then the sections that hold it, and the
            landmarks and sections are those in scope.

    Raises:
        UsageError: the candidate is malformed or outside the trace's steps.
    """
    tid = record.trace_id
    if not record.steps:
        return {"trace_id": tid, "facets": facets(record), "landmarks": [], "sections": [],
                "scope": {"from_step": None, "to_step": None, "step_count": 0,
                          "candidate": candidate},
                "handoff": None}
    said = instructions(record)
    lo, hi = record.steps[0].step_index, record.steps[-1].step_index
    ends = [i - 1 for i, _ in said[1:]] + [hi]
    sections = [{"step": i, "end_step": end, "preview": _preview(t)}
                for (i, t), end in zip(said, ends, strict=True)]
    if candidate is not None:
        a, b = _candidate_range(record, candidate)
        lo = max([s["step"] for s in sections if s["step"] <= a], default=lo)
        hi = min([s["end_step"] for s in sections if s["end_step"] >= b], default=hi)
        sections = [s for s in sections if s["end_step"] >= lo and s["step"] <= hi]
    marks = [m for m in landmarks(record, said) if lo <= m["step"] <= hi]
    count = sum(1 for s in record.steps if lo <= s.step_index <= hi)
    return {
        "trace_id": tid, "facets": facets(record), "landmarks": marks, "sections": sections,
        "scope": {"from_step": lo, "to_step": hi, "step_count": count, "candidate": candidate},
        "handoff": {"command": f"opentraces trace slice {tid} --from-step {lo} --to-step {hi}",
                    "from_step": lo, "to_step": hi},
    }


def _candidate_range(record: TraceRecord, candidate: str) -> tuple[int, int]:
    owner, sep, steps = candidate.strip().rpartition(":")
    if sep and owner and not record.trace_id.startswith(owner):
        raise UsageError(f"candidate {candidate!r} names another trace than {record.trace_id}")
    start, end = parse_steps(steps, candidate)
    return step_bounds(record, start, end)


_LANDMARK_ORDER = ("first_prompt", "user_instruction", "compaction", "skill", "subagent",
                   "edits", "error", "commit")


def landmarks(record: TraceRecord,
              said: list[tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """Where things happened: prompts, instructions, compactions, skills, sub-agent calls,
    edit bursts, tool errors and commits (from tool outputs; no repository is read)."""
    said = instructions(record) if said is None else said
    by_index = {s.step_index: s for s in record.steps}

    def mark(step: int, kind: str, preview: str, node: str | None = None) -> dict[str, Any]:
        at = by_index.get(step)
        return {"node_id": node or (_node_id(record, at) if at else f"{record.trace_id}:{step}"),
                "step": step, "type": kind, "preview": _preview(preview)}

    out = [mark(i, "user_instruction" if k else "first_prompt", t)
           for k, (i, t) in enumerate(said)]
    for c in record.metadata.get("compactions", []):
        out.append(mark(c["step_index"], "compaction",
                        f"context compacted ({c.get('trigger') or 'auto'}"
                        + (f", {c['pre_tokens']} tokens before)" if c.get("pre_tokens")
                           else ")")))
    out += [mark(s["step_index"], "skill", f"skill {s['skill']} ({s['via']})")
            for s in record.metadata.get("skills", [])]
    for step in record.steps:
        for call in step.tool_calls:
            if call.tool_name in SUBAGENT_TOOLS:
                what = call.input.get("description") or call.input.get("prompt") or ""
                out.append(mark(step.step_index, "subagent", f"{call.tool_name}: {what}"))
        failed = next((c for c in step.tool_calls if _errored(step, c)), None)
        if failed is not None:
            out.append(mark(step.step_index, "error",
                            f"{failed.tool_name}: {_output(step, failed)}"))
    for b in bursts(record, commit_lookup=False):
        names = list(b["unique_files"])
        out.append(mark(b["step_range"][0], "edits",
                        f"{len(names)} file{'s' if len(names) != 1 else ''}: "
                        + ", ".join(names[:5]) + (", …" if len(names) > 5 else ""),
                        b["node_id"]))
    out += [mark(c.step, "commit", f"{c.sha} {c.subject or ''}") for c in commits_seen(record)]
    out.sort(key=lambda m: (m["step"], _LANDMARK_ORDER.index(m["type"])))
    return out


def facets(record: TraceRecord) -> dict[str, Any]:
    """Counts and names that describe a trace at a glance."""
    tools = Counter(c.tool_name for s in record.steps for c in s.tool_calls)
    edits = [(s, c) for s in record.steps for c in s.tool_calls
             if c.tool_name in EDIT_TOOLS and not _errored(s, c)]
    cwd = record.metadata.get("cwd") if isinstance(record.metadata.get("cwd"), str) else None
    files = {repo_path(p, cwd) for _, c in edits for p in edit_files(c)}
    meta = record.metadata
    return {
        "agent": record.agent.name, "model": record.agent.model,
        "project": meta.get("project"), "cwd": cwd, "branch": record.environment.vcs.branch,
        "started": record.timestamp_start, "ended": record.timestamp_end,
        "steps": len(record.steps), "user_instructions": len(instructions(record)),
        "tool_calls": sum(tools.values()),
        "tools": dict(sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))),
        "edit_calls": len(edits), "files_edited": len(files),
        "errors": sum(1 for s in record.steps for o in s.observations if o.error == "tool_error"),
        "commits_seen": len(commits_seen(record)), "committed": record.outcome.committed,
        "compactions": len(meta.get("compactions", [])),
        "subagents": len(meta.get("subagents", [])),
        "skills": sorted({s["skill"] for s in meta.get("skills", [])}),
    }


# ---------------------------------------------------------------------------------------------
# The card


def record_card(record: TraceRecord) -> dict[str, Any]:
    """A short card about a trace: headline, summary, outcome, key files and steps, refs.

    Reads no repository: commits come from the record's anchors and from tool outputs.
    """
    tid = record.trace_id
    said = instructions(record)
    f = facets(record)
    changed = bursts(record, commit_lookup=False)
    files: Counter[str] = Counter()
    for b in changed:
        files.update(b["unique_files"])
    seen = commits_seen(record)
    title = record.metadata.get("title")
    headline = _preview(title if isinstance(title, str) and title else
                        said[0][1] if said else record.task.description or tid, 100)
    if record.outcome.committed:
        outcome = "committed"
    elif seen:
        outcome = "committed_unanchored"
    else:
        outcome = "changed_uncommitted" if changed else "no_changes"
    summary = (f"{f['steps']} steps, {f['user_instructions']} user instructions, "
               f"{f['edit_calls']} edits to {f['files_edited']} files in {len(changed)} "
               f"bursts, {f['errors']} tool errors, {len(seen)} commits seen")
    keep = ("first_prompt", "user_instruction", "commit", "compaction")
    key = [{"step": m["step"], "type": m["type"], "preview": m["preview"],
            "address": f"{tid}:{m['step']}"}
           for m in landmarks(record, said) if m["type"] in keep][:CARD_STEPS]
    return {
        "trace_id": tid, "headline": headline, "summary": summary,
        "agent": {"name": record.agent.name, "version": record.agent.version,
                  "model": record.agent.model},
        "outcome": outcome, "committed": record.outcome.committed,
        "commit_sha": record.outcome.commit_sha,
        "commits_seen": [c.sha for c in seen],
        "key_files": [p for p, _ in sorted(files.items(), key=lambda kv: (-kv[1], kv[0]))
                      ][:CARD_FILES],
        "key_steps": key,
        "refs": {"record": f"opentraces trace get {tid}",
                 "map": f"opentraces trace map {tid}",
                 "first_step": f"{tid}:{record.steps[0].step_index}" if record.steps else None,
                 "last_step": f"{tid}:last" if record.steps else None,
                 "session_id": record.session_id,
                 "source_paths": list(record.metadata.get("source_paths", []))},
    }


# ---------------------------------------------------------------------------------------------
# Slices


def trace_slice(record: TraceRecord, *, from_step: int | None = None,
                to_step: int | None = None, around_step: int | None = None,
                radius: int | None = None, template: str | None = None) -> dict[str, Any]:
    """Deterministic slices of a trace, each with its whole steps.

    Exactly one mode: a range (``from_step`` and/or ``to_step``; a missing end is the trace's
    end), ``around_step`` with ``radius`` (default ``SLICE_RADIUS``) steps either side, or
    ``template="bursts"`` (one slice per change burst, no repository read).

    Raises:
        UsageError: no mode or several, an unknown template, or steps outside the trace.
    """
    modes = [m for m, on in (("range", from_step is not None or to_step is not None),
                             ("around", around_step is not None),
                             ("template", template is not None)) if on]
    if len(modes) != 1:
        raise UsageError("choose one slice mode: --from-step/--to-step, --around-step with "
                         "--radius, or --template bursts"
                         + (f" (got {' and '.join(modes)})" if modes else ""))
    if radius is not None and modes != ["around"]:
        raise UsageError("--radius only goes with --around-step")
    if modes == ["template"]:
        if template != "bursts":
            raise UsageError(f"unknown slice template {template!r}; the one template is "
                             "'bursts'")
        return {"mode": "bursts", "trace_id": record.trace_id,
                "slices": [_slice(record, *b["step_range"], burst=b)
                           for b in bursts(record, commit_lookup=False)]}
    if modes == ["around"]:
        r = SLICE_RADIUS if radius is None else radius
        if r < 0:
            raise UsageError(f"the radius must be 0 or more, not {r}")
        n, _ = step_bounds(record, around_step, around_step)  # type: ignore[arg-type]
        lo, hi = record.steps[0].step_index, record.steps[-1].step_index
        return {"mode": "around", "trace_id": record.trace_id,
                "slices": [_slice(record, max(lo, n - r), min(hi, n + r))]}
    first = record.steps[0].step_index if record.steps else 0
    a, b = step_bounds(record, first if from_step is None else from_step,
                       LAST if to_step is None else to_step)
    return {"mode": "range", "trace_id": record.trace_id, "slices": [_slice(record, a, b)]}


def _slice(record: TraceRecord, a: int, b: int,
           burst: dict[str, Any] | None = None) -> dict[str, Any]:
    tid = record.trace_id
    steps = [s for s in record.steps if a <= s.step_index <= b]
    refs: dict[str, Any] = {"trace_id": tid, "address": f"{tid}:{a}-{b}",
                            "node_ids": [_node_id(record, s) for s in steps]}
    if burst is not None:
        refs.update(burst=burst["node_id"], files=list(burst["unique_files"]),
                    commit_sha=burst["burst_commit_sha"])
    return {"slice_id": f"{tid}:{a}-{b}", "start_step_index": a, "end_step_index": b,
            "steps": msgspec.to_builtins(steps), "refs": refs}


def trace_card(target: Any, ref: str) -> dict[str, Any]:
    """A short card about one trace (see :func:`record_card`); ``target`` as for
    :func:`opentraces.tracing.trace_view`."""
    return record_card(trace_view(target, ref).record)

"""Patches: the file edits of a trace, derived from its capture events.

One :class:`~opentraces.events.PatchRecorded` per (tool call, file): Claude Code ``Edit``,
``MultiEdit`` and ``Write``; Codex ``apply_patch`` (one per file it changed); pi ``edit`` and
``write``. What each source gives:

- Claude Code: the call input (``old_string``/``new_string``/``edits``/``content``) and the
  result's ``toolUseResult`` (``structuredPatch`` hunks with line numbers, ``originalFile``).
  ``before`` is ``originalFile``, ``after`` the edit applied to it (or the written content).
- Codex: ``patch_apply_end`` ``changes`` (absolute path -> ``unified_diff`` or ``content``),
  else the ``*** Begin Patch`` text of the call (no line numbers).
- pi: the call arguments (``oldText``/``newText``/``content``) and ``details.diff`` (numbered
  lines).

Invariants:
- A call whose result is an error, or that has no result, made no known change: no patch.
- ``patch_id`` = stable id of (trace, tool call, absolute path), so re-deriving a trace finds
  the patches it already has and appends only new ones.
- Nothing here writes into a repository; content goes to the blob store.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import blake3
import msgspec

from opentraces import events as ev
from opentraces.blobs import BlobStore
from opentraces.errors import BlobMissing
from opentraces.trail.gitrepo import find_repo_root

CLAUDE_TOOLS = frozenset({"Edit", "MultiEdit", "Write"})
CODEX_TOOLS = frozenset({"apply_patch"})
PI_TOOLS = frozenset({"edit", "write"})
EDIT_TOOLS = CLAUDE_TOOLS | CODEX_TOOLS | PI_TOOLS
HUNKS_MEDIA_TYPE = "application/vnd.opentraces.hunks+json"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


class Block(msgspec.Struct, frozen=True, array_like=True):
    """Consecutive lines added (or removed) at ``start`` (1-based; None when unknown)."""

    start: int | None
    lines: list[str]


class Hunks(msgspec.Struct, frozen=True):
    """What a patch added and removed, as stored in its ``hunks`` blob."""

    added: list[Block] = []
    removed: list[Block] = []

    def authored(self) -> list[str]:
        return [line for block in self.added for line in block.lines]


_HUNKS = msgspec.json.Decoder(Hunks)


def authored_hash(hunks: Hunks) -> str:
    """blake3 of the added lines joined by newlines (the patch's authored text)."""
    return blake3.blake3("\n".join(hunks.authored()).encode("utf-8", "backslashreplace")
                         ).hexdigest()


def nonblank(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if line.strip()]


def read_hunks(blobs: BlobStore, hunks_hash: str | None) -> Hunks:
    """The hunks stored under a patch's ``hunks`` blob hash (empty for None)."""
    if hunks_hash is None:
        return Hunks()
    return _HUNKS.decode(blobs.get(hunks_hash))


def authored_lines(blobs: BlobStore, hunks_hash: str | None) -> list[str]:
    """The non-blank added lines of a patch, trailing whitespace stripped (what is matched)."""
    return [line.rstrip() for line in nonblank(read_hunks(blobs, hunks_hash).authored())]


@dataclass
class FileChange:
    """One file changed by one tool call, before it becomes an event."""

    path: str
    hunks: Hunks
    change: str = "edit"
    before: str | None = None
    after: str | None = None


@dataclass
class _Call:
    step_index: int
    call: ev.ToolCall
    at: str | None
    result_detail: dict[str, Any] = field(default_factory=dict)
    result_at: str | None = None
    has_result: bool = False
    is_error: bool = False


# ---------------------------------------------------------------------------------------------
# Diff helpers


def _lines(text: str) -> list[str]:
    return text.splitlines()


def diff_hunks(old: str, new: str, old_offset: int = 0, new_offset: int = 0,
               known_lines: bool = True) -> Hunks:
    """The blocks ``new`` adds to and removes from ``old`` (line numbers shifted by offsets)."""
    a, b = _lines(old), _lines(new)
    added: list[Block] = []
    removed: list[Block] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed.append(Block(old_offset + i1 + 1 if known_lines else None, a[i1:i2]))
        if tag in ("replace", "insert"):
            added.append(Block(new_offset + j1 + 1 if known_lines else None, b[j1:j2]))
    return Hunks(added=added, removed=removed)


def _prefixed_hunks(hunks: Sequence[tuple[int | None, int | None, list[str]]]) -> Hunks:
    """Blocks from unified-diff hunks: (old start, new start, lines prefixed ' ', '-', '+')."""
    added: list[Block] = []
    removed: list[Block] = []
    for old_start, new_start, lines in hunks:
        numbers = {"-": old_start, "+": new_start}
        previous = " "
        for line in lines:
            sign, text = (line[:1], line[1:]) if line else (" ", "")
            if sign in "+-":
                target = added if sign == "+" else removed
                if sign == previous:
                    target[-1].lines.append(text)
                else:
                    target.append(Block(numbers[sign], [text]))
            else:
                sign = " "
            for kind in "+-":
                if sign in (kind, " ") and numbers[kind] is not None:
                    numbers[kind] += 1  # type: ignore[operator]
            previous = sign
    return Hunks(added=added, removed=removed)


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def unified_hunks(text: str) -> Hunks:
    """Blocks of a unified diff (``@@ -a,b +c,d @@`` headers, ``---``/``+++`` skipped)."""
    hunks: list[tuple[int | None, int | None, list[str]]] = []
    for line in text.splitlines():
        m = _HUNK_HEADER.match(line)
        if m:
            hunks.append((int(m.group(1)), int(m.group(2)), []))
        elif line.startswith(("--- ", "+++ ")) and not hunks:
            continue
        elif hunks and (line[:1] in " +-" or line == ""):
            hunks[-1][2].append(line if line else " ")
    return _prefixed_hunks(hunks)


def structured_hunks(patch: list[Any]) -> Hunks:
    """Blocks of Claude Code's ``structuredPatch`` (``oldStart``, ``newStart``, ``lines``)."""
    hunks = []
    for h in patch:
        if isinstance(h, dict) and isinstance(h.get("lines"), list):
            hunks.append((_int(h.get("oldStart")), _int(h.get("newStart")),
                          [x for x in h["lines"] if isinstance(x, str)]))
    return _prefixed_hunks(hunks)


_PI_LINE = re.compile(r"^([ +-]) *(\d+)(?: (.*))?$")


def pi_hunks(diff: str) -> Hunks:
    """Blocks of pi's numbered diff (``+238 text``, ``-238 text``, `` 240 text``, ``  ...``)."""
    added: list[Block] = []
    removed: list[Block] = []
    last = ""
    for line in diff.splitlines():
        m = _PI_LINE.match(line)
        if m is None:
            last = ""
            continue
        sign, number, text = m.group(1), int(m.group(2)), m.group(3) or ""
        if sign == " ":
            last = ""
            continue
        target = added if sign == "+" else removed
        if last == sign and target and target[-1].start is not None \
                and target[-1].start + len(target[-1].lines) == number:
            target[-1].lines.append(text)
        else:
            target.append(Block(number, [text]))
        last = sign
    return Hunks(added=added, removed=removed)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------
# Reading a trace's calls


def _full(blobs: BlobStore, inline: dict[str, Any], blob: ev.BlobRef | None) -> dict[str, Any]:
    """A tool input or result detail made whole again from its blob, when it was cut."""
    ref = blob.hash if blob is not None else None
    if ref is None and isinstance(inline.get("blob"), dict):
        ref = inline["blob"].get("hash")
    if ref is None and isinstance(inline.get("capped"), dict):
        ref = inline["capped"].get("blob")
    if ref is None:
        return inline
    try:
        value = json.loads(blobs.get(ref))
    except BlobMissing:
        return inline  # the blob stayed on another machine: use what is inline
    return value if isinstance(value, dict) else inline


def edit_calls(records: Iterable[ev.Recorded]) -> tuple[list[_Call], str | None]:
    """The edit tool calls of one trace stream, with their merged results, and its cwd."""
    calls: dict[str, _Call] = {}
    cwd: str | None = None
    for rec in records:
        e = rec.event
        if isinstance(e, ev.SessionStarted | ev.SessionInfo) and e.cwd:
            cwd = cwd or e.cwd
        elif isinstance(e, ev.StepRecorded | ev.StepExtended):
            for call in e.tool_calls:
                if call.tool_name in EDIT_TOOLS and call.tool_call_id not in calls:
                    calls[call.tool_call_id] = _Call(e.step_index, call, e.at)
        elif isinstance(e, ev.ToolResultRecorded) and e.tool_call_id in calls:
            c = calls[e.tool_call_id]
            c.has_result = True
            c.is_error = c.is_error or e.is_error
            c.result_detail = c.result_detail | e.detail
            c.result_at = c.result_at or e.at
    return list(calls.values()), cwd


def _absolute(path: str, cwd: str | None) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute() and cwd:
        p = PurePosixPath(cwd) / p
    return str(p)


def _apply_edits(text: str, edits: list[tuple[str, str, bool]]) -> str | None:
    for old, new, replace_all in edits:
        if old not in text:
            return None
        text = text.replace(old, new) if replace_all else text.replace(old, new, 1)
    return text


def claude_changes(c: _Call, inp: dict[str, Any], detail: dict[str, Any],
                   cwd: str | None) -> list[FileChange]:
    name = c.call.tool_name
    path = inp.get("file_path") or detail.get("filePath")
    if not isinstance(path, str) or not path:
        return []
    if name == "MultiEdit":
        edits = [(e.get("old_string", ""), e.get("new_string", ""), bool(e.get("replace_all")))
                 for e in inp.get("edits", []) if isinstance(e, dict)]
    elif name == "Edit":
        edits = [(inp.get("old_string", ""), inp.get("new_string", ""),
                  bool(inp.get("replace_all")))]
    else:
        edits = []
    edits = [(o, n, r) for o, n, r in edits if isinstance(o, str) and isinstance(n, str)]
    original = detail.get("originalFile")
    before = original if isinstance(original, str) else None
    after: str | None = None
    change = "edit"
    if name == "Write":
        content = inp.get("content", detail.get("content"))
        after = content if isinstance(content, str) else None
        if detail.get("type") == "create" or (before is None and not detail.get("structuredPatch")):
            change, before = "create", before if before is not None else ""
    elif before is not None:
        after = _apply_edits(before, edits)
    patch = detail.get("structuredPatch")
    if isinstance(patch, list) and patch:
        hunks = structured_hunks(patch)
    elif before is not None and after is not None:
        hunks = diff_hunks(before, after)
    elif edits:
        parts = [diff_hunks(o, n, known_lines=False) for o, n, _ in edits]
        hunks = Hunks(added=[b for h in parts for b in h.added],
                      removed=[b for h in parts for b in h.removed])
    else:
        return []
    return [FileChange(_absolute(path, cwd), hunks, change, before, after)]


_PATCH_FILE = re.compile(r"^\*\*\* (Add|Update|Delete) File: (.+)$")


def _patch_text_changes(text: str, cwd: str | None) -> list[FileChange]:
    """Changes from an ``apply_patch`` text (no line numbers: ``@@`` lines only separate)."""
    out: list[FileChange] = []
    current: tuple[str, str] | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        kind, path = current
        if kind == "Add":
            content = "\n".join(line[1:] for line in body if line.startswith("+"))
            out.append(FileChange(_absolute(path, cwd), Hunks(added=[Block(1, content.split(
                "\n"))]), "create", "", content + "\n"))
        elif kind == "Delete":
            out.append(FileChange(_absolute(path, cwd), Hunks(), "delete"))
        else:
            chunks: list[list[str]] = [[]]
            for line in body:
                if line.startswith("@@"):
                    chunks.append([])
                elif line.startswith("*** "):
                    continue
                else:
                    chunks[-1].append(line if line else " ")
            out.append(FileChange(_absolute(path, cwd), _prefixed_hunks(
                [(None, None, ch) for ch in chunks if ch])))

    for line in text.splitlines():
        m = _PATCH_FILE.match(line)
        if m:
            close()
            current, body = (m.group(1), m.group(2).strip()), []
        elif line.startswith("*** End Patch"):
            close()
            current = None
        elif current is not None and not line.startswith("*** Move to:"):
            body.append(line)
    close()
    return out


def codex_changes(c: _Call, inp: dict[str, Any], detail: dict[str, Any],
                  cwd: str | None) -> list[FileChange]:
    changes = detail.get("changes")
    if not isinstance(changes, dict) or not changes:
        patch = inp.get("patch") or inp.get("input")
        return _patch_text_changes(patch, cwd) if isinstance(patch, str) else []
    out = []
    for path in sorted(changes):
        spec = changes[path]
        if not isinstance(spec, dict):
            continue
        kind = spec.get("type")
        target = spec.get("move_path") if isinstance(spec.get("move_path"), str) else path
        if kind == "add" and isinstance(spec.get("content"), str):
            content = spec["content"]
            out.append(FileChange(_absolute(target, cwd), diff_hunks("", content), "create",
                                  "", content))
        elif kind == "delete":
            out.append(FileChange(_absolute(path, cwd), Hunks(), "delete"))
        elif isinstance(spec.get("unified_diff"), str):
            out.append(FileChange(_absolute(target, cwd), unified_hunks(spec["unified_diff"])))
    return out


def pi_changes(c: _Call, inp: dict[str, Any], detail: dict[str, Any],
               cwd: str | None) -> list[FileChange]:
    path = inp.get("path") or inp.get("file_path")
    if not isinstance(path, str) or not path:
        return []
    if c.call.tool_name == "write":
        content = inp.get("content")
        if not isinstance(content, str):
            return []
        return [FileChange(_absolute(path, cwd), diff_hunks("", content), "create", None,
                           content)]
    details = detail.get("details")  # the adapter keeps pi's ``details`` under this key
    diff = (details if isinstance(details, dict) else detail).get("diff")
    if isinstance(diff, str) and diff:
        hunks = pi_hunks(diff)
    else:
        old, new = inp.get("oldText"), inp.get("newText")
        if not isinstance(old, str) or not isinstance(new, str):
            return []
        hunks = diff_hunks(old, new, known_lines=False)
    return [FileChange(_absolute(path, cwd), hunks)]


def call_changes(c: _Call, blobs: BlobStore, cwd: str | None) -> list[FileChange]:
    """The files one edit call changed, as the transcript tells."""
    if not c.has_result or c.is_error:
        return []
    inp = _full(blobs, c.call.input, c.call.input_blob)
    detail = _full(blobs, c.result_detail, None)
    name = c.call.tool_name
    if name in CLAUDE_TOOLS:
        return claude_changes(c, inp, detail, cwd)
    if name in CODEX_TOOLS:
        return codex_changes(c, inp, detail, cwd)
    return pi_changes(c, inp, detail, cwd)


# ---------------------------------------------------------------------------------------------
# Events


def patch_id_for(trace_id: str, tool_call_id: str, file_path: str) -> str:
    return ev.stable_id("patch", trace_id, tool_call_id, file_path)


def _range(hunks: Hunks) -> ev.LineRange | None:
    spans = [(b.start, b.start + len(b.lines) - 1) for b in hunks.added
             if b.start is not None and b.lines]
    if not spans or any(b.start is None for b in hunks.added):
        return None
    return ev.LineRange(min(s for s, _ in spans), max(e for _, e in spans))


def _text_blob(blobs: BlobStore, text: str | None) -> ev.BlobRef | None:
    if text is None:
        return None
    return blobs.put(text.encode("utf-8", "backslashreplace"), TEXT_MEDIA_TYPE, local_only=True)


def patch_event(trace_id: str, c: _Call, fc: FileChange, blobs: BlobStore,
                roots: dict[str, str | None]) -> ev.PatchRecorded:
    """The event for one file change; ``roots`` caches repository roots by folder."""
    folder = str(PurePosixPath(fc.path).parent)
    if folder not in roots:
        found = find_repo_root(folder)
        roots[folder] = str(found) if found is not None else None
    root = roots[folder]
    path = str(PurePosixPath(fc.path).relative_to(root)) if root else fc.path
    hunks_ref = blobs.put(msgspec.json.encode(fc.hunks), HUNKS_MEDIA_TYPE, local_only=True)
    return ev.PatchRecorded(
        at=c.result_at or c.at, patch_id=patch_id_for(trace_id, c.call.tool_call_id, fc.path),
        trace_id=trace_id, step_index=c.step_index, tool_call_id=c.call.tool_call_id,
        tool_name=c.call.tool_name, path=path, range=_range(fc.hunks),
        authored_hash=authored_hash(fc.hunks), before=_text_blob(blobs, fc.before),
        after=_text_blob(blobs, fc.after), file_path=fc.path, repo_root=root, hunks=hunks_ref,
        authored_lines=len(nonblank(fc.hunks.authored())), change=fc.change)


def derive_patches(trace_id: str, records: Sequence[ev.Recorded],
                   blobs: BlobStore) -> list[ev.PatchRecorded]:
    """The patch events a trace stream implies and does not hold yet, in call order."""
    have = {r.event.patch_id for r in records if isinstance(r.event, ev.PatchRecorded)}
    calls, cwd = edit_calls(records)
    roots: dict[str, str | None] = {}
    out: list[ev.PatchRecorded] = []
    for c in calls:
        for fc in call_changes(c, blobs, cwd):
            if patch_id_for(trace_id, c.call.tool_call_id, fc.path) in have:
                continue
            event = patch_event(trace_id, c, fc, blobs, roots)
            have.add(event.patch_id)
            out.append(event)
    return out

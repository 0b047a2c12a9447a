"""Codex CLI rollouts (``~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl``).

:class:`CodexAdapter` finds rollouts (``rollout-*.jsonl``, and any other ``*.jsonl`` whose first
record is a Codex envelope) and names a file's session from its first record (``session_meta``,
or the bare header line of the pre-envelope layout). The lines are read by
:class:`opentraces.capture.codex_parser.CodexParser`, whose module documents the mapping to
events; :mod:`opentraces.capture.codex_rollout` holds the rollout's item kinds and value readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from opentraces.capture.base import Context, SessionRef
from opentraces.capture.codex_parser import CodexParser
from opentraces.capture.codex_rollout import parent_thread
from opentraces.capture.parse import identify_head
from opentraces.capture.values import nonempty_str as _s

AGENT = "codex-cli"

#: How much of a file ``discover`` reads to recognise a rollout that is not named ``rollout-*``.
SNIFF_BYTES = 1 << 20

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class CodexAdapter:
    agent: ClassVar[str] = AGENT

    def default_roots(self, home: Path) -> list[Path]:
        return [home / ".codex" / "sessions"]

    def discover(self, root: Path) -> Iterator[Path]:
        """``rollout-*.jsonl`` under ``root``, plus any other ``*.jsonl`` whose first record is a
        Codex envelope (a renamed or copied rollout), in path order."""
        if root.is_file():
            yield root
            return
        for path in sorted(p for p in root.rglob("*.jsonl") if p.is_file()):
            if path.name.startswith("rollout-") or self._sniff(path):
                yield path

    def _sniff(self, path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        except OSError:
            return False
        return identify_head(self, path, head) is not None

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        if not isinstance(first_record, dict):
            return None
        payload = first_record.get("payload")
        if first_record.get("type") == "session_meta" and isinstance(payload, dict):
            meta = payload
        elif ("type" not in first_record and "payload" not in first_record
              and path.name.startswith("rollout-") and _s(first_record.get("id"))):
            meta = first_record  # pre-envelope layout: a bare header line
        else:
            return None
        session_id = _s(meta.get("id")) or _s(meta.get("session_id"))
        if session_id is None:
            m = _UUID.findall(path.name)
            if not m:
                return None
            session_id = m[-1]
        parent = parent_thread(meta)
        extra = {k: v for k, v in (("cwd", _s(meta.get("cwd"))),
                                   ("originator", _s(meta.get("originator"))),
                                   ("cli_version", _s(meta.get("cli_version")))) if v}
        return SessionRef(agent=AGENT, session_id=session_id, path=path,
                          parent_session_id=parent, is_subagent=parent is not None, extra=extra)

    def parser(self, ref: SessionRef, ctx: Context) -> CodexParser:
        return CodexParser(ref, ctx)

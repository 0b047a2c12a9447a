"""Importing sessions: which transcript files to read, and reading them into the event log.

Tracking mode and enrollment decide which sessions are captured; new edits become patches
through the trail sync, which also catches the projections up. Hook-driven imports read the
spool the hooks append to (:func:`import_from_spool`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from opentraces.blobs import BlobStore
from opentraces.config import Settings
from opentraces.workspace import (
    Progress,
    Workspace,
    catch_up_after_write,
    open_workspace,
    to_builtins,
)

__all__ = ["ImportSource", "import_from_spool", "import_sessions", "import_sources",
           "sample_sources"]


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

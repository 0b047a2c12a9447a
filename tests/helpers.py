"""Small builders shared by tests: realistic events for a few traces."""

from __future__ import annotations

from pathlib import Path

from opentraces import events as ev


def session_events(agent: str, session_id: str, *, steps: int = 3, cwd: str = "/work/proj",
                   title: str | None = None) -> tuple[str, list[ev.Event]]:
    """A trace id and the events of a small session: start, alternating steps, one patch, end."""
    trace_id = ev.trace_id_for(agent, session_id)
    out: list[ev.Event] = [ev.SessionStarted(
        trace_id=trace_id, session_id=session_id, agent=ev.AgentInfo(name=agent, version="1.0"),
        cwd=cwd, title=title, at="2026-01-02T03:04:05Z")]
    for i in range(steps):
        role = "user" if i % 2 == 0 else "agent"
        out.append(ev.StepRecorded(step_index=i, role=role, content=f"{role} message {i}",
                                   model=None if role == "user" else "model-x"))
    out.append(ev.PatchRecorded(patch_id=f"{trace_id}-p0", trace_id=trace_id, step_index=1,
                                tool_call_id="call-1", tool_name="Edit", path="src/app.py",
                                range=ev.LineRange(1, 3)))
    out.append(ev.SessionEnded(reason="stop"))
    return trace_id, out


def delete_blob(blobs_dir: Path, digest: str) -> None:
    """Remove a blob behind the store's back (as a user deleting files by hand would)."""
    import sqlite3

    from opentraces.blobs import PACK_FILE, BlobStore

    path = BlobStore(blobs_dir).path_for(digest)
    if path.exists():
        path.unlink()
        return
    conn = sqlite3.connect(blobs_dir / PACK_FILE)
    with conn:
        assert conn.execute("DELETE FROM blobs WHERE hash = ?", (digest,)).rowcount == 1
    conn.close()


def age_blob(blobs_dir: Path, digest: str, seconds: float) -> None:
    """Make a blob look ``seconds`` old (its file's mtime, or its pack row's created time)."""
    import os
    import sqlite3
    import time

    from opentraces.blobs import PACK_FILE, BlobStore

    past = time.time() - seconds
    path = BlobStore(blobs_dir).path_for(digest)
    if path.exists():
        os.utime(path, (past, past))
        return
    conn = sqlite3.connect(blobs_dir / PACK_FILE)
    with conn:
        conn.execute("UPDATE blobs SET created = ? WHERE hash = ?", (past, digest))
    conn.close()

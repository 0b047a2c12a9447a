"""Trace Trails: which session and step wrote a commit's lines, and whether they live at HEAD.

Patches (:mod:`.patches`) are derived from capture events; anchors (:mod:`.anchor`) tie them
to commits with an explicit evidence tier and firmness; survival (:mod:`.survival`) follows the
lines to HEAD. :mod:`.sync` holds the API functions; see docs/trail.md.
"""

from __future__ import annotations

from opentraces.trail.gitrepo import CommitNotFound, NotARepository
from opentraces.trail.sync import (
    BlameCommit,
    BlameTrace,
    SyncReport,
    TrackReport,
    TrailGraph,
    blame_commit,
    blame_trace,
    request_anchor_search,
    trail_graph,
    trail_sync,
    trail_track,
)

__all__ = [
    "BlameCommit",
    "BlameTrace",
    "CommitNotFound",
    "NotARepository",
    "SyncReport",
    "TrackReport",
    "TrailGraph",
    "blame_commit",
    "blame_trace",
    "request_anchor_search",
    "trail_graph",
    "trail_sync",
    "trail_track",
]

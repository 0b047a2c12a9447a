"""Trace Trails: which session and step wrote a commit's lines, and whether they live at HEAD.

Patches (:mod:`.patches`) are derived from capture events; anchors (:mod:`.anchor`) tie them
to commits with an explicit evidence tier and firmness; survival (:mod:`.survival`) follows the
lines to HEAD. :mod:`.sync` holds sync, track, blame and graph; :mod:`.views` explain,
timeline, attach, resolve and the graph renderings; :mod:`.pr` pull-request bodies;
:mod:`.teleport` bundles. See docs/trail.md.
"""

from __future__ import annotations

from opentraces.trail.gitrepo import CommitNotFound, NotARepository
from opentraces.trail.pr import GhFailed, GhUnavailable, pr_create, pr_render, pr_update
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
from opentraces.trail.teleport import (
    BundleRejected,
    TeleportExport,
    TeleportOpen,
    teleport_export,
    teleport_open,
)
from opentraces.trail.views import (
    AttachReport,
    BadTrailUri,
    LineExplain,
    Resolved,
    StepExplain,
    Timeline,
    TraceGraph,
    TrailObjectNotFound,
    attach,
    commit_rail,
    explain,
    explain_line,
    render_commit_graph,
    render_trace_graph,
    resolve,
    sync_patch,
    timeline,
    trace_graph,
)

__all__ = [
    "AttachReport",
    "BadTrailUri",
    "BlameCommit",
    "BlameTrace",
    "BundleRejected",
    "CommitNotFound",
    "GhFailed",
    "GhUnavailable",
    "LineExplain",
    "NotARepository",
    "Resolved",
    "StepExplain",
    "SyncReport",
    "TeleportExport",
    "TeleportOpen",
    "Timeline",
    "TraceGraph",
    "TrackReport",
    "TrailGraph",
    "TrailObjectNotFound",
    "attach",
    "blame_commit",
    "blame_trace",
    "commit_rail",
    "explain",
    "explain_line",
    "pr_create",
    "pr_render",
    "pr_update",
    "render_commit_graph",
    "render_trace_graph",
    "request_anchor_search",
    "resolve",
    "sync_patch",
    "teleport_export",
    "teleport_open",
    "timeline",
    "trace_graph",
    "trail_graph",
    "trail_sync",
    "trail_track",
]

"""The opentraces Python API: everything the CLI does, as functions returning msgspec Structs.

This module is only the façade: it re-exports what the library's modules define, and no module
inside :mod:`opentraces` imports it. Every function takes a *target*: a
:class:`~opentraces.config.Settings`, a home folder (:class:`pathlib.Path`) or an already open
:class:`Workspace`, and closes only what it opened. Nothing here prints, and only
:func:`settings_from_environment` (re-exported from :mod:`opentraces.config` for the CLI and
scripts) reads the process environment.

Write functions (:func:`append`, :func:`rebuild`, :func:`repair`, ``bucket_repair``/``_prune``)
catch the projections up before returning; read functions (:func:`status`, :func:`doctor`,
:func:`bucket_manifest`, :func:`bucket_verify`) never write.
"""

from __future__ import annotations

from typing import Any

from opentraces.config import settings_from_environment
from opentraces.errors import MaintenanceNeeded, OpentracesError
from opentraces.ingest import (
    ImportSource,
    import_from_spool,
    import_sessions,
    import_sources,
    sample_sources,
)
from opentraces.maintenance import (
    BucketStatus,
    DoctorCheck,
    DoctorReport,
    ManifestView,
    PruneResult,
    RebuildReport,
    RepairReport,
    StatusReport,
    StoreSummary,
    VerifyResult,
    bucket_manifest,
    bucket_prune,
    bucket_status,
    bucket_verify,
    doctor,
    rebuild,
    repair,
    status,
)
from opentraces.workspace import (
    LAZY_CATCH_UP_EVENTS,
    Workspace,
    append,
    catch_up_after_write,
    event_count,
    open_workspace,
    projection_names,
    put_blob,
    to_builtins,
)

__all__ = [
    "LAZY_CATCH_UP_EVENTS",
    "BucketStatus",
    "DoctorCheck",
    "DoctorReport",
    "ImportSource",
    "MaintenanceNeeded",
    "ManifestView",
    "OpentracesError",
    "PruneResult",
    "RebuildReport",
    "RepairReport",
    "StatusReport",
    "StoreSummary",
    "VerifyResult",
    "Workspace",
    "append",
    "bucket_manifest",
    "bucket_prune",
    "bucket_status",
    "bucket_verify",
    "catch_up_after_write",
    "doctor",
    "event_count",
    "import_from_spool",
    "import_sessions",
    "import_sources",
    "open_workspace",
    "projection_names",
    "put_blob",
    "rebuild",
    "repair",
    "sample_sources",
    "settings_from_environment",
    "status",
    "to_builtins",
]

_LAZY_CAPTURE = {"ImportReport": ("opentraces.capture.importer", "ImportReport")}


# ---------------------------------------------------------------------------------------------
# Traces (defined in opentraces.tracing; re-exported here)

from opentraces.tracing import (  # noqa: E402
    LAST,
    Address,
    AmbiguousTrace,
    BadAddress,
    RangeView,
    StepOutOfRange,
    StepView,
    TraceNotFound,
    TraceView,
    parse_address,
    trace_get,
    trace_range,
    trace_step,
    trace_view,
)

__all__ += [
    "LAST", "Address", "AmbiguousTrace", "BadAddress", "RangeView",
    "StepOutOfRange", "StepView", "TraceNotFound", "TraceView", "parse_address",
    "trace_get", "trace_range", "trace_step", "trace_view",
]


# ---------------------------------------------------------------------------------------------
# Trace Intelligence (opentraces.context_waste, .run_signals, .trace_compare; re-exported here)

# Imported on first use: compiling the detectors' and the map's patterns costs ~30 ms and the
# git layer ~100 ms, which every command importing this module would otherwise pay.
_LAZY = {**_LAZY_CAPTURE,
         "BURST_GAP": ("opentraces.trace_map", "BURST_GAP"),
         "bursts": ("opentraces.trace_map", "bursts"),
         "record_card": ("opentraces.trace_map", "record_card"),
         "trace_card": ("opentraces.trace_map", "trace_card"),
         "trace_map": ("opentraces.trace_map", "trace_map"),
         "trace_slice": ("opentraces.trace_map", "trace_slice"),
         "CONTEXT_WASTE_SCHEMA": ("opentraces.context_waste", "CONTEXT_WASTE_SCHEMA"),
         "RUN_INTEL_SCHEMA": ("opentraces.run_signals", "RUN_INTEL_SCHEMA"),
         "TRACE_COMPARE_SCHEMA": ("opentraces.trace_compare", "TRACE_COMPARE_SCHEMA"),
         "context_waste": ("opentraces.context_waste", "context_waste"),
         "run_intel": ("opentraces.run_signals", "run_intel"),
         "trace_compare": ("opentraces.trace_compare", "compare"),
         # Trace Trails: dulwich alone takes ~100 ms to import
         **{name: ("opentraces.trail", name) for name in (
             "BlameCommit", "BlameTrace", "CommitNotFound", "NotARepository", "SyncReport",
             "TrackReport", "TrailGraph", "blame_commit", "blame_trace",
             "request_anchor_search", "trail_graph", "trail_sync", "trail_track",
             "AttachReport", "BadTrailUri", "BundleRejected", "GhFailed", "GhUnavailable",
             "LineExplain", "Resolved", "StepExplain", "TeleportExport", "TeleportOpen",
             "Timeline", "TraceGraph", "TrailObjectNotFound", "pr_create", "pr_render",
             "pr_update", "render_commit_graph", "render_trace_graph", "teleport_export",
             "teleport_open")},
         **{f"trail_{name}": ("opentraces.trail", name) for name in (
             "attach", "commit_rail", "explain", "explain_line", "resolve", "sync_patch",
             "timeline", "trace_graph")},
         # Context tree
         **{name: ("opentraces.context", name) for name in (
             "ContextNodeNotFound", "NoAnchor", "ctx_anchor_for_step", "ctx_compactions",
             "ctx_diff", "ctx_info", "ctx_list", "ctx_prune", "ctx_reads", "ctx_resolve",
             "ctx_resume", "ctx_show", "ctx_step", "ctx_tree", "ctx_writes",
             "resume_session_file")},
         # Security tools and the egress gate
         **{name: ("opentraces.security.policy", name) for name in (
             "BucketSecurity", "SecurityTools", "ToolDetail", "ToolInfo", "bucket_security",
             "security_sanitize", "security_tool", "security_tools")},
         **{name: ("opentraces.egress", name) for name in (
             "Clearance", "EgressBlocked", "Outgoing", "Released", "Withheld")},
         "egress_clear": ("opentraces.egress", "clear"),
         "ToolUnavailable": ("opentraces.security", "ToolUnavailable"),
         "security_tool_status": ("opentraces.security.external", "tool_status"),
         # Search (whoosh is imported by the functions that need it)
         **{name: ("opentraces.search", name) for name in (
             "Candidate", "Freshness", "IndexReport", "QueryResult", "SkillUsage",
             "SkillsResult", "index_rebuild", "index_refresh", "index_status", "trace_query",
             "trace_skills")}}

__all__ += list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


# ---------------------------------------------------------------------------------------------
# Capture settings: tracking mode, enrollment, agent hooks (defined in opentraces.enrollment
# and opentraces.agent_setup; re-exported here)

from opentraces.agent_setup import (  # noqa: E402
    SetupReport,
    default_hook_command,
    setup_agent,
)
from opentraces.enrollment import (  # noqa: E402
    EnrollmentState,
    EnrollResult,
    ProjectState,
    RemoveResult,
    TrackingModeResult,
    enroll,
    enrolled_projects,
    enrollment_state,
    remove,
    set_tracking_mode,
    should_capture,
    tracking_mode,
)
from opentraces.git_hook import setup_git  # noqa: E402

__all__ += [
    "EnrollResult",
    "EnrollmentState",
    "ProjectState",
    "RemoveResult",
    "SetupReport",
    "TrackingModeResult",
    "default_hook_command",
    "enroll",
    "enrolled_projects",
    "enrollment_state",
    "remove",
    "set_tracking_mode",
    "setup_agent",
    "setup_git",
    "should_capture",
    "tracking_mode",
]

"""The opentraces error tree. Every error carries a stable ``code`` for the JSON envelope and an
``exit_code`` for the CLI; messages say what went wrong, where, and what to do next.

    OpentracesError                 code            exit
    ├── UsageError                  usage_error     2
    │   ├── UnknownProjection       unknown_projection
    │   ├── ConfigError             config_error
    │   ├── TraceNotFound           trace_not_found      (opentraces.tracing)
    │   ├── AmbiguousTrace          ambiguous_trace      (opentraces.tracing)
    │   ├── BadAddress              bad_address          (opentraces.tracing)
    │   ├── StepOutOfRange          step_out_of_range    (opentraces.tracing)
    │   ├── NotARepository          not_a_repository     (opentraces.trail.gitrepo)
    │   ├── CommitNotFound          commit_not_found     (opentraces.trail.gitrepo)
    │   ├── ContextNodeNotFound     context_node_not_found (opentraces.context)
    │   └── ToolUnavailable         tool_unavailable     (opentraces.security.base)
    ├── Refused                     refused         2
    │   └── EgressBlocked           egress_refused       (opentraces.egress)
    ├── StoreError                  store_error     1
    │   ├── StoreUnavailable        store_unavailable
    │   ├── EventDecodeError        event_decode_error
    │   └── VersionConflict         version_conflict
    ├── BlobError                   blob_error      1
    │   ├── BlobMissing             blob_missing    4
    │   └── BlobCorrupt             blob_corrupt
    ├── ProjectionError             projection_error 1
    ├── MaintenanceNeeded           maintenance_needed 3
    └── NoAnchor                    no_anchor       3    (opentraces.context)
"""

from __future__ import annotations


class OpentracesError(Exception):
    """Base class: anything opentraces raises on purpose."""

    code = "error"
    exit_code = 1
    #: the envelope's ``status``
    status = "error"

    def __init__(self, message: str, *, hint: str | None = None,
                 next_command: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.next_command = next_command


class UsageError(OpentracesError):
    """The request itself is wrong (bad name, bad option combination)."""

    code = "usage_error"
    exit_code = 2


class UnknownProjection(UsageError):
    """A projection name that no registered projection has."""

    code = "unknown_projection"


class ConfigError(UsageError):
    """The configuration file or a configured value is invalid."""

    code = "config_error"


class Refused(OpentracesError):
    """A gate said no; nothing was done."""

    code = "refused"
    exit_code = 2
    status = "refused"


class StoreError(OpentracesError):
    """The event store failed to read or write."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The event store could not be opened (missing server, locked past the budget, bad path)."""

    code = "store_unavailable"


class EventDecodeError(StoreError):
    """A stored event could not be decoded with the current catalogue."""

    code = "event_decode_error"


class VersionConflict(StoreError):
    """A stream already holds a different event at the version being written."""

    code = "version_conflict"


class BlobError(OpentracesError):
    """The blob store failed."""

    code = "blob_error"


class BlobMissing(BlobError):
    """A referenced blob is not present in the local blob store."""

    code = "blob_missing"
    exit_code = 4


class BlobCorrupt(BlobError):
    """A blob's content no longer hashes to its name."""

    code = "blob_corrupt"


class ProjectionError(OpentracesError):
    """A projection failed to apply an event or to swap in a rebuild."""

    code = "projection_error"


class MaintenanceNeeded(OpentracesError):
    """Something must be repaired or rebuilt before this can run."""

    code = "maintenance_needed"
    exit_code = 3

"""The event catalogue: every fact opentraces records, as frozen msgspec Structs.

Invariants:
- Events are immutable and self-describing. Each class has a tag ``<Name>.v<N>``; the tag is the
  stored topic. They are stored as msgpack arrays (``array_like``: no field names in every
  row), so a new field is only ever added at the end of a class, with a default. Any other
  shape change gets a new tag version and an upcaster registered in :data:`UPCASTERS` for the
  old tag, so stored events are never rewritten.
- Events stay small (references, not content): large bodies live in the blob store and are
  referenced by :class:`BlobRef`.
- Streams: ``trace:<trace_id>`` (capture and patches), ``repo:<repo key>`` (anchors, survival),
  ``dataset:<name>`` (workflow runs, rows, review, publication), ``bucket:<name>`` (remotes,
  pushes, sanitization, exclusions, enrollment). See :func:`stream`.
- Ids are deterministic where the input is (:func:`stable_id`), so a retried capture converges on
  the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import blake3
import msgspec

STREAM_KINDS = ("trace", "repo", "dataset", "bucket")


def stream(kind: str, key: str) -> str:
    """Return the stream id ``<kind>:<key>`` after checking the kind."""
    if kind not in STREAM_KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {STREAM_KINDS}")
    return f"{kind}:{key}"


def stable_id(*parts: object, length: int = 32) -> str:
    """A deterministic hex id from its inputs (blake3 over their unit-separated text)."""
    joined = "\x1f".join(str(p) for p in parts)
    return blake3.blake3(joined.encode("utf-8", "backslashreplace")).hexdigest()[:length]


#: Trace ids are 20 hex digits (80 bits): collisions stay negligible far beyond any store's
#: size, and every event row and index entry carries one, so the length shows in store size.
TRACE_ID_LENGTH = 20


def trace_id_for(agent: str, session_id: str) -> str:
    """The trace id of one agent session: stable across re-imports and machines."""
    return stable_id("trace", agent, session_id, length=TRACE_ID_LENGTH)


# ---------------------------------------------------------------------------------------------
# Shared value types


class BlobRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """A pointer into the blob store. ``local_only`` blobs never leave the machine."""

    hash: str
    size: int
    media_type: str = "application/octet-stream"
    local_only: bool = False


class AgentInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    version: str | None = None
    model: str | None = None


class TokenUsage(msgspec.Struct, frozen=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    tool_call_id: str
    tool_name: str
    input: dict[str, Any] = {}
    input_blob: BlobRef | None = None


class LineRange(msgspec.Struct, frozen=True, array_like=True):
    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# Base


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type",
            array_like=True):
    """Base of every stored event. ``at`` is when the fact happened, as the evidence says."""

    kind: ClassVar[str] = "event"
    at: str | None = None


# ---------------------------------------------------------------------------------------------
# Capture (stream trace:<trace_id>)


class SessionStarted(Event, tag="SessionStarted.v1"):
    """First event of every trace stream, written by the importer from what the path tells."""

    kind: ClassVar[str] = "capture"
    trace_id: str
    session_id: str
    agent: AgentInfo
    project: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    title: str | None = None
    parent_trace_id: str | None = None
    parent_step_index: int | None = None
    source_path: str | None = None


class SessionInfo(Event, tag="SessionInfo.v1"):
    """Session facts learned from the transcript; later non-null values win."""

    kind: ClassVar[str] = "capture"
    cwd: str | None = None
    agent_version: str | None = None
    model: str | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    repository_url: str | None = None
    title: str | None = None
    system_prompt: str | None = None
    parent_session_id: str | None = None
    agent_type: str | None = None
    description: str | None = None


class SourceSegmentRead(Event, tag="SourceSegmentRead.v1"):
    """Bytes ``[start_offset, end_offset)`` of a transcript file were read: complete lines only.

    For a file read as a whole JSON document (``capture.base.DocumentAdapter``) the offsets
    count the document's items (messages) consumed before and after the read, ``line_count``
    its text lines, ``raw`` the whole document, ``head_hash`` the consumed items and
    ``tail_hash`` the document's bytes (see ``capture.importer``).
    """

    kind: ClassVar[str] = "capture"
    path: str
    generation: int
    start_offset: int
    end_offset: int
    line_count: int
    raw: BlobRef | None = None
    head_hash: str | None = None
    tail_hash: str | None = None


class SourceLineRejected(Event, tag="SourceLineRejected.v1"):
    """A complete line that did not decode; its bytes are kept so nothing is silently lost."""

    kind: ClassVar[str] = "capture"
    path: str
    generation: int
    line_number: int
    offset: int
    reason: str
    raw_bytes: bytes = b""


class StepRecorded(Event, tag="StepRecorded.v1"):
    """One step: a user prompt, an agent response (one API message) or a system entry.

    ``role`` is ``user``, ``agent`` or ``system``; ``message_id`` is the API message id that
    later :class:`StepExtended` events of the same response share.
    """

    kind: ClassVar[str] = "capture"
    step_index: int
    role: str
    message_id: str | None = None
    agent_role: str | None = None
    cost_usd: float | None = None
    content: str = ""
    content_blob: BlobRef | None = None
    reasoning_content: str | None = None
    model: str | None = None
    call_type: str | None = None
    parent_step: int | None = None
    source_uuid: str | None = None
    source_parent_uuid: str | None = None
    request_id: str | None = None
    is_sidechain: bool = False
    tool_calls: list[ToolCall] = []
    token_usage: TokenUsage | None = None
    images: list[BlobRef] = []


class StepExtended(Event, tag="StepExtended.v1"):
    """More of one step: a later line of the same API response (Claude writes one per block).

    Text is appended; ``token_usage`` (when set) replaces the step's usage, because every line
    of a response repeats the usage so far.
    """

    kind: ClassVar[str] = "capture"
    step_index: int
    content: str = ""
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = []
    token_usage: TokenUsage | None = None
    images: list[BlobRef] = []


class ToolResultRecorded(Event, tag="ToolResultRecorded.v1"):
    kind: ClassVar[str] = "capture"
    step_index: int
    tool_call_id: str
    content: str = ""
    content_blob: BlobRef | None = None
    output_chars: int = 0
    is_error: bool = False
    no_result: bool = False
    detail: dict[str, Any] = {}


class CompactionRecorded(Event, tag="CompactionRecorded.v1"):
    kind: ClassVar[str] = "capture"
    step_index: int
    boundary_uuid: str | None = None
    logical_parent_uuid: str | None = None
    trigger: str | None = None
    pre_tokens: int | None = None
    summary: str | None = None


class SubagentLinked(Event, tag="SubagentLinked.v1"):
    kind: ClassVar[str] = "capture"
    step_index: int
    tool_call_id: str | None
    child_trace_id: str


class SkillInvoked(Event, tag="SkillInvoked.v1"):
    kind: ClassVar[str] = "capture"
    step_index: int
    skill: str
    via: str


class MetadataRecorded(Event, tag="MetadataRecorded.v1"):
    """A source record that is not a step (summary, progress, snapshot, unknown types)."""

    kind: ClassVar[str] = "capture"
    record_type: str
    data: dict[str, Any] = {}


class UsageTotalsRecorded(Event, tag="UsageTotalsRecorded.v1"):
    """Session-level token totals reported by the agent itself (the last one wins)."""

    kind: ClassVar[str] = "capture"
    usage: TokenUsage
    cost_usd: float | None = None


class SessionEnded(Event, tag="SessionEnded.v1"):
    kind: ClassVar[str] = "capture"
    reason: str | None = None
    total_usage: TokenUsage | None = None


# ---------------------------------------------------------------------------------------------
# Trail (patches in trace:<id>; anchors and survival in repo:<key>; see docs/trail.md)


class PatchRecorded(Event, tag="PatchRecorded.v1"):
    """One agent edit of one file (one Edit/MultiEdit/Write, apply_patch file or pi edit/write).

    ``path`` is repo-relative when ``repo_root`` was found (else as the agent named it);
    ``file_path`` is the absolute path. ``hunks`` is a JSON blob of the added and removed
    line blocks; ``authored_hash`` is blake3 over the added lines joined by newlines;
    ``authored_lines`` counts the non-blank added lines; ``before``/``after`` hold the whole
    file when the transcript gave it. ``change`` is ``edit``, ``create``, ``delete``.
    """

    kind: ClassVar[str] = "trail"
    patch_id: str
    trace_id: str
    step_index: int
    tool_call_id: str
    tool_name: str
    path: str
    range: LineRange | None = None
    authored_hash: str | None = None
    before: BlobRef | None = None
    after: BlobRef | None = None
    file_path: str | None = None
    repo_root: str | None = None
    hunks: BlobRef | None = None
    authored_lines: int = 0
    change: str = "edit"


class AnchorSearchRequested(Event, tag="AnchorSearchRequested.v1"):
    """A commit was made (post-commit hook): the next ``trail_sync`` searches ``path``."""

    kind: ClassVar[str] = "trail"
    repo_key: str
    commit: str
    source: str = "post-commit"
    path: str | None = None


class AnchorRecorded(Event, tag="AnchorRecorded.v1"):
    """A patch was found in a commit; the last one per patch in log order is its anchor.

    ``at`` is the commit time; ``lines`` counts the commit's added lines matched to the
    patch; ``range`` is where they are in the commit's version of ``path``.
    """

    kind: ClassVar[str] = "trail"
    anchor_id: str
    patch_id: str
    trace_id: str
    repo_key: str
    commit: str
    path: str
    evidence_tier: str
    evidence_firmness: str
    range: LineRange | None = None
    similarity: float = 1.0
    subject: str | None = None
    lines: int = 0


class SurvivalObserved(Event, tag="SurvivalObserved.v1"):
    """What is left of an anchored patch at ``head`` (appended only when it changed)."""

    kind: ClassVar[str] = "trail"
    patch_id: str
    anchor_id: str
    head: str
    survival_state: str
    retention_fraction: float | None = None
    current_path: str | None = None
    killing_commit: str | None = None


# ---------------------------------------------------------------------------------------------
# Datasets and review (stream dataset:<name>)


class DatasetCreated(Event, tag="DatasetCreated.v1"):
    kind: ClassVar[str] = "dataset"
    name: str
    workflow: str
    workflow_digest: str
    security_policy: dict[str, Any] = {}


class WorkflowRunRecorded(Event, tag="WorkflowRunRecorded.v1"):
    kind: ClassVar[str] = "dataset"
    run_id: str
    trace_ids: list[str] = []
    rows_appended: int = 0


class RowAppended(Event, tag="RowAppended.v1"):
    kind: ClassVar[str] = "dataset"
    row_id: str
    trace_id: str
    content: BlobRef
    security_version: str
    tools_applied: list[str] = []


class ReviewDecided(Event, tag="ReviewDecided.v1"):
    kind: ClassVar[str] = "dataset"
    row_ids: list[str]
    decision: str
    reviewer: str | None = None
    reason: str | None = None


class DatasetPublished(Event, tag="DatasetPublished.v1"):
    kind: ClassVar[str] = "dataset"
    remote: str
    revision: str
    row_ids: list[str] = []


# ---------------------------------------------------------------------------------------------
# Bucket, remotes, enrollment (stream bucket:<name>)


class RemoteConfigured(Event, tag="RemoteConfigured.v1"):
    kind: ClassVar[str] = "bucket"
    remote_kind: str
    target: str
    private: bool = True


class BucketPushed(Event, tag="BucketPushed.v1"):
    kind: ClassVar[str] = "bucket"
    remote: str
    trace_ids: list[str] = []
    blob_count: int = 0
    commit: str | None = None


class BucketPulled(Event, tag="BucketPulled.v1"):
    kind: ClassVar[str] = "bucket"
    remote: str
    trace_ids: list[str] = []
    blob_count: int = 0


class TraceExcluded(Event, tag="TraceExcluded.v1"):
    kind: ClassVar[str] = "bucket"
    trace_id: str
    reason: str


class ProjectEnrolled(Event, tag="ProjectEnrolled.v1"):
    kind: ClassVar[str] = "bucket"
    project: str
    agents: list[str] = []


class ProjectRemoved(Event, tag="ProjectRemoved.v1"):
    kind: ClassVar[str] = "bucket"
    project: str


class TrackingModeSet(Event, tag="TrackingModeSet.v1"):
    kind: ClassVar[str] = "bucket"
    mode: str


# ---------------------------------------------------------------------------------------------
# Security


class SanitizationRun(Event, tag="SanitizationRun.v1"):
    """Content was sanitized by a security version at the egress gate: ``item`` names what
    (``trace:<id>`` for everything of one trace), ``target`` where it was going, ``families``
    how many findings of each kind (never the values)."""

    kind: ClassVar[str] = "security"
    trace_id: str
    security_version: str
    tools_applied: list[str] = []
    findings: int = 0
    redactions: int = 0
    verdict: str = "clean"
    item: str = ""
    target: str = ""
    families: dict[str, int] = {}


class EgressRefused(Event, tag="EgressRefused.v1"):
    kind: ClassVar[str] = "security"
    target: str
    item: str
    reason: str


class Recorded(msgspec.Struct, frozen=True):
    """An event with its place in the log. ``position`` is None until it is stored."""

    originator_id: str
    originator_version: int
    event: Event
    position: int | None = None

    @property
    def stream(self) -> str:
        return self.originator_id

    @property
    def version(self) -> int:
        return self.originator_version


# ---------------------------------------------------------------------------------------------
# Registry

EVENT_TYPES: tuple[type[Event], ...] = (
    SessionStarted, SessionInfo, SourceSegmentRead, SourceLineRejected, StepRecorded,
    StepExtended, ToolResultRecorded, CompactionRecorded, SubagentLinked, SkillInvoked,
    MetadataRecorded, UsageTotalsRecorded, SessionEnded,
    PatchRecorded, AnchorSearchRequested, AnchorRecorded, SurvivalObserved,
    DatasetCreated, WorkflowRunRecorded, RowAppended, ReviewDecided, DatasetPublished,
    RemoteConfigured, BucketPushed, BucketPulled, TraceExcluded, ProjectEnrolled, ProjectRemoved,
    TrackingModeSet, SanitizationRun, EgressRefused,
)

AnyEvent = (
    SessionStarted | SessionInfo | SourceSegmentRead | SourceLineRejected | StepRecorded
    | StepExtended | ToolResultRecorded | CompactionRecorded | SubagentLinked | SkillInvoked
    | MetadataRecorded | UsageTotalsRecorded | SessionEnded
    | PatchRecorded | AnchorSearchRequested | AnchorRecorded | SurvivalObserved
    | DatasetCreated | WorkflowRunRecorded | RowAppended | ReviewDecided | DatasetPublished
    | RemoteConfigured | BucketPushed | BucketPulled | TraceExcluded | ProjectEnrolled
    | ProjectRemoved | TrackingModeSet | SanitizationRun | EgressRefused
)

#: Old topic -> function turning its decoded dict into a current event (named upcast_<tag>).
UPCASTERS: dict[str, Callable[[dict[str, Any]], Event]] = {}


def topic_of(event: Event) -> str:
    """The stored topic of an event: its tag, e.g. ``StepRecorded.v1``."""
    return type(event).__struct_config__.tag  # type: ignore[return-value]


TOPICS: dict[str, type[Event]] = {t.__struct_config__.tag: t for t in EVENT_TYPES}  # type: ignore[misc]

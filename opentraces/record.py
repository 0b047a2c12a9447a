"""The TraceRecord: one agent session as a single JSON document (the JSONL export line).

Field names, nesting and order follow the opentraces JSONL schema 0.9.0, so files written here
read wherever that schema is read, and records written by other tools decode into these Structs.
This module is plain data: no I/O, no knowledge of events or storage. The traces projection
(:mod:`opentraces.projections.traces`) assembles records from the event log.

Invariants:
- Every Struct is frozen and encodes every field (defaults included), in declaration order;
  dictionaries are encoded with sorted keys. :meth:`TraceRecord.to_jsonl_line` is therefore a
  stable function of the record's content.
- :meth:`TraceRecord.compute_content_hash` covers everything except ``trace_id`` and
  ``content_hash`` itself: equal content gives an equal hash wherever it was captured.

Value vocabularies kept from the schema (stored as plain strings):
``Step.role`` is ``system``, ``user`` or ``agent``; ``Step.call_type`` is ``main``,
``subagent`` or ``warmup``; ``Outcome.signal_confidence`` is ``derived``, ``inferred`` or
``annotated``; ``TraceRecord.lifecycle`` is ``provisional`` (not tied to a commit) or ``final``
(a patch of the trace is anchored in a commit); ``GitLink.tier`` is ``tool_emitted``,
``tool_emitted_with_divergence``, ``overlapping`` or ``orphan``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

SCHEMA_VERSION = "0.9.0"

__all__ = [
    "SCHEMA_VERSION",
    "VCS",
    "Agent",
    "Environment",
    "GitAnchor",
    "GitLink",
    "Metrics",
    "Observation",
    "Outcome",
    "Patch",
    "SecurityMetadata",
    "Snippet",
    "Step",
    "Task",
    "TokenUsage",
    "ToolCall",
    "TraceRecord",
    "decode_jsonl_line",
]


class Task(msgspec.Struct, frozen=True, kw_only=True):
    description: str | None = None
    source: str | None = None  # where the description came from, e.g. "user_prompt"
    repository: str | None = None  # "owner/repo"
    repository_url: str | None = None
    base_commit: str | None = None


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str | None = None
    model: str | None = None


class VCS(msgspec.Struct, frozen=True, kw_only=True):
    type: str = "none"  # "git" or "none"
    base_commit: str | None = None
    branch: str | None = None
    diff: str | None = None


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    os: str | None = None
    shell: str | None = None
    vcs: VCS = msgspec.field(default_factory=VCS)
    language_ecosystem: list[str] = []
    # Optional runtime-identity fields of the schema; never filled from capture today.
    resolved_dependencies: list[dict[str, Any]] | None = None
    interpreter: dict[str, Any] | None = None
    arch: str | None = None
    platform: str | None = None
    abi_tag: str | None = None


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    tool_call_id: str
    tool_name: str
    input: dict[str, Any] = {}
    duration_ms: int | None = None


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What came back for one tool call; ``error`` is ``no_result`` when nothing did."""

    source_call_id: str
    content: str | None = None
    output_summary: str | None = None
    error: str | None = None


class Snippet(msgspec.Struct, frozen=True, kw_only=True):
    file_path: str
    start_line: int | None = None
    end_line: int | None = None
    language: str | None = None
    text: str | None = None
    source_step: int | None = None


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    prefix_reuse_tokens: int = 0


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One model call (or one user / system entry) of the session."""

    step_index: int
    role: str
    content: str | None = None
    reasoning_content: str | None = None
    model: str | None = None
    system_prompt_hash: str | None = None  # key into TraceRecord.system_prompts
    agent_role: str | None = None
    parent_step: int | None = None
    call_type: str | None = None
    subagent_trajectory_ref: str | None = None
    tools_available: list[str] = []
    tool_calls: list[ToolCall] = []
    observations: list[Observation] = []
    snippets: list[Snippet] = []
    token_usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    timestamp: str | None = None
    context_node_id: str | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    success: bool | None = None
    signal_source: str = "deterministic"
    signal_confidence: str = "derived"
    description: str | None = None
    committed: bool = False
    commit_sha: str | None = None
    terminal_state: str | None = None
    reward: float | None = None
    reward_source: str | None = None


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    total_steps: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cache_read_tokens: int = 0
    total_cache_creation_tokens: int = 0
    total_duration_s: float | None = None
    cache_hit_rate: float | None = None
    estimated_cost_usd: float | None = None


class SecurityMetadata(msgspec.Struct, frozen=True, kw_only=True):
    scanned: bool = False
    flags_reviewed: int = 0
    redactions_applied: int = 0
    classifier_version: str | None = None


class GitAnchor(msgspec.Struct, frozen=True, kw_only=True):
    """Where a patch was found in Git; ``found`` is False after a search that matched nothing."""

    last_searched_at: str
    found: bool
    commit_sha: str | None = None
    path: str | None = None
    blob_sha: str | None = None
    git_patch_id: str | None = None
    evidence_tier: str | None = None
    evidence_firmness: str | None = None


class Patch(msgspec.Struct, frozen=True, kw_only=True):
    """A change the trace made to one file (one Edit/Write/apply_patch hunk)."""

    patch_id: str
    file_path: str
    step_index: int | None = None
    tool_call_id: str | None = None
    capture_method: list[str] = []
    snapshot_before_id: str | None = None
    snapshot_after_id: str | None = None
    anchor: GitAnchor | None = None
    superseded_by: list[str] = []  # earlier anchor commits, newest first
    limitations: list[str] = []


class GitLink(msgspec.Struct, frozen=True, kw_only=True):
    vcs_type: str = "git"
    revision: str
    repo_url: str | None = None
    branch: str | None = None
    tier: str
    commit_reachable: bool | None = None
    content_alive: bool | None = None


class TraceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One session, whole: who ran it, every step, its outcome and its metrics."""

    schema_version: str = SCHEMA_VERSION
    trace_id: str
    session_id: str
    content_hash: str | None = None
    timestamp_start: str | None = None
    timestamp_end: str | None = None
    execution_context: str | None = None  # "devtime" or "runtime"
    task: Task = msgspec.field(default_factory=Task)
    agent: Agent
    environment: Environment = msgspec.field(default_factory=Environment)
    system_prompts: dict[str, str] = {}
    tool_definitions: list[dict[str, Any]] = []
    steps: list[Step] = []
    outcome: Outcome = msgspec.field(default_factory=Outcome)
    dependencies: list[str] = []
    metrics: Metrics = msgspec.field(default_factory=Metrics)
    security: SecurityMetadata = msgspec.field(default_factory=SecurityMetadata)
    attribution: dict[str, Any] | None = None
    lifecycle: str = "provisional"
    generation_index: int = 0
    patches: list[Patch] = []
    git_links: list[GitLink] = []
    context_tree_summary: dict[str, Any] = {}
    metadata: dict[str, Any] = {}

    def compute_content_hash(self) -> str:
        """sha256 (hex) of the record's canonical JSON without ``trace_id`` and ``content_hash``."""
        body = msgspec.structs.replace(self, trace_id="", content_hash=None)
        return hashlib.sha256(_encode(body)).hexdigest()

    def with_content_hash(self) -> TraceRecord:
        """This record with ``content_hash`` set to :meth:`compute_content_hash`."""
        return msgspec.structs.replace(self, content_hash=self.compute_content_hash())

    def to_jsonl_line(self) -> str:
        """One compact JSON line (no newline) in schema field order; the hash is filled in."""
        record = self if self.content_hash is not None else self.with_content_hash()
        return _encode(record).decode("utf-8")


#: Struct fields encode in declaration order (the schema's); dicts that hold data (metadata,
#: tool inputs) are sorted, so the bytes depend only on the content.
_ENCODER = msgspec.json.Encoder(order="deterministic")


def _encode(record: TraceRecord) -> bytes:
    return _ENCODER.encode(record)


def decode_jsonl_line(line: str | bytes) -> TraceRecord:
    """A TraceRecord from one JSONL line (ours or any schema-0.9.0 writer's)."""
    return msgspec.json.decode(line, type=TraceRecord)

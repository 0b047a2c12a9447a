"""Tracking mode and project enrollment: which sessions opentraces captures.

Everything here is a fold over the events of stream ``bucket:default``
(:class:`~opentraces.events.TrackingModeSet`, :class:`~opentraces.events.ProjectEnrolled`,
:class:`~opentraces.events.ProjectRemoved`) plus, for writes, one append. Nothing else is stored.

Rules (what :func:`should_capture` answers):

- An ``.opentraces-exclude`` file in the session's folder or any parent turns capture off
  there, whatever the mode or enrollment says.
- Otherwise the nearest enrolled or removed project that contains the folder decides: removed
  means no; enrolled means yes, for the agents it names (an empty list means every agent) and,
  when it was enrolled *fresh*, only for sessions that started at or after the enrollment.
- Outside every enrolled or removed project, tracking mode ``global`` (the default) captures
  and ``manual`` does not. A session without a known folder follows the mode.

``ProjectEnrolled.at`` carries the start of capture: a fresh enrollment records the time it was
made (older sessions of the project are not imported), an enrollment that imports existing
sessions records ``at = None`` (no cutoff).

Writes are idempotent: a call that would not change the folded state appends nothing, so
re-running ``init``, ``remove`` or ``config tracking-mode`` is safe. Enrolling again widens
(more agents, or dropping the cutoff to import existing sessions) but never narrows; a fresh
re-enrollment of an enrolled project keeps its original cutoff.

Project keys are absolute, normalised paths (symlinks resolved where the folder exists).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from opentraces.errors import UsageError
from opentraces.events import Event, ProjectEnrolled, ProjectRemoved, TrackingModeSet, stream
from opentraces.hooks import AGENTS, EXCLUDE_MARKER, excluded_by_marker

if TYPE_CHECKING:
    from opentraces.config import Settings
    from opentraces.workspace import Workspace

#: The stream holding tracking mode and enrollment.
BUCKET_STREAM = stream("bucket", "default")
TRACKING_MODES = ("global", "manual")
DEFAULT_TRACKING_MODE = "global"

__all__ = [
    "AGENTS",
    "BUCKET_STREAM",
    "EXCLUDE_MARKER",
    "TRACKING_MODES",
    "EnrollResult",
    "EnrollmentState",
    "ProjectState",
    "RemoveResult",
    "TrackingModeResult",
    "enroll",
    "enrolled_projects",
    "enrollment_state",
    "project_key",
    "remove",
    "set_tracking_mode",
    "should_capture",
    "tracking_mode",
]


# ---------------------------------------------------------------------------------------------
# State and fold


class ProjectState(msgspec.Struct, frozen=True):
    """A project folder as the events leave it."""

    project: str
    enrolled: bool
    agents: list[str] = []
    #: Sessions that started before this (ISO-8601 UTC) are not captured; None: no cutoff.
    since: str | None = None


class EnrollmentState(msgspec.Struct, frozen=True):
    mode: str = DEFAULT_TRACKING_MODE
    projects: dict[str, ProjectState] = {}

    def project_for(self, path: str) -> ProjectState | None:
        """The nearest enrolled or removed project containing ``path`` (a project key)."""
        best: ProjectState | None = None
        for key, state in self.projects.items():
            if _contains(key, path) and (best is None or len(key) > len(best.project)):
                best = state
        return best


def fold(events: Iterable[Event]) -> EnrollmentState:
    """The enrollment state after ``events`` (other event types are ignored)."""
    mode = DEFAULT_TRACKING_MODE
    projects: dict[str, ProjectState] = {}
    for event in events:
        if isinstance(event, TrackingModeSet):
            mode = event.mode
        elif isinstance(event, ProjectEnrolled):
            projects[event.project] = ProjectState(event.project, True, list(event.agents),
                                                   since=event.at)
        elif isinstance(event, ProjectRemoved):
            projects[event.project] = ProjectState(event.project, False)
    return EnrollmentState(mode=mode, projects=projects)


def enrollment_state(target: Settings | Path | Workspace) -> EnrollmentState:
    """Fold the ``bucket:default`` stream (read-only: a missing store reads as empty)."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        if not ws.store_exists:
            return EnrollmentState()
        return fold(rec.event for rec in ws.log.read(BUCKET_STREAM))


def _append(target: Settings | Path | Workspace, event: Event) -> None:
    from opentraces.workspace import append

    append(target, BUCKET_STREAM, [event])


# ---------------------------------------------------------------------------------------------
# Tracking mode


class TrackingModeResult(msgspec.Struct, frozen=True):
    mode: str
    previous: str
    changed: bool


def tracking_mode(target: Settings | Path | Workspace) -> str:
    """The tracking mode: ``global`` (the default) or ``manual``."""
    return enrollment_state(target).mode


def set_tracking_mode(target: Settings | Path | Workspace, mode: str) -> TrackingModeResult:
    """Set the tracking mode; appends nothing when it is already ``mode``.

    Raises:
        UsageError: ``mode`` is not ``global`` or ``manual``.
    """
    if mode not in TRACKING_MODES:
        raise UsageError(f"unknown tracking mode {mode!r}; use one of: {', '.join(TRACKING_MODES)}")
    previous = tracking_mode(target)
    if previous == mode:
        return TrackingModeResult(mode=mode, previous=previous, changed=False)
    _append(target, TrackingModeSet(mode=mode, at=_iso(_utcnow())))
    return TrackingModeResult(mode=mode, previous=previous, changed=True)


# ---------------------------------------------------------------------------------------------
# Enrollment


class EnrollResult(msgspec.Struct, frozen=True):
    project: str
    agents: list[str]
    since: str | None
    changed: bool
    tracking_mode: str


class RemoveResult(msgspec.Struct, frozen=True):
    project: str
    changed: bool
    was_enrolled: bool
    tracking_mode: str


def project_key(project: str | os.PathLike[str]) -> str:
    """The key a project folder is recorded under: absolute, normalised, symlinks resolved."""
    path = Path(project).expanduser()
    try:
        return str(path.resolve(strict=True))
    except OSError:
        return os.path.normpath(os.path.abspath(path))


def enroll(target: Settings | Path | Workspace, project: Path, agents: Sequence[str],
           start_fresh: bool, *, now: dt.datetime | None = None) -> EnrollResult:
    """Enroll ``project`` for capture by ``agents`` (empty: every agent).

    Args:
        project: the project folder.
        agents: agent names from :data:`AGENTS`; an empty list enrolls every agent.
        start_fresh: only sessions that start from now on are captured; otherwise the
            project's existing sessions are wanted too (no cutoff).
        now: the enrollment time (default: the current time).

    Raises:
        UsageError: an unknown agent name.
    """
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        raise UsageError(f"unknown agent {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(AGENTS)}")
    key = project_key(project)
    state = enrollment_state(target)
    current = state.projects.get(key)
    wanted = sorted(set(agents))
    if current is not None and current.enrolled:
        merged = [] if not wanted or not current.agents else sorted({*current.agents, *wanted})
        since = None if not start_fresh else current.since
        if merged == current.agents and since == current.since:
            return EnrollResult(project=key, agents=current.agents, since=current.since,
                                changed=False, tracking_mode=state.mode)
        wanted = merged
    else:
        since = _iso(now or _utcnow()) if start_fresh else None
    _append(target, ProjectEnrolled(project=key, agents=wanted, at=since))
    return EnrollResult(project=key, agents=wanted, since=since, changed=True,
                        tracking_mode=state.mode)


def remove(target: Settings | Path | Workspace, project: Path, *,
           now: dt.datetime | None = None) -> RemoveResult:
    """Turn capture off for ``project`` (whatever the tracking mode); idempotent."""
    key = project_key(project)
    state = enrollment_state(target)
    current = state.projects.get(key)
    was_enrolled = current is not None and current.enrolled
    if current is not None and not current.enrolled:
        return RemoveResult(project=key, changed=False, was_enrolled=False,
                            tracking_mode=state.mode)
    _append(target, ProjectRemoved(project=key, at=_iso(now or _utcnow())))
    return RemoveResult(project=key, changed=True, was_enrolled=was_enrolled,
                        tracking_mode=state.mode)


def enrolled_projects(target: Settings | Path | Workspace) -> list[ProjectState]:
    """The projects currently enrolled, sorted by folder."""
    projects = enrollment_state(target).projects
    return [projects[k] for k in sorted(projects) if projects[k].enrolled]


def should_capture(target: Settings | Path | Workspace | EnrollmentState, cwd: str | None, *,
                   agent: str | None = None, started_at: str | None = None) -> bool:
    """Whether a session in folder ``cwd`` is captured (see the module docstring for the rules).

    Args:
        target: where the events are, or an already folded :class:`EnrollmentState` (to decide
            many sessions with one read).
        cwd: the session's working folder, if known.
        agent: the session's agent; an enrollment limited to other agents does not cover it.
        started_at: the session's start (ISO-8601); checked against a fresh enrollment's cutoff.
    """
    state = target if isinstance(target, EnrollmentState) else enrollment_state(target)
    if cwd is None:
        return state.mode == "global"
    if excluded_by_marker(cwd):
        return False
    project = state.project_for(project_key(cwd))
    if project is None:
        return state.mode == "global"
    if not project.enrolled:
        return False
    if agent is not None and project.agents and agent not in project.agents:
        return state.mode == "global"
    if project.since is not None and started_at is not None:
        try:
            return _parse(started_at) >= _parse(project.since)
        except ValueError:
            return True  # a start we cannot read is no reason to lose the session
    return True


# ---------------------------------------------------------------------------------------------
# Helpers


def _contains(parent: str, path: str) -> bool:
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

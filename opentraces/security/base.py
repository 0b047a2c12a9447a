"""What every security tool is: its rules, its matches, and what it knows about this machine.

A tool looks at decoded strings (never serialized lines) and returns :class:`Match` spans on the
string it was given; the pipeline in :mod:`opentraces.security` merges the spans of every tool
and writes the output once, so findings always point into the original value.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import msgspec

from opentraces.errors import UsageError

#: A string to look at: (field path such as ``steps[3].tool_input.command``, its text).
Item = tuple[str, str]


class Rule(msgspec.Struct, frozen=True):
    rule_id: str
    family: str
    description: str


class Match(NamedTuple):
    """A span of the text a tool was given. ``replacement`` None means flag, do not edit."""

    start: int
    end: int
    rule_id: str
    family: str
    replacement: str | None


class Context(msgspec.Struct, frozen=True):
    """What tools may know about this install.

    ``install_key`` keys the placeholders (stable within an install, unlinkable across
    installs); ``identifiers`` are this machine's own (``login``, ``home``, ``hostname``,
    ``git_name``, ``git_email``, ``extra``: a list); ``options`` is the config file's
    ``security.options.<tool>`` table.
    """

    install_key: bytes = b""
    identifiers: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}


class Tool:
    """Base of the tools. Subclasses set the class attributes and :meth:`scan` (or, when
    looking at strings one by one is wasteful, :meth:`scan_many`)."""

    name: ClassVar[str]
    #: ``inline`` (Python here), ``external`` (a binary on PATH) or ``model`` (a PII model)
    kind: ClassVar[str] = "inline"
    #: ``row``: usable on dataset rows; ``record``: only on whole records
    scope: ClassVar[str] = "row"
    description: ClassVar[str] = ""
    default_enabled: ClassVar[bool] = False
    setup_command: ClassVar[str | None] = None

    def __init__(self, context: Context | None = None) -> None:
        self.context = context or Context()

    @property
    def options(self) -> dict[str, Any]:
        return self.context.options.get(self.name, {})

    def rules(self) -> list[Rule]:
        return []

    def unavailable(self) -> str | None:
        """Why the tool cannot run here (None when it can)."""
        return None

    def scan(self, path: str, text: str) -> list[Match]:
        raise NotImplementedError

    def scan_many(self, items: list[Item]) -> list[list[Match]]:
        """Matches for each item, in order."""
        return [self.scan(path, text) for path, text in items]


class ToolUnavailable(UsageError):
    """A tool was asked to run where it cannot: reported, never skipped."""

    code = "tool_unavailable"

    def __init__(self, tool: str, reason: str, setup_command: str | None) -> None:
        super().__init__(f"security tool {tool!r} is unavailable: {reason}",
                         hint=f"Run `{setup_command}`" if setup_command else None,
                         next_command=setup_command)
        self.tool, self.reason, self.setup_command = tool, reason, setup_command

"""Capture: one adapter per agent turns transcript files into events (see ``base``).

Adapters register here by agent name; each is imported only when used, the way a third-party
adapter would be.
"""

from __future__ import annotations

import importlib

from opentraces.capture.base import Adapter
from opentraces.errors import UsageError

#: agent name -> "module:class" of its adapter
ADAPTERS: dict[str, str] = {
    "claude-code": "opentraces.capture.claude_code:ClaudeCodeAdapter",
    "codex-cli": "opentraces.capture.codex:CodexAdapter",
    "pi": "opentraces.capture.pi:PiAdapter",
    "gemini-cli": "opentraces.capture.gemini:GeminiAdapter",
}


def adapter(agent: str) -> Adapter:
    """The adapter for an agent name."""
    try:
        target = ADAPTERS[agent]
    except KeyError as e:
        raise UsageError(f"unknown agent {agent!r}; known: {', '.join(ADAPTERS)}") from e
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)()

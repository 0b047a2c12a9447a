"""Counts taken straight from raw Claude Code JSONL with the stdlib, independent of the adapter.

Tests compare these with what the adapter emitted, so the two must not share code: nothing
here imports from ``opentraces``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USAGE_FIELDS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
                "cache_read_input_tokens": "cache_read_tokens",
                "cache_creation_input_tokens": "cache_write_tokens"}


@dataclass
class ClaudeCounts:
    records: int = 0
    assistant_messages: int = 0
    tool_uses: int = 0
    tool_results: int = 0
    compact_boundaries: int = 0
    compact_summaries: int = 0
    images: int = 0
    sidechain_lines: int = 0
    #: token totals with each API message counted once, from its last line that has usage
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        USAGE_FIELDS.values(), 0))
    tool_use_ids: set[str] = field(default_factory=set)


def records(path: Path) -> list[Any]:
    """Every JSON value of a file, one per non-blank line (the claude-code corpus has no
    concatenated lines)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def claude_counts(path: Path) -> ClaudeCounts:
    counts = ClaudeCounts()
    last_usage: dict[str, dict[str, Any]] = {}
    messages: set[str] = set()
    for number, record in enumerate(records(path)):
        counts.records += 1
        if not isinstance(record, dict):
            continue
        counts.sidechain_lines += record.get("isSidechain") is True
        kind = record.get("type")
        message = record.get("message")
        if kind == "system" and record.get("subtype") == "compact_boundary":
            counts.compact_boundaries += 1
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if kind == "assistant":
            key = message.get("id") or record.get("requestId") or f"line {number}"
            messages.add(key)
            if isinstance(message.get("usage"), dict):
                last_usage[key] = message["usage"]
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    counts.tool_uses += 1
                    counts.tool_use_ids.add(block.get("id"))
        elif kind == "user":
            counts.compact_summaries += record.get("isCompactSummary") is True
            for block in blocks:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    counts.tool_results += 1
                elif block.get("type") == "image" and \
                        (block.get("source") or {}).get("type") == "base64":
                    counts.images += 1
    counts.assistant_messages = len(messages)
    for usage in last_usage.values():
        for raw, name in USAGE_FIELDS.items():
            value = usage.get(raw)
            counts.tokens[name] += value if isinstance(value, int) else 0
    return counts

"""Which security tools are on: the machine-wide flags in the config file's ``security`` table.

``config.json``::

    {"security": {"enabled": ["classifier"], "disabled": [],
                  "options": {"capsule_scope": {"fields": ["metadata.cwd"]}}}}

The floor (:data:`opentraces.security.FLOOR`) is always on at the egress gate; ``enabled`` adds
tools, ``disabled`` turns off a tool that is on by default. Writing keeps every other key of the
file and replaces it atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from opentraces.agent_setup import write_atomic
from opentraces.config import CONFIG_FILE, read_config_file
from opentraces.errors import ConfigError, Refused
from opentraces.security import (
    FLOOR,
    SECURITY_VERSION,
    TOOLS,
    Context,
    Tool,
    context_for,
    tool_class,
)


class Policy(msgspec.Struct, frozen=True):
    floor: list[str]
    enabled: list[str]
    disabled: list[str]
    options: dict[str, dict[str, Any]] = {}

    def active(self) -> list[str]:
        """The tools the gate runs, in the registry's order."""
        on = set(self.floor) | set(self.enabled) | {
            n for n in TOOLS if tool_class(n).default_enabled and n not in self.disabled}
        return [n for n in TOOLS if n in on]


class ToolInfo(msgspec.Struct, frozen=True):
    name: str
    kind: str
    scope: str
    available: bool
    enabled: bool
    default_enabled: bool
    setup_command: str | None
    description: str
    unavailable_reason: str | None = None


def _read(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    data = read_config_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must hold a JSON object")
    return data


def load_policy(home: Path) -> Policy:
    path = home / CONFIG_FILE
    table = _read(home).get("security", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: security must be an object")
    lists = {}
    for key in ("enabled", "disabled"):
        names = table.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: security.{key} must be a list of tool names")
        unknown = [n for n in names if n not in TOOLS]
        if unknown:
            raise ConfigError(f"{path}: security.{key} names unknown tools: {', '.join(unknown)}",
                              hint=f"Known tools: {', '.join(TOOLS)}")
        lists[key] = names
    options = table.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError(f"{path}: security.options must map tool names to objects")
    return Policy(list(FLOOR), lists["enabled"], lists["disabled"], options)


def set_tools(home: Path, enable: list[str], disable: list[str]) -> Policy:
    """Turn tools on or off machine-wide; the floor cannot be turned off."""
    for name in [*enable, *disable]:
        tool_class(name)
    floor = [n for n in disable if n in FLOOR]
    if floor:
        raise Refused(f"{', '.join(floor)} belong to the floor every egress applies; "
                      "they cannot be disabled")
    current = load_policy(home)
    enabled = [n for n in TOOLS if (n in current.enabled or n in enable) and n not in disable]
    disabled = [n for n in TOOLS if (n in current.disabled or n in disable) and n not in enable]
    data = _read(home)
    table = dict(data.get("security", {}))
    table.update(enabled=enabled, disabled=disabled)
    data["security"] = table
    write_atomic(home / CONFIG_FILE,
                 (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return load_policy(home)


def context(home: Path, user_home: Path | None) -> Context:
    policy = load_policy(home)
    extra = policy.options.get("path_anonymizer", {}).get("extra_identifiers", [])
    return context_for(home, user_home, policy.options, extra)


def _info(tool: Tool, active: set[str]) -> ToolInfo:
    reason = tool.unavailable()
    return ToolInfo(tool.name, tool.kind, tool.scope, reason is None, tool.name in active,
                    tool.default_enabled or tool.name in FLOOR, tool.setup_command,
                    tool.description, reason)


def tool_infos(home: Path) -> list[ToolInfo]:
    """Every tool as configured. Describing a tool needs only its options, so listing makes
    no install key: a read command writes nothing."""
    policy = load_policy(home)
    ctx, active = Context(options=policy.options), set(policy.active())
    return [_info(tool_class(name)(ctx), active) for name in TOOLS]


class SecurityTools(msgspec.Struct, frozen=True):
    security_version: str
    tools: list[ToolInfo]


class ToolDetail(msgspec.Struct, frozen=True):
    security_version: str
    tool: dict[str, Any]


class BucketSecurity(msgspec.Struct, frozen=True):
    policy: dict[str, list[str]]
    security_version: str
    pending: dict[str, Any]


def security_tools(settings: Any) -> SecurityTools:
    """Every tool: kind, scope, whether it can run here and whether the policy turns it on."""
    return SecurityTools(SECURITY_VERSION, tool_infos(settings.home))


def security_tool(settings: Any, name: str) -> ToolDetail:
    """One tool and its rules."""
    policy = load_policy(settings.home)
    tool = tool_class(name)(Context(options=policy.options))
    return ToolDetail(SECURITY_VERSION, {**msgspec.to_builtins(_info(tool, set(policy.active()))),
                                         "rules": msgspec.to_builtins(tool.rules())})


def security_sanitize(settings: Any, stream: Any, *, tools: list[str] | None = None,
                      use_config: bool = False) -> Any:
    """Sanitize JSON lines from ``stream`` (binary) with ``tools`` or the configured ones;
    yields a :class:`~opentraces.security.lines.LineResult` per line."""
    from opentraces.errors import UsageError
    from opentraces.security import load_tools
    from opentraces.security.lines import sanitize_stream

    if bool(tools) == use_config:
        raise UsageError("give either --tools a,b or --use-config")
    names = load_policy(settings.home).active() if use_config else list(tools or [])
    loaded = load_tools(names, context(settings.home, settings.user_home))
    return sanitize_stream(stream, loaded)


def bucket_security(settings: Any, *, enable: list[str] = (),  # type: ignore[assignment]
                    disable: list[str] = ()) -> BucketSecurity:  # type: ignore[assignment]
    """The machine-wide tool flags (changed first when ``enable``/``disable`` are given) and
    how many traces were never sanitized under the current security version."""
    from opentraces.maintenance import bucket_manifest

    policy = set_tools(settings.home, list(enable), list(disable)) if enable or disable \
        else load_policy(settings.home)
    traces = bucket_manifest(settings).traces
    never = sum(not t["status"]["scanned"] for t in traces)
    stale = sum(t["status"]["scanned"] and t["status"]["security_version"] != SECURITY_VERSION
                for t in traces)
    reason = "stale_security_version" if stale else "not_sanitized" if never else None
    return BucketSecurity(
        {"floor": policy.floor, "enabled": policy.active(), "disabled": policy.disabled},
        SECURITY_VERSION, {"traces": never + stale, "reason": reason})


__all__ = ["SECURITY_VERSION", "BucketSecurity", "Policy", "SecurityTools", "ToolDetail",
           "ToolInfo", "bucket_security", "context", "load_policy", "security_sanitize",
           "security_tool", "security_tools", "set_tools", "tool_infos"]

"""Security tools and the pipeline that runs them over text, dataset rows and records.

The pipeline walks every string of a value (dict keys included), hands the strings to each
tool, and also shows the tools the string's decoded forms (:mod:`opentraces.security.encodings`:
JSON escapes, percent-encoding, base64), so a secret hidden by an encoding is found where it
sits. Spans from every tool are merged and each string is rewritten once; a finding's span
points into the original string.

``SECURITY_VERSION`` changes whenever a rule change could redact something an earlier version
let through; content sanitized under an older version is sanitized again before it leaves.
"""

from __future__ import annotations

import contextlib
import getpass
import hmac
import importlib
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from opentraces.errors import UsageError
from opentraces.security.base import Context, Item, Match, Rule, Tool, ToolUnavailable
from opentraces.security.encodings import decoded_views

__all__ = ["FLOOR", "SECURITY_VERSION", "TOOLS", "Context", "Finding", "Match", "Rule",
           "Sanitized", "Tool", "ToolUnavailable", "context_for", "load_tools", "placeholder",
           "record_only", "sanitize", "tool_class"]

SECURITY_VERSION = "sec-1"

#: Always applied at the egress gate, whatever the configuration says.
FLOOR = ("regex", "entropy", "path_anonymizer", "business_logic")

#: tool name -> "module:class" under opentraces.security (imported when used)
TOOLS: dict[str, str] = {
    "regex": "regex:RegexTool",
    "entropy": "entropy:EntropyTool",
    "path_anonymizer": "paths:PathAnonymizer",
    "business_logic": "business:BusinessLogic",
    "privacy_filter": "models:PrivacyFilter",
    "classifier": "classifier:Classifier",
    "capsule_scope": "capsule:CapsuleScope",
    "trufflehog": "external:Trufflehog",
    "gitleaks": "external:Gitleaks",
    "llm_pii": "models:LlmPii",
}

KEY_FILE = "security/install.key"
_ORDER = {name: i for i, name in enumerate(TOOLS)}


class Finding(msgspec.Struct, frozen=True):
    tool: str
    rule_id: str
    family: str
    path: str
    span: tuple[int, int]
    action: str  # redacted | flagged


class Sanitized(msgspec.Struct):
    input_kind: str
    output: Any
    findings: list[Finding]
    tools_applied: list[str]
    security_version: str = SECURITY_VERSION

    @property
    def redactions(self) -> int:
        return sum(f.action == "redacted" for f in self.findings)


def tool_class(name: str) -> type[Tool]:
    """The class of tool ``name``; UsageError for a name no tool has."""
    if name not in TOOLS:
        raise UsageError(f"no security tool is named {name!r}",
                         hint=f"Known tools: {', '.join(TOOLS)}",
                         next_command="opentraces security tools list")
    module, attr = TOOLS[name].split(":")
    cls: type[Tool] = getattr(importlib.import_module(f"opentraces.security.{module}"), attr)
    return cls


def load_tools(names: Iterable[str], context: Context) -> list[Tool]:
    """Tools ready to run, in the registry's order; ToolUnavailable for one that cannot run."""
    wanted = list(dict.fromkeys(names))
    tools = [tool_class(n)(context) for n in TOOLS if n in wanted]
    for name in wanted:
        tool_class(name)  # an unknown name is a usage error
    for tool in tools:
        reason = tool.unavailable()
        if reason is not None:
            raise ToolUnavailable(tool.name, reason, tool.setup_command)
    return tools


def placeholder(context: Context, kind: str, value: str) -> str:
    """``<kind-xxxxxxxx>``: the same value gives the same placeholder within this install,
    and the key never leaves it, so placeholders cannot be linked across installs."""
    digest = hmac.new(context.install_key, f"{kind}\x1f{value}".encode("utf-8",
                      "surrogatepass"), "sha256").hexdigest()
    return f"<{kind}-{digest[:8]}>"


def context_for(home: Path, user_home: Path | None = None,
                options: dict[str, dict[str, Any]] | None = None,
                extra: Iterable[str] = ()) -> Context:
    """This install's context: its key (made on first use, private to the user) and the
    machine's own identifiers."""
    path = home / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # first writer wins; others read its key
            os.link(temp, path)
        temp.unlink()
        key = path.read_bytes()
    return Context(install_key=key, identifiers=_identifiers(user_home, list(extra)),
                   options=options or {})


def _identifiers(user_home: Path | None, extra: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"extra": extra}
    with contextlib.suppress(Exception):  # containers may have no login name
        found["login"] = getpass.getuser()
    found["hostname"] = socket.gethostname()
    if user_home is not None:
        found["home"] = str(user_home)
        config = _git_identity(user_home / ".gitconfig")
        found.update(config)
    return {k: v for k, v in found.items() if v}


def _git_identity(path: Path) -> dict[str, str]:
    from dulwich.config import ConfigFile

    try:
        config = ConfigFile.from_path(str(path))
    except (OSError, ValueError):
        return {}
    found = {}
    for key, name in ((b"name", "git_name"), (b"email", "git_email")):
        with contextlib.suppress(KeyError):
            found[name] = config.get((b"user",), key).decode("utf-8", "replace")
    return found


# -- the pipeline -------------------------------------------------------------------------------


def sanitize(value: Any, tools: list[Tool], *, kind: str = "record") -> Sanitized:
    """``value`` (a string, or JSON-like dicts and lists) with every tool's redactions made.

    Tools of ``record`` scope are refused on rows (their findings need the whole record).
    """
    if kind == "row" and (wrong := record_only(tools)):
        raise UsageError(f"{', '.join(wrong)} run on whole records, not on dataset rows")
    items = list(_strings(value, "text" if isinstance(value, str) else ""))
    matches: list[list[tuple[str, Match]]] = [[] for _ in items]
    views, owners = _views(items)
    for tool in tools:
        for i, found in enumerate(tool.scan_many(items)):
            matches[i] += [(tool.name, m) for m in found]
        if tool.kind == "inline" and views:
            for (i, to_original), found in zip(owners, tool.scan_many(views), strict=True):
                for m in found:
                    start, end = to_original(m.start, m.end)
                    replacement = m.replacement if m.replacement is None else \
                        f"[REDACTED:{m.family}]"
                    matches[i].append((tool.name, Match(start, end, m.rule_id, m.family,
                                                        replacement)))
    findings: list[Finding] = []
    replaced: dict[str, str] = {}
    for (path, text), found in zip(items, matches, strict=True):
        if not found:
            continue
        # on equal spans the registry's order decides: the specific tool's replacement wins
        unique = sorted(set(found), key=lambda tm: (tm[1].start, -tm[1].end,
                                                    _ORDER.get(tm[0], len(_ORDER)), tm[0]))
        for name, m in unique:
            findings.append(Finding(name, m.rule_id, m.family, path, (m.start, m.end),
                                    "flagged" if m.replacement is None else "redacted"))
        edits = [m for _, m in unique if m.replacement is not None]
        if edits:
            replaced[path] = _apply(text, edits)
    output = _rebuild(value, "text" if isinstance(value, str) else "", replaced)
    return Sanitized(kind, output, findings, [t.name for t in tools])


def record_only(tools: list[Tool]) -> list[str]:
    """The names of ``tools`` that need whole records (not usable on dataset rows)."""
    return [t.name for t in tools if t.scope != "row"]


def _views(items: list[Item]) -> tuple[list[Item], list[tuple[int, Any]]]:
    views: list[Item] = []
    owners: list[tuple[int, Any]] = []
    for i, (path, text) in enumerate(items):
        for view, to_original in decoded_views(text):
            views.append((path, view))
            owners.append((i, to_original))
    return views, owners


def _apply(text: str, edits: list[Match]) -> str:
    """``text`` with overlapping spans merged; a merged span takes the replacement of the
    longest match, or a generic one when no single match covers it."""
    out: list[str] = []
    pos = 0
    group: list[Match] = []
    for m in [*edits, None]:
        if m is not None and group and m.start < max(g.end for g in group):
            group.append(m)
            continue
        if group:
            start, end = group[0].start, max(g.end for g in group)
            best = max(group, key=lambda g: g.end - g.start)
            out.append(text[pos:start])
            out.append(best.replacement if (best.start, best.end) == (start, end)
                       else f"[REDACTED:{best.family}]")  # type: ignore[arg-type]
            pos = end
        group = [m] if m is not None else []
    out.append(text[pos:])
    return "".join(out)


def _strings(value: Any, path: str) -> Iterator[Item]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield f"{inner}#key", key
            yield from _strings(item, inner)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _rebuild(value: Any, path: str, replaced: dict[str, str]) -> Any:
    if not replaced:
        return value
    if isinstance(value, str):
        return replaced.get(path, value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            new_key = replaced.get(f"{inner}#key", key) if isinstance(key, str) else key
            out[new_key] = _rebuild(item, inner, replaced)
        return out
    if isinstance(value, list | tuple):
        return [_rebuild(item, f"{path}[{i}]", replaced) for i, item in enumerate(value)]
    return value

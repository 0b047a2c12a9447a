"""The egress gate: the one function every byte leaving this machine goes through.

:func:`clear` takes what a caller wants to send (records, rows, text, blobs, raw transcript
bytes) and returns what may leave, sanitized, plus what is withheld and why. It:

- runs the floor (:data:`opentraces.security.FLOOR`) and whatever the caller's policy adds;
  a required tool that cannot run here withholds everything (``required_security_tools_missing``);
- sanitizes content that says it was sanitized under an older security version again
  (everything is sanitized here, whatever it claims);
- keeps raw transcript bytes back unless the caller passes ``include_raw``, and even then
  sanitizes them line by line as decoded JSON, never as serialized lines;
- appends one ``SanitizationRun`` per item (item, tools, version, finding counts: never the
  values found) and one ``EgressRefused`` per withheld item to ``bucket:egress``;
- raises :class:`EgressBlocked` (exit 2, ``egress_refused``) when anything is withheld and the
  caller did not pass ``partial``: nothing is sent.

Every released item carries a seal, an HMAC under a key that lives only in this process, over
its target, name and content. The writers that put bytes somewhere else (teleport bundles,
the hub and bucket clients) call :func:`verify` first, so content that did not come out of the
gate, or was changed after it, is refused before a byte is written.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections import Counter
from collections.abc import Iterable
from typing import Any

import blake3
import msgspec

from opentraces import events as ev
from opentraces.errors import Refused
from opentraces.security import (
    SECURITY_VERSION,
    Sanitized,
    ToolUnavailable,
    load_tools,
    sanitize,
)

__all__ = ["EGRESS_PATHS", "EGRESS_STREAM", "Clearance", "EgressBlocked", "Outgoing", "Released",
           "Withheld", "clear", "event_from_record", "event_record", "verify"]

EGRESS_STREAM = ev.stream("bucket", "egress")
#: Every function that sends data off the machine ("module:function"); each calls
#: :func:`clear` and :func:`verify`, and tests/test_egress.py runs each with planted canaries.
EGRESS_PATHS = ("opentraces.trail.teleport:teleport_export",)
KINDS = ("record", "row", "text", "blob", "raw")

_SEAL_KEY = secrets.token_bytes(32)


class Outgoing(msgspec.Struct, frozen=True):
    """One thing a caller wants to send. ``content``: JSON-like data (record, row), ``str``
    (text) or ``bytes`` (blob, raw transcript). ``sanitized_under``: the security version the
    caller's copy was sanitized under, if any."""

    item: str
    content: Any
    kind: str = "record"
    trace_id: str = ""
    sanitized_under: str | None = None


class Withheld(msgspec.Struct, frozen=True):
    item: str
    reason: str
    detail: str = ""


class Released(msgspec.Struct, frozen=True):
    item: str
    kind: str
    content: Any
    tools_applied: list[str]
    security_version: str
    findings: int
    redactions: int
    families: dict[str, int]
    resanitized: bool
    seal: str


class Clearance(msgspec.Struct, frozen=True):
    target: str
    security_version: str
    released: list[Released]
    withheld: list[Withheld]


class EgressBlocked(Refused):
    """Something the caller asked to send may not leave; nothing was sent."""

    code = "egress_refused"

    def __init__(self, message: str, withheld: list[Withheld], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.withheld = withheld
        self.details = {"withheld": [msgspec.to_builtins(w) for w in withheld]}


def _digest(content: Any) -> bytes:
    data = content if isinstance(content, bytes) else msgspec.json.encode(content)
    return blake3.blake3(data).digest()


def _seal(target: str, item: str, content: Any) -> str:
    message = target.encode() + b"\x1f" + item.encode() + b"\x1f" + _digest(content)
    return hmac.new(_SEAL_KEY, message, "sha256").hexdigest()


def verify(target: str, released: Released) -> None:
    """Refuse ``released`` unless the gate released exactly this content for ``target``."""
    if not isinstance(released, Released) or not hmac.compare_digest(
            released.seal, _seal(target, released.item, released.content)):
        item = getattr(released, "item", "?")
        raise Refused(f"{item!r} did not come out of the egress gate for {target}; "
                      "nothing was sent")


def clear(ws: Any, target: str, items: Iterable[Outgoing], *, tools: Iterable[str] = (),
          required: Iterable[str] = (), include_raw: bool = False,
          partial: bool = False) -> Clearance:
    """Sanitize ``items`` for ``target`` (e.g. ``teleport:/path``, ``hub:user/name``).

    Args:
        ws: an open, writable :class:`~opentraces.workspace.Workspace` (events are recorded).
        tools: tools to run besides the floor and the machine-wide policy.
        required: tools a contract requires (a dataset's); like every tool asked for, when
            one cannot run here nothing leaves.
        include_raw: let raw transcript bytes leave (sanitized).
        partial: send what may leave even when some items are withheld.

    Raises:
        EgressBlocked: something is withheld and ``partial`` is False.
    """
    from opentraces.security.policy import context, load_policy

    home, user_home = ws.settings.home, ws.settings.user_home
    names = [*load_policy(home).active(), *tools, *required]
    wanted = list(items)
    withheld: list[Withheld] = []
    try:
        loaded = load_tools(names, context(home, user_home))
    except ToolUnavailable as e:  # every tool asked for is required: none is skipped quietly
        withheld = [Withheld(o.item, "required_security_tools_missing",
                             f"{e.tool}: {e.reason}; {e.setup_command or ''}".rstrip("; "))
                    for o in wanted]
        wanted, loaded = [], []
    released: list[Released] = []
    for outgoing in wanted:
        if outgoing.kind not in KINDS:
            raise ValueError(f"unknown outgoing kind {outgoing.kind!r}")
        if outgoing.kind == "raw" and not include_raw:
            withheld.append(Withheld(outgoing.item, "raw_transcript"))
            continue
        result = _sanitize(outgoing, loaded)
        if result is None:
            withheld.append(Withheld(outgoing.item, "binary_content",
                                     "not UTF-8 text, so it cannot be sanitized"))
            continue
        content, found = result
        families = Counter(f.family for f in found.findings)
        released.append(Released(
            outgoing.item, outgoing.kind, content, found.tools_applied, SECURITY_VERSION,
            len(found.findings), found.redactions, dict(sorted(families.items())),
            outgoing.sanitized_under not in (None, SECURITY_VERSION),
            _seal(target, outgoing.item, content)))
    _record(ws, target, wanted, released, withheld)
    if withheld and not partial:
        raise EgressBlocked(
            f"{len(withheld)} of {len(withheld) + len(released)} items may not leave for "
            f"{target}; nothing was sent", withheld,
            hint="See withheld[] for each reason; pass the command's partial flag to send "
                 "the rest.")
    return Clearance(target, SECURITY_VERSION, released, withheld)


def _sanitize(outgoing: Outgoing, tools: list[Any]) -> tuple[Any, Sanitized] | None:
    content = outgoing.content
    if outgoing.kind in ("blob", "raw"):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if outgoing.kind == "raw":
            return _sanitize_lines(text, tools)
        found = sanitize(text, tools, kind="text")
        return found.output.encode("utf-8"), found
    kind = outgoing.kind if outgoing.kind == "row" else "record"
    found = sanitize(content, tools, kind="text" if isinstance(content, str) else kind)
    return found.output, found


def _sanitize_lines(text: str, tools: list[Any]) -> tuple[bytes, Sanitized]:
    """A JSONL transcript: each line's decoded values are sanitized and the line written
    again; a line that is not JSON is sanitized as text."""
    lines = text.split("\n")
    values: list[Any] = []
    for line in lines:
        try:
            values.append(("json", json.loads(line)))
        except ValueError:
            values.append(("text", line))
    found = sanitize([v for _, v in values], tools, kind="record")
    out = [json.dumps(v, ensure_ascii=False) if kind == "json" else v
           for (kind, _), v in zip(values, found.output, strict=True)]
    return "\n".join(out).encode("utf-8"), found


def _record(ws: Any, target: str, wanted: list[Outgoing], released: list[Released],
            withheld: list[Withheld]) -> None:
    """One ``SanitizationRun`` per trace (all its items together) or per item of no trace."""
    traces = {o.item: o.trace_id for o in wanted}
    groups: dict[str, list[Released]] = {}
    for r in released:
        trace_id = traces.get(r.item, "")
        groups.setdefault(f"trace:{trace_id}" if trace_id else r.item, []).append(r)
    events: list[ev.Event] = []
    for item, group in groups.items():
        families: Counter[str] = Counter()
        for r in group:
            families.update(r.families)
        findings = sum(r.findings for r in group)
        events.append(ev.SanitizationRun(
            trace_id=item.removeprefix("trace:") if item.startswith("trace:") else "",
            security_version=SECURITY_VERSION, tools_applied=group[0].tools_applied,
            findings=findings, redactions=sum(r.redactions for r in group),
            verdict="findings" if findings else "clean", item=item, target=target,
            families=dict(sorted(families.items()))))
    events += [ev.EgressRefused(target=target, item=w.item, reason=w.reason) for w in withheld]
    if events:
        ws.log.append(EGRESS_STREAM, events)


# -- events as records ------------------------------------------------------------------------

#: Ids opentraces made itself (digests, stream keys): carried as they are, so what they link
#: still links; the content around them is what users wrote.
OWN_IDS = frozenset({"trace_id", "patch_id", "hash", "step_id", "anchor_id", "originator_id"})


def event_record(event: ev.Event) -> dict[str, Any]:
    """An event's fields as a record for :func:`clear` (its own ids left out)."""
    return _as_record(event)


def event_from_record(event: ev.Event, record: dict[str, Any]) -> ev.Event:
    """``event`` with the (sanitized) values of ``record``; its own ids unchanged."""
    return _from_record(event, record)  # type: ignore[no-any-return]


def _as_record(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return {f: _as_record(getattr(value, f)) for f in value.__struct_fields__
                if f not in OWN_IDS}
    if isinstance(value, dict):
        return {k: _as_record(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_record(v) for v in value]
    return value


def _from_record(template: Any, data: Any) -> Any:
    if isinstance(template, msgspec.Struct):
        return msgspec.structs.replace(template, **{
            f: _from_record(getattr(template, f), data[f])
            for f in template.__struct_fields__ if f not in OWN_IDS})
    if isinstance(template, dict):
        # keys may have been rewritten: pair them by position
        return {k: _from_record(v, d) for (_, v), (k, d)
                in zip(template.items(), data.items(), strict=True)}
    if isinstance(template, list | tuple):
        rebuilt = [_from_record(t, d) for t, d in zip(template, data, strict=True)]
        return type(template)(rebuilt) if isinstance(template, tuple) else rebuilt
    return data

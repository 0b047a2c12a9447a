"""Teleport: carry one trace and its retained git evidence from one opentraces home to another.

A bundle is a folder::

    manifest.json     format, version, trace id, counts, blake3 of every other file
    events.msgpack    the trace's stream (every event, at its version) and the repo-stream
                      events about its patches (anchors, survival observations), in log order
    blobs/<hash>      the content of every blob those events reference (uncompressed)

Invariants:
- Export writes only into the bundle folder, which must be empty and not inside a git
  repository, and everything it writes has passed the egress gate (:mod:`opentraces.egress`):
  events and blobs are sanitized (a sanitized blob gets the hash of its new content, and the
  events point at it), and the store records the sanitization. Raw transcript blobs
  (``SourceSegmentRead.raw``) stay behind unless asked for, and blobs that are not text
  always; the manifest lists every omitted blob and why.
- Open verifies every hash before it writes anything and refuses a bundle that does not match
  its manifest. The trace's events are written at their versions (a second open writes
  nothing: :meth:`EventLog.write` skips identical events); repo events are appended to this
  store's repo streams when an identical event is not there yet. In ``project`` open writes at
  most a README: the trace lives in the store, not in the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import blake3
import msgspec

from opentraces import __version__
from opentraces import events as ev
from opentraces.blobs import blob_refs, replace_blob_refs
from opentraces.egress import (
    EgressBlocked,
    Outgoing,
    clear,
    event_from_record,
    event_record,
    verify,
)
from opentraces.errors import Refused
from opentraces.store import decode_event, encode_event
from opentraces.trail.gitrepo import find_repo_root
from opentraces.trail.sync import resolve_trace
from opentraces.trail.views import _catch_up, _record, _repo_keys

FORMAT = "opentraces.teleport.v1"
MANIFEST = "manifest.json"
EVENTS = "events.msgpack"
BLOBS = "blobs"


class BundleRejected(Refused):
    """A bundle that is incomplete, altered, or not a teleport bundle; nothing was imported."""


class BundleEvent(msgspec.Struct, frozen=True, array_like=True):
    stream: str
    version: int
    topic: str
    state: bytes


class OmittedBlob(msgspec.Struct, frozen=True):
    hash: str
    size: int
    reason: str  # raw_transcript | missing | binary_content


class TeleportExport(msgspec.Struct, frozen=True):
    trace_id: str
    output: str
    trace_events: int
    repo_events: int
    blobs: int
    blob_bytes: int
    omitted_blobs: list[OmittedBlob]
    security_version: str = ""
    findings: int = 0


class TeleportOpen(msgspec.Struct, frozen=True):
    trace_id: str
    bundle: str
    events_written: int
    repo_events_appended: int
    blobs_imported: int
    project: str | None
    readme: str | None


def _hash(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Export


def teleport_export(target: Any, trace: str, output_dir: Path, *,
                    include_raw: bool = False) -> TeleportExport:
    """Write a bundle of ``trace`` into ``output_dir`` (created; must be empty).

    Raises:
        TraceNotFound, AmbiguousTrace: ``trace`` names no trace, or several.
        Refused: ``output_dir`` is not empty or lies inside a git repository.
        EgressBlocked: the gate withholds something (e.g. a blob that is not text); nothing
            is written.
    """
    from opentraces.workspace import open_workspace

    out = Path(output_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Refused(f"{out} is not an empty folder; give a new or empty one")
    if find_repo_root(out) is not None:
        raise Refused(f"{out} is inside a git repository; bundles are never written into one",
                      hint="Give a folder outside any repository.")
    with open_workspace(target) as ws:
        trace_id = resolve_trace(ws, trace)
        records = list(ws.log.read(ev.stream("trace", trace_id)))
        patches = {r.event.patch_id for r in records if isinstance(r.event, ev.PatchRecorded)}
        repo_records = [rec for key in _repo_keys(ws, trace_id)
                        for rec in ws.log.read(ev.stream("repo", key))
                        if isinstance(rec.event, ev.AnchorRecorded | ev.SurvivalObserved)
                        and rec.event.patch_id in patches]
        repo_records.sort(key=lambda r: r.position or 0)
        everything = [*records, *repo_records]
        wanted, omitted = _blobs(ws.blobs, everything, include_raw)
        outgoing = [Outgoing(f"blob:{h}", ws.blobs.get(h), kind, trace_id)
                    for h, kind in wanted.items()]
        outgoing += [Outgoing(f"event:{r.originator_id}@{r.originator_version}",
                              event_record(r.event), "record", trace_id) for r in everything]
        # a blob the gate keeps back is left out like a raw one; an event kept back stops it
        cleared = clear(ws, f"teleport:{out}", outgoing, include_raw=include_raw, partial=True)
    kept_events = [w for w in cleared.withheld if w.item.startswith("event:")]
    if kept_events:
        raise EgressBlocked(f"{len(kept_events)} events of trace {trace_id} may not leave; "
                            "nothing was written", kept_events)
    sizes = {o.item: len(o.content) for o in outgoing if isinstance(o.content, bytes)}
    for w in cleared.withheld:
        digest = w.item.removeprefix("blob:")
        omitted.append(OmittedBlob(digest, sizes[w.item], w.reason))
        del wanted[digest]
    omitted.sort(key=lambda o: o.hash)
    released = {r.item: r for r in cleared.released}
    for r in cleared.released:
        verify(f"teleport:{out}", r)
    contents: dict[str, bytes] = {}
    moved: dict[str, tuple[str, int]] = {}
    for old in wanted:
        data = released[f"blob:{old}"].content
        moved[old] = (_hash(data), len(data))
        contents[moved[old][0]] = data
    sanitized = [(r, replace_blob_refs(event_from_record(
        r.event, released[f"event:{r.originator_id}@{r.originator_version}"].content), moved))
        for r in everything]
    out.mkdir(parents=True, exist_ok=True)
    (out / BLOBS).mkdir()
    files: dict[str, str] = {}
    for digest, data in sorted(contents.items()):
        (out / BLOBS / digest).write_bytes(data)
    events = msgspec.msgpack.encode([
        BundleEvent(r.stream, r.version, ev.topic_of(e), encode_event(e)) for r, e in sanitized])
    (out / EVENTS).write_bytes(events)
    files[EVENTS] = _hash(events)
    findings = sum(r.findings for r in cleared.released)
    manifest = {
        "format": FORMAT, "opentraces_version": __version__, "trace_id": trace_id,
        "trace_events": len(records), "repo_events": len(repo_records), "files": files,
        "blobs": [{"hash": h, "size": len(contents[h])} for h in sorted(contents)],
        "omitted_blobs": msgspec.to_builtins(omitted),
        "security": {"security_version": cleared.security_version,
                     "tools_applied": cleared.released[0].tools_applied if cleared.released
                     else [], "findings": findings}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                encoding="utf-8")
    return TeleportExport(trace_id=trace_id, output=str(out), trace_events=len(records),
                          repo_events=len(repo_records), blobs=len(contents),
                          blob_bytes=sum(len(d) for d in contents.values()),
                          omitted_blobs=omitted, security_version=cleared.security_version,
                          findings=findings)


def _blobs(blobs: Any, records: list[ev.Recorded], include_raw: bool
           ) -> tuple[dict[str, str], list[OmittedBlob]]:
    """The blobs to send, by hash, with their kind for the gate (``raw``: a transcript's own
    bytes; ``blob``), and the ones left behind."""
    wanted: dict[str, str] = {}
    omitted: dict[str, OmittedBlob] = {}
    for rec in records:
        raw = isinstance(rec.event, ev.SourceSegmentRead)
        for ref in blob_refs(rec.event):
            if raw and not include_raw:
                omitted.setdefault(ref.hash, OmittedBlob(ref.hash, ref.size, "raw_transcript"))
            elif blobs.has(ref.hash):
                if raw:
                    wanted[ref.hash] = "raw"
                else:
                    wanted.setdefault(ref.hash, "blob")
            else:
                omitted.setdefault(ref.hash, OmittedBlob(ref.hash, ref.size, "missing"))
    return dict(sorted(wanted.items())), sorted(omitted.values(), key=lambda o: o.hash)


# ---------------------------------------------------------------------------------------------
# Open


def teleport_open(target: Any, bundle_dir: Path, *, project: Path | None = None,
                  readme: bool = True) -> TeleportOpen:
    """Import a bundle into this store (idempotent); with ``project`` (a new or empty
    folder) also write a README there about the trace, unless ``readme`` is False.

    Raises:
        BundleRejected: a file is missing or does not match the manifest's hash, or the events
            are not one trace's.
        Refused: ``project`` is not empty.
        VersionConflict: this store holds a different event at one of the trace's versions.
    """
    from opentraces.workspace import open_workspace

    bundle = Path(bundle_dir)
    manifest, events, contents = read_bundle(bundle)
    trace_id = manifest["trace_id"]
    if project is not None and Path(project).exists() and any(Path(project).iterdir()):
        raise Refused(f"{project} is not empty; open a bundle into a new or empty folder")
    stream_id = ev.stream("trace", trace_id)
    trace_recs = [ev.Recorded(e.stream, e.version, decoded)
                  for e, decoded in events if e.stream == stream_id]
    repo_events = [(e.stream, decoded) for e, decoded in events if e.stream != stream_id]
    with open_workspace(target) as ws:
        for data in contents.values():
            ws.blobs.put(data)
        written = ws.log.write(trace_recs)
        appended = 0
        for stream in dict.fromkeys(s for s, _ in repo_events):
            have = {encode_event(r.event) for r in ws.log.read(stream)}
            new = [e for s, e in repo_events if s == stream and encode_event(e) not in have]
            appended += len(ws.log.append(stream, new))
        _catch_up(ws)
        note = None
        if project is not None:
            Path(project).mkdir(parents=True, exist_ok=True)
            if readme:
                note = str(_write_readme(Path(project), trace_id, _record(ws, trace_id),
                                         manifest))
    return TeleportOpen(trace_id=trace_id, bundle=str(bundle), events_written=len(written),
                        repo_events_appended=appended, blobs_imported=len(contents),
                        project=str(project) if project is not None else None, readme=note)


def read_bundle(bundle: Path) -> tuple[dict[str, Any], list[tuple[BundleEvent, ev.Event]],
                                       dict[str, bytes]]:
    """The manifest, decoded events and blob contents of a bundle, all verified.

    Raises:
        BundleRejected: anything does not match.
    """
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleRejected(f"{bundle} has no readable {MANIFEST}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleRejected(f"{bundle} is not a teleport bundle ({FORMAT})")
    data = _verified(bundle / EVENTS, (manifest.get("files") or {}).get(EVENTS))
    contents = {b["hash"]: _verified(bundle / BLOBS / b["hash"], b["hash"])
                for b in manifest.get("blobs", [])}
    try:
        raw = msgspec.msgpack.decode(data, type=list[BundleEvent])
    except msgspec.DecodeError as e:
        raise BundleRejected(f"{bundle / EVENTS} does not decode: {e}") from e
    events = [(e, decode_event(e.topic, e.state, f"{e.stream}@{e.version}")) for e in raw]
    _check_events(manifest, events, set(contents))
    return manifest, events, contents


def _verified(path: Path, expected: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleRejected(f"the bundle file {path} cannot be read: {e}") from e
    if expected is None or _hash(data) != expected:
        raise BundleRejected(f"{path} does not match the bundle's manifest (altered or "
                             "damaged); nothing was imported")
    return data


def _check_events(manifest: dict[str, Any], events: list[tuple[BundleEvent, ev.Event]],
                  blobs: set[str]) -> None:
    stream_id = ev.stream("trace", str(manifest.get("trace_id")))
    patches = {e.patch_id for _, e in events if isinstance(e, ev.PatchRecorded)}
    omitted = {o["hash"] for o in manifest.get("omitted_blobs", [])}
    for b, e in events:
        if b.stream == stream_id:
            pass
        elif not (b.stream.startswith("repo:")
                  and isinstance(e, ev.AnchorRecorded | ev.SurvivalObserved)
                  and e.patch_id in patches):
            raise BundleRejected(f"the bundle holds an event of {b.stream} that is not about "
                                 f"trace {manifest.get('trace_id')}")
        missing = [r.hash for r in blob_refs(e) if r.hash not in blobs | omitted]
        if missing:
            raise BundleRejected(f"an event references blob {missing[0]}, which the bundle "
                                 "neither holds nor lists as omitted")


def _write_readme(project: Path, trace_id: str, record: Any, manifest: dict[str, Any]) -> Path:
    title = record.task.description if record is not None and record.task.description else None
    lines = [f"# Trace {trace_id}", ""]
    if title:
        lines += [" ".join(title.split())[:280], ""]
    lines += [
        f"Opened from an opentraces teleport bundle (made by opentraces "
        f"{manifest.get('opentraces_version')}). The trace and its git evidence are in the "
        "opentraces store, not in this folder:", "",
        f"- `opentraces trace get {trace_id}`: the session",
        f"- `opentraces trail blame commit t:{trace_id}`: the commits that carry it",
        f"- `opentraces trail track {trace_id}`: what is left of its edits at HEAD", ""]
    path = project / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

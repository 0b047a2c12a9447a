"""The importer's whole-document path, on the real Gemini CLI chat documents of the corpus:
listing, checkpoints by message, growth, a response revised in place, rewrites, half-written
documents, raw preservation, idempotence and concurrent imports.

The corpus is read in place; every variant of a document (cut, grown, rewritten) is written to
``tmp_path``. Records are read through the real store and the traces projection.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from opentraces import api
from opentraces import events as ev
from opentraces.blobs import BlobStore, blob_hash
from opentraces.capture.gemini import GeminiAdapter
from opentraces.capture.importer import ImportReport, import_files, items_hash
from opentraces.capture.lines import Undecodable, decode_document
from opentraces.config import Settings, load_settings
from opentraces.record import TraceRecord
from opentraces.store import EventLog
from tests.conftest import CORPUS
from tests.helpers import delete_blob
from tests.test_capture_gemini import expected_counts, record_counts

GEMINI = CORPUS / "gemini"
REAL = GEMINI / "codemie-code" / "session-2025-12-01T21-45-5b959dae.json"
OTHER = GEMINI / "codemie-code" / "session-2026-01-16T11-01-file-ops-37b7abef.json"
ADAPTER = GeminiAdapter()


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, doc: dict[str, Any]) -> bytes:
    """A document the way Gemini CLI writes it (JSON.stringify(..., null, 2), no newline)."""
    data = json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")
    path.write_bytes(data)
    return data


def first(doc: dict[str, Any], k: int) -> dict[str, Any]:
    """The document as it was when it held its first ``k`` messages."""
    messages = doc["messages"][:k]
    return doc | {"messages": messages, "lastUpdated": messages[-1]["timestamp"]}


def run(settings: Settings, *paths: Path) -> ImportReport:
    with EventLog(settings.store) as log:
        return import_files(log, BlobStore(settings.blobs_dir), [(ADAPTER, p) for p in paths])


def trace_id(doc: dict[str, Any]) -> str:
    return ev.trace_id_for("gemini-cli", doc["sessionId"])


def stream_events(settings: Settings, doc: dict[str, Any]) -> list[ev.Event]:
    with EventLog(settings.store) as log:
        return [r.event for r in log.read(ev.stream("trace", trace_id(doc)))]


def segments(events: list[ev.Event]) -> list[tuple[int, int, int]]:
    return [(e.generation, e.start_offset, e.end_offset) for e in events
            if isinstance(e, ev.SourceSegmentRead)]


def record(settings: Settings, doc: dict[str, Any]) -> TraceRecord:
    with api.open_workspace(settings) as ws:
        runner = ws.runner()
        runner.catch_up(runner.eager())
    return api.trace_get(settings, trace_id(doc))


def one_shot(tmp_path: Path, doc: dict[str, Any], name: str) -> TraceRecord:
    """The record of ``doc`` imported once, whole, into a fresh home."""
    other = load_settings(tmp_path / f"one-shot-{name}")
    folder = tmp_path / f"one-shot-{name}-files"
    folder.mkdir()
    write(folder / "session-x.json", doc)
    run(other, folder / "session-x.json")
    return record(other, doc)


def same_record(a: TraceRecord, b: TraceRecord) -> None:
    assert msgspec.to_builtins(a.steps) == msgspec.to_builtins(b.steps)
    assert a.metrics == b.metrics


# ---------------------------------------------------------------------------------------------
# Listing


def test_an_explicit_folder_lists_documents_and_nothing_foreign(settings: Settings,
                                                                tmp_path: Path) -> None:
    chats = tmp_path / "gemini" / "hash" / "chats"
    chats.mkdir(parents=True)
    write(chats / "session-a.json", load(REAL))
    (tmp_path / "gemini" / "hash" / "logs.json").write_bytes((GEMINI / "codemie-code" /
                                                              "logs.json").read_bytes())
    (tmp_path / "gemini" / "package.json").write_text('{"name": "demo", "version": "1.0.0"}')
    (tmp_path / "gemini" / "tsconfig.json").write_text('{"compilerOptions": {')  # broken
    listed = api.import_sources(settings, [tmp_path / "gemini"])
    assert [(s.agent, Path(s.path).name) for s in listed] == [
        ("gemini-cli", "session-a.json"), ("gemini-cli", "logs.json")]
    # named on its own, a foreign .json file is reported, not taken by a line-based adapter
    alone = api.import_sources(settings, [tmp_path / "gemini" / "package.json"])
    assert [s.agent for s in alone] == [None]
    report = api.import_sessions(settings, listed + alone)
    assert report.traces_created == 1
    assert [(Path(s.path).name, s.reason.split(" (")[0]) for s in report.skipped] == [
        ("logs.json", "Gemini CLI prompt log"),
        ("package.json", "not a transcript of a known agent")]


def test_every_corpus_gemini_file_imports_or_is_skipped_with_a_reason(settings: Settings) -> None:
    files = sorted(p for p in GEMINI.rglob("*") if p.is_file())
    sources = api.import_sources(settings, [GEMINI], agents=["gemini-cli"])
    assert sorted(Path(s.path) for s in sources) == files
    report = api.import_sessions(settings, sources)
    skipped = {Path(s.path) for s in report.skipped}
    assert all(s.reason for s in report.skipped)
    assert report.sources_scanned == len(files)
    assert report.traces_created + len(skipped) == len(files)
    assert report.lines_rejected == 0
    with EventLog(settings.store) as log:
        read = [r.event for r in log.iter_all() if isinstance(r.event, ev.SourceSegmentRead)]
    # every message of every imported document is accounted for by its segments
    for path in files:
        if path in skipped or path.suffix != ".json":
            continue
        mine = [s for s in read if s.path == str(path)]
        assert sum(s.end_offset - s.start_offset for s in mine) == len(load(path)["messages"])
        assert [s.raw.hash for s in mine] == [blob_hash(path.read_bytes())]


# ---------------------------------------------------------------------------------------------
# Checkpoints by message


def test_unchanged_document_appends_nothing(settings: Settings, tmp_path: Path) -> None:
    doc = load(REAL)
    path = tmp_path / "session-a.json"
    data = write(path, doc)
    first_report = run(settings, path)
    assert (first_report.traces_created, first_report.lines_read) == (1, len(doc["messages"]))
    assert first_report.bytes_read == len(data)
    events = stream_events(settings, doc)
    (segment,) = [e for e in events if isinstance(e, ev.SourceSegmentRead)]
    assert (segment.generation, segment.start_offset, segment.end_offset) == (
        0, 0, len(doc["messages"]))
    assert segment.line_count == data.count(b"\n") + 1
    assert segment.head_hash == items_hash(doc["messages"])
    assert segment.raw.local_only and segment.raw.media_type == "application/json"
    assert BlobStore(settings.blobs_dir).get(segment.raw.hash) == data
    again = run(settings, path)
    assert (again.events_appended, again.sources_unchanged) == (0, 1)
    assert stream_events(settings, doc) == events


@pytest.mark.parametrize("k", [1, 5, 9])
def test_a_grown_document_appends_only_its_new_messages(settings: Settings, tmp_path: Path,
                                                        k: int) -> None:
    doc = load(REAL)
    path = tmp_path / "session-a.json"
    write(path, first(doc, k))
    run(settings, path)
    before = stream_events(settings, doc)
    steps_before = [e.step_index for e in before if isinstance(e, ev.StepRecorded)]
    assert steps_before == list(range(k))   # one step per message in this session
    write(path, doc)
    grown = run(settings, path)
    assert (grown.traces_updated, grown.traces_created) == (1, 0)
    assert grown.lines_read == len(doc["messages"]) - k
    after = stream_events(settings, doc)
    assert after[:len(before)] == before        # nothing rewritten, only appended
    new = after[len(before):]
    assert isinstance(new[0], ev.SourceSegmentRead)
    assert (new[0].generation, new[0].start_offset, new[0].end_offset) == (
        0, k, len(doc["messages"]))
    assert [e.step_index for e in new if isinstance(e, ev.StepRecorded)] == \
        list(range(k, len(doc["messages"])))
    assert not [e for e in new if isinstance(e, ev.MetadataRecorded)
                and e.record_type == "session"]   # the header is not read twice

    rec = record(settings, doc)
    assert [s.step_index for s in rec.steps] == list(range(len(doc["messages"])))
    assert record_counts(rec) == expected_counts(doc["messages"])
    same_record(rec, one_shot(tmp_path, doc, "grown"))
    assert run(settings, path).events_appended == 0


def test_a_response_revised_in_place_extends_its_step(settings: Settings,
                                                      tmp_path: Path) -> None:
    """Gemini CLI adds tool results and token counts to the last message after writing it."""
    doc = load(REAL)
    k = 11   # message 10 makes three tool calls
    early = first(doc, k)
    early["messages"] = copy.deepcopy(early["messages"])
    last = early["messages"][-1]
    assert len(last["toolCalls"]) == 3
    del last["tokens"]
    for call in last["toolCalls"]:
        call["status"] = "executing"
        call.pop("result"), call.pop("resultDisplay", None)
    path = tmp_path / "session-a.json"
    write(path, early)
    run(settings, path)
    partial = record(settings, doc)
    assert [o.error for o in partial.steps[10].observations] == ["no_result"] * 3

    write(path, doc)
    report = run(settings, path)
    assert report.lines_read == len(doc["messages"]) - k + 1   # the revised one, then the new
    events = stream_events(settings, doc)
    assert segments(events) == [(0, 0, k), (0, k, len(doc["messages"]))]
    assert [e.step_index for e in events if isinstance(e, ev.StepRecorded)] == \
        list(range(len(doc["messages"])))
    (extension,) = [e for e in events if isinstance(e, ev.StepExtended)]
    assert extension.step_index == 10 and extension.token_usage is not None
    rec = record(settings, doc)
    assert rec.generation_index == 0
    assert record_counts(rec) == expected_counts(doc["messages"])
    same_record(rec, one_shot(tmp_path, doc, "revised"))


def test_a_revision_without_the_previous_bytes_starts_a_new_generation(
        settings: Settings, tmp_path: Path) -> None:
    doc = load(REAL)
    early = first(doc, 4)
    early["messages"] = copy.deepcopy(early["messages"])
    del early["messages"][-1]["tokens"]
    path = tmp_path / "session-a.json"
    write(path, early)
    run(settings, path)
    (segment,) = [e for e in stream_events(settings, doc) if isinstance(e, ev.SourceSegmentRead)]
    delete_blob(settings.blobs_dir, segment.raw.hash)   # the raw copy is gone (deleted by hand)
    write(path, doc)
    run(settings, path)
    assert segments(stream_events(settings, doc)) == [(0, 0, 4), (1, 0, len(doc["messages"]))]
    rec = record(settings, doc)
    assert rec.generation_index == 1
    same_record(rec, one_shot(tmp_path, doc, "no-previous"))


@pytest.mark.parametrize("change", ["edited", "removed", "replaced_last"])
def test_a_rewritten_document_starts_a_new_generation(settings: Settings, tmp_path: Path,
                                                      change: str) -> None:
    doc = load(OTHER)
    path = tmp_path / "session-b.json"
    write(path, doc)
    run(settings, path)
    rewritten = copy.deepcopy(doc)
    if change == "edited":       # an earlier message changed
        rewritten["messages"][0]["content"] = "A different first prompt"
    elif change == "removed":    # the session was rewound
        rewritten["messages"] = rewritten["messages"][:-3]
    else:                        # the last message is another message now
        rewritten["messages"][-1]["id"] = "another-id"
    write(path, rewritten)
    report = run(settings, path)
    assert report.lines_read == len(rewritten["messages"])
    assert segments(stream_events(settings, doc)) == [
        (0, 0, len(doc["messages"])), (1, 0, len(rewritten["messages"]))]
    rec = record(settings, doc)
    assert rec.generation_index == 1
    assert record_counts(rec) == expected_counts(rewritten["messages"])
    assert [s.step_index for s in rec.steps] == list(range(len(rec.steps)))
    if change == "edited":
        assert rec.steps[0].content == "A different first prompt"
    assert run(settings, path).events_appended == 0


# ---------------------------------------------------------------------------------------------
# Documents that do not decode


def test_decoding_errors_name_their_line() -> None:
    bad = decode_document(b'{\n  "a": 1,\n  "b": x\n}')
    assert isinstance(bad, Undecodable)
    assert (bad.line, bad.offset, bad.raw) == (3, 12, b'  "b": x')
    assert bad.reason == "invalid JSON document: JSON is malformed: invalid character (byte 19)"
    cut = decode_document(b'{\n  "a": [1,\n\n')
    assert isinstance(cut, Undecodable) and (cut.line, cut.raw) == (2, b'  "a": [1,')
    two = decode_document(b'{}\n{}')
    assert isinstance(two, Undecodable) and two.line == 2
    assert isinstance(decode_document(b"[" * 100_000), Undecodable)
    # the standard library reads what msgspec refuses (a lone surrogate), made storable
    assert decode_document(b'{"a": "\\ud800"}') == {"a": "\\ud800"}
    assert isinstance(decode_document(b'{"a": NaN}'), Undecodable)


def test_a_half_written_document_is_rejected_then_imported(settings: Settings,
                                                           tmp_path: Path) -> None:
    doc = load(REAL)
    data = json.dumps(doc, indent=2).encode()
    cut = data[:len(data) // 2]
    path = tmp_path / "session-a.json"
    path.write_bytes(cut)
    report = run(settings, path)
    line = cut.rstrip().count(b"\n") + 1
    assert (report.traces_created, report.lines_rejected) == (1, 1)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (line, "invalid JSON document: Input data was truncated")]
    events = stream_events(settings, doc)
    assert [type(e).__name__ for e in events] == [
        "SessionStarted", "SourceSegmentRead", "SourceLineRejected"]
    segment, rejected = events[1], events[2]
    assert (segment.start_offset, segment.end_offset, segment.head_hash) == (0, 0, None)
    assert segment.raw.local_only
    assert BlobStore(settings.blobs_dir).get(segment.raw.hash) == cut   # nothing lost
    assert rejected.line_number == line and cut[rejected.offset:].startswith(rejected.raw_bytes)
    assert record(settings, doc).metadata["rejected_lines"] == 1

    again = run(settings, path)   # the same bytes: nothing new
    assert (again.events_appended, again.sources_unchanged, again.lines_rejected) == (0, 1, 0)

    path.write_bytes(data)        # the write finished
    fixed = run(settings, path)
    assert (fixed.lines_read, fixed.lines_rejected) == (len(doc["messages"]), 0)
    assert segments(stream_events(settings, doc)) == [(0, 0, 0), (1, 0, len(doc["messages"]))]
    rec = record(settings, doc)
    assert rec.metadata["rejected_lines"] == 0 and rec.generation_index == 1
    assert record_counts(rec) == expected_counts(doc["messages"])
    assert run(settings, path).events_appended == 0


def test_caught_half_written_after_a_good_read(settings: Settings, tmp_path: Path) -> None:
    doc = load(REAL)
    path = tmp_path / "session-a.json"
    write(path, first(doc, 6))
    run(settings, path)
    data = json.dumps(doc, indent=2).encode()
    path.write_bytes(data[:-40])
    bad = run(settings, path)
    assert bad.lines_rejected == 1 and bad.lines_read == 0
    assert segments(stream_events(settings, doc)) == [(0, 0, 6), (0, 6, 6)]
    path.write_bytes(data)
    run(settings, path)
    assert segments(stream_events(settings, doc))[-1] == (1, 0, len(doc["messages"]))
    rec = record(settings, doc)
    assert record_counts(rec) == expected_counts(doc["messages"])
    assert rec.metadata["rejected_lines"] == 0


def test_documents_naming_no_session_yet_are_skipped(settings: Settings,
                                                     tmp_path: Path) -> None:
    doc = load(REAL)
    data = json.dumps(doc, indent=2).encode()
    path = tmp_path / "session-a.json"
    for early in (b"", b"{\n  ", data[:data.index(b'"projectHash"')]):
        path.write_bytes(early)
        report = run(settings, path)
        assert (report.sources_skipped, report.events_appended) == (1, 0)
        assert "read on a later import" in report.skipped[0].reason
    path.write_bytes(data)
    assert run(settings, path).traces_created == 1


def test_a_document_that_is_valid_json_but_not_a_session(settings: Settings,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "session-odd.json"
    path.write_text('{"sessionId": 5, "messages": []}')
    report = run(settings, path)
    assert [s.reason for s in report.skipped] == ["not a gemini-cli transcript"]


# ---------------------------------------------------------------------------------------------
# Concurrency


def _import_in_child(args: tuple[str, str]) -> int:
    home, path = args
    return run(load_settings(Path(home)), Path(path)).events_appended


def test_concurrent_imports_of_a_document_converge(settings: Settings, tmp_path: Path) -> None:
    doc = load(OTHER)
    path = tmp_path / "session-b.json"
    write(path, doc)
    EventLog(settings.store).close()   # create the store before the race
    alone = load_settings(tmp_path / "alone")
    expected = run(alone, path).events_appended
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        appended = pool.map(_import_in_child, [(str(settings.home), str(path))] * 6)
    assert sum(appended) == expected   # one importer wrote everything, the others found it done
    assert stream_events(settings, doc) == stream_events(alone, doc)

"""The search index projection and `trace query|skills|index`, on real corpus transcripts."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from opentraces import api, search, workspace
from opentraces import events as ev
from opentraces.commands.main import cli
from opentraces.config import Settings, load_settings
from opentraces.errors import MaintenanceNeeded, UsageError
from opentraces.projections.search_index import (
    SearchIndex,
    call_facts,
    file_kinds,
    paths_in_command,
)
from opentraces.store import EventLog
from tests.conftest import CORPUS

# One session per agent with a phrase of its own (read from the files), plus a skill user.
SHORT = "claude-code/spotter-transcripts/short.jsonl"
SKILLFUL = "claude-code/spotter-transcripts/8463c716-a2ea-4c14-9efa-87158ebd9f20.jsonl"
CODEX_DEMO = ("codex/codemie-code/rollout-2026-05-11T13-28-45-019e1695-0522-7c83-8b39-"
              "0dd379793f80.jsonl")
CODEX_TOOLS = ("codex/codemie-code/rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-"
               "3724b5ddb799.jsonl")
PI_SESSION = "pi/pi-mono-history/session.jsonl"
GEMINI_COPY = "gemini/codemie-code/session-2025-12-01T21-45-5b959dae.json"
GEMINI_TOOLS = "gemini/codemie-code/session-2026-01-16T11-01-file-ops-37b7abef.json"
FIRST_BATCH = [SHORT, SKILLFUL, CODEX_DEMO, CODEX_TOOLS, PI_SESSION, GEMINI_COPY]
LATER = GEMINI_TOOLS

PHRASES = {  # distinctive words of one session's prompts -> that session's file
    "mix phx.server doesnt seem to start": SHORT,
    "draft demo scenario around governance": CODEX_DEMO,
    "update the defailt context compart": CODEX_TOOLS,
    "open the syspormpt ts file": PI_SESSION,
    "lead_gemini.txt shorter consice": GEMINI_COPY,
}


def _import(settings: Settings, *rels: str) -> None:
    sources = api.import_sources(settings, [CORPUS / rel for rel in rels])
    assert [Path(s.path) for s in sources] == [CORPUS / rel for rel in rels]
    api.import_sessions(settings, sources)


def _trace_of(settings: Settings, rel: str) -> str:
    for row in api.bucket_manifest(settings).traces:
        if api.trace_get(settings, row["trace_id"]).metadata["source_paths"] == [
                str(CORPUS / rel)]:
            return row["trace_id"]
    raise AssertionError(f"{rel} was not imported")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A home with the first batch imported and indexed; file -> trace id."""
    settings = load_settings(tmp_path_factory.mktemp("search") / "home")
    _import(settings, *FIRST_BATCH)
    search.index_refresh(settings)
    yield settings, {rel: _trace_of(settings, rel) for rel in FIRST_BATCH}


def _ids(result: search.QueryResult) -> list[str]:
    return [c.trace_id for c in result.candidates]


# ---------------------------------------------------------------------------------------------
# Finding sessions


@pytest.mark.parametrize("phrase", list(PHRASES))
def test_a_distinctive_phrase_finds_its_session_first(corpus, phrase: str) -> None:
    settings, traces = corpus
    result = search.trace_query(settings, phrase)
    assert result.candidates, phrase
    assert result.candidates[0].trace_id == traces[PHRASES[phrase]]
    first = result.candidates[0]
    assert first.matched_fields and first.score > 0
    assert first.refs["trace"] == f"opentraces trace get {first.trace_id}"
    assert len(set(_ids(result))) == len(result.candidates)  # one candidate per trace


def test_candidates_are_units_with_their_facts(corpus) -> None:
    settings, traces = corpus
    hit = search.trace_query(settings, '"doesnt seem to start"').candidates[0]
    assert hit.trace_id == traces[SHORT]
    assert hit.title == "mix phx.server doesnt seem to start"
    assert hit.facets["agent"] == "claude-code"
    assert hit.facets["project"] == "home-marco-projects-spotter"
    assert hit.facets["committed"] is False
    assert hit.unit_id in (hit.trace_id, f"{hit.trace_id}:{hit.step_index}")
    assert set(hit.matched_fields) <= {"title", "prompt"}


def test_phrase_and_or(corpus) -> None:
    settings, traces = corpus
    # (another session read a test fixture holding this transcript: it matches too, lower)
    assert _ids(search.trace_query(settings, '"seem to start"'))[0] == traces[SHORT]
    assert search.trace_query(settings, '"start seem doesnt"').total == 0
    assert traces[SHORT] in _ids(search.trace_query(settings, "start seem doesnt"))
    # AND is the default; both words must be in one trace.
    assert _ids(search.trace_query(settings, "governance budgetings")) == [traces[CODEX_DEMO]]
    assert search.trace_query(settings, "governance AND lead_gemini.txt").total == 0
    both = search.trace_query(settings, "governance OR lead_gemini.txt")
    assert {traces[CODEX_DEMO], traces[GEMINI_COPY]} <= set(_ids(both))
    # --lex: plain words, any of them
    lex = search.trace_query(settings, "governance lead_gemini.txt", lex=True)
    assert {traces[CODEX_DEMO], traces[GEMINI_COPY]} <= set(_ids(lex))
    with pytest.raises(UsageError):
        search.trace_query(settings, "x", sort="size")


def test_facet_filters(corpus) -> None:
    settings, traces = corpus
    shown = search.trace_query(settings, "show tools")
    assert {traces[CODEX_TOOLS]} <= set(_ids(shown))
    codex = search.trace_query(settings, "show tools", facets={"agent": "codex-cli"})
    assert codex.candidates and all(c.facets["agent"] == "codex-cli" for c in codex.candidates)
    assert traces[CODEX_TOOLS] in _ids(codex)
    assert search.trace_query(settings, "show tools", facets={"agent": "gemini-cli"}).total \
        < shown.total

    by_tool = search.trace_query(settings, "test", tool="exec_command", limit=50)
    assert by_tool.candidates
    assert all("exec_command" in c.facets["tool"] for c in by_tool.candidates)
    assert {c.facets["agent"] for c in by_tool.candidates} == {"codex-cli"}

    ts = search.trace_query(settings, "model", files="*.ts", limit=50)
    assert ts.candidates and all(any(f.endswith(".ts") for f in c.files) for c in ts.candidates)
    typescript = search.trace_query(settings, "", facets={"file_kind": "typescript"}, limit=50)
    assert set(_ids(typescript)) == set(_ids(search.trace_query(settings, "", files="*.ts",
                                                               limit=50)))

    skilled = search.trace_query(settings, "", skill="handgemacht:commit")
    assert _ids(skilled) == [traces[SKILLFUL]]
    assert "handgemacht:commit" in skilled.candidates[0].skills
    assert search.trace_query(settings, "", skill="no-such-skill").total == 0
    with pytest.raises(UsageError):
        search.trace_query(settings, "", facets={"colour": "red"})


def test_project_cwd_and_since(corpus) -> None:
    settings, traces = corpus
    # a project by its folder, its slug or the slug's last part
    for name in ("/home/marco/projects/spotter", "home-marco-projects-spotter", "spotter"):
        assert _ids(search.trace_query(settings, "", project=name)) == [traces[SHORT]]
    here = search.trace_query(settings, "", cwd=Path("/home/marco/projects/spotter"))
    assert _ids(here) == [traces[SHORT]]
    assert search.trace_query(settings, "", cwd=Path("/home/marco/projects/spot")).total == 0
    recent = search.trace_query(settings, "", since="2026-05-01", limit=50)
    assert set(_ids(recent)) == {traces[CODEX_DEMO], traces[CODEX_TOOLS]}
    assert search.parse_since("12h", datetime(2026, 1, 2, tzinfo=UTC)) == int(
        datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp())
    assert search.parse_since("7d", datetime(2026, 1, 8, tzinfo=UTC)) == int(
        datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    with pytest.raises(UsageError):
        search.parse_since("last tuesday")


def test_pagination_round_trip(corpus) -> None:
    settings, _ = corpus
    whole = search.trace_query(settings, "file", limit=200)
    assert whole.total == whole.total_returned >= 5 and not whole.has_more
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = search.trace_query(settings, "file", limit=2, page_token=token)
        pages += 1
        assert page.total == whole.total and page.total_returned == len(page.candidates)
        seen += [c.unit_id for c in page.candidates]
        if not page.has_more:
            assert page.next_page_token is None
            break
        assert page.total_returned == 2 and page.next_page_token
        token = page.next_page_token
    assert pages == (whole.total + 1) // 2
    assert seen == [c.unit_id for c in whole.candidates]  # same order, no duplicates
    assert len({u.split(":")[0] for u in seen}) == len(seen)
    with pytest.raises(UsageError, match="another query"):
        search.trace_query(settings, "model", limit=2, page_token=token)
    with pytest.raises(UsageError):
        search.trace_query(settings, "file", page_token="garbage!")


def test_sort_by_time(corpus) -> None:
    settings, _ = corpus
    newest = search.trace_query(settings, "file", sort="time", limit=50)
    times = [c.time or "" for c in newest.candidates]
    assert times == sorted(times, reverse=True) and len(times) >= 5
    assert {c.unit_id for c in newest.candidates} == {
        c.unit_id for c in search.trace_query(settings, "file", sort="time", limit=50).candidates}
    listing = search.trace_query(settings, "", limit=50)  # no words: traces, newest first
    assert all(c.step_index is None for c in listing.candidates)
    assert len(listing.candidates) == len(FIRST_BATCH)
    assert [c.time for c in listing.candidates] == sorted(
        (c.time for c in listing.candidates), key=lambda t: t or "", reverse=True)


def test_skills(corpus) -> None:
    settings, traces = corpus
    result = search.trace_skills(settings)
    assert result.total_skills == len(result.skills) > 0
    assert result.total_invocations == sum(s.invocations for s in result.skills)
    counts = [s.invocations for s in result.skills]
    assert counts == sorted(counts, reverse=True)
    (one,) = search.trace_skills(settings, "handgemacht:commit").skills
    assert one.traces == 1 and one.recent_traces == [traces[SKILLFUL]] and one.last_seen
    assert search.trace_skills(settings, "nope").skills == []


# ---------------------------------------------------------------------------------------------
# Freshness, upkeep, determinism


@pytest.fixture
def bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports behave like a bulk import: they leave the lazy index behind."""
    monkeypatch.setattr(workspace, "LAZY_CATCH_UP_EVENTS", 0)


def test_a_small_import_keeps_the_index_current(settings: Settings) -> None:
    _import(settings, SHORT)
    status = search.index_status(settings)
    assert status.state == "fresh" and status.lag == 0 and status.doc_count > 0
    assert api.status(settings).freshness == "fresh"


def test_a_bulk_import_leaves_the_index_lagging(settings: Settings, bulk: None) -> None:
    _import(settings, SHORT)
    search.index_refresh(settings)
    _import(settings, CODEX_DEMO)
    report = api.status(settings)
    assert report.verdict == "ok" and report.freshness == "stale"
    assert report.next_command == "opentraces trace index refresh"
    assert any(c.name == "projection search_index" and c.ok for c in api.doctor(settings).checks)


def test_missing_index_needs_maintenance(settings: Settings, bulk: None) -> None:
    _import(settings, SHORT)
    with pytest.raises(MaintenanceNeeded) as caught:
        search.trace_query(settings, "phx")
    assert caught.value.next_command == "opentraces trace index refresh"
    status = search.index_status(settings)
    assert status.state == "missing" and status.doc_count == 0 and status.lag > 0
    out = invoke("query", ["phx", "--json"])
    assert out.exit_code == 3
    body = json.loads(out.stdout)
    assert body["error"]["code"] == "maintenance_needed"
    assert body["next_command"] == "opentraces trace index refresh"


def test_an_empty_home_answers_nothing(settings: Settings) -> None:
    result = search.trace_query(settings, "anything")
    assert result.total == 0 and result.freshness.head == 0 and not result.freshness.stale
    assert not settings.home.exists()


def test_lag_is_reported_then_refreshed_and_digests_agree(settings: Settings,
                                                         bulk: None) -> None:
    _import(settings, SHORT, CODEX_DEMO)
    first = search.index_refresh(settings)
    assert first.state == "fresh" and first.lag == 0 and first.doc_count > 2
    _import(settings, GEMINI_COPY)
    lagging = search.trace_query(settings, "lead_gemini.txt")
    assert lagging.freshness.stale and lagging.freshness.lag > 0
    assert lagging.freshness.position == first.position
    assert lagging.next_command == "opentraces trace index refresh"
    assert lagging.total == 0  # answered from what the index holds
    assert search.index_status(settings).state == "lagging"
    refreshed = search.index_refresh(settings)
    assert refreshed.lag == 0 and refreshed.events_applied == lagging.freshness.lag
    found = search.trace_query(settings, "lead_gemini.txt")
    assert found.total == 1 and not found.freshness.stale and found.next_command is None
    rebuilt = search.index_rebuild(settings)
    assert rebuilt.digest == refreshed.digest and rebuilt.doc_count == refreshed.doc_count
    assert _ids(search.trace_query(settings, "file", limit=50)) == _ids(
        search.trace_query(settings, "file", limit=50))
    # repair catches the lazy index up too, and finds nothing wrong with it
    _import(settings, PI_SESSION)
    report = api.repair(settings)
    assert "search_index" in report.projections_caught_up and not report.errors
    assert search.index_status(settings).state == "fresh"


def test_read_commands_never_write(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = corpus
    monkeypatch.setenv("OPENTRACES_HOME", str(settings.home))
    build = (settings.projections_dir / "search_index").resolve()

    def snapshot() -> dict[str, tuple[int, int]]:
        found = {".": (build.stat().st_mtime_ns, 0)}
        for root, dirs, files in os.walk(build):
            for name in dirs + files:
                path = Path(root) / name
                found[str(path.relative_to(build))] = (path.stat().st_mtime_ns,
                                                       path.stat().st_size)
        return found

    before = snapshot()
    for command, args in (("query", ["phx", "--json"]), ("query", ["--json"]),
                          ("query", ["--skill", "handgemacht:commit", "--json"]),
                          ("skills", ["--json"]), ("index", ["--json"]),
                          ("index", ["status", "--json"])):
        out = invoke(command, args)
        assert out.exit_code == 0, out.output
    search.trace_query(settings, "model", files="*.ts", since="2020-01-01")
    search.trace_skills(settings)
    search.index_status(settings)
    assert snapshot() == before


def test_index_is_idempotent_after_a_crash(tmp_path: Path, settings: Settings) -> None:
    """Side tables committed, whoosh not: feeding the events again writes each unit once."""
    _import(settings, SHORT, GEMINI_COPY)
    with EventLog.open(settings.store) as log:
        records = log.page(0, 100000)
    half = len(records) // 2

    clean = SearchIndex(tmp_path / "clean")
    clean.apply_page(records)
    clean.finish()

    crashed = SearchIndex(tmp_path / "crashed")
    crashed.apply_page(records[:half])
    crashed.finish()
    crashed.apply_page(records[half:])  # side tables commit; the process dies before finish
    crashed.close()
    again = SearchIndex(tmp_path / "crashed")
    assert again.position() == records[half - 1].position
    assert again.apply_page(records[half:]) == len(records) - half  # nothing new for the rows
    again.finish()
    # every unit marked dirty and written once more: still one document per unit
    with sqlite3.connect(again.path) as conn:
        conn.execute("INSERT INTO dirty SELECT trace_id, -2 FROM traces")
    again.finish()
    for proj in (clean, again):
        assert proj.problems() == [] and proj.position() == records[-1].position
    assert again.digest() == clean.digest()
    assert again.doc_count() == clean.doc_count()
    again.close()
    clean.close()


def test_a_reread_transcript_replaces_its_documents(settings: Settings) -> None:
    """A new generation from offset 0 drops the old steps; their documents go too."""
    trace_id = ev.trace_id_for("pi", "regen")
    stream = ev.stream("trace", trace_id)
    start = ev.SessionStarted(trace_id=trace_id, session_id="regen",
                              agent=ev.AgentInfo(name="pi"), cwd="/w/shop")

    def segment(generation: int) -> ev.SourceSegmentRead:
        return ev.SourceSegmentRead(path="/logs/regen.jsonl", generation=generation,
                                    start_offset=0, end_offset=10, line_count=1)

    api.append(settings, stream, [start, segment(0),
                                  ev.StepRecorded(step_index=0, role="user",
                                                  content="tangerine checkout"),
                                  ev.StepRecorded(step_index=1, role="agent",
                                                  content="obsolete marmalade")])
    search.index_refresh(settings)
    assert search.trace_query(settings, "marmalade").total == 1
    api.append(settings, stream, [segment(1),
                                  ev.StepRecorded(step_index=0, role="user",
                                                  content="tangerine checkout")])
    search.index_refresh(settings)
    assert search.trace_query(settings, "marmalade").total == 0
    assert search.trace_query(settings, "tangerine").total == 1
    assert search.index_status(settings).doc_count == 2  # the step and the trace
    assert search.index_rebuild(settings).digest == search.index_status(settings).digest


def test_committed_is_a_facet_from_anchors(settings: Settings) -> None:
    trace_id = ev.trace_id_for("claude-code", "anchored")
    api.append(settings, ev.stream("trace", trace_id), [
        ev.SessionStarted(trace_id=trace_id, session_id="anchored",
                          agent=ev.AgentInfo(name="claude-code"), cwd="/w/shop"),
        ev.StepRecorded(step_index=0, role="user", content="rename the quokka module"),
        ev.StepRecorded(step_index=1, role="agent", content="Done.", tool_calls=[
            ev.ToolCall(tool_call_id="c1", tool_name="Edit",
                        input={"file_path": "/w/shop/src/quokka.py"})]),
        ev.PatchRecorded(patch_id="p1", trace_id=trace_id, step_index=1, tool_call_id="c1",
                         tool_name="Edit", path="/w/shop/src/quokka.py"),
    ])
    search.index_refresh(settings)
    assert search.trace_query(settings, "quokka", facets={"committed": "true"}).total == 0
    (hit,) = search.trace_query(settings, "quokka", files="src/*.py").candidates
    assert hit.files == ["src/quokka.py"] and hit.facets["file_kind"] == ["py", "python"]
    api.append(settings, ev.stream("repo", "shop"), [
        ev.AnchorRecorded(anchor_id="a1", patch_id="p1", trace_id=trace_id, repo_key="shop",
                          commit="c0ffee", path="src/quokka.py", evidence_tier="exact",
                          evidence_firmness="firm")])
    search.index_refresh(settings)
    committed = search.trace_query(settings, "quokka", facets={"committed": "yes"})
    assert committed.total == 1 and committed.candidates[0].facets["committed"] is True
    assert search.trace_query(settings, "rename", facets={"committed": "true"}).total == 1


# ---------------------------------------------------------------------------------------------
# Matching and ranking (opentraces.ranking) against whoosh's own collectors

RANKED = ["file", "show tools", "governance OR lead_gemini.txt", "model NOT file", "pars*",
          "commands:git", "tool:bash", '"seem to start"', '"doesnt seem"~3', "test AND NOT ts"]


def _compare(index: Any, queries: list[str]) -> int:
    """Assert the ranker's matches equal whoosh's, and so do its scores (but for phrases,
    wildcards and NOT, which the ranker scores by their words: see opentraces.ranking)."""
    from whoosh import scoring

    from opentraces.ranking import Ranker

    compared = 0
    with index.searcher(weighting=scoring.BM25F()) as searcher:
        ranker = Ranker(searcher)
        for text in queries:
            q = search._parse(index, text, False)
            theirs = {h.docnum: h.score for h in searcher.search(q, limit=None)}
            mine = ranker.docs(q)
            assert mine == set(theirs) == set(searcher.docs_for_query(q)), text
            if not any(mark in text for mark in ('"', "*", "NOT")):
                scores = ranker.scores(q, mine)
                assert all(abs(scores[d] - theirs[d]) < 1e-4 for d in mine), text
            # confined to a few clusters of documents (posting blocks between them go unread):
            # the same answers, restricted to them
            n = searcher.doc_count_all()
            some = set(range(0, n // 10, 3)) | set(range(n // 2, n // 2 + 5))
            confined = Ranker(searcher, within=some)
            assert confined.docs(q) == mine & some, text
            assert confined.scores(q, mine & some) == ranker.scores(q, mine & some), text
            compared += len(mine)
    return compared


def test_ranker_matches_and_scores_as_whoosh_does(corpus) -> None:
    settings, _ = corpus
    with api.open_workspace(settings, readonly=True) as ws:
        indexes = ws.runner().open("search_index").open_indexes()
        assert _compare(indexes["traces"], RANKED) > 20
        assert _compare(indexes["steps"], RANKED) > 100


def test_ranker_leaves_out_deleted_documents(settings: Settings) -> None:
    _import(settings, SHORT, CODEX_DEMO)
    search.index_refresh(settings)
    trace_id = _trace_of(settings, SHORT)
    api.append(settings, ev.stream("trace", trace_id), [
        ev.StepRecorded(step_index=900, role="user", content="one more zebrafinch question")])
    search.index_refresh(settings)
    with api.open_workspace(settings, readonly=True) as ws:
        indexes = ws.runner().open("search_index").open_indexes()
        with indexes["traces"].searcher() as searcher:  # the rewritten trace left a deletion
            assert any(leaf.deleted_docs_set for leaf, _ in searcher.reader().leaf_readers())
        _compare(indexes["traces"], ["file", "zebrafinch", "model NOT file", "governance"])
    (hit,) = search.trace_query(settings, "zebrafinch").candidates
    assert (hit.trace_id, hit.step_index) == (trace_id, 900)


def test_words_may_match_in_different_steps_of_one_trace(settings: Settings) -> None:
    trace_id = ev.trace_id_for("pi", "split")
    api.append(settings, ev.stream("trace", trace_id), [
        ev.SessionStarted(trace_id=trace_id, session_id="split", agent=ev.AgentInfo(name="pi"),
                          cwd="/w/shop"),
        ev.StepRecorded(step_index=0, role="user", content="tangerine checkout"),
        ev.StepRecorded(step_index=1, role="agent", content="marmalade receipt"),
    ])
    other = ev.trace_id_for("pi", "other")
    api.append(settings, ev.stream("trace", other), [
        ev.SessionStarted(trace_id=other, session_id="other", agent=ev.AgentInfo(name="pi")),
        ev.StepRecorded(step_index=0, role="user", content="a tangerine alone"),
    ])
    search.index_refresh(settings)
    both = search.trace_query(settings, "tangerine marmalade")
    assert both.total == 1
    (hit,) = both.candidates  # no single step has both words: the trace is the unit
    assert (hit.trace_id, hit.step_index, hit.unit_id) == (trace_id, None, trace_id)
    assert hit.matched_fields == {"prompt": ["tangerin"], "text": ["marmalad"],
                                  "title": ["tangerin"]}  # the title is the first prompt
    one = search.trace_query(settings, "marmalade")
    assert [(c.trace_id, c.step_index) for c in one.candidates] == [(trace_id, 1)]
    assert one.candidates[0].matched_fields == {"text": ["marmalad"]}
    assert search.trace_query(settings, "tangerine").total == 2
    assert search.trace_query(settings, '"tangerine marmalade"').total == 0


def test_time_order_across_segments_puts_untimed_traces_last(settings: Settings) -> None:
    made = []
    for name, at in (("old", "2026-01-01T00:00:00Z"), ("untimed", None),
                     ("new", "2026-01-02T00:00:00Z")):
        trace_id = ev.trace_id_for("pi", name)
        api.append(settings, ev.stream("trace", trace_id), [  # each catches the index up
            ev.SessionStarted(trace_id=trace_id, session_id=name, agent=ev.AgentInfo(name="pi"),
                              at=at),
            ev.StepRecorded(step_index=0, role="user", content="walrus tusk", at=at)])
        made.append(trace_id)
    old, untimed, new = made
    with api.open_workspace(settings, readonly=True) as ws:  # one segment per catch-up
        indexes = ws.runner().open("search_index").open_indexes()
        with indexes["traces"].searcher() as searcher:
            assert len(searcher.reader().leaf_readers()) == 3
    for terms in ("walrus", ""):
        listed = search.trace_query(settings, terms, sort="time")
        assert [c.trace_id for c in listed.candidates] == [new, old, untimed], terms
        assert [c.time for c in listed.candidates] == [
            "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", None]


WRITER = """
import sys
from pathlib import Path
from opentraces import api
from opentraces import events as ev
from opentraces.config import load_settings

settings = load_settings(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):  # each append catches the search index up: a commit each
    trace_id = ev.trace_id_for("pi", f"busy-{i}")
    api.append(settings, ev.stream("trace", trace_id), [
        ev.SessionStarted(trace_id=trace_id, session_id=f"busy-{i}",
                          agent=ev.AgentInfo(name="pi"), at="2026-01-01T00:00:00Z"),
        ev.StepRecorded(step_index=0, role="user", content=f"walrus number {i}",
                        at="2026-01-01T00:00:00Z")])
"""


def test_queries_while_an_import_commits_to_the_index(settings: Settings) -> None:
    """whoosh deletes merged segments' files at each commit, under a query that is reading."""
    import subprocess
    import sys

    trace_id = ev.trace_id_for("pi", "seed")
    api.append(settings, ev.stream("trace", trace_id), [
        ev.SessionStarted(trace_id=trace_id, session_id="seed", agent=ev.AgentInfo(name="pi")),
        ev.StepRecorded(step_index=0, role="user", content="walrus")])
    search.index_refresh(settings)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(settings.home), "100"])
    queries = 0
    try:
        while writer.poll() is None:
            result = search.trace_query(settings, "walrus", sort="time", limit=5)
            assert result.total >= 1 and result.candidates
            assert search.index_status(settings).doc_count >= 2
            queries += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and queries > 20
    assert search.trace_query(settings, "walrus").total == 101


def test_phrase_positions_in_order_within_the_slop() -> None:
    from opentraces.ranking import _in_sequence

    assert _in_sequence([[3, 9], [10], [11]], 1)
    assert not _in_sequence([[3], [5], [6]], 1)
    assert _in_sequence([[3], [5], [6]], 2)
    assert not _in_sequence([[7], [5]], 3)  # order counts
    assert _in_sequence([[1, 4], [2, 5], [3]], 1)


# ---------------------------------------------------------------------------------------------
# Commands


def invoke(command: str, args: list[str]) -> Result:
    """`opentraces trace <command> …`, run the way a user runs it (through the root command)."""
    return CliRunner().invoke(cli, ["trace", command, *args])


def _json(command: str, *args: str) -> dict:
    out = invoke(command, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_query_command_envelope(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, traces = corpus
    monkeypatch.setenv("OPENTRACES_HOME", str(settings.home))
    body = _json("query", "draft", "demo", "scenario", "--limit", "3")
    assert body["status"] == "ok" and body["schema_version"] == "opentraces.trace.query.v1"
    assert {"total", "total_returned", "has_more", "next_page_token", "freshness",
            "candidates", "next_command", "next_steps"} <= set(body)
    assert set(body["freshness"]) == {"built_at", "stale", "position", "head", "lag"}
    first = body["candidates"][0]
    assert first["trace_id"] == traces[CODEX_DEMO]
    assert {"unit_id", "trace_id", "step_index", "title", "headline", "summary", "score",
            "matched_fields", "facets", "files", "skills", "refs"} <= set(first)
    paged = _json("query", "file", "--limit", "2")
    assert paged["has_more"]
    after = _json("query", "file", "--limit", "2", "--page-token", paged["next_page_token"])
    assert not {c["unit_id"] for c in after["candidates"]} & {
        c["unit_id"] for c in paged["candidates"]}
    facet = _json("query", "show", "tools", "--facet", "agent=gemini-cli", "--sort", "time")
    assert all(c["facets"]["agent"] == "gemini-cli" for c in facet["candidates"])
    skill = _json("query", "--skill", "handgemacht:commit")
    assert [c["trace_id"] for c in skill["candidates"]] == [traces[SKILLFUL]]
    text = invoke("query", ["mix", "phx.server"])
    assert text.exit_code == 0 and traces[SHORT] in text.stdout
    bad = invoke("query", ["x", "--facet", "agent"])
    assert bad.exit_code == 2


def test_query_cwd_flag_defaults_to_the_current_folder(corpus, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = corpus
    monkeypatch.setenv("OPENTRACES_HOME", str(settings.home))
    monkeypatch.chdir(tmp_path)
    body = _json("query", "--cwd")
    assert body["total"] == 0
    assert _json("query", "--cwd", "/home/marco/projects/spotter")["total"] == 1


def test_skills_and_index_commands(corpus, settings: Settings, bulk: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = corpus
    monkeypatch.setenv("OPENTRACES_HOME", str(home.home))
    body = _json("skills")
    assert body["schema_version"] == "opentraces.trace.skills.v1"
    assert body["total_skills"] == len(body["skills"]) > 0
    one = _json("skills", "--skill", "handgemacht:commit")
    assert one["skills"][0]["traces"] == 1 and one["total_invocations"] >= 1
    status = _json("index")
    assert status["schema_version"] == "opentraces.trace.index.v1"
    assert status["action"] == "status" and status["lag"] == 0 and status["doc_count"] > 0
    assert status["bytes"] > 0 and status["next_command"] is None

    # a home of its own for refresh and rebuild
    monkeypatch.setenv("OPENTRACES_HOME", str(settings.home))
    _import(settings, SHORT)
    assert _json("index")["next_command"] == "opentraces trace index refresh"
    refreshed = _json("index", "refresh")
    assert refreshed["action"] == "refresh" and refreshed["lag"] == 0
    assert refreshed["events_applied"] == refreshed["head"]
    rebuilt = _json("index", "rebuild")
    assert rebuilt["digest"] == refreshed["digest"]
    text = invoke("index", ["refresh"])
    assert text.exit_code == 0 and "search index fresh" in text.stdout


# ---------------------------------------------------------------------------------------------
# What a tool call contributes


def test_paths_and_commands_from_tool_inputs() -> None:
    assert paths_in_command("sed -n '70,150p' src/app/plugin.ts && cat README.md | head") == [
        "src/app/plugin.ts", "README.md"]
    assert paths_in_command("mix phx.server 2>&1; curl https://x.org/a.py") == []
    codex = ev.ToolCall(tool_call_id="c", tool_name="shell",
                        input={"command": ["bash", "-lc", "pytest tests/test_cart.py -q"]})
    assert call_facts(codex) == ("bash -lc pytest tests/test_cart.py -q",
                                 ["tests/test_cart.py"], [])
    patch = ev.ToolCall(tool_call_id="p", tool_name="apply_patch", input={
        "input": "*** Begin Patch\n*** Update File: src/cart.py\n@@\n-a\n+b\n"
                 "*** Add File: docs/new.md\n*** End Patch"})
    assert call_facts(patch)[1] == ["src/cart.py", "docs/new.md"]
    glob = ev.ToolCall(tool_call_id="g", tool_name="Glob",
                       input={"pattern": "*.ex", "path": "/home/me/app"})
    assert call_facts(glob) == ("*.ex", [], ["/home/me/app"])
    assert file_kinds("lib/a.EX") == ["ex", "elixir"] and file_kinds("Makefile") == []


def test_flushing_in_the_middle_of_a_catch_up_gives_the_same_index(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _import(settings, SHORT, GEMINI_COPY)
    whole = search.index_rebuild(settings)
    import opentraces.projections.search_index as module

    monkeypatch.setattr(module, "FLUSH_UNITS", 3)  # commit after every page that dirties 3
    monkeypatch.setattr("opentraces.projections.runner.PAGE_SIZE", 50)
    pieces = search.index_rebuild(settings)
    assert (pieces.digest, pieces.doc_count) == (whole.digest, whole.doc_count)
    assert _ids(search.trace_query(settings, "lead_gemini.txt")) == [
        _trace_of(settings, GEMINI_COPY)]


# ---------------------------------------------------------------------------------------------
# Building fast: fused analysis, and a first build written by two processes


def test_fused_text_fields_index_as_their_analyzers_do(corpus) -> None:
    """Every text field's one-pass indexing gives whoosh's terms, frequencies, weights and
    encoded positions for corpus text and for the awkward cases."""
    from whoosh import fields

    from opentraces.projections.indexing import FusedText
    from opentraces.projections.search_index import TEXT_FIELDS, schema

    settings, _ = corpus
    with api.open_workspace(settings, readonly=True) as ws:
        side = ws.runner().open("search_index").path
    conn = sqlite3.connect(f"file:{side}?mode=ro", uri=True)
    texts = [t for (t,) in conn.execute(
        "SELECT body FROM texts UNION ALL SELECT output FROM results "
        "UNION ALL SELECT command FROM calls")]
    conn.close()
    texts += ["", "the and of", "The cat's 3.14 v1.2.3 src/app.py", "İstanbul ŞEHİR straße",
              "a\nthe\nrunning runs ran", "  --flag=value path/to\\file:12 'quoted' \"x\""]
    assert len(texts) > 200
    built = schema()
    for name in TEXT_FIELDS:
        field = built[name]
        assert isinstance(field, FusedText)
        for text in texts:
            assert list(field.index(text)) == list(fields.FieldType.index(field, text)), name


def _answers(settings: Settings) -> list[tuple[str, int, list[tuple[str, float]]]]:
    out = []
    for text in RANKED:
        result = search.trace_query(settings, text, limit=50)
        out.append((text, result.total, [(c.unit_id, round(c.score, 6))
                                         for c in result.candidates]))
    return out


def test_a_first_build_in_two_processes_equals_one(settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import opentraces.projections.search_index as module

    _import(settings, *FIRST_BATCH)
    monkeypatch.setattr(module, "PARALLEL_UNITS", 10**9)
    one = search.index_rebuild(settings)
    answers = _answers(settings)
    monkeypatch.setattr(module, "PARALLEL_UNITS", 0)
    two = search.index_rebuild(settings)
    assert (two.digest, two.doc_count) == (one.digest, one.doc_count)
    assert _answers(settings) == answers
    with api.open_workspace(settings, readonly=True) as ws:
        proj = ws.runner().open("search_index")
        assert proj.problems() == []
        indexes = proj.open_indexes()
        # the second process's documents are segments of their own, after the parent's
        assert [len(ix.reader().leaf_readers()) for ix in indexes.values()] == [2, 2]
        assert _compare(indexes["steps"], RANKED) > 100
    # later events update the two-segment index in place
    _import(settings, LATER)
    search.index_refresh(settings)
    assert _ids(search.trace_query(settings, "lead_gemini.txt")) == [
        _trace_of(settings, GEMINI_COPY)]
    assert search.trace_query(settings, "file").total >= answers[0][1]


def test_the_fast_writer_writes_the_segment_whoosh_writes(corpus, tmp_path: Path) -> None:
    """Corpus documents added through :func:`add_document` to a :func:`fast_writer`, with a
    pool small enough to spill to disk, give the same segment files, byte for byte, as
    whoosh's own writer."""
    from whoosh import index

    from opentraces.projections.indexing import add_document, fast_writer
    from opentraces.projections.search_index import _render, schema

    settings, _ = corpus
    with api.open_workspace(settings, readonly=True) as ws:
        side = ws.runner().open("search_index").path
    conn = sqlite3.connect(f"file:{side}?mode=ro", uri=True)
    docs: list[dict[str, Any]] = []
    for (trace_id,) in conn.execute("SELECT trace_id FROM documents ORDER BY trace_id"):
        _, step_docs, trace_doc = _render(conn, trace_id)
        docs += [*step_docs.values(), trace_doc]
    conn.close()
    assert len(docs) > 300
    written = {}
    for how in ("whoosh", "fast"):
        folder = tmp_path / how
        folder.mkdir()
        writer = index.create_in(folder, schema()).writer(limitmb=1, compound=False)
        if how == "fast":
            writer = fast_writer(writer)
        for doc in docs:
            if how == "fast":
                add_document(writer, doc)
            else:
                writer.add_document(**doc)
        writer.commit()
        # MAIN_<segment id>.<part>: the segment id is random
        written[how] = {p.name.split(".", 1)[1]: p.read_bytes() for p in folder.iterdir()
                        if p.name.startswith("MAIN_") and "." in p.name}
    assert sorted(written["fast"]) == sorted(written["whoosh"])
    assert {"pst", "trm", "_stored.col", "_text_len.col"} <= set(written["fast"])
    for part, data in written["whoosh"].items():
        assert written["fast"][part] == data, part

"""Searching traces: ``trace_query``, ``trace_skills`` and the search index's upkeep.

The search index (:mod:`opentraces.projections.search_index`) is a *lazy* projection: imports do
not keep it current, ``index_refresh`` (``opentraces trace index refresh``) and ``repair`` do.

- Reads open the index read-only and never write. A lagging index answers from what it holds
  and says so (``freshness.stale``, ``next_command`` = the refresh command).
- A missing index (the log has events, the index was never built), or one built by another
  code version or from another store, raises :class:`~opentraces.errors.MaintenanceNeeded`
  naming the refresh command, which builds it.
- A query matches, counts and ranks *traces* (BM25F over each trace's text, all its steps
  together), so ``total`` is the exact number of traces matched. Each trace shown is given as
  its best unit: the best step that matches the query by itself, else the trace as a whole.
  Two sessions are never merged, whatever their titles.

Query syntax (whoosh's parser; terms are stemmed, case is ignored): words are AND-ed;
``OR``, ``AND``, ``NOT`` and parentheses combine them; ``"exact phrase"``; ``field:value``
for any field (``prompt:``, ``commands:``, ``tool:bash``, ``file_kind:python``…); ``pre*``
wildcards. With ``lex=True`` the text is plain words, any of which may match (ranked by BM25F).
"""

from __future__ import annotations

import base64
import heapq
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import msgspec

from opentraces.config import Settings
from opentraces.errors import MaintenanceNeeded, UsageError

if TYPE_CHECKING:
    from opentraces.workspace import Workspace

__all__ = ["Candidate", "Freshness", "IndexReport", "QueryResult", "SkillUsage",
           "SkillsResult", "index_rebuild", "index_refresh", "index_status", "parse_since",
           "trace_query", "trace_skills"]

PROJECTION = "search_index"
REFRESH_COMMAND = "opentraces trace index refresh"
SORTS = ("relevance", "time")
MAX_LIMIT = 200

Progress = Callable[[int], None]


class Freshness(msgspec.Struct, frozen=True):
    built_at: str | None  # when the index was last written (UTC), None if never
    stale: bool  # the log holds events the index has not applied
    position: int
    head: int
    lag: int


class Candidate(msgspec.Struct, frozen=True):
    unit_id: str
    trace_id: str
    step_index: int | None
    title: str
    headline: str
    summary: str
    score: float
    time: str | None  # the unit's last activity (UTC)
    matched_fields: dict[str, list[str]]
    facets: dict[str, Any]
    files: list[str]
    skills: list[str]
    refs: dict[str, str]


class QueryResult(msgspec.Struct, frozen=True):
    query: str
    total: int
    total_returned: int
    has_more: bool
    next_page_token: str | None
    freshness: Freshness
    candidates: list[Candidate]
    next_command: str | None
    next_steps: list[str]


class SkillUsage(msgspec.Struct, frozen=True):
    skill: str
    invocations: int
    traces: int
    last_seen: str | None
    recent_traces: list[str]


class SkillsResult(msgspec.Struct, frozen=True):
    skills: list[SkillUsage]
    total_skills: int
    total_invocations: int
    freshness: Freshness
    next_command: str | None
    next_steps: list[str]


class IndexReport(msgspec.Struct, frozen=True):
    doc_count: int
    position: int
    head: int
    lag: int
    bytes: int
    state: str  # fresh | lagging | missing | version_changed | other_store
    built_at: str | None
    digest: str | None
    events_applied: int
    seconds: float
    next_command: str | None
    next_steps: list[str]


# ---------------------------------------------------------------------------------------------
# Opening the index


def _open(ws: Workspace) -> tuple[Any, Freshness]:
    """The live search index projection (None for an empty log) and its freshness."""
    runner = ws.runner()
    state = runner.state(PROJECTION)  # only this view's: the others are not read
    proj = runner.open(PROJECTION)
    if state.state not in ("fresh", "lagging"):
        raise MaintenanceNeeded(
            f"the search index is {state.state.replace('_', ' ')}; build it before querying",
            hint="Building reads every event once; later refreshes add only new ones.",
            next_command=REFRESH_COMMAND)
    built = proj.built_at() if proj is not None else None
    return proj, Freshness(built_at=built, stale=state.state == "lagging",
                           position=state.position, head=state.head, lag=state.lag)


def _stale_steps(fresh: Freshness) -> tuple[str | None, list[str]]:
    if not fresh.stale:
        return None, []
    return REFRESH_COMMAND, [f"The search index is {fresh.lag} events behind the log; "
                             f"`{REFRESH_COMMAND}` adds them."]


# ---------------------------------------------------------------------------------------------
# Query


def trace_query(target: Settings | Path | Workspace, terms: str = "", *, lex: bool = False,
                skill: str | None = None, tool: str | None = None, files: str | None = None,
                project: str | None = None, cwd: Path | None = None, since: str | None = None,
                facets: dict[str, str] | None = None, limit: int = 20,
                page_token: str | None = None, sort: str = "relevance") -> QueryResult:
    """Find traces and steps by words and facets (read-only).

    Args:
        target: settings, a home folder or an open workspace (see :mod:`opentraces.workspace`).
        terms: the query (syntax in the module docstring); empty lists traces by facets only,
            newest first.
        lex: read ``terms`` as plain words, any of which may match.
        skill, tool: a skill or tool used in the unit (case is ignored).
        files: a glob over the files a unit touched (paths relative to the session folder
            when inside it); a pattern without ``/`` or leading ``*`` also matches in any folder.
        project: a project folder or its slug (``home-me-src-shop``), or the slug's last part.
        cwd: sessions whose working folder is this folder or inside it.
        since: an ISO date/time, or a relative age: ``30m``, ``12h``, ``7d``, ``2w``.
        facets: more exact facet filters, ``{name: value}`` (see ``FACETS``).
        limit: candidates per page (1-200).
        page_token: the ``next_page_token`` of the previous page of the same query.
        sort: ``relevance`` (best first) or ``time`` (newest first).

    Raises:
        MaintenanceNeeded: the index is missing or must be rebuilt.
        UsageError: a bad option, a query the parser rejects, a token from another query.
    """
    from opentraces.workspace import open_workspace

    if sort not in SORTS:
        raise UsageError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}")
    terms = terms.strip()
    since_epoch = parse_since(since) if since else None
    spec = {"terms": terms, "lex": lex, "skill": skill, "tool": tool, "files": files,
            "project": project, "cwd": str(cwd) if cwd else None, "since": since_epoch,
            "facets": sorted((facets or {}).items()), "sort": sort}
    fingerprint = blake3.blake3(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    offset = _offset(page_token, fingerprint)
    with open_workspace(target, readonly=True) as ws:
        proj, fresh = _open(ws)
        total, hits = 0, []
        if proj is not None:
            from opentraces.projections.search_index import FACETS

            inherited, per_step = _filters(
                skill=skill, tool=tool, files=files, project=project, cwd=cwd,
                since=since_epoch, facets=facets or {}, names=FACETS)
            total, hits = proj.read(lambda indexes: _search(
                indexes, terms, lex, inherited, per_step, sort, offset, limit), (0, []))
    candidates = [_candidate(h) for h in hits]
    has_more = offset + len(candidates) < total
    token = _token(offset + len(candidates), fingerprint) if has_more else None
    nxt, steps = _stale_steps(fresh)
    if not candidates and nxt is None:
        steps = ["Nothing matched; fewer words, `--lex` (any word) or fewer filters find more."]
    return QueryResult(query=terms, total=total, total_returned=len(candidates),
                       has_more=has_more, next_page_token=token, freshness=fresh,
                       candidates=candidates, next_command=nxt, next_steps=steps)


def parse_since(text: str, now: datetime | None = None) -> int:
    """Seconds since 1970 (UTC) for an ISO date/time or a relative age (``12h``, ``7d``)."""
    text = text.strip()
    m = re.fullmatch(r"(\d+)\s*([smhdw])", text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        delta = timedelta(**{unit[m.group(2)]: int(m.group(1))})
        return int(((now or datetime.now(UTC)) - delta).timestamp())
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read --since {text!r}",
                         hint="Give an ISO date (2026-01-31, 2026-01-31T12:00) or an age "
                              "like 30m, 12h, 7d, 2w.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _offset(page_token: str | None, fingerprint: str) -> int:
    if not page_token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"=="))
        offset, owner = int(data["o"]), str(data["q"])
    except (ValueError, KeyError, TypeError):
        raise UsageError("the page token is not one this command gave out") from None
    if owner != fingerprint:
        raise UsageError("the page token belongs to another query",
                         hint="Repeat the same terms and options with the token.")
    return max(offset, 0)


def _token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _filters(*, skill: str | None, tool: str | None, files: str | None, project: str | None,
             cwd: Path | None, since: int | None, facets: dict[str, str],
             names: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    """(filters on what a trace's steps all share, filters that each step meets or not)."""
    from whoosh import query

    from opentraces.projections.bucket_manifest import project_slug
    from opentraces.projections.search_index import CASE_SENSITIVE_FACETS, INHERITED_FACETS

    inherited: list[Any] = []
    found: list[Any] = []
    for name, value in facets.items():
        if name not in names:
            raise UsageError(f"unknown facet {name!r}; known: {', '.join(names)}")
        if name == "committed":
            value = "true" if value.strip().lower() in ("true", "yes", "1") else "false"
        (inherited if name in INHERITED_FACETS else found).append(
            query.Term(name, value if name in CASE_SENSITIVE_FACETS else value.lower()))
    if skill:
        found.append(query.Term("skill", skill.lower()))
    if tool:
        found.append(query.Term("tool", tool.lower()))
    if files:
        pattern = files.strip()
        extension = re.fullmatch(r"\*\.([A-Za-z][A-Za-z0-9]{0,7})", pattern)
        if extension:  # `*.py`: the kind facet says it without scanning every file name
            found.append(query.Term("file_kind", extension.group(1).lower()))
        else:
            options = [query.Wildcard("file", pattern)]
            if not pattern.startswith(("/", "*")):
                options.append(query.Wildcard("file", "*/" + pattern))
            found.append(query.Or(options))
    if project:
        slug = project_slug(project) or project
        inherited.append(query.Or([query.Term("project", slug),
                                   query.Wildcard("project", "*-" + slug)]))
    if cwd is not None:
        folder = str(cwd).rstrip("/") or "/"
        inherited.append(query.Or([query.Term("cwd", folder),
                                   query.Prefix("cwd", folder.rstrip("/") + "/")]))
    if since is not None:
        found.append(query.NumericRange("time", since, None))
    return inherited, found


def _parse(ix: Any, terms: str, lex: bool) -> Any:
    from whoosh import qparser

    from opentraces.projections.search_index import TEXT_FIELDS

    if lex:
        parser = qparser.MultifieldParser(list(TEXT_FIELDS), ix.schema,
                                          group=qparser.OrGroup.factory(0.9))
        for plugin in (qparser.GroupPlugin, qparser.PhrasePlugin, qparser.RangePlugin,
                       qparser.WildcardPlugin, qparser.BoostPlugin, qparser.FieldsPlugin,
                       qparser.OperatorsPlugin, qparser.SingleQuotePlugin):
            parser.remove_plugin_class(plugin)
    else:
        parser = qparser.MultifieldParser(list(TEXT_FIELDS), ix.schema)
    try:
        parsed = parser.parse(terms)
    except Exception as e:  # whoosh's parser raises assorted errors on odd input
        raise UsageError(f"cannot read the query {terms!r} ({e})") from None
    return _without_positional(parsed)


def _without_positional(q: Any) -> Any:
    """The query with phrases over fields that keep no positions made to match nothing there."""
    from whoosh import query

    from opentraces.projections.search_index import NO_PHRASE_FIELDS

    if isinstance(q, query.Phrase) and q.fieldname in NO_PHRASE_FIELDS:
        return query.NullQuery
    return q.apply(_without_positional)


def _search(indexes: dict[str, Any], terms: str, lex: bool, inherited: list[Any],
            per_step: list[Any], sort: str, offset: int,
            limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(traces matched, the hits of the page as plain dicts).

    Traces are matched, counted and ranked on the traces index (one document per trace, holding
    all its text); then each trace of the page shows its best matching step, when one step
    matches on its own, else the trace itself.
    """
    from whoosh import query, scoring

    from opentraces.projections.search_index import STEPS, TRACES
    from opentraces.ranking import Ranker

    parsed = _parse(indexes[TRACES], terms, lex) if terms else None
    wanted = offset + limit
    with indexes[TRACES].searcher(weighting=scoring.BM25F()) as searcher:
        ranker = Ranker(searcher)
        parts = [q for q in (parsed, *inherited, *per_step) if q is not None]
        docs = ranker.docs(query.And(parts) if parts else query.Every())
        scores: dict[int, float] = {}
        if parsed is not None and sort == "relevance":
            scores = ranker.scores(parsed, docs)
            page = heapq.nsmallest(wanted, docs, key=lambda d: (-scores[d], d))[offset:]
        else:
            times = ranker.values("time", docs)
            page = heapq.nsmallest(wanted, docs, key=lambda d: _newest_first(times[d], d))
            page = page[offset:]
        owners = ranker.values("trace_id", page)
        page_traces = [owners[d] for d in page]
        # The trace met the inherited filters, so each of its steps does.
        best = _best_steps(indexes[STEPS], parsed, per_step, sort, page_traces) if parsed else {}
        hits = []
        for d, trace_id in zip(page, page_traces, strict=True):
            hit = best.get(trace_id) or {
                "fields": searcher.stored_fields(d),
                "matched": _text_terms(ranker.matched_terms(parsed, d)) if parsed else {}}
            hits.append(hit | {"score": round(scores.get(d, 0.0), 4)})
    return len(docs), hits


def _best_steps(ix: Any, parsed: Any, filters: list[Any], sort: str,
                trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each trace's best step (highest score, or newest) that matches the query on its own."""
    from whoosh import query, scoring

    from opentraces.ranking import Ranker

    with ix.searcher(weighting=scoring.BM25F()) as searcher:
        whole = Ranker(searcher)
        owner = {d: t for t in trace_ids for d in whole.postings("trace_id", t)[0]}
        ranker = Ranker(searcher, within=set(owner))
        docs = ranker.docs(query.And([parsed, *filters]))
        if sort == "time":
            times = ranker.values("time", docs)
            key = {d: _newest_first(times[d], d) for d in docs}
        else:
            scores = ranker.scores(parsed, docs)
            key = {d: (-scores[d], d) for d in docs}
        best: dict[str, dict[str, Any]] = {}
        for d in sorted(docs, key=key.__getitem__):
            if owner[d] not in best:
                best[owner[d]] = {"fields": searcher.stored_fields(d),
                                  "matched": _text_terms(ranker.matched_terms(parsed, d))}
    return best


#: What whoosh's column gives a document without a time (a signed 64-bit field's sortable maximum).
NO_TIME = 2**63 - 1


def _newest_first(seconds: int, docnum: int) -> tuple[bool, int, int]:
    """Sort key: newest first, documents without a time last."""
    return (seconds == NO_TIME, -seconds, docnum)


def _text_terms(matched: dict[str, set[str]]) -> dict[str, list[str]]:
    from opentraces.projections.search_index import TEXT_FIELDS

    return {k: sorted(v) for k, v in sorted(matched.items()) if k in TEXT_FIELDS}


_MULTI = ("tool", "file_kind", "date")


def _candidate(hit: dict[str, Any]) -> Candidate:
    """A hit of :func:`_search` (a unit's stored fields, score and matched terms) as shown."""
    fields = hit["fields"]
    card = fields["card"]
    facets: dict[str, Any] = {}
    for name, value in card["facets"].items():
        parts = [v for v in value.split(",") if v]
        if name == "committed":
            facets[name] = value == "true"
        elif name in _MULTI:
            facets[name] = parts
        else:
            facets[name] = parts[0] if parts else None
    trace_id, index = fields["trace_id"], card["step_index"]
    refs = {"trace": f"opentraces trace get {trace_id}"}
    if index is not None:
        refs["step"] = f"opentraces trace get {trace_id}:{index}"
    return Candidate(unit_id=fields["unit_id"], trace_id=trace_id, step_index=index,
                     title=card["title"], headline=card["headline"], summary=card["summary"],
                     score=hit["score"], time=_iso(card["at"]), matched_fields=hit["matched"],
                     facets=facets,
                     files=card["files"], skills=card["skills"], refs=refs)


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Skills


def trace_skills(target: Settings | Path | Workspace, skill: str | None = None) -> SkillsResult:
    """Skills seen in the traces, most invoked first (read-only); ``skill`` picks one."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        proj, fresh = _open(ws)
        rows = proj.skills(skill) if proj is not None else []
    skills = [SkillUsage(**row) for row in rows]
    nxt, steps = _stale_steps(fresh)
    if skill and not skills and nxt is None:
        steps = [f"No invocation of the skill {skill!r} was captured."]
    return SkillsResult(skills=skills, total_skills=len(skills),
                        total_invocations=sum(s.invocations for s in skills),
                        freshness=fresh, next_command=nxt, next_steps=steps)


# ---------------------------------------------------------------------------------------------
# Upkeep


def index_status(target: Settings | Path | Workspace) -> IndexReport:
    """Documents, position, lag and size of the search index (read-only)."""
    from opentraces.workspace import open_workspace

    with open_workspace(target, readonly=True) as ws:
        return _report(ws, events_applied=0, seconds=0.0)


def index_refresh(target: Settings | Path | Workspace,
                  progress: Progress | None = None) -> IndexReport:
    """Bring the search index up to the log's head (building it when missing or outdated)."""
    from opentraces.workspace import open_workspace

    began = time.perf_counter()
    with open_workspace(target) as ws:
        result = ws.runner().catch_up([PROJECTION], progress)[PROJECTION]
        return _report(ws, events_applied=result.events_applied,
                       seconds=round(time.perf_counter() - began, 3))


def index_rebuild(target: Settings | Path | Workspace,
                  progress: Progress | None = None) -> IndexReport:
    """Build the search index afresh from the whole log and swap it in."""
    from opentraces.workspace import open_workspace

    began = time.perf_counter()
    with open_workspace(target) as ws:
        result = ws.runner().rebuild([PROJECTION], progress)[PROJECTION]
        return _report(ws, events_applied=result.events_applied,
                       seconds=round(time.perf_counter() - began, 3))


def _report(ws: Workspace, *, events_applied: int, seconds: float) -> IndexReport:
    runner = ws.runner()
    state = runner.state(PROJECTION)  # only this view's: the others are not read
    proj = runner.open(PROJECTION)
    fresh = state.state == "fresh"
    nxt = None if fresh else REFRESH_COMMAND
    steps = [] if fresh else [
        f"The search index is {state.state.replace('_', ' ')} "
        f"(position {state.position} of {state.head}); `{REFRESH_COMMAND}` brings it up to date."]
    return IndexReport(doc_count=proj.doc_count() if proj is not None else 0,
                       position=state.position, head=state.head, lag=state.lag,
                       bytes=proj.bytes_on_disk() if proj is not None else 0,
                       state=state.state, built_at=proj.built_at() if proj is not None else None,
                       digest=state.digest, events_applied=events_applied, seconds=seconds,
                       next_command=nxt, next_steps=steps)

"""Exact matching and BM25F ranking over a whoosh index, as sets of document numbers.

Why not whoosh's collectors: they walk a tree of matcher objects and score each posting through
several Python calls, which cost hundreds of milliseconds for a word found in thousands of
traces; and the top-N collector drops low-scoring branches of an ``Or`` part-way through a
search (``replace``), so the number of matches it reports falls short of the real one.

Here each term's postings are read a block at a time, the query's boolean structure is applied
to sets of document numbers (so ``total`` is exact), and the matches are scored with whoosh's own
BM25F formula, field lengths and statistics: for words, AND and OR the scores are those whoosh
gives. Where they differ it is on purpose: a phrase scores as its words, a wildcard or prefix as
the words it expands to (whoosh gives both a flat score), ``NOT`` adds nothing (whoosh adds 1),
and an OR is the plain sum of its parts (whoosh scales an any-word group by the share of words
matched; the sum already favours documents with more of them). whoosh still parses and
analyses the query and stores the postings.

The block reading uses whoosh3's posting-block and length-column layout (pinned in
``pyproject.toml``); ``tests/test_ranking.py`` compares every score with whoosh's own.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from whoosh import query
from whoosh.codec.whoosh3 import LENGTHS_COLUMN, W3LeafMatcher, _lenfield
from whoosh.matching.wrappers import FilterMatcher
from whoosh.query.qcore import _NullQuery
from whoosh.scoring import bm25
from whoosh.util.numeric import byte_to_length

__all__ = ["Ranker"]

B = 0.75
K1 = 1.2

_LENGTHS = [byte_to_length(b) for b in range(256)]


class Ranker:
    """Matches and scores queries on one open whoosh searcher (read-only, not thread-safe).

    ``within`` confines everything to those documents: posting blocks holding none of them are
    skipped unread, so a query over a few traces' steps costs little in a large index.
    """

    def __init__(self, searcher: Any, within: set[int] | None = None) -> None:
        self.searcher = searcher
        self.reader = searcher.reader()
        self.schema = self.reader.schema
        self.leaves: list[tuple[Any, int]] = self.reader.leaf_readers()
        self.size = self.reader.doc_count_all()
        self.within = within
        # per leaf: the leaf's own numbers of the documents within, sorted
        self._local = None if within is None else [
            sorted(d - offset for d in within if offset <= d < offset + leaf.doc_count_all())
            for leaf, offset in self.leaves]  # (within is small: a page of traces' steps)
        self._postings: dict[tuple[str, bytes], tuple[list[int], list[float]]] = {}
        self._lengths: dict[str, bytes] = {}
        self._deleted: set[int] | None = None

    # -- matching -----------------------------------------------------------------------------

    def docs(self, q: Any) -> set[int]:
        """The live documents matching ``q``."""
        found = self._docs(q) - self.deleted()
        return found if self.within is None else found & self.within

    def _universe(self) -> set[int]:
        return set(range(self.size)) if self.within is None else set(self.within)

    def deleted(self) -> set[int]:
        if self._deleted is None:
            self._deleted = {offset + d for leaf, offset in self.leaves
                             for d in leaf.deleted_docs_set}
        return self._deleted

    def _docs(self, q: Any, known: set[int] | frozenset[int] = frozenset()) -> set[int]:
        """Documents matching ``q``; those in ``known`` (already matched) may be left out."""
        if isinstance(q, query.Term):
            return set(self.postings(q.fieldname, q.text)[0])
        if isinstance(q, query.And | query.Require):
            positive = [s for s in q.subqueries if not isinstance(s, query.Not)]
            negative = [s.query for s in q.subqueries if isinstance(s, query.Not)]
            found: set[int] | None = None
            for sub in sorted(positive, key=self._cheap_first):
                found = self._docs(sub) if found is None else found & self._docs(sub)
                if not found:
                    return set()
            if found is None:
                found = self._universe()
            for sub in negative:
                found -= self._docs(sub)
            return found
        if isinstance(q, query.Or | query.DisjunctionMax):
            union: set[int] = set()
            # Phrases last: a document another branch matched needs no position check.
            for sub in sorted(q.subqueries, key=lambda s: isinstance(s, query.Phrase)):
                union |= self._docs(sub, known=union)
            return union
        if isinstance(q, query.Not):
            return self._universe() - self._docs(q.query)
        if isinstance(q, query.AndNot):
            return self._docs(q.a) - self._docs(q.b)
        if isinstance(q, query.AndMaybe):
            return self._docs(q.a)
        if isinstance(q, query.ConstantScoreQuery):
            return self._docs(q.child)
        if isinstance(q, query.Every):
            return self._universe()
        if isinstance(q, _NullQuery):
            return set()
        if isinstance(q, query.NumericRange):  # terms of several precisions, as whoosh does
            return self._docs(q._compile_query(self.reader))
        if isinstance(q, query.MultiTerm):  # prefixes, wildcards, term ranges
            return set().union(*(self.postings(q.field(), t)[0]
                                 for t in q._btexts(self.reader)))
        if isinstance(q, query.Phrase) and self._positional(q.fieldname):
            return self._phrase(q, known)
        # Anything else: whoosh's own matcher decides.
        found = set(self.searcher.docs_for_query(q))
        return found if self.within is None else found & self.within

    def _positional(self, field: str) -> bool:
        return field in self.schema and self.schema[field].format.supports("positions")

    def _phrase(self, q: Any, known: set[int] | frozenset[int]) -> set[int]:
        """Documents holding the phrase's words in order, each within ``slop`` of the last."""
        found: set[int] | None = None
        for word in q.words:
            docs = set(self.postings(q.fieldname, word)[0])
            found = docs - known if found is None else found & docs
            if not found:
                return set()
        if found is None or len(q.words) < 2:
            return found or set()
        lists = [self._positions(q.fieldname, word, found) for word in q.words]
        return {d for d in found if _in_sequence([p[d] for p in lists], q.slop)}

    def _positions(self, field: str, text: str | bytes, docs: set[int]) -> dict[int, list[int]]:
        """Word positions of one term in each document of ``docs``."""
        btext = self._bytes(field, text)
        decode = self.schema[field].format.decoder("positions")
        found: dict[int, list[int]] = {}
        for leaf, offset in self.leaves:
            m = _open(leaf, field, btext)
            if m is None:
                continue
            if not isinstance(m, W3LeafMatcher):
                while m.is_active():
                    if offset + m.id() in docs:
                        found[offset + m.id()] = decode(m.value())
                    m.next()
                continue
            end = offset + leaf.doc_count_all()
            local = sorted(d - offset for d in docs if offset <= d < end)
            for _ in _blocks(m, local):
                m._read_ids()
                m._read_values()
                for d, value in zip(m._ids, m._values, strict=True):
                    if offset + d in docs:
                        found[offset + d] = decode(value)
        return found

    def _bytes(self, field: str, text: str | bytes) -> bytes:
        """A term's text as the index stores it."""
        return text if isinstance(text, bytes) else self.schema[field].to_bytes(text)

    @staticmethod
    def _cheap_first(q: Any) -> int:
        return 0 if isinstance(q, query.Term) else 1

    def postings(self, field: str, text: str | bytes) -> tuple[list[int], list[float]]:
        """(global document numbers, weights) of one term, in document order."""
        btext = self._bytes(field, text)
        key = (field, btext)
        cached = self._postings.get(key)
        if cached is not None:
            return cached
        ids: list[int] = []
        weights: list[float] = []
        for n, (leaf, offset) in enumerate(self.leaves):
            local = None if self._local is None else self._local[n]
            m = None if local == [] else _open(leaf, field, btext)
            if m is None:
                continue
            if not isinstance(m, W3LeafMatcher):
                while m.is_active():
                    if local is None or offset + m.id() in self.within:  # type: ignore[operator]
                        ids.append(offset + m.id())
                        weights.append(m.weight())
                    m.next()
                continue
            for _ in _blocks(m, local):
                m._read_ids()
                m._read_weights()
                if local is None:
                    ids.extend([offset + d for d in m._ids] if offset else m._ids)
                    weights.extend(m._weights)
                    continue
                for d, w in zip(m._ids, m._weights, strict=True):
                    if offset + d in self.within:  # type: ignore[operator]
                        ids.append(offset + d)
                        weights.append(w)
        self._postings[key] = (ids, weights)
        return ids, weights

    # -- scoring ------------------------------------------------------------------------------

    def scores(self, q: Any, docs: set[int]) -> dict[int, float]:
        """BM25F score of each document of ``docs`` for ``q`` (the sum over its scored terms)."""
        scores = dict.fromkeys(docs, 0.0)
        for field, text, boost in self.leaf_terms(q):
            ids, weights = self.postings(field, text)
            if not ids:
                continue
            if not self.schema[field].scorable:  # a facet term: its weight, as whoosh gives
                for d, w in zip(ids, weights, strict=True):
                    if d in scores:
                        scores[d] += boost * w
                continue
            idf = self.searcher.idf(field, self._bytes(field, text))
            average = self.searcher.avg_field_length(field) or 1
            memo: dict[tuple[float, int], float] = {}
            lengths = self._length_bytes(field)
            for d, w in zip(ids, weights, strict=True):
                if d not in scores:
                    continue
                key = (w, lengths[d])
                s = memo.get(key)
                if s is None:
                    s = memo[key] = boost * bm25(idf, w, _LENGTHS[key[1]], average, B, K1)
                scores[d] += s
        return scores

    def leaf_terms(self, q: Any, boost: float = 1.0) -> list[tuple[str, str | bytes, float]]:
        """(field, text, boost) of every term whose presence adds to a document's score."""
        boost *= getattr(q, "boost", 1.0)
        if isinstance(q, query.Term):
            return [(q.fieldname, q.text, boost)] if q.fieldname in self.schema else []
        if isinstance(q, query.Not | query.ConstantScoreQuery | _NullQuery | query.Every):
            return []
        if isinstance(q, query.AndNot):
            return self.leaf_terms(q.a, boost)
        if isinstance(q, query.Phrase):
            return [(q.fieldname, w, boost) for w in q.words]
        if isinstance(q, query.MultiTerm):
            field = q.field()
            if field not in self.schema:
                return []
            return [(field, t, boost) for t in sorted(set(q._btexts(self.reader)))]
        if isinstance(q, query.CompoundQuery):
            return [t for s in q.subqueries for t in self.leaf_terms(s, boost)]
        return []

    def _length_bytes(self, field: str) -> bytes:
        """Each document's field length as whoosh stores it (one byte per document)."""
        found = self._lengths.get(field)
        if found is None:
            parts = []
            for leaf, _offset in self.leaves:
                column = leaf._perdoc._cached_reader(_lenfield(field), LENGTHS_COLUMN)
                count = leaf.doc_count_all()
                if column is None:
                    parts.append(bytes(count))
                else:  # the column ends at the last document that has the field
                    held = column._dbfile.get(column._basepos, min(column._count, count))
                    parts.append(held + bytes(count - len(held)))
            found = self._lengths[field] = b"".join(parts)
        return found

    # -- per document -------------------------------------------------------------------------

    def values(self, field: str, docs: Iterable[int]) -> dict[int, Any]:
        """Each document's value of a sortable field, read segment by segment: whoosh's
        multi-segment column reader misplaces documents when one segment lacks the column."""
        starts = [offset for _, offset in self.leaves]
        columns: dict[int, Any] = {}
        found: dict[int, Any] = {}
        for d in docs:
            n = bisect_right(starts, d) - 1
            column = columns.get(n)
            if column is None:
                column = columns[n] = self.leaves[n][0].column_reader(field)
            found[d] = column[d - starts[n]]
        return found

    def matched_terms(self, q: Any, docnum: int) -> dict[str, set[str]]:
        """The scored terms of ``q`` that document ``docnum`` contains, by field."""
        found: dict[str, set[str]] = {}
        for field, text, _boost in self.leaf_terms(q):
            ids = self.postings(field, text)[0]
            i = bisect_left(ids, docnum)
            if i < len(ids) and ids[i] == docnum:
                word = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
                found.setdefault(field, set()).add(word)
        return found


def _blocks(m: W3LeafMatcher, local: list[int] | None) -> Iterator[None]:
    """Moves ``m`` to each of its posting blocks that may hold one of ``local`` (sorted, the
    leaf's own numbers; every block when None). Only the headers of the others are read."""
    low = 0
    while not m._atend:
        high = m._maxid
        if local is None or ((i := bisect_left(local, low)) < len(local) and local[i] <= high):
            yield None
        if m._lastblock:
            return
        low = high + 1
        m._goto(m._nextoffset)


def _open(leaf: Any, field: str, btext: bytes) -> Any | None:
    """A term's postings in one segment (None when the segment lacks the term), without the
    filter that hides deleted documents: :meth:`Ranker.docs` removes those once, from the final
    set, and nothing outside it is scored."""
    if (field, btext) not in leaf:
        return None
    m = leaf.postings(field, btext)
    return m.child if isinstance(m, FilterMatcher) else m


def _in_sequence(positions: list[list[int]], slop: int) -> bool:
    """Whether one position can be taken from each list in order, each after the previous by
    at most ``slop`` (the earliest such next position is always the best choice)."""
    for start in positions[0]:
        previous = start
        for later in positions[1:]:
            i = bisect_right(later, previous)
            if i == len(later) or later[i] - previous > slop:
                break
            previous = later[i]
        else:
            return True
    return False

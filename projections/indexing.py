"""Writing whoosh indexes fast: fused text analysis, and segments written by a second process.

Three costs dominated building the search index, all inside whoosh's pure-Python writer:

- analysis: whoosh indexes a value through one generator per filter and a token object per
  word. :class:`FusedText` runs the same ``tokenizer | lowercase | stop [| stem]`` steps in one
  loop with a stem cache and hands the writer the same terms, frequencies, weights and encoded
  positions (``tests/test_search_index.py`` compares them with the analyzer's own on corpus
  text). Queries still run through the field's analyzer, which is unchanged.
- the writer's bookkeeping per posting: :func:`add_document` hands a document's postings to
  the pool as one list, whose runs (a large build spills to disk) are written with ``marshal``
  in blocks instead of one ``pickle`` call per posting, and the segment's postings read each
  document's field length once, not once per term (:func:`fast_writer`).
- one writer per index on one core: a child process (:func:`start_child`) writes whole
  segments for part of the documents, which the parent adds to the indexes it commits
  (:func:`commit_segments`), as whoosh's own multiprocessing writer does without merging.

All three use whoosh3 internals (the version is pinned in ``pyproject.toml``, like ``ranking``'s).
This module imports whoosh, so it is imported only when an index is written or read.
"""

from __future__ import annotations

import importlib
import marshal
import pickle
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from whoosh import analysis, fields, formats
from whoosh.writing import PostingPool, SegmentWriter

__all__ = ["FusedText", "add_document", "child_result", "close_own", "commit_segments",
           "fast_writer", "finish_segment", "segment_writer", "start_child"]

#: Stems kept in memory; the vocabulary of a large build is well within it.
STEM_CACHE = 200_000
#: Postings per ``marshal`` block of a spilled run.
RUN_BLOCK = 50_000
#: What whoosh's pool counts for a posting besides its field name, term and value bytes.
POSTING_OVERHEAD = 150

_Posting = tuple[str, bytes, int, float, "bytes | None"]

_Plan = tuple[re.Pattern[str], frozenset[str], int, "Callable[[str], str] | None"]


def _plan(analyzer: Any) -> _Plan | None:
    """The parts of a ``tokenizer | lowercase | stop [| stem]`` chain; None for any other
    (which then indexes through the chain itself)."""
    items = list(getattr(analyzer, "items", ()))
    kinds = [type(i) for i in items]
    if kinds[:3] != [analysis.RegexTokenizer, analysis.LowercaseFilter, analysis.StopFilter]:
        return None
    tokenizer, _, stop = items[:3]
    if tokenizer.gaps or stop.max is not None or not stop.renumber:
        return None
    if kinds[3:] == []:
        return tokenizer.expression, stop.stops, stop.min, None
    if kinds[3:] == [analysis.StemFilter] and not items[3].ignore and not items[3].lang:
        return tokenizer.expression, stop.stops, stop.min, items[3].stemfn
    return None


class FusedText(fields.TEXT):
    """A TEXT field that indexes plain strings in one pass (see the module's docstring)."""

    _stems: dict[str, str] = {}  # noqa: RUF012 (shared by every field: one stemmer)

    def index(self, value: Any, **kwargs: Any) -> Iterator[tuple[bytes, int, float, bytes]]:
        plan = self.__dict__.get("_fused_plan", False)
        if plan is False:
            plan = self._fused_plan = _plan(self.analyzer)
        fmt = self.format
        if (plan is None or kwargs or not isinstance(value, str)
                or type(fmt) not in (formats.Positions, formats.Frequency)):
            return super().index(value, **kwargs)
        return self._index(value, plan, fmt)

    def _index(self, value: str, plan: _Plan, fmt: Any
               ) -> Iterator[tuple[bytes, int, float, bytes]]:
        pattern, stops, minsize, stem = plan
        words = [m.group(0).lower() for m in pattern.finditer(value)]
        first = next((i for i, w in enumerate(words) if len(w) >= minsize and w not in stops),
                     None)
        if first is None:
            return iter(())
        kept = [w for w in words[first:] if len(w) >= minsize and w not in stops]
        if stem is not None:
            cache = self._stems
            if len(cache) > STEM_CACHE:
                cache.clear()
            for i, w in enumerate(kept):
                s = cache.get(w)
                if s is None:
                    s = cache[w] = stem(w)
                kept[i] = s
        boost = fmt.field_boost
        if type(fmt) is formats.Frequency:
            counts: dict[str, int] = {}
            for w in kept:
                counts[w] = counts.get(w, 0) + 1
            return ((w.encode("utf-8"), n, float(n) * boost, formats.pack_uint(n))
                    for w, n in counts.items())
        # A stop filter that renumbers keeps the first kept word's position, then counts on.
        positions: dict[str, list[int]] = {}
        for pos, w in enumerate(kept, first):
            positions.setdefault(w, []).append(pos)
        encode = fmt.encode
        return ((w.encode("utf-8"), len(p), float(len(p)) * boost, encode(p))
                for w, p in positions.items())

    def __getstate__(self) -> dict[str, Any]:
        # The plan holds a function; it is derived again after unpickling.
        return {k: v for k, v in self.__dict__.items() if k != "_fused_plan"}


class _Pool(PostingPool):
    """whoosh's posting pool, taking a document's postings at once and spilling them in
    ``marshal`` blocks; runs sort and merge exactly as whoosh's do."""

    def add_many(self, postings: list[_Posting], size: int) -> None:
        self.fieldnames.update({p[0] for p in postings})
        self.currentsize += size
        if self.currentsize > self.limit:
            self.save()
        self.current.extend(postings)

    def _write_run(self, f: Any, items: list[_Posting]) -> None:
        for start in range(0, len(items), RUN_BLOCK):
            f.write(marshal.dumps(items[start:start + RUN_BLOCK]))
        f.close()

    def _read_run(self, path: str) -> Iterator[_Posting]:
        f = self._open_run(path)
        try:
            while True:
                try:
                    block = marshal.load(f)
                except EOFError:
                    return
                yield from block
        finally:
            f.close()
            self._remove_run(path)


class _Lengths:
    """A segment's per-document reader whose field lengths are read once per document: the
    postings are sorted by term, so whoosh asks for the same document's length per term."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def doc_field_length_reader(self, fieldname: str, default: int = 0) -> Callable[[int], int]:
        read = self._reader.doc_field_length_reader(fieldname, default)
        cache: dict[int, int] = {}

        def get(docnum: int) -> int:
            length = cache.get(docnum)
            if length is None:
                length = cache[docnum] = read(docnum)
            return length
        return get


def fast_writer(writer: Any) -> Any:
    """``writer`` (a whoosh ``SegmentWriter`` with nothing added yet) with the pool and length
    reads of the module's docstring; whoosh's own methods keep working."""
    pool = _Pool(writer._tempstorage, writer.newsegment, limitmb=writer.pool.limit >> 20)
    writer.pool.cleanup()
    writer.pool = pool
    per_document_reader = writer.per_document_reader
    writer.per_document_reader = lambda: _Lengths(per_document_reader())
    return writer


def _plain(schema: Any) -> bool:
    """Whether no field of ``schema`` has term vectors or a separate spelling field, which
    :func:`add_document` leaves to whoosh."""
    plain = schema.__dict__.get("_opentraces_plain")
    if plain is None:
        plain = schema._opentraces_plain = not any(
            f.vector or f.separate_spelling() for _, f in schema.items())
    return plain


def add_document(writer: Any, doc: dict[str, Any]) -> None:
    """``writer.add_document(**doc)`` for a :func:`fast_writer`: the same postings, lengths,
    stored values and columns (documents with boosts, and schemas with vectors or spelling,
    go through whoosh's method)."""
    schema = writer.schema
    if not isinstance(writer.pool, _Pool) or not _plain(schema) or any(
            k.startswith("_") for k in doc):
        writer.add_document(**doc)
        return
    writer._check_state()
    writer._check_fields(schema, doc)
    per, docnum = writer.perdocwriter, writer.docnum
    postings: list[_Posting] = []
    size = 0
    per.start_doc(docnum)
    try:
        for name in sorted(doc):
            value = doc[name]
            if value is None:
                continue
            field = schema[name]
            length = 0
            if field.indexed:
                n = len(postings)
                if field.scorable:
                    for text, freq, weight, vbytes in field.index(value):
                        length += freq
                        postings.append((name, text, docnum, weight * 1.0, vbytes))
                else:
                    postings += [(name, text, docnum, weight * 1.0, vbytes)
                                 for text, _, weight, vbytes in field.index(value)]
                size += (POSTING_OVERHEAD + len(name)) * (len(postings) - n) + sum(
                    2 * len(p[1]) + len(p[4] or b"") for p in postings[n:])
            per.add_field(name, field, value if field.stored else None, length)
            if field.column_type:
                per.add_column_value(name, field.column_type, field.to_column_value(value))
    except ValueError:
        per.cancel_doc()
        raise
    per.finish_doc()
    writer.pool.add_many(postings, size)
    writer._added = True
    writer.docnum += 1


def segment_writer(ix: Any, limitmb: int) -> Any:
    """A writer for a child process: it takes no lock (the parent holds it) and its segment
    is handed back by :func:`finish_segment`, not committed."""
    return fast_writer(SegmentWriter(ix, _lk=False, limitmb=limitmb, compound=False))


def finish_segment(writer: Any) -> Any:
    """Write out a :func:`segment_writer`'s segment and return it (picklable)."""
    return writer._finalize_segment()


def close_own(writer: Any) -> list[Any]:
    """Write out ``writer``'s documents as its segment; the index's segments after the merge
    policy, ready for :func:`commit_segments`."""
    final = writer._merge_segments(None, None, None)
    if writer._added:
        final.append(writer._finalize_segment())
    else:
        writer._close_segment()
    return final


def commit_segments(writer: Any, final: list[Any], segments: list[Any]) -> None:
    """Commit a :func:`close_own` writer with ``segments`` (written by other processes) after
    its own, in that order, so document numbers run as if one writer had added them all."""
    writer._commit_toc([*final, *segments])
    writer._finish()


def start_child(function: str, *args: Any) -> subprocess.Popen[bytes]:
    """Call ``module:function(*args)`` in a fresh interpreter; :func:`child_result` waits for
    its return value. Not multiprocessing: its spawn start re-runs the caller's main script,
    which a script using the library need not guard, and fork copies open connections."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from {__name__} import child_main; child_main()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(pickle.dumps((function, args)))
    return proc


def child_result(proc: subprocess.Popen[bytes]) -> Any:
    """The return value of a :func:`start_child` call; its failure (already reported on
    stderr) raises."""
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"index writer process failed (exit {proc.returncode})")
    return pickle.loads(out)


def child_main() -> None:
    function, args = pickle.loads(sys.stdin.buffer.read())
    module, name = function.split(":")
    result = getattr(importlib.import_module(module), name)(*args)
    sys.stdout.buffer.write(pickle.dumps(result))

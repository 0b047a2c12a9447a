"""The contract between the importer and the per-agent adapters.

An adapter turns one agent's transcript files into events. It is pure: it never touches the
store, and what it emits for a line depends only on that line and the lines before it in the
same file. That rule is what makes incremental import exact: to resume a file at byte offset N,
the importer replays the lines before N through a fresh parser (discarding what it emits) and
keeps only the events of the new lines, which are the same events a full import would emit.

Consequences for adapters:
- Never buffer a step waiting for a later line. Emit :class:`~opentraces.events.StepRecorded`
  at the first line of a response and :class:`~opentraces.events.StepExtended` for later lines
  of the same response (Claude Code writes one content block per line). An extension's text
  carries its own separator (``"\n\n"`` when the step already has text): readers just append.
- Never emit "no result" for a tool call: whether a result arrives is only known at the end;
  the traces projection marks calls without a result.
- Step indexes are dense, start at 0 and follow file order; a tool result is attached to the
  step that made the call (``ToolResultRecorded.step_index``).

Blob references inside free-form dicts (``detail``, ``data``) must be findable by
:func:`opentraces.blobs.blob_refs`, or prune would delete the blob: store them as
``msgspec.to_builtins(ref)`` or as the hash under a key named ``blob`` or ending in ``_blob``.

``TokenUsage.input_tokens`` counts input tokens *not* read from the cache; cache reads go in
``cache_read_tokens`` (Anthropic's convention; OpenAI's ``input_tokens`` include cached ones
and are converted).

The importer writes ``SessionStarted`` (from :class:`SessionRef`) and the
``SourceSegmentRead``/``SourceLineRejected`` bookkeeping itself; adapters emit everything else.

Whole documents. An agent that keeps a session as ONE JSON document rewritten in place (Gemini
CLI's ``chats/session-*.json``) cannot be read line by line or resumed at a byte offset. Its
adapter is also a :class:`DocumentAdapter`: files matching ``document_glob`` are decoded whole
and cut by ``split`` into a header and a list of items (messages) that only grows at its end
while the session goes on. The parser is fed the header, then each item, as if they were lines
(``LineRef.number`` is 0 for the header and the item's 1-based position for an item; offsets are
0), so the replay rule above holds with items for lines. One exception the agent forces: the
LAST item already read may be revised in place (a response gaining its tool results or token
counts). The importer then replays the old version and feeds the new one again, and the parser
must treat an item with the same ``item_key`` as a revision of the earlier one (extensions, no
second step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from opentraces.events import BlobRef, Event, MetadataRecorded, TokenUsage, trace_id_for
from opentraces.text import safe_value

#: Text longer than this is kept whole in a blob; the event keeps the first INLINE_CHARS.
#: (Large events are stored compressed, so this bounds event size, not store size.)
INLINE_CHARS = 16000


@dataclass(frozen=True)
class SessionRef:
    """Which session (trace) a file belongs to, known from its path and first record."""

    agent: str
    session_id: str
    path: Path
    parent_session_id: str | None = None
    is_subagent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trace_id(self) -> str:
        return trace_id_for(self.agent, self.session_id)

    @property
    def parent_trace_id(self) -> str | None:
        if self.parent_session_id is None:
            return None
        return trace_id_for(self.agent, self.parent_session_id)


@dataclass(frozen=True)
class LineRef:
    """Where a record came from: 1-based line number and byte offset of the line start."""

    number: int
    offset: int


class Context:
    """What a parser may use besides its input: the blob store, through one callable."""

    def __init__(self, put_blob: Callable[[bytes, str], BlobRef]) -> None:
        self._put_blob = put_blob

    def blob(self, data: bytes, media_type: str) -> BlobRef:
        return self._put_blob(data, media_type)

    def text(self, text: str) -> tuple[str, BlobRef | None, int]:
        """(inline text, blob of the whole text if it was cut, full length in characters)."""
        if len(text) <= INLINE_CHARS:
            return text, None, len(text)
        whole = text.encode("utf-8", "backslashreplace")
        return text[:INLINE_CHARS], self.blob(whole, "text/plain; charset=utf-8"), len(text)


class Parser(Protocol):
    """Turns the decoded records of one file, in order, into events."""

    def feed(self, record: Any, line: LineRef) -> list[Event]:
        """Events for one decoded JSON value (a dict for every format seen so far)."""
        ...


class Adapter(Protocol):
    """One agent's transcript format."""

    agent: ClassVar[str]

    def default_roots(self, home: Path) -> list[Path]:
        """Where this agent keeps transcripts under a home folder (may not exist)."""
        ...

    def discover(self, root: Path) -> Iterator[Path]:
        """Transcript files under ``root`` (a folder) in a stable order."""
        ...

    def identify(self, path: Path, first_record: Any | None) -> SessionRef | None:
        """The session a file belongs to, or None if the file is not this agent's transcript.

        ``first_record`` is the decoded first line (None for an empty file or an undecodable
        first line).
        """
        ...

    def parser(self, ref: SessionRef, ctx: Context) -> Parser:
        """A fresh parser for one file."""
        ...


def clean(value: Any) -> Any:
    """Make decoded JSON storable (lone surrogates escaped); apply to dicts kept in events."""
    return safe_value(value)


def non_object(record: Any) -> MetadataRecorded:
    """What a line whose JSON value is not an object becomes: its type is kept, not its value."""
    return MetadataRecorded(record_type="non_object", data={"json_type": type(record).__name__})


def usage(input_tokens: Any = 0, output_tokens: Any = 0, cache_read: Any = 0,
          cache_write: Any = 0) -> TokenUsage:
    """A TokenUsage from loosely typed numbers (missing or null count as 0)."""
    return TokenUsage(input_tokens=int(input_tokens or 0), output_tokens=int(output_tokens or 0),
                      cache_read_tokens=int(cache_read or 0),
                      cache_write_tokens=int(cache_write or 0))


class DocumentAdapter(Adapter, Protocol):
    """An adapter some of whose transcripts are whole JSON documents (see the module docstring)."""

    #: Files (by name, e.g. ``"*.json"``) read as whole documents; other files are read by line.
    document_glob: ClassVar[str]

    def split(self, document: Any) -> tuple[Any, list[Any]]:
        """(header, items) of a document that ``identify`` accepted."""
        ...

    def item_key(self, item: Any) -> Any:
        """What makes an item the same item when revised (e.g. its id); None for no identity."""
        ...

    def refusal(self, path: Path, document: Any) -> str | None:
        """Why a decoded document that ``identify`` refused is this agent's file and still not
        captured (None: not this agent's file at all)."""
        ...

    def identify_partial(self, path: Path, data: bytes) -> SessionRef | None:
        """The session of a document that does not decode (caught half-written), if what can be
        read of it names one."""
        ...


def is_document(ad: Adapter, path: Path) -> bool:
    """Whether ``ad`` reads ``path`` as a whole document."""
    glob = getattr(ad, "document_glob", None)
    return isinstance(glob, str) and path.match(glob)

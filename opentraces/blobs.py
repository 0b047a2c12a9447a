"""Content-addressed blob store: large content lives here, events hold :class:`BlobRef`\\ s.

Invariants:
- A blob's name is the blake3 hex digest of its *uncompressed* content; it is stored
  compressed (:mod:`opentraces.packing`) and never rewritten once present: a blob of
  :data:`LARGE_BYTES` or more as a file ``<root>/<2 hex>/<2 hex>/<hash>``, a smaller one as a
  row of the pack ``<root>/pack.sqlite`` (one file for thousands of small blobs: patch contents,
  long texts; a file each would cost a folder, a file and a rename per blob).
- Writes are atomic: temp file in the same folder, fsync, rename, fsync the folder; a pack row
  is committed in a SQLite transaction (rollback journal, ``synchronous=FULL``). A crash leaves
  either no blob or a whole one (stray temp files are ignored and pruned).
- A store opened with ``defer_sync=True`` (bulk import) skips the per-blob syncs and keeps
  small blobs in memory until one pack transaction; its owner calls :meth:`BlobStore.sync`
  before committing any event that references those blobs. Such a store also compresses and
  writes large blobs on one background thread (zstd releases the
  GIL, so this overlaps with parsing on another core); :meth:`BlobStore.sync` waits for them
  first, so "synced" still means written and durable, and their errors surface there.
- :meth:`BlobStore.verify` re-hashes content; it never trusts the file name.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blake3
import msgspec

from opentraces import packing
from opentraces.errors import BlobCorrupt, BlobMissing
from opentraces.events import BlobRef

TEMP_PREFIX = ".tmp-"
#: Blobs at least this large are files (written in the background by a deferred-sync store);
#: smaller ones are rows of the pack.
LARGE_BYTES = 256 * 1024
PACK_FILE = "pack.sqlite"
# A rowid table with 8 KiB pages: blobs spill into overflow pages, which WITHOUT ROWID tables
# and small pages fill poorly (measured on imported patch contents: 1.26x the payload, against
# 2.4x for WITHOUT ROWID on 4 KiB pages).
PACK_PAGE_SIZE = 8192
PACK_SCHEMA = ("CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, data BLOB NOT NULL, "
               "created REAL NOT NULL)")


def blob_hash(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


class VerifyReport(msgspec.Struct, frozen=True):
    blobs_checked: int
    corrupt: list[str]
    unreadable: list[str]


class PruneReport(msgspec.Struct, frozen=True):
    hashes: list[str]
    bytes: int
    temp_files: int


class BlobStore:
    """Blobs under one root folder."""

    def __init__(self, root: Path, *, defer_sync: bool = False) -> None:
        self.root = root
        self._unsynced: list[Path] | None = [] if defer_sync else None
        self._folders: set[Path] = set()  # folders known to exist (saves a mkdir per blob)
        self._pending: dict[str, Future[None]] = {}  # background writes not yet waited for
        self._worker: ThreadPoolExecutor | None = None
        self._unpacked: dict[str, bytes] = {}  # small blobs (compressed) awaiting sync()
        self._pack_rw: sqlite3.Connection | None = None
        self._pack_ro: sqlite3.Connection | None = None

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes, media_type: str = "application/octet-stream",
            *, local_only: bool = False) -> BlobRef:
        """Store ``data`` (if not already present) and return its reference."""
        digest = blob_hash(data)
        if not self.has(digest):
            if len(data) < LARGE_BYTES:
                self._unpacked[digest] = packing.compress(data)
                if self._unsynced is None:
                    self._flush_pack()
            elif self._unsynced is not None:
                if self._worker is None:
                    self._worker = ThreadPoolExecutor(1, thread_name_prefix="blob-writer")
                self._pending[digest] = self._worker.submit(self._compress_write,
                                                            self.path_for(digest), data)
            else:
                self._write_atomic(self.path_for(digest), packing.compress(data))
        return BlobRef(hash=digest, size=len(data), media_type=media_type, local_only=local_only)

    def get(self, digest: str) -> bytes:
        """The content of a blob.

        Raises:
            BlobMissing: the blob is not in this store.
            BlobCorrupt: the file does not decompress.
        """
        self._wait(digest)
        path = self.path_for(digest)
        try:
            packed = path.read_bytes()
        except FileNotFoundError as e:
            found = self._packed(digest)
            if found is None:
                raise BlobMissing(f"blob {digest} is not in {self.root}",
                                  next_command="opentraces bucket verify") from e
            packed, path = found, self.root / PACK_FILE
        try:
            return packing.decompress(packed)
        except packing.CorruptData as e:
            raise BlobCorrupt(f"blob {digest} at {path} does not decompress: {e}",
                              next_command="opentraces bucket verify") from e

    def has(self, digest: str) -> bool:
        return (digest in self._pending or digest in self._unpacked
                or bool(self._pack_query("SELECT 1 FROM blobs WHERE hash = ?", (digest,)))
                or self.path_for(digest).exists())

    def hashes(self) -> Iterator[str]:
        """Every stored blob name (files and pack rows; temp files excluded), sorted."""
        if not self.root.exists():
            return
        files = []
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                files.extend(b.name for b in second.iterdir()
                             if not b.name.startswith(TEMP_PREFIX))
        packed = self._pack_query("SELECT hash FROM blobs")
        yield from sorted({*files, *(row[0] for row in packed)})

    def size_on_disk(self, digest: str) -> int:
        self._wait(digest)
        try:
            return self.path_for(digest).stat().st_size
        except FileNotFoundError:
            found = self._packed(digest)
            if found is None:
                raise
            return len(found)

    def verify(self, digests: Iterator[str] | None = None) -> VerifyReport:
        """Re-hash blobs (all of them, or the given ones) and report those that disagree."""
        corrupt: list[str] = []
        unreadable: list[str] = []
        checked = 0
        for digest in digests if digests is not None else self.hashes():
            checked += 1
            try:
                content = self.get(digest)
            except BlobCorrupt:
                unreadable.append(digest)
                continue
            except BlobMissing:
                unreadable.append(digest)
                continue
            if blob_hash(content) != digest:
                corrupt.append(digest)
        return VerifyReport(blobs_checked=checked, corrupt=corrupt, unreadable=unreadable)

    def prune(self, referenced: set[str], *, dry_run: bool,
              min_age_seconds: float = 0.0) -> PruneReport:
        """Delete blobs no event references (and stray temp files) older than the given age."""
        cutoff = time.time() - min_age_seconds
        created = dict(self._pack_query("SELECT hash, created FROM blobs"))
        doomed = [d for d in self.hashes() if d not in referenced and (
            created[d] if d in created else self.path_for(d).stat().st_mtime) <= cutoff]
        size = sum(self.size_on_disk(d) for d in doomed)
        temps = [t for t in self.root.glob(f"*/*/{TEMP_PREFIX}*") if t.stat().st_mtime <= cutoff]
        if not dry_run:
            packed = [(d,) for d in doomed if d in created]
            if packed:
                with self._pack_writer() as conn:
                    conn.executemany("DELETE FROM blobs WHERE hash = ?", packed)
            for digest in doomed:
                if digest not in created:
                    self.path_for(digest).unlink(missing_ok=True)
            for temp in temps:
                temp.unlink(missing_ok=True)
        return PruneReport(hashes=doomed, bytes=size, temp_files=len(temps))

    def sync(self) -> None:
        """Make every blob written since the last sync durable (deferred mode only)."""
        for digest in list(self._pending):
            self._wait(digest)
        self._flush_pack()
        if not self._unsynced:
            return
        pending, self._unsynced = self._unsynced, []
        if len(pending) > SYNCFS_THRESHOLD and _syncfs(self.root):
            return
        for path in pending:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in {p.parent for p in pending}:
            fsync_dir(folder)

    def close(self) -> None:
        """Close the pack connections (a deferred store should be synced first)."""
        for conn in (self._pack_rw, self._pack_ro):
            if conn is not None:
                conn.close()
        self._pack_rw = self._pack_ro = None

    # -- the pack -----------------------------------------------------------------------------

    def _flush_pack(self) -> None:
        """Commit the small blobs held in memory, in one durable transaction."""
        if not self._unpacked:
            return
        now = time.time()
        with self._pack_writer() as conn:
            conn.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)",
                             [(d, data, now) for d, data in self._unpacked.items()])
        self._unpacked.clear()

    @contextmanager
    def _pack_writer(self) -> Iterator[sqlite3.Connection]:
        if self._pack_rw is None:
            self.root.mkdir(parents=True, exist_ok=True)
            new = not (self.root / PACK_FILE).exists()
            conn = sqlite3.connect(self.root / PACK_FILE, isolation_level=None, timeout=30)
            conn.execute(f"PRAGMA page_size = {PACK_PAGE_SIZE}")  # only takes on a new file
            conn.execute("PRAGMA journal_mode = DELETE")  # readers then create no files
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(PACK_SCHEMA)
            if new:
                fsync_dir(self.root)  # the new file's name is durable too
            self._pack_rw = conn
        conn = self._pack_rw
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _pack_query(self, sql: str, args: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
        conn = self._pack_rw
        if conn is None:
            if self._pack_ro is None:
                path = self.root / PACK_FILE
                if not path.exists():
                    return []
                self._pack_ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            conn = self._pack_ro
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # created, schema not committed yet
                return []
            raise

    def _packed(self, digest: str) -> bytes | None:
        """A small blob's stored bytes: waiting for the next sync, or in the pack."""
        if digest in self._unpacked:
            return self._unpacked[digest]
        rows = self._pack_query("SELECT data FROM blobs WHERE hash = ?", (digest,))
        return rows[0][0] if rows else None  # type: ignore[return-value]

    def _wait(self, digest: str) -> None:
        future = self._pending.get(digest)
        if future is not None:
            try:
                future.result()
            finally:
                del self._pending[digest]

    def _compress_write(self, target: Path, data: bytes) -> None:
        self._write_atomic(target, packing.compress(data))

    def _write_atomic(self, target: Path, payload: bytes) -> None:
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        temp = target.parent / f"{TEMP_PREFIX}{target.name}-{os.getpid()}"
        with open(temp, "wb") as fh:
            fh.write(payload)
            if self._unsynced is None:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temp, target)
        if self._unsynced is None:
            fsync_dir(target.parent)
        else:
            self._unsynced.append(target)


#: Above this many pending blobs one syncfs(2) of the whole file system beats one fsync each.
SYNCFS_THRESHOLD = 32


def _syncfs(root: Path) -> bool:
    """syncfs(2) on the file system holding ``root``; False where it is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(root, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def blob_refs(value: object) -> Iterator[BlobRef]:
    """Every blob reference inside an event. Prune and verify trust this to find them all
    (and :func:`replace_blob_refs` rewrites the same forms):

    - :class:`BlobRef` fields, in nested structs and lists;
    - inside free-form dicts (``detail``, ``data``): a ``msgspec.to_builtins(ref)`` dict, or a
      hash string under a key named ``blob`` or ending in ``_blob``.
    """
    if isinstance(value, BlobRef):
        yield value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from blob_refs(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from blob_refs(item)
    elif isinstance(value, dict):
        if _is_hash(value.get("hash")) and isinstance(value.get("size"), int):
            yield BlobRef(hash=value["hash"], size=value["size"])
            return
        for key, item in value.items():
            if isinstance(key, str) and (key == "blob" or key.endswith("_blob")) \
                    and _is_hash(item):
                yield BlobRef(hash=item, size=0)
            else:
                yield from blob_refs(item)


def replace_blob_refs(value: Any, moved: dict[str, tuple[str, int]]) -> Any:
    """``value`` (an event, or part of one) with every reference :func:`blob_refs` finds to
    a hash in ``moved`` pointing at its new (hash, size); what holds none is returned as is."""
    if isinstance(value, BlobRef):
        if value.hash not in moved:
            return value
        digest, size = moved[value.hash]
        return msgspec.structs.replace(value, hash=digest, size=size)
    if isinstance(value, msgspec.Struct):
        changes = {f: new for f in value.__struct_fields__
                   if (new := replace_blob_refs(old := getattr(value, f), moved)) is not old}
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list | tuple):
        items = [replace_blob_refs(v, moved) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if _is_hash(value.get("hash")) and isinstance(value.get("size"), int):
            if value["hash"] not in moved:
                return value
            digest, size = moved[value["hash"]]
            return {**value, "hash": digest, "size": size}
        items = {k: moved[v][0] if isinstance(k, str) and (k == "blob" or k.endswith("_blob"))
                 and _is_hash(v) and v in moved else replace_blob_refs(v, moved)
                 for k, v in value.items()}
        return items if any(items[k] is not v for k, v in value.items()) else value
    return value


def _is_hash(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))

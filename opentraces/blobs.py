"""Content-addressed blob store: large content lives here, events hold :class:`BlobRef`\\ s.

Invariants:
- A blob's name is the blake3 hex digest of its *uncompressed* content; it is stored
  compressed (:mod:`opentraces.packing`) at ``<root>/<2 hex>/<2 hex>/<hash>`` and never
  rewritten once present.
- Writes are atomic: temp file in the same folder, fsync, rename, fsync the folder. A crash
  leaves either no blob or a whole one (stray temp files are ignored and pruned).
- A store opened with ``defer_sync=True`` (bulk import) skips the per-blob syncs; its owner
  calls :meth:`BlobStore.sync` before committing any event that references those blobs. Such
  a store also compresses and writes large blobs on one background thread (zstd releases the
  GIL, so this overlaps with parsing on another core); :meth:`BlobStore.sync` waits for them
  first, so "synced" still means written and durable, and their errors surface there.
- :meth:`BlobStore.verify` re-hashes content; it never trusts the file name.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3
import msgspec

from opentraces import packing
from opentraces.errors import BlobCorrupt, BlobMissing
from opentraces.events import BlobRef

TEMP_PREFIX = ".tmp-"
#: Blobs at least this large are written in the background by a deferred-sync store.
BACKGROUND_BYTES = 256 * 1024


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

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes, media_type: str = "application/octet-stream",
            *, local_only: bool = False) -> BlobRef:
        """Store ``data`` (if not already present) and return its reference."""
        digest = blob_hash(data)
        target = self.path_for(digest)
        if digest not in self._pending and not target.exists():
            if self._unsynced is not None and len(data) >= BACKGROUND_BYTES:
                if self._worker is None:
                    self._worker = ThreadPoolExecutor(1, thread_name_prefix="blob-writer")
                self._pending[digest] = self._worker.submit(self._compress_write, target, data)
            else:
                self._write_atomic(target, packing.compress(data))
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
            raise BlobMissing(f"blob {digest} is not in {self.root}",
                              next_command="opentraces bucket verify") from e
        try:
            return packing.decompress(packed)
        except packing.CorruptData as e:
            raise BlobCorrupt(f"blob {digest} at {path} does not decompress: {e}",
                              next_command="opentraces bucket verify") from e

    def has(self, digest: str) -> bool:
        return digest in self._pending or self.path_for(digest).exists()

    def hashes(self) -> Iterator[str]:
        """Every stored blob name (temp files excluded), in sorted order."""
        if not self.root.exists():
            return
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                for blob in sorted(second.iterdir()):
                    if not blob.name.startswith(TEMP_PREFIX):
                        yield blob.name

    def size_on_disk(self, digest: str) -> int:
        self._wait(digest)
        return self.path_for(digest).stat().st_size

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
        doomed = [d for d in self.hashes()
                  if d not in referenced and self.path_for(d).stat().st_mtime <= cutoff]
        size = sum(self.size_on_disk(d) for d in doomed)
        temps = [t for t in self.root.glob(f"*/*/{TEMP_PREFIX}*") if t.stat().st_mtime <= cutoff]
        if not dry_run:
            for digest in doomed:
                self.path_for(digest).unlink(missing_ok=True)
            for temp in temps:
                temp.unlink(missing_ok=True)
        return PruneReport(hashes=doomed, bytes=size, temp_files=len(temps))

    def sync(self) -> None:
        """Make every blob written since the last sync durable (deferred mode only)."""
        for digest in list(self._pending):
            self._wait(digest)
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
    """Every blob reference inside an event. Prune and verify trust this to find them all:

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


def _is_hash(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))

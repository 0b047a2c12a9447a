from __future__ import annotations

import os
import sqlite3
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from opentraces.blobs import LARGE_BYTES, PACK_FILE, BlobStore, blob_hash, blob_refs
from opentraces.errors import BlobCorrupt, BlobMissing
from opentraces.events import BlobRef, StepRecorded, ToolCall, ToolResultRecorded


def pack_rows(root: Path) -> dict[str, bytes]:
    with sqlite3.connect(root / PACK_FILE) as conn:
        return dict(conn.execute("SELECT hash, data FROM blobs"))


def set_pack_row(root: Path, digest: str, **columns: object) -> None:
    conn = sqlite3.connect(root / PACK_FILE)
    with conn:
        for name, value in columns.items():
            conn.execute(f"UPDATE blobs SET {name} = ? WHERE hash = ?", (value, digest))
    conn.close()


def test_put_get_roundtrip_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(root)
    small = b"tool output\n" * 500
    ref = store.put(small, "text/plain", local_only=True)
    assert ref == BlobRef(hash=blob_hash(small), size=len(small), media_type="text/plain",
                          local_only=True)
    assert not store.path_for(ref.hash).exists()  # small: a row of the pack, not a file
    assert len(pack_rows(root)[ref.hash]) < len(small)  # stored compressed
    large = os.urandom(LARGE_BYTES // 4) * 4
    big = store.put(large)
    path = root / big.hash[:2] / big.hash[2:4] / big.hash
    assert path.is_file() and big.hash not in pack_rows(root)
    assert path.stat().st_size < len(large)
    assert store.get(ref.hash) == small and store.get(big.hash) == large
    assert list(store.hashes()) == sorted([ref.hash, big.hash])
    assert store.size_on_disk(ref.hash) == len(pack_rows(root)[ref.hash])
    other = BlobStore(root)  # another process's view
    assert other.get(ref.hash) == small and other.has(big.hash)


def test_write_once_keeps_the_first_copy(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    ref = store.put(b"abc")
    set_pack_row(tmp_path, ref.hash, created=1.0)
    assert store.put(b"abc") == ref
    with sqlite3.connect(tmp_path / PACK_FILE) as conn:
        assert conn.execute("SELECT created FROM blobs").fetchall() == [(1.0,)]


def test_missing_blob_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlobMissing, match="is not in"):
        BlobStore(tmp_path).get("ab" * 32)
    BlobStore(tmp_path).put(b"x")  # with a pack present too
    with pytest.raises(BlobMissing, match="is not in"):
        BlobStore(tmp_path).get("ab" * 32)


@pytest.mark.parametrize("size", [10, LARGE_BYTES], ids=["pack", "file"])
def test_verify_rehashes_and_finds_tampering(tmp_path: Path, size: int) -> None:
    store = BlobStore(tmp_path)

    def tamper(digest: str, payload: bytes) -> None:
        if store.path_for(digest).exists():
            store.path_for(digest).write_bytes(payload)
        else:
            set_pack_row(tmp_path, digest, data=payload)

    def blob(label: bytes) -> bytes:
        return (label * size)[:max(size, len(label))]

    good = store.put(blob(b"good"))
    bad = store.put(blob(b"will be swapped"))
    tamper(bad.hash, zlib.compress(b"something else"))
    broken = store.put(blob(b"will be truncated"))
    tamper(broken.hash, b"\x00\x01")
    report = BlobStore(tmp_path).verify()
    assert report.blobs_checked == 3
    assert report.corrupt == [bad.hash]
    assert report.unreadable == [broken.hash]
    with pytest.raises(BlobCorrupt):
        store.get(broken.hash)
    assert store.get(good.hash) == blob(b"good")


def test_prune_deletes_only_unreferenced_and_old(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    keep = store.put(b"referenced")
    old = store.put(b"unreferenced and old")
    old_file = store.put(os.urandom(LARGE_BYTES))
    young = store.put(b"unreferenced and young")
    past = time.time() - 7200
    set_pack_row(tmp_path, old.hash, created=past)
    os.utime(store.path_for(old_file.hash), (past, past))
    temp = store.path_for(old_file.hash).parent / ".tmp-leftover"
    temp.write_bytes(b"partial")
    os.utime(temp, (past, past))

    dry = store.prune({keep.hash}, dry_run=True, min_age_seconds=3600)
    assert dry.hashes == sorted([old.hash, old_file.hash]) and dry.temp_files == 1
    assert store.has(old.hash) and store.has(old_file.hash) and temp.exists()

    done = store.prune({keep.hash}, dry_run=False, min_age_seconds=3600)
    assert done.hashes == sorted([old.hash, old_file.hash]) and done.bytes > LARGE_BYTES
    assert not store.has(old.hash) and not store.has(old_file.hash) and not temp.exists()
    assert store.has(keep.hash) and store.has(young.hash)
    assert sorted(pack_rows(tmp_path)) == sorted([keep.hash, young.hash])


def test_deferred_small_blobs_wait_in_memory_until_sync(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, defer_sync=True)
    refs = [store.put(f"small blob {i}".encode()) for i in range(100)]
    assert store.get(refs[5].hash) == b"small blob 5" and store.has(refs[7].hash)
    assert not (tmp_path / PACK_FILE).exists()  # nothing written before sync()
    store.sync()
    assert sorted(pack_rows(tmp_path)) == sorted(r.hash for r in refs)
    assert BlobStore(tmp_path).get(refs[99].hash) == b"small blob 99"


def test_reading_creates_no_files(tmp_path: Path) -> None:
    BlobStore(tmp_path).put(b"small")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    reader = BlobStore(tmp_path)
    assert list(reader.hashes()) and reader.verify().corrupt == []
    reader.close()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_blob_refs_finds_nested_references() -> None:
    a, b, c = (BlobRef(hash=h * 64, size=1) for h in "abc")
    event = StepRecorded(step_index=0, role="agent", content_blob=a, images=[b],
                         tool_calls=[ToolCall(tool_call_id="t", tool_name="Read", input_blob=c)])
    assert {r.hash for r in blob_refs(event)} == {a.hash, b.hash, c.hash}


def test_blob_refs_finds_references_inside_free_form_dicts() -> None:
    d, e = (BlobRef(hash=h * 64, size=2) for h in "de")
    f, g = "f" * 64, "0" * 64
    result = ToolResultRecorded(step_index=0, tool_call_id="t", detail={
        "blob": msgspec.to_builtins(d), "images": [msgspec.to_builtins(e)],
        "capped": {"blob": f, "size": 9}, "content_blob": g,
        "hash": "not a ref", "nested": {"size": 3}, "other": "1" * 64})
    assert [r.hash for r in blob_refs(result)] == [d.hash, e.hash, f, g]


def test_blobs_written_zlib_compressed_stay_readable(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"written by an earlier version\n" * 20
    path = store.path_for(blob_hash(data))
    path.parent.mkdir(parents=True)
    path.write_bytes(zlib.compress(data))
    assert store.get(blob_hash(data)) == data
    assert store.verify().corrupt == []


def test_deferred_store_writes_large_blobs_in_the_background(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", defer_sync=True)
    big = os.urandom(LARGE_BYTES // 2) * 3  # large, compressible, unique to this test
    small = b"small blob"
    refs = [store.put(big, local_only=True), store.put(small), store.put(big)]
    assert refs[0].hash == refs[2].hash and refs[0].size == len(big)
    assert store.has(refs[0].hash)  # pending or written, it is known
    assert store.get(refs[0].hash) == big  # a read waits for the background write
    store.sync()
    assert sorted(store.hashes()) == sorted({refs[0].hash, refs[1].hash})
    fresh = BlobStore(tmp_path / "blobs")  # what another process sees after sync
    assert fresh.get(refs[0].hash) == big and fresh.get(refs[1].hash) == small


def test_background_write_errors_surface_at_sync(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir()
    store = BlobStore(root, defer_sync=True)
    big = os.urandom(LARGE_BYTES)
    digest = blob_hash(big)
    (root / digest[:2]).write_bytes(b"")  # a file where the blob's folder must go
    store.put(big)
    with pytest.raises(OSError):
        store.sync()
    assert not store.has(digest)  # the failed write is not reported as stored

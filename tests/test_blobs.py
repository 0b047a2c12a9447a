from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from opentraces.blobs import BlobStore, blob_hash, blob_refs
from opentraces.errors import BlobCorrupt, BlobMissing
from opentraces.events import BlobRef, StepRecorded, ToolCall, ToolResultRecorded


def test_put_get_roundtrip_and_layout(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"tool output\n" * 500
    ref = store.put(data, "text/plain", local_only=True)
    assert ref == BlobRef(hash=blob_hash(data), size=len(data), media_type="text/plain",
                          local_only=True)
    path = tmp_path / "blobs" / ref.hash[:2] / ref.hash[2:4] / ref.hash
    assert path.is_file()
    assert path.stat().st_size < len(data)  # stored compressed
    assert store.get(ref.hash) == data
    assert list(store.hashes()) == [ref.hash]


def test_write_once_keeps_the_first_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    ref = store.put(b"abc")
    path = store.path_for(ref.hash)
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert store.put(b"abc") == ref
    assert path.stat().st_mtime_ns == before


def test_missing_blob_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlobMissing, match="is not in"):
        BlobStore(tmp_path).get("ab" * 32)


def test_verify_rehashes_and_finds_tampering(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    good = store.put(b"good")
    bad = store.put(b"will be swapped")
    store.path_for(bad.hash).write_bytes(zlib.compress(b"something else"))
    broken = store.put(b"will be truncated")
    store.path_for(broken.hash).write_bytes(b"\x00\x01")
    report = store.verify()
    assert report.blobs_checked == 3
    assert report.corrupt == [bad.hash]
    assert report.unreadable == [broken.hash]
    with pytest.raises(BlobCorrupt):
        store.get(broken.hash)
    assert store.get(good.hash) == b"good"


def test_prune_deletes_only_unreferenced_and_old(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    keep = store.put(b"referenced")
    old = store.put(b"unreferenced and old")
    young = store.put(b"unreferenced and young")
    past = time.time() - 7200
    os.utime(store.path_for(old.hash), (past, past))
    temp = store.path_for(keep.hash).parent / ".tmp-leftover"
    temp.write_bytes(b"partial")
    os.utime(temp, (past, past))

    dry = store.prune({keep.hash}, dry_run=True, min_age_seconds=3600)
    assert dry.hashes == [old.hash] and dry.temp_files == 1
    assert store.has(old.hash) and temp.exists()

    done = store.prune({keep.hash}, dry_run=False, min_age_seconds=3600)
    assert done.hashes == [old.hash] and done.bytes > 0
    assert not store.has(old.hash) and not temp.exists()
    assert store.has(keep.hash) and store.has(young.hash)


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
    from opentraces.blobs import BACKGROUND_BYTES

    store = BlobStore(tmp_path / "blobs", defer_sync=True)
    big = os.urandom(BACKGROUND_BYTES // 2) * 3  # large, compressible, unique to this test
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
    from opentraces.blobs import BACKGROUND_BYTES

    root = tmp_path / "blobs"
    root.mkdir()
    store = BlobStore(root, defer_sync=True)
    big = os.urandom(BACKGROUND_BYTES)
    digest = blob_hash(big)
    (root / digest[:2]).write_bytes(b"")  # a file where the blob's folder must go
    store.put(big)
    with pytest.raises(OSError):
        store.sync()
    assert not store.has(digest)  # the failed write is not reported as stored

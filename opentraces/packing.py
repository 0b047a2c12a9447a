"""Compression shared by the event store and the blob store.

New data is written as zstd frames (level 3, and level 6 for large data: about twice as small
as zlib's fastest level on transcript JSON, and faster). Readers recognise the format by its
first bytes, so data written zlib-compressed by earlier versions stays readable: a zstd frame
starts with ``28 b5 2f fd``, a zlib stream with ``78``.
"""

from __future__ import annotations

import threading
import zlib

import zstandard

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZLIB_FIRST = 0x78

# zstandard (de)compressor objects must not be shared between threads: one set per thread.
_local = threading.local()
#: From this size on, level 6 (about 9% smaller than level 3 on transcripts, at about a third
#: of the speed) is worth it: large blobs are raw transcript segments, stored once.
DENSE_FROM = 64 * 1024


class CorruptData(ValueError):
    """Bytes that claim to be compressed but do not decompress."""


def _codecs() -> tuple[dict[int, zstandard.ZstdCompressor], zstandard.ZstdDecompressor]:
    try:
        return _local.codecs  # type: ignore[no-any-return]
    except AttributeError:
        _local.codecs = ({3: zstandard.ZstdCompressor(level=3),
                          6: zstandard.ZstdCompressor(level=6)}, zstandard.ZstdDecompressor())
        return _local.codecs  # type: ignore[no-any-return]


def compress(data: bytes) -> bytes:
    return _codecs()[0][6 if len(data) >= DENSE_FROM else 3].compress(data)


def is_compressed(data: bytes) -> bool:
    return data[:4] == ZSTD_MAGIC or data[:1] == bytes([ZLIB_FIRST])


def decompress(data: bytes) -> bytes:
    try:
        if data[:4] == ZSTD_MAGIC:
            return _codecs()[1].decompress(data)
        return zlib.decompress(data)
    except (zstandard.ZstdError, zlib.error) as e:
        raise CorruptData(str(e)) from e

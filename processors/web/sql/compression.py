"""Compression as ClickHouse's HTTP interface speaks it, for the SQL endpoint.

Two layers, as in ClickHouse:

* **Compressed blocks** (``compress=1`` on the reply, ``decompress=1`` on the request body):
  ClickHouse's own framing, the one its native protocol uses. Each block is a 16-byte
  CityHash128 checksum (v1.0.2, its two UInt64 halves little-endian) of what follows,
  a method byte (``0x82`` LZ4, ``0x90`` ZSTD, ``0x02`` none), the compressed size
  (UInt32 LE, the 9-byte header included), the uncompressed size (UInt32 LE), then the
  data: a raw LZ4 block, a zstd frame, or the bytes as they are. JDBC (``jdbc-v2``) asks
  for it by default; clickhouse-go with LZ4 / ZSTD; ``network_compression_method`` picks
  the method (LZ4 when unset).
* **HTTP content encodings** (``enable_http_compression=1`` with ``Accept-Encoding``; a
  request's ``Content-Encoding``): gzip, deflate (zlib), zstd, lz4 (the LZ4 frame format),
  br, xz and bz2.

The codecs are libraries (``lz4``, ``zstd`` from the standard library or its backport,
``brotli``, ``clickhouse-cityhash``); this module only frames. Errors are ClickHouse's own,
with its codes: a bad checksum is ``CHECKSUM_DOESNT_MATCH`` (40).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import sys
import zlib
from collections.abc import Callable

import brotli
import lz4.block
import lz4.frame
from clickhouse_cityhash.cityhash import CityHash128

from ept.processors.storage.analyst import ClickHouseError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


NONE, LZ4, ZSTD = 0x02, 0x82, 0x90
CHECKSUM_SIZE = 16
HEADER_SIZE = 9  # method byte, compressed size, uncompressed size
BLOCK_SIZE = 1 << 20  # ClickHouse's max_compress_block_size
MAX_COMPRESSED_SIZE = 1 << 30  # ClickHouse's DBMS_MAX_COMPRESSED_SIZE
_METHODS = {"LZ4": LZ4, "LZ4HC": LZ4, "ZSTD": ZSTD, "NONE": NONE}
_HEADER = struct.Struct("<BII")


def block_method(network_compression_method: str | None) -> int:
    """The method byte for ClickHouse's ``network_compression_method`` (LZ4 when unset)."""
    name = (network_compression_method or "LZ4").upper()
    if name not in _METHODS:
        raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD",
                              f"Unknown compression method '{network_compression_method}'")
    return _METHODS[name]


def checksum(data: bytes | memoryview) -> bytes:
    """CityHash128 v1.0.2 of ``data`` as ClickHouse writes it: the hash's two UInt64 halves
    (``first``, ``second``), each little-endian. ``clickhouse-cityhash`` returns them as one
    integer, ``first`` in the high bits."""
    value = CityHash128(bytes(data))
    return (value >> 64).to_bytes(8, "little") + (value & (1 << 64) - 1).to_bytes(8, "little")


def compress_block(data: bytes | memoryview, method: int = LZ4) -> bytes:
    """One compressed block (checksum, header, data) holding ``data`` (< 4 GiB)."""
    if method == LZ4:
        payload = lz4.block.compress(data, store_size=False)
    elif method == ZSTD:
        payload = zstd.compress(data)
    elif method == NONE:
        payload = bytes(data)
    else:
        raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD",
                              f"Unknown compression method byte 0x{method:02x}")
    framed = _HEADER.pack(method, HEADER_SIZE + len(payload), len(data)) + payload
    return checksum(framed) + framed


def compress_blocks(data: bytes, method: int = LZ4, block_size: int = BLOCK_SIZE) -> bytes:
    """``data`` as a sequence of compressed blocks of at most ``block_size`` bytes each
    (nothing for empty data, as ClickHouse sends for an empty result)."""
    view = memoryview(data)
    return b"".join(compress_block(view[start:start + block_size], method)
                    for start in range(0, len(data), block_size))


def decompress_blocks(data: bytes, *, verify: bool = True) -> bytes:
    """The bytes held by a sequence of compressed blocks. Raises ClickHouseError:
    ``CHECKSUM_DOESNT_MATCH`` (40) for a block that is not what its checksum says,
    ``UNKNOWN_COMPRESSION_METHOD`` (89), ``CANNOT_READ_ALL_DATA`` (33) for a truncated block,
    ``CORRUPTED_DATA`` (246) for impossible sizes, ``CANNOT_DECOMPRESS`` (271) for data the
    codec refuses or that decompresses to another size than its header says."""
    view = memoryview(data)
    parts: list[bytes] = []
    position = 0
    while position < len(view):
        if len(view) - position < CHECKSUM_SIZE + HEADER_SIZE:
            raise ClickHouseError(33, "CANNOT_READ_ALL_DATA", "Cannot read all data. Bytes "
                                  f"read: {len(view) - position}. Bytes expected: "
                                  f"{CHECKSUM_SIZE + HEADER_SIZE}")
        start = position + CHECKSUM_SIZE
        method, compressed_size, size = _HEADER.unpack_from(view, start)
        if compressed_size > MAX_COMPRESSED_SIZE:
            raise ClickHouseError(246, "CORRUPTED_DATA", "Too large size_compressed_without_"
                                  f"checksum: {compressed_size}. Most likely corrupted data")
        if compressed_size < HEADER_SIZE:
            raise ClickHouseError(246, "CORRUPTED_DATA", "Can't decompress data: the "
                                  f"compressed data size ({compressed_size}, this should "
                                  "include header size) is less than the header size (9)")
        end = start + compressed_size
        if end > len(view):
            raise ClickHouseError(33, "CANNOT_READ_ALL_DATA", "Cannot read all data. Bytes "
                                  f"read: {len(view) - start}. Bytes expected: "
                                  f"{compressed_size}")
        if verify:
            expected, actual = bytes(view[position:start]), checksum(view[start:end])
            if expected != actual:
                raise ClickHouseError(40, "CHECKSUM_DOESNT_MATCH", "Checksum doesn't match: "
                                      f"corrupted data. Reference: {_hex(expected)}. Actual: "
                                      f"{_hex(actual)}. Size of compressed block: "
                                      f"{compressed_size}")
        payload = view[start + HEADER_SIZE:end]
        parts.append(_decompress(method, payload, size))
        position = end
    return b"".join(parts)


def _decompress(method: int, payload: memoryview, size: int) -> bytes:
    try:
        if method == LZ4:
            out = lz4.block.decompress(payload, uncompressed_size=size)
        elif method == ZSTD:
            out = zstd.decompress(payload)
        elif method == NONE:
            out = bytes(payload)
        else:
            raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD",
                                  f"Unknown codec family code: {method}")
    except (lz4.block.LZ4BlockError, zstd.ZstdError) as error:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", "Cannot decompress "
                              f"{_NAMES[method]}-encoded data: {error}") from None
    if len(out) != size:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress {_NAMES[method]}"
                              f"-encoded data: {len(out)} bytes, the header says {size}")
    return out


_NAMES = {LZ4: "LZ4", ZSTD: "ZSTD", NONE: "NONE"}


def _hex(value: bytes) -> str:
    """A checksum as ClickHouse prints it: each UInt64 half in hex, in order."""
    return "".join(f"{int.from_bytes(value[i:i + 8], 'little'):016x}" for i in (0, 8))


# --- HTTP content encodings -------------------------------------------------------------

def _lz4_frame_decompress(data: bytes) -> bytes:
    return bytes(lz4.frame.decompress(data))


_ENCODERS: dict[str, Callable[[bytes, int | None], bytes]] = {
    "gzip": lambda data, level: _zlib(data, 6 if level is None else level, 31),
    "deflate": lambda data, level: _zlib(data, 6 if level is None else level, 15),
    "zstd": lambda data, level: zstd.compress(data, level),
    "lz4": lambda data, level: lz4.frame.compress(data),
    "xz": lambda data, level: lzma.compress(data),
    "bz2": lambda data, level: bz2.compress(data),
    "br": lambda data, level: brotli.compress(data),
}
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: zlib.decompress(data, 47),
    "x-gzip": lambda data: zlib.decompress(data, 47),
    "deflate": lambda data: zlib.decompress(data, 47),  # zlib header, as ClickHouse sends
    "zstd": lambda data: zstd.decompress(data),
    "lz4": _lz4_frame_decompress,
    "xz": lzma.decompress,
    "bzip2": bz2.decompress,
    "bz2": bz2.decompress,
    "br": brotli.decompress,
}
# Which encoding a reply gets when the client accepts several (ClickHouse's preference).
_PREFERENCE = ("zstd", "br", "lz4", "gzip", "deflate", "xz", "bz2")


def _zlib(data: bytes, level: int, wbits: int) -> bytes:
    compressor = zlib.compressobj(max(0, min(level, 9)), zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def response_encoding(accept_encoding: str | None) -> str | None:
    """The content encoding for a reply to a client sending ``Accept-Encoding``, or None."""
    accepted = set()
    for item in (accept_encoding or "").split(","):
        name, _, parameters = item.strip().lower().partition(";")
        if parameters.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            continue
        accepted.add("bz2" if name == "bzip2" else name)
    return next((name for name in _PREFERENCE if name in accepted and name in _ENCODERS),
                None)


def encode(data: bytes, encoding: str, level: int | None = None) -> bytes:
    """``data`` in HTTP content encoding ``encoding`` (one ``response_encoding`` chose)."""
    return _ENCODERS[encoding](data, level)


def decode(data: bytes, content_encoding: str | None) -> bytes:
    """A request body sent with ``Content-Encoding`` (several: applied in order, as
    listed). Raises ClickHouseError: ``UNKNOWN_COMPRESSION_METHOD`` (89) for an encoding
    ClickHouse does not know, ``CANNOT_DECOMPRESS`` (271) for a body that is not what its
    header says."""
    encodings = [item.strip().lower() for item in (content_encoding or "").split(",")]
    for encoding in reversed([item for item in encodings if item and item != "identity"]):
        if encoding not in _DECODERS:
            raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD",
                                  f"Unknown compression method '{encoding}'")
        try:
            data = _DECODERS[encoding](data)
        except Exception as error:  # each codec has its own error type
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress the "
                                  f"{encoding}-encoded request body: {error}") from None
    return data

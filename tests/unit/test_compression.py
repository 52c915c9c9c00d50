"""ClickHouse's compressed blocks and HTTP content encodings, as the SQL endpoint speaks
them (processors/web/sql/compression.py)."""

from __future__ import annotations

import gzip
import os
import zlib

import lz4.frame
import pytest

from ept.processors.storage.analyst import ClickHouseError
from ept.processors.web.sql import compression

TEXT = b"hello hello hello hello, ClickHouse compressed blocks"
# The same text as ClickHouse's Go client library frames it (ch-go v0.75.0's
# compress.Writer, the one clickhouse-go uses): an LZ4 block and an uncompressed one.
CH_GO_LZ4 = bytes.fromhex(
    "f4b03911e6899966d62d2a1af062947a8232000000350000006d68656c6c6f200600f00f2c20436c69"
    "636b486f75736520636f6d7072657373656420626c6f636b73")
CH_GO_ZSTD = bytes.fromhex(
    "6559faf6b85c28f7bb169e1423cc5cc690420000003500000028b52ffd0400650100440268656c6c6f"
    "202c20436c69636b486f75736520636f6d7072657373656420626c6f636b73015406030e099cb27025")
CH_GO_NONE = bytes.fromhex(
    "d15ba5f9fd2db5bd0e5b0a7089f85110023e0000003500000068656c6c6f2068656c6c6f2068656c6c"
    "6f2068656c6c6f2c20436c69636b486f75736520636f6d7072657373656420626c6f636b73")


def test_blocks_are_byte_for_byte_those_of_clickhouses_go_library() -> None:
    assert compression.compress_block(TEXT, compression.LZ4) == CH_GO_LZ4
    assert compression.compress_block(TEXT, compression.NONE) == CH_GO_NONE
    for framed in (CH_GO_LZ4, CH_GO_ZSTD, CH_GO_NONE):
        assert compression.decompress_blocks(framed) == TEXT


@pytest.mark.parametrize("method", ["LZ4", "lz4", "LZ4HC", "ZSTD", "NONE", None])
def test_round_trips_in_blocks_of_at_most_one_mebibyte(method: str | None) -> None:
    data = os.urandom(300_000) + b"a" * 2_000_000 + os.urandom(10)
    framed = compression.compress_blocks(data, compression.block_method(method))
    assert compression.decompress_blocks(framed) == data
    first = framed[compression.CHECKSUM_SIZE]
    assert first == {"ZSTD": 0x90, "NONE": 0x02}.get((method or "LZ4").upper(), 0x82)
    assert int.from_bytes(framed[21:25], "little") == 1 << 20  # first block's raw size
    assert compression.compress_blocks(b"") == b""
    assert compression.decompress_blocks(b"") == b""


def test_an_unknown_network_compression_method_is_clickhouses_error() -> None:
    with pytest.raises(ClickHouseError) as error:
        compression.block_method("snappy")
    assert (error.value.code, error.value.name) == (89, "UNKNOWN_COMPRESSION_METHOD")


def test_a_block_that_is_not_what_its_checksum_says_is_refused_with_code_40() -> None:
    corrupted = bytearray(CH_GO_LZ4)
    corrupted[-1] ^= 0x01
    with pytest.raises(ClickHouseError) as error:
        compression.decompress_blocks(bytes(corrupted))
    assert (error.value.code, error.value.name) == (40, "CHECKSUM_DOESNT_MATCH")
    assert str(error.value).startswith("Code: 40. DB::Exception: Checksum doesn't match: "
                                       "corrupted data. Reference: 669989e61139b0f4")  # UInt64s
    assert str(error.value).endswith("(CHECKSUM_DOESNT_MATCH)")
    wrong_checksum = b"\x00" * 16 + CH_GO_NONE[16:]
    with pytest.raises(ClickHouseError, match=r"\(CHECKSUM_DOESNT_MATCH\)"):
        compression.decompress_blocks(wrong_checksum)
    assert compression.decompress_blocks(wrong_checksum, verify=False) == TEXT


@pytest.mark.parametrize("cut", [1, 10, 24, 25, 30, len(CH_GO_LZ4) - 1])
def test_truncated_frames_are_clear_errors(cut: int) -> None:
    for framed in (CH_GO_LZ4, CH_GO_LZ4 * 2):
        with pytest.raises(ClickHouseError) as error:
            compression.decompress_blocks(framed[:len(framed) - cut])
        assert (error.value.code, error.value.name) == (33, "CANNOT_READ_ALL_DATA")
        assert "Cannot read all data" in str(error.value)


def test_impossible_sizes_unknown_methods_and_undecodable_data_are_refused() -> None:
    def framed(method: int, compressed_size: int, size: int, payload: bytes) -> bytes:
        header = bytes([method]) + compressed_size.to_bytes(4, "little") + \
            size.to_bytes(4, "little")
        return compression.checksum(header + payload) + header + payload

    cases = [
        (framed(0x82, 5, 1, b""), 246, "is less than the header size"),
        (framed(0x82, (1 << 30) + 1, 1, b""), 246, "Too large size_compressed"),
        (framed(0x07, 10, 1, b"x"), 89, "Unknown codec"),
        (framed(0x82, 13, 100, b"\xff\xff\xff\xff"), 271, "Cannot decompress LZ4"),
        (framed(0x90, 13, 100, b"\x00\x01\x02\x03"), 271, "Cannot decompress ZSTD"),
        (framed(0x02, 12, 4, b"abc"), 271, "3 bytes, the header says 4"),
    ]
    for data, code, message in cases:
        with pytest.raises(ClickHouseError) as error:
            compression.decompress_blocks(data)
        assert error.value.code == code and message in str(error.value), str(error.value)


def test_the_reply_gets_the_encoding_clickhouse_prefers_among_those_accepted() -> None:
    assert compression.response_encoding(None) is None
    assert compression.response_encoding("") is None
    assert compression.response_encoding("identity") is None
    assert compression.response_encoding("gzip") == "gzip"
    assert compression.response_encoding("gzip, deflate") == "gzip"
    assert compression.response_encoding("deflate") == "deflate"
    assert compression.response_encoding("gzip, zstd;q=0.5") == "zstd"
    assert compression.response_encoding("zstd;q=0, gzip") == "gzip"
    assert compression.response_encoding("LZ4") == "lz4"
    assert compression.response_encoding("gzip, br") == "br"
    assert compression.response_encoding("bzip2") == "bz2"
    # clickhouse-connect's list: ClickHouse's preference, not the client's order
    assert compression.response_encoding("lz4,zstd,br,gzip,deflate") == "zstd"
    assert compression.response_encoding("snappy, compress") is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "br", "xz", "bz2"])
def test_content_encodings_round_trip(encoding: str) -> None:
    data = b"SELECT 1\n" * 1000
    encoded = compression.encode(data, encoding)
    assert len(encoded) < len(data)
    assert compression.decode(encoded, encoding) == data


def test_content_encodings_are_the_formats_clients_expect() -> None:
    data = b"templateId\tfailures\ntpl_a\t7\n"
    assert gzip.decompress(compression.encode(data, "gzip")) == data
    assert zlib.decompress(compression.encode(data, "deflate")) == data  # zlib-wrapped
    assert lz4.frame.decompress(compression.encode(data, "lz4")) == data  # the LZ4 frame
    assert compression.encode(data, "zstd")[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert compression.decode(gzip.compress(data), "x-gzip") == data
    # several encodings: undone in the reverse order of their listing
    twice = compression.encode(compression.encode(data, "gzip"), "zstd")
    assert compression.decode(twice, "gzip, zstd") == data
    assert compression.decode(data, "identity") == data
    assert compression.decode(data, None) == data


def test_request_bodies_in_unknown_or_broken_encodings_are_clickhouses_errors() -> None:
    with pytest.raises(ClickHouseError) as error:
        compression.decode(b"x", "snappy")
    assert (error.value.code, error.value.name) == (89, "UNKNOWN_COMPRESSION_METHOD")
    with pytest.raises(ClickHouseError) as error:
        compression.decode(b"not gzip at all", "gzip")
    assert (error.value.code, error.value.name) == (271, "CANNOT_DECOMPRESS")
    assert "gzip-encoded request body" in str(error.value)

"""What the SQL endpoint does to a reply between the engine and the client
(processors/web/sql/transport.py): Native for the client's protocol version, then
ClickHouse's compressed blocks, then the HTTP content encoding, as ClickHouse layers them."""

from __future__ import annotations

import gzip

import pytest

from ept.processors.storage.analyst import ClickHouseError
from ept.processors.web.sql import compression, native, transport

# SELECT 1 AS x in the engine's Native (revision 0): 1 column, 1 row, "x", "UInt8", 0x01.
NATIVE = b"\x01\x01\x01x\x05UInt8\x01"


def test_a_plain_request_gets_the_engines_bytes() -> None:
    assert transport.reply(b"1\n", "TabSeparated", {}, None) == (b"1\n", {})
    assert transport.reply(NATIVE, "Native", {}, None) == (NATIVE, {})


def test_native_follows_the_clients_protocol_version() -> None:
    body, _ = transport.reply(NATIVE, "Native", {"client_protocol_version": "54460"}, None)
    assert body == native.BLOCK_INFO + b"\x01\x01\x01x\x05UInt8\x00\x01"
    body, _ = transport.reply(b"1\n", "TSV", {"client_protocol_version": "54460"}, None)
    assert body == b"1\n"  # other formats do not depend on it
    with pytest.raises(ClickHouseError) as error:
        transport.reply(NATIVE, "Native", {"client_protocol_version": "new"}, None)
    assert error.value.name == "CANNOT_PARSE_NUMBER"


def test_compressed_blocks_go_inside_the_http_encoding() -> None:
    parameters = {"compress": "1", "network_compression_method": "ZSTD",
                  "enable_http_compression": "1", "client_protocol_version": "54460"}
    body, headers = transport.reply(NATIVE, "Native", parameters, "gzip, deflate")
    assert headers == {"Content-Encoding": "gzip"}
    blocks = gzip.decompress(body)
    assert blocks[16] == compression.ZSTD
    assert compression.decompress_blocks(blocks) == native.for_revision(NATIVE, 54460)


def test_accept_encoding_is_honoured_unless_http_compression_is_turned_off() -> None:
    """The engine's enable_http_compression is 1 (system.settings), so a client that
    reads it (clickhouse-connect) sends Accept-Encoding alone."""
    body, headers = transport.reply(b"1\n", "TSV", {}, "lz4,zstd,br,gzip,deflate")
    assert headers == {"Content-Encoding": "zstd"}
    assert compression.decode(body, "zstd") == b"1\n"
    assert transport.reply(b"1\n", "TSV", {"enable_http_compression": "0"}, "gzip") == (
        b"1\n", {})
    assert transport.reply(b"1\n", "TSV", {"enable_http_compression": "1"}, None) == (
        b"1\n", {})
    assert transport.reply(b"1\n", "TSV", {}, "snappy") == (b"1\n", {})


def test_its_parameters_are_never_passed_to_the_engine_as_settings() -> None:
    assert {"compress", "decompress", "client_protocol_version", "enable_http_compression",
            "network_compression_method"} <= transport.PARAMETERS

"""What the SQL endpoint does to a request's body and a reply's bytes between the client
and the engine, as ClickHouse's HTTP interface does:

* request body: its ``Content-Encoding`` undone (by aiohttp for one of gzip, deflate, br,
  zstd; here for lz4, xz, bzip2 or a list), then, with ``decompress=1``, ClickHouse's
  compressed blocks (checksums verified unless
  ``http_native_compression_disable_checksumming_on_decompress=1``);
* reply: Native output rewritten for the client's ``client_protocol_version``; with
  ``compress=1``, framed in compressed blocks (``network_compression_method``: LZ4 unless
  ZSTD or NONE); encoded in the best ``Accept-Encoding`` (level
  ``http_zlib_compression_level`` for gzip and deflate) unless ``enable_http_compression=0``.
  The engine's ``enable_http_compression`` is 1 by default (``system.settings`` says so), and
  clients read it there: clickhouse-connect, seeing it set, sends ``Accept-Encoding`` alone.

These URL parameters are the endpoint's, never passed to the engine as settings.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError

from ept.processors.storage.analyst import ClickHouseError
from ept.processors.web.sql import compression, native

PARAMETERS = frozenset({
    "compress", "decompress", "client_protocol_version", "enable_http_compression",
    "http_zlib_compression_level", "network_compression_method",
    "network_zstd_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
})

# A request body in one of these encodings reaches the handler decoded: aiohttp's parser
# undoes them itself (reading a broken one raises RequestPayloadError).
AIOHTTP_DECODES = frozenset({"gzip", "deflate", "br", "zstd"})


def _enabled(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


def _integer(parameters: Mapping[str, str], name: str, default: int) -> int:
    value = parameters.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ClickHouseError(72, "CANNOT_PARSE_NUMBER", f"Cannot parse number from "
                              f"'{value}' for parameter {name}") from None


async def request_body(request: web.Request) -> bytes:
    """The POST body as the query reads it. Raises ClickHouseError."""
    encoding = request.headers.get("Content-Encoding", "")
    try:
        body = await request.read()
    except (PayloadEncodingError, web.RequestPayloadError):
        if not encoding:
            raise
        request.content.feed_eof()  # unreadable: aiohttp is not to drain the rest of it
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", "Cannot decompress the request "
                              f"body: it is not {encoding}-encoded data") from None
    if encoding.lower() not in AIOHTTP_DECODES:
        body = compression.decode(body, encoding)
    if _enabled(request.query.get("decompress")):
        body = compression.decompress_blocks(body, verify=not _enabled(request.query.get(
            "http_native_compression_disable_checksumming_on_decompress")))
    return body


def reply(body: bytes, fmt: str, parameters: Mapping[str, str],
          accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
    """The reply's bytes and the headers they need, for a result ``body`` in ``fmt`` and
    the request's URL ``parameters``. Raises ClickHouseError."""
    if fmt == "Native":
        body = native.for_revision(body, _integer(parameters, "client_protocol_version", 0))
    if _enabled(parameters.get("compress")):
        body = compression.compress_blocks(
            body, compression.block_method(parameters.get("network_compression_method")))
    headers: dict[str, str] = {}
    if _enabled(parameters.get("enable_http_compression", "1")):
        encoding = compression.response_encoding(accept_encoding)
        if encoding is not None:
            level = _integer(parameters, "http_zlib_compression_level", 3) \
                if encoding in ("gzip", "deflate") else None
            body = compression.encode(body, encoding, level)
            headers["Content-Encoding"] = encoding
    return body, headers

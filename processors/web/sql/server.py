"""The HTTP server under the SQL endpoint: aiohttp's, with every error in ClickHouse's form.

ClickHouse answers every error with its text (``Code: N. DB::Exception: ... (NAME)``), its
code in ``X-ClickHouse-Exception-Code`` and an HTTP status of its own. aiohttp answers
some errors itself, before any handler of the endpoint runs, in plain text:

* a request it cannot parse — a request line (the URL) over ``max_line_size``, a header
  over ``max_field_size``, more than ``max_headers`` headers, broken framing — is a 400
  built by its protocol's ``handle_error``, which also logs the client's mistake with a
  traceback (and the first 100 bytes of the offending line: a password in the URL);
* a path or a method no route serves is an ``HTTPException`` (404, 405).

:class:`SqlRunner` serves an application with ClickHouse's limits (a URL of 1 MiB as
``http_max_uri_size``, header fields of 128 KiB as ``http_max_field_value_size``) through
:class:`_ClickHouseRequestHandler`, whose ``handle_error`` answers in ClickHouse's form
and logs a client's mistake as one line naming the kind of mistake only;
:func:`clickhouse_errors` is the middleware for the second case.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ept.processors.storage.analyst import ClickHouseError

log = logging.getLogger("ept.sql")
MAX_URI_BYTES = 1024 ** 2    # ClickHouse's http_max_uri_size
MAX_FIELD_BYTES = 128 * 1024  # ClickHouse's http_max_field_value_size
MAX_HEADERS = 256
_STATUS = {  # ClickHouse's HTTP status for an error code (the rest: 500)
    62: 400, 36: 400, 47: 400, 115: 400, 184: 400, 457: 400, 456: 400,  # bad query
    1000: 400,                                                             # bad HTTP
    60: 404, 81: 404, 1012: 404,                                           # not found
    164: 403, 497: 403, 516: 403,                                          # refused
    1: 405,                                                                # method
    159: 408,                                                              # timeout
}


def error_response(error: ClickHouseError, query_id: str = "", status: int | None = None
                   ) -> web.Response:
    """ClickHouse's error reply: its text, its code in ``X-ClickHouse-Exception-Code``,
    ClickHouse's HTTP status for the code unless ``status`` is given."""
    headers = {"X-ClickHouse-Exception-Code": str(error.code)}
    if query_id:
        headers["X-ClickHouse-Query-Id"] = query_id
    return web.Response(status=status or _STATUS.get(error.code, 500), text=f"{error}\n",
                        content_type="text/plain", charset="utf-8", headers=headers)


def unparsable(exc: BaseException | None) -> ClickHouseError | None:
    """ClickHouse's error for a request aiohttp could not parse (``exc``, one of its
    ``BadHttpMessage``), or None when ``exc`` is not one (the server's own failure). The
    message names the kind of mistake only, never the request's bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        what = ("HTTP request URI" if limit == MAX_URI_BYTES
                else "An HTTP header field")
        return ClickHouseError(1000, "POCO_EXCEPTION",
                               f"{what} is longer than {limit} bytes")
    if isinstance(exc, BadHttpMessage):
        kind = ("Too many HTTP header fields (more than "
                f"{MAX_HEADERS})" if "Too many headers" in exc.message
                else f"Malformed HTTP request ({type(exc).__name__})")
        return ClickHouseError(1000, "POCO_EXCEPTION", kind)
    return None


class _ClickHouseRequestHandler(RequestHandler):
    """aiohttp's protocol, answering the errors it handles itself in ClickHouse's form."""

    def handle_error(self, request: Any, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        """As aiohttp's (a reply that closes the connection; ConnectionError when part
        of a reply was sent), in ClickHouse's form. A client's malformed request is
        logged as one line without a traceback; the server's own failure with one."""
        error = unparsable(exc)
        if error is not None:
            status = 400
            log.info("SQL endpoint: refused an unparsable request from %s: %s",
                     request.remote, error.message)
        elif status == 504:
            error = ClickHouseError(159, "TIMEOUT_EXCEEDED", "The request timed out")
        else:
            log.error("SQL endpoint: error handling a request from %s", request.remote,
                      exc_info=exc)
            error = ClickHouseError(1001, "STD_EXCEPTION", "Internal error of the server")
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response "
                                  "with the error message")
        response = error_response(error, status=status)
        response.force_close()
        return response


class _ClickHouseServer(web.Server):
    """aiohttp's low-level server whose connections speak :class:`_ClickHouseRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return _ClickHouseRequestHandler(self, loop=self._loop, **self._kwargs)


class SqlRunner(web.AppRunner):
    """An AppRunner for the SQL endpoint: ClickHouse's limits on the request line and
    headers, a client that leaves cancels its handler (``handler_cancellation``), and
    every error aiohttp answers itself in ClickHouse's form (see the module docstring)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **{"handler_cancellation": True, "max_line_size": MAX_URI_BYTES,
                                 "max_field_size": MAX_FIELD_BYTES,
                                 "max_headers": MAX_HEADERS, **kwargs})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the application's, started and frozen
        return _ClickHouseServer(server.request_handler,
                                 request_factory=server.request_factory,
                                 handler_cancellation=server.handler_cancellation,
                                 loop=server._loop, **server._kwargs)


@web.middleware
async def clickhouse_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own HTTP errors (no route for the path or the method) in ClickHouse's
    form, with their status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            error = ClickHouseError(1, "UNSUPPORTED_METHOD",
                                    f"The HTTP method {request.method} is not served here: "
                                    "send queries by GET or POST")
        elif exc.status == 404:
            error = ClickHouseError(1012, "HANDLER_DOESNT_EXIST",
                                    f"There is no handle {request.path}: use / or /ping")
        else:
            error = ClickHouseError(1000, "POCO_EXCEPTION", exc.reason)
        return error_response(error, status=exc.status)

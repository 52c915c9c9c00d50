"""Who may send analysts' SQL: the endpoint's authentication, before anything runs.

* Without ``EPT_ANALYST_PASSWORD``: only a loopback peer, and only with a loopback
  ``Host`` header (``localhost``, ``127.0.0.1``, ``[::1]``, any port) — a web page that
  re-binds its own name to 127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and
  is refused, so a developer's browser cannot be used to reach the endpoint.
* With it: the analyst's user and password (basic auth, ``X-ClickHouse-User``/``-Key`` or
  ``user``/``password``), compared in constant time. After :data:`FREE_FAILURES` wrong
  ones from a client address, every attempt from it waits (1 s, doubling, at most
  :data:`MAX_DELAY_S`) before its answer; a right one clears the count.

Every refusal is ClickHouse's AUTHENTICATION_FAILED (516) and names the user the client
gave, never the engine's own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import time

from aiohttp import web

from ept.processors.storage.analyst import ClickHouseError

FREE_FAILURES = 3
MAX_DELAY_S = 8.0
_FORGET_S = 600.0  # failures older than this are forgotten
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback_host(host_header: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback (port ignored)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_peer(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def credentials(request: web.Request) -> tuple[str, str]:
    """(user, password) as the request gives them; ``default`` with no user named."""
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    if "X-ClickHouse-User" in request.headers:
        return (request.headers["X-ClickHouse-User"],
                request.headers.get("X-ClickHouse-Key", ""))
    return request.query.get("user", "default"), request.query.get("password", "")


class AccessGuard:
    """``check`` each request (see the module docstring). One per endpoint; used on its
    event loop only."""

    def __init__(self, user: str, password: str | None) -> None:
        self._user, self._password = user, password
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, last)

    async def check(self, request: web.Request) -> None:
        """Returns when the request may run; may wait (a client that failed before);
        raises ClickHouseError(516) otherwise."""
        user, password = credentials(request)
        if self._password is None:
            if not (is_loopback_peer(request.remote)
                    and is_loopback_host(request.headers.get("Host", ""))):
                raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"{user}: Authentication "
                                      "failed: without a password, only this machine's "
                                      "loopback (and a loopback Host header) is served")
            return
        address = request.remote or ""
        await asyncio.sleep(self._delay(address))
        if (hmac.compare_digest(user.encode(), self._user.encode())
                and hmac.compare_digest(password.encode(), self._password.encode())):
            self._failures.pop(address, None)
            return
        count, _ = self._failures.get(address, (0, 0.0))
        self._failures[address] = (count + 1, time.monotonic())
        raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"{user}: Authentication failed: "
                              "password is incorrect, or there is no user with such name")

    def _delay(self, address: str) -> float:
        count, last = self._failures.get(address, (0, 0.0))
        if time.monotonic() - last > _FORGET_S:
            self._failures.pop(address, None)
            return 0.0
        if count < FREE_FAILURES:
            return 0.0
        return min(2.0 ** (count - FREE_FAILURES), MAX_DELAY_S)

"""Tracking of calls to external APIs made with httpx or requests.

A call is named by host + route template. Status 429, and 503 with Retry-After, are
tracked as ``api_error`` with ``rate_limited`` true and the Retry-After value — the
specification's "identify rate limiting issues" becomes a query
(``ept query rate-limited-endpoints``) and an alert scope.

    client = httpx.Client(event_hooks=httpx_hooks())            # sync
    client = httpx.AsyncClient(event_hooks=httpx_hooks(async_=True))
    session.mount("https://", tracking_adapter())                # requests
"""

from __future__ import annotations

import time
from typing import Any

from ept.core.http_status import is_error_status
from ept.integrations.endpoints import external_endpoint, retry_after_seconds
from ept.integrations.tracking import tracker_or_default
from ept.tracker import Tracker

_STARTED = "ept_started"


def record_response(tracker: Tracker | None, method: str, url: str, status: int,
                    duration_ms: float, retry_after: str | None, request_id: str | None) -> None:
    """Track one answered call (an error for 5xx and 429)."""
    endpoint = external_endpoint(url)
    target = tracker_or_default(tracker)
    if is_error_status(status):
        seconds = retry_after_seconds(retry_after)
        message = "rate limited" if status == 429 or seconds is not None else f"HTTP {status}"
        target.track_api_error(endpoint, status, message, request_id, duration_ms,
                               method=method, retry_after_s=seconds)
    else:
        target.track_api_request_completed(endpoint, method, status, duration_ms, request_id)


def record_failure(tracker: Tracker | None, method: str, url: str, error: BaseException,
                   duration_ms: float) -> None:
    """Track a call that got no response (connection error, timeout)."""
    tracker_or_default(tracker).track_api_error(external_endpoint(url), None,
                                                f"{type(error).__name__}: {error}", None,
                                                duration_ms, method=method)


def httpx_hooks(tracker: Tracker | None = None, async_: bool = False) -> dict[str, list[Any]]:
    """``event_hooks`` for an httpx Client (or AsyncClient with ``async_=True``).

    Hooks see responses only; a call that raises (no response) is not seen by httpx
    hooks — wrap such calls in ``measure_api_performance`` to track them too.
    """

    def on_request(request: Any) -> None:
        request.extensions[_STARTED] = time.perf_counter()

    def on_response(response: Any) -> None:
        request = response.request
        started = request.extensions.get(_STARTED, time.perf_counter())
        record_response(tracker, request.method, str(request.url), response.status_code,
                        (time.perf_counter() - started) * 1000.0,
                        response.headers.get("retry-after"), request.headers.get("x-request-id"))

    if not async_:
        return {"request": [on_request], "response": [on_response]}

    async def on_request_async(request: Any) -> None:
        on_request(request)

    async def on_response_async(response: Any) -> None:
        on_response(response)

    return {"request": [on_request_async], "response": [on_response_async]}


def tracking_adapter(tracker: Tracker | None = None, **adapter_options: Any) -> Any:
    """A ``requests`` HTTPAdapter that tracks every call, including ones that raise."""
    from requests.adapters import HTTPAdapter

    class TrackingAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            started = time.perf_counter()
            try:
                response = super().send(request, **kwargs)
            except Exception as error:
                record_failure(tracker, request.method or "GET", request.url or "", error,
                               (time.perf_counter() - started) * 1000.0)
                raise
            record_response(tracker, request.method or "GET", request.url or "",
                            response.status_code, (time.perf_counter() - started) * 1000.0,
                            response.headers.get("Retry-After"),
                            request.headers.get("X-Request-ID"))
            return response

    return TrackingAdapter(**adapter_options)

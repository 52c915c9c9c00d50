"""What every integration shares: the tracker to use and how a served request is recorded."""

from __future__ import annotations

from ept.core.http_status import is_error_status
from ept.tracker import Tracker


def tracker_or_default(tracker: Tracker | None) -> Tracker:
    """``tracker``, or the SDK's default tracker (created from the environment)."""
    if tracker is not None:
        return tracker
    from ept.default import get_tracker

    return get_tracker()


def track_served_request(tracker: Tracker, endpoint: str, method: str, status: int,
                         duration_ms: float, request_id: str, error: str | None) -> None:
    """One answered request: ``api_error`` for an error status (5xx, 429) or an exception,
    else a completion."""
    if error is not None or is_error_status(status):
        tracker.track_api_error(endpoint, status, error or f"HTTP {status}", request_id,
                                duration_ms, method=method)
    else:
        tracker.track_api_request_completed(endpoint, method, status, duration_ms, request_id)

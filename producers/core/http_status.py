"""What an HTTP status means to ept: one definition for every middleware and hook."""

from __future__ import annotations


def is_error_status(status: int) -> bool:
    """True for 5xx and for 429.

    429 counts as an error: the call was not served (the caller sees a failure, and
    rate limiting is one of the specification's API error use cases). Other 4xx are the
    client's mistake, answered as designed, and count as completed requests.
    """
    return status >= 500 or status == 429


def is_rate_limited(status: int | None, retry_after_s: float | None) -> bool:
    """429, or 503 with a Retry-After: the server asks the caller to back off."""
    return status == 429 or (status == 503 and retry_after_s is not None)

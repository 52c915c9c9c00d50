"""Low-cardinality endpoint names: route templates, never raw paths with ids."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}|[A-Za-z0-9_-]{24,})$"
)


def templated_path(path: str) -> str:
    """``/api/render/123/frames/9f86d081884c7d65`` -> ``/api/render/{id}/frames/{id}``.

    Used when the framework does not say which route matched.
    """
    segments = path.split("?", 1)[0].split("/")
    return "/".join("{id}" if _ID_SEGMENT.match(segment) else segment for segment in segments)


def external_endpoint(url: str) -> str:
    """The endpoint name of a call to another service: ``host[:port]`` + templated route.

    Never the URL's user, password, query or fragment (``https://u:pw@host/x?key=...``
    is ``host/x``).
    """
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number
        port = ""
    return f"{parts.hostname or ''}{port}{templated_path(parts.path or '/')}"


def retry_after_seconds(value: str | None) -> float | None:
    """The Retry-After header in seconds (delta-seconds form), or None."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        import datetime as dt
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())

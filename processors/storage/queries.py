"""Named analytics queries: the specification's four, verbatim, and rollup queries.

The specification's SQL has no time or template filter; ``run`` gives it one by reading
``events`` through a parameterised subquery of the same name, so the query text itself
stays verbatim. Every user value is bound as a ClickHouse query parameter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

SPEC_RENDER_FAILURE_RATE = """
SELECT
  DATE(timestamp) as date,
  COUNT(*) as total_failures,
  reason,
  AVG(duration) as avg_duration_before_failure
FROM events
WHERE event_name = 'render_failed'
GROUP BY date, reason
ORDER BY date DESC, total_failures DESC
"""

SPEC_API_ERROR_TRENDS = """
SELECT
  endpoint,
  statusCode,
  COUNT(*) as error_count,
  AVG(duration) as avg_duration
FROM events
WHERE event_name = 'api_error'
GROUP BY endpoint, statusCode
ORDER BY error_count DESC
"""

SPEC_PERFORMANCE_DEGRADATION = """
SELECT
  renderType,
  AVG(slownessFactor) as avg_slowness,
  COUNT(*) as slow_render_count,
  AVG(duration) as avg_duration
FROM events
WHERE event_name = 'slow_render'
GROUP BY renderType
ORDER BY avg_slowness DESC
"""

SPEC_ERROR_RATE_BY_TEMPLATE = """
SELECT
  templateId,
  COUNT(CASE WHEN event_name = 'render_failed' THEN 1 END) as failures,
  COUNT(CASE WHEN event_name = 'video_rendered' THEN 1 END) as successes,
  ROUND(100.0 *
    COUNT(CASE WHEN event_name = 'render_failed' THEN 1 END) /
    NULLIF(COUNT(*), 0), 2) as error_rate_pct
FROM events
WHERE event_name IN ('render_failed', 'video_rendered')
GROUP BY templateId
HAVING COUNT(*) > 10
ORDER BY error_rate_pct DESC
"""

_FILTERED_EVENTS = """(
    SELECT *, event_name, templateId, renderType, statusCode, slownessFactor
    FROM events
    WHERE timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
      AND ({template:String} = '' OR template_id = {template:String})
) AS events"""



def _rollup_range(start_of: str) -> str:
    """The bucket filter of a rollup whose buckets start at ``start_of(timestamp)``."""
    return (f"bucket >= {start_of}({{since:DateTime64(3, 'UTC')}}) "
            "AND bucket < {until:DateTime64(3, 'UTC')} "
            "AND ({template:String} = '' OR template_id = {template:String})")


_HOURLY_RANGE = _rollup_range("toStartOfHour")
_DAILY_RANGE = _rollup_range("toStartOfDay")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str
    spec: bool = False  # one of the specification's queries (read through _FILTERED_EVENTS)
    default_days: int = 30
    tags: tuple[str, ...] = field(default=())

    def bound_sql(self) -> str:
        if self.spec:
            return self.sql.replace("FROM events", f"FROM {_FILTERED_EVENTS}", 1)
        return self.sql


QUERIES: dict[str, NamedQuery] = {query.name: query for query in (
    NamedQuery("render-failure-rate", "Render failures per day and reason (specification)",
               SPEC_RENDER_FAILURE_RATE, spec=True),
    NamedQuery("api-error-trends", "API errors per endpoint and status (specification)",
               SPEC_API_ERROR_TRENDS, spec=True),
    NamedQuery("performance-degradation", "Slow renders per render type (specification)",
               SPEC_PERFORMANCE_DEGRADATION, spec=True),
    NamedQuery("error-rate-by-template", "Render error rate per template (specification)",
               SPEC_ERROR_RATE_BY_TEMPLATE, spec=True),
    NamedQuery("error-rate-hourly", "Render error rate per hour, from the hourly rollup", f"""
        SELECT bucket AS hour,
               sumIf(events, event = 'render_failed') AS failures,
               sumIf(events, event = 'render_completed') AS successes,
               round(100.0 * failures / nullIf(failures + successes, 0), 2) AS error_rate_pct,
               sumIf(events, event = 'slow_render') AS slow,
               round(100.0 * slow / nullIf(failures + successes, 0), 2) AS slow_ratio_pct
        FROM events_hourly WHERE {_HOURLY_RANGE}
        GROUP BY hour ORDER BY hour""", default_days=2),
    NamedQuery("api-errors-daily", "API errors per day and endpoint, from the daily rollup", f"""
        SELECT toDate(bucket) AS day, endpoint,
               sumIf(events, event = 'api_error') AS errors,
               sumIf(events, event = 'api_error' AND rate_limited) AS rate_limited,
               sumIf(events, event = 'api_request_completed') AS answered,
               round(100.0 * errors / nullIf(errors + answered, 0), 2) AS error_rate_pct
        FROM events_daily WHERE {_DAILY_RANGE}
        GROUP BY day, endpoint HAVING errors > 0 ORDER BY day DESC, errors DESC""",
               default_days=365),
    NamedQuery("top-failing-templates", "Templates with most failures, from the daily rollup",
               f"""
        SELECT template_id, sumIf(events, event = 'render_failed') AS failures,
               sumIf(events, event = 'render_completed') AS successes,
               round(100.0 * failures / nullIf(failures + successes, 0), 2) AS error_rate_pct,
               topKIf(1)(reason, event = 'render_failed')[1] AS top_reason
        FROM events_daily WHERE {_DAILY_RANGE} AND event IN ('render_failed', 'render_completed')
        GROUP BY template_id HAVING failures > 0 ORDER BY failures DESC LIMIT 20""",
               default_days=365),
    NamedQuery("render-duration-quantiles", "Render duration p50/p90/p99 per type and day",
               f"""
        SELECT toDate(bucket) AS day, render_type,
               sum(events) AS renders,
               round(sum(duration_sum) / sum(events), 1) AS avg_ms,
               arrayMap(q -> round(q, 1), quantilesTDigestMerge(0.5, 0.9, 0.99)(duration_quantiles))
                   AS p50_p90_p99_ms
        FROM events_daily WHERE {_DAILY_RANGE} AND event = 'render_completed'
        GROUP BY day, render_type ORDER BY day DESC, render_type""", default_days=365),
    NamedQuery("activity-per-minute", "Renders, failures, slow renders, API errors per minute",
               """
        SELECT toStartOfMinute(timestamp) AS minute,
               countIf(event = 'render_failed') AS failures,
               countIf(event = 'render_completed') AS successes,
               round(100.0 * failures / nullIf(failures + successes, 0), 2) AS error_rate_pct,
               countIf(event = 'slow_render') AS slow,
               round(100.0 * slow / nullIf(successes, 0), 2) AS slow_ratio_pct,
               countIf(event = 'api_error') AS api_errors
        FROM events
        WHERE timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
          AND ({template:String} = '' OR template_id = {template:String})
        GROUP BY minute ORDER BY minute""", default_days=1),
    NamedQuery("api-errors-by-endpoint", "API errors per endpoint and status in the range",
               """
        SELECT endpoint, countIf(event = 'api_error') AS errors,
               countIf(event = 'api_error' AND rate_limited) AS rate_limited,
               countIf(event = 'api_request_completed') AS answered,
               round(100.0 * errors / nullIf(errors + answered, 0), 2) AS error_rate_pct
        FROM events
        WHERE event IN ('api_error', 'api_request_completed')
          AND timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
          AND ({template:String} = '' OR template_id = {template:String})
        GROUP BY endpoint HAVING errors > 0 ORDER BY errors DESC""", default_days=1),
    NamedQuery("ingestion-summary", "Stored events per event type: rows, distinct ids, range",
               """
        SELECT event, count() AS rows, uniqExact(event_id) AS distinct_event_ids,
               min(timestamp) AS first_event, max(timestamp) AS last_event
        FROM events
        WHERE timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
          AND ({template:String} = '' OR template_id = {template:String})
        GROUP BY event ORDER BY event""", default_days=3650),
    NamedQuery("rate-limited-endpoints", "Rate-limited API calls per endpoint (429 / Retry-After)",
               """
        SELECT endpoint, count() AS rate_limited_calls, max(retry_after_s) AS max_retry_after_s,
               max(timestamp) AS last_seen
        FROM events
        WHERE event = 'api_error' AND rate_limited
          AND timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')}
          AND ({template:String} = '' OR template_id = {template:String})
        GROUP BY endpoint ORDER BY rate_limited_calls DESC""", default_days=7),
)}


class UnknownQueryError(KeyError):
    def __str__(self) -> str:
        return f"unknown query {self.args[0]!r}; known: {', '.join(QUERIES)}"


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """ISO-8601 date/time (UTC when no zone) or a relative ``-2h`` / ``-7d``.

    Raises ValueError naming the parameter.
    """
    if value is None or value == "":
        return None
    text = value.strip()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text.startswith("-") and text[-1:] in units and text[1:-1].isdigit():
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(**{units[text[-1]]: int(text[1:-1])})
        except (OverflowError, ValueError):
            raise ValueError(f"{name}: {value!r} reaches before year 1") from None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name}: expected an ISO date/time (2026-11-29T10:00) or -2h/-7d, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parameters(query: NamedQuery, since: dt.datetime | None, until: dt.datetime | None,
               template: str | None) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "since": since or now - dt.timedelta(days=query.default_days),
        "until": until or now + dt.timedelta(minutes=1),
        "template": template or "",
    }


def canonical_name(name: str) -> str:
    """The registered name of query ``name`` (``render_failure_rate`` is accepted for
    ``render-failure-rate``). Raises UnknownQueryError."""
    canonical = name.strip().lower().replace("_", "-")
    if canonical not in QUERIES:
        raise UnknownQueryError(name)
    return canonical


def run(client: Client, name: str, since: dt.datetime | None = None,
        until: dt.datetime | None = None, template: str | None = None) -> QueryResult:
    """Run the named query; user values are bound as parameters. Raises UnknownQueryError."""
    query = QUERIES[canonical_name(name)]
    result = client.query(query.bound_sql(), parameters=parameters(query, since, until, template))
    return QueryResult(list(result.column_names), [list(row) for row in result.result_rows])

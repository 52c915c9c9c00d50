"""Slow thresholds suggested from the stored durations (``ept thresholds suggest``).

For each template and render type with enough completed renders since a time, the
duration at a quantile (p95 by default: one render in twenty is "slow" for its template),
rounded up to two significant digits. The query runs as an analyst's would
(:func:`~ept.processors.storage.sql_client.run_sql`: read-only and bounded, wherever
ClickHouse is). :func:`in_force_today` puts each next to the threshold services use today;
:func:`publish_suggestions` makes them the tuned thresholds (``--apply``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ept.core.settings import Settings
from ept.processors.storage.sql_client import run_sql
from ept.processors.storage.tables import RAW_TABLE
from ept.threshold_controls import (
    SlowThreshold,
    SlowThresholdView,
    TunedKey,
    publish_threshold,
)
from ept.thresholds import Thresholds, operation_for_render_type


@dataclass(frozen=True)
class Suggestion:
    template_id: str
    operation: str  # render_<render type>
    renders: int
    quantile_ms: float  # the stored durations' quantile
    suggested_ms: float  # quantile_ms rounded up to two significant digits


def suggest(settings: Settings, since: dt.datetime, quantile: float = 0.95,
            min_renders: int = 100) -> list[Suggestion]:
    """Suggestions for every (template, render type) with ``min_renders`` completed renders
    stored since ``since``, by template. Blocks on ClickHouse; raises ValueError for a
    quantile outside (0, 1), ClickHouseError / RuntimeError as ``run_sql``."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile: must be between 0 and 1 (0.95 is p95), got {quantile}")
    if min_renders < 1:
        raise ValueError(f"min renders: must be >= 1, got {min_renders}")
    # Every value below is a number or a time formatted here: nothing of the user's is
    # pasted into the SQL.
    start = since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    sql = f"""
        SELECT template_id, render_type, count() AS renders,
               quantile({quantile!r})(duration) AS at_quantile
        FROM {RAW_TABLE}
        WHERE event = 'render_completed' AND render_type != ''
          AND timestamp >= toDateTime64('{start}', 3, 'UTC')
        GROUP BY template_id, render_type
        HAVING renders >= {int(min_renders)}
        ORDER BY template_id, render_type"""
    rows = [json.loads(line) for line in run_sql(settings, sql, "json").splitlines() if line]
    return [Suggestion(row["template_id"], operation_for_render_type(row["render_type"]),
                       int(row["renders"]), float(row["at_quantile"]),
                       round_up(float(row["at_quantile"])))
            for row in rows]


def round_up(ms: float) -> float:
    """``ms`` rounded up to two significant digits (23,412 -> 24,000; 0 -> 1)."""
    if ms <= 1:
        return 1.0
    step = 10.0 ** max(0, math.floor(math.log10(ms)) - 1)
    return math.ceil(ms / step) * step


def thresholds_today(settings: Settings, suggestions: Sequence[Suggestion],
                     timeout_s: float = 20.0) -> list[float]:
    """The slow threshold services use today for each suggestion (:func:`in_force_today`,
    with the tuned thresholds read to the topic's end and ``EPT_THRESHOLDS``). Blocks;
    raises TimeoutError when the topic could not be read within ``timeout_s``, ValueError
    for a bad ``EPT_THRESHOLDS``."""
    tuned = SlowThresholdView(settings).read_to_end(timeout_s).tuned
    return in_force_today(suggestions, Thresholds.from_environment(), tuned)


def in_force_today(suggestions: Sequence[Suggestion], static: Thresholds,
                   tuned: Mapping[TunedKey, float]) -> list[float]:
    """The threshold in force for each suggestion's template and operation: a tuned one
    wins over the static one of the same reach (:meth:`~ept.thresholds.Thresholds.threshold`).
    Raises KeyError for an operation ept has no threshold for."""
    return [static.threshold(s.operation, s.template_id, tuned) for s in suggestions]


def quantile_label(quantile: float) -> str:
    """``p95`` for 0.95."""
    return f"p{quantile * 100:g}"


def since_label(since: dt.datetime) -> str:
    """``2026-11-29 10:00 UTC``: ``since`` to the minute, as it was given."""
    return f"{since:%Y-%m-%d %H:%M} UTC"


def as_thresholds(suggestions: Sequence[Suggestion], quantile: float, since: dt.datetime,
                  by: str, at_ms: int) -> list[SlowThreshold]:
    """The tuned thresholds that apply ``suggestions``, each saying what it was computed
    from (``p95 of 20 renders since 2026-11-29 10:00 UTC``). Raises BadSlowThreshold for
    an operation ept has no threshold for."""
    return [SlowThreshold(s.operation, s.template_id, s.suggested_ms, by, at_ms,
                          f"{quantile_label(quantile)} of {s.renders} renders since "
                          f"{since_label(since)}")
            for s in suggestions]


def publish_suggestions(settings: Settings, suggestions: Sequence[Suggestion],
                        quantile: float, since: dt.datetime, by: str, at_ms: int) -> None:
    """Publish :func:`as_thresholds` one by one: services use them from then on. Blocks
    until the broker acknowledged each; raises KafkaException for the first one it did not
    (those before it stay published)."""
    for threshold in as_thresholds(suggestions, quantile, since, by, at_ms):
        publish_threshold(settings, threshold)

"""Render durations as mergeable quantile sketches, and the comparison of a window's
quantile with its baseline (the ``duration_regression`` rule kind).

A duration is counted in the bucket of DDSketch's logarithmic mapping at
:data:`RELATIVE_ACCURACY` (the ``ddsketch`` library): a quantile of the sketch rebuilt
from bucket counts is within that relative error of the true quantile of the durations
counted. The buckets are plain counters (``d<key>``), so the worker's per-minute counters,
windows and baseline blocks hold sketches as they hold any count, and merging two
sketches is adding their counters. Durations are clamped to [:data:`MIN_MS`,
:data:`MAX_MS`], which bounds a sketch to :data:`MAX_BUCKETS` counters whatever the
traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.02  # a quantile is read within 2% of its true value
MIN_MS, MAX_MS = 1.0, 86_400_000.0  # one millisecond to one day
BUCKET_PREFIX = "d"
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
MAX_BUCKETS = _MAPPING.key(MAX_MS) - _MAPPING.key(MIN_MS) + 1


def bucket_of(duration_ms: float) -> str:
    """The counter that ``duration_ms`` increments (a non-finite duration counts as the
    clamp it is nearest to)."""
    duration = float(duration_ms)
    if math.isnan(duration):
        duration = MIN_MS
    duration = min(max(duration, MIN_MS), MAX_MS)
    return f"{BUCKET_PREFIX}{_MAPPING.key(duration)}"


def sketch(histograms: Iterable[Mapping[str, int]]) -> DDSketch:
    """The sketch of the durations counted in ``histograms`` (other counters left out)."""
    total: dict[int, int] = {}
    for histogram in histograms:
        for name, n in histogram.items():
            if name.startswith(BUCKET_PREFIX) and n > 0:
                key = int(name[len(BUCKET_PREFIX):])
                total[key] = total.get(key, 0) + n
    merged = DDSketch(RELATIVE_ACCURACY)
    for key, n in total.items():
        merged.add(_MAPPING.value(key), n)
    return merged


@dataclass(frozen=True)
class Regression:
    """A window's quantile against its baseline's.

    ``ratio`` is window / baseline of the rule's quantile (0.0 when either is empty);
    ``samples`` the durations in the window; ``detail`` says it in words (``p95 3.2 s vs
    1.6 s, p50 1.1 s vs 1.0 s``). ``baseline_short`` says why there is nothing to
    compare with, when the baseline holds fewer durations than its minimum.
    """

    ratio: float
    samples: int
    detail: str
    baseline_short: str = ""
    above: int = 0  # durations of the window above ``factor`` x the baseline's quantile


def compare(histogram: Mapping[str, int], baseline: DDSketch, q: float,
            baseline_min_samples: int, factor: float) -> Regression:
    """The ``q`` quantile (and the median) of the window's durations (its ``histogram`` of
    counters) against ``baseline``, and how many of them exceed ``factor`` x the
    baseline's ``q`` quantile (the evidence: the window's quantile is above that level
    exactly when more than 1 - q of its durations are)."""
    window = sketch([histogram])
    samples, baseline_samples = int(window.count), int(baseline.count)
    if baseline_samples < max(1, baseline_min_samples):
        return Regression(0.0, samples, "", f"{baseline_samples} baseline samples < "
                                            f"baseline_min_samples {baseline_min_samples}")
    if not samples:
        return Regression(0.0, 0, "")
    parts, ratio, above = [], 0.0, 0
    for p in sorted({q, 0.5}, reverse=True):
        now, before = window.get_quantile_value(p), baseline.get_quantile_value(p)
        assert now is not None and before is not None  # both sketches hold samples
        if p == q:
            ratio = now / before
            above = _count_above(histogram, factor * before)
        parts.append(f"p{p * 100:g} {_seconds(now)} vs {_seconds(before)}")
    return Regression(ratio, samples, ", ".join(parts), above=above)


def _count_above(histogram: Mapping[str, int], level_ms: float) -> int:
    """How many durations of ``histogram`` lie in buckets above ``level_ms`` (within the
    sketch's relative accuracy)."""
    return sum(n for name, n in histogram.items() if name.startswith(BUCKET_PREFIX)
               and n > 0 and _MAPPING.value(int(name[len(BUCKET_PREFIX):])) > level_ms)


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"

"""How sure a measured rate is: Wilson score bounds of a binomial proportion.

Pure logic. A rule fires on a rate only when the rate's lower bound is above its
threshold, and resolves only when the upper bound is at or below its resolve threshold,
each at a stated one-sided confidence: 15 failed renders of 15 are a certain outage, one
of one is not, and 19 renders instead of 20 change nothing (docs/alerts.md has the
numbers). The Wilson interval is used because it stays inside [0, 1] and is honest at
the small counts and the extreme rates (0 of n, n of n) that thin traffic brings, where
the normal approximation is not.
"""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist


@cache
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def lower_bound(hits: int, total: int, confidence: float) -> float:
    """The lower Wilson bound of ``hits / total`` at one-sided ``confidence`` (0 < c < 1);
    the point estimate when ``confidence`` is 0 (no interval), 0.0 when ``total`` is 0."""
    return _bound(hits, total, confidence, -1.0)


def upper_bound(hits: int, total: int, confidence: float) -> float:
    """The upper Wilson bound of ``hits / total`` (see :func:`lower_bound`); 1.0 when
    ``total`` is 0 (no evidence bounds nothing)."""
    return _bound(hits, total, confidence, +1.0)


def _bound(hits: int, total: int, confidence: float, sign: float) -> float:
    if total <= 0:
        return 0.0 if sign < 0 else 1.0
    p = hits / total
    if confidence <= 0:
        return p
    z = _z(confidence)
    z2n = z * z / total
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / total + z2n / (4 * total))
    return min(1.0, max(0.0, (centre + sign * spread) / (1 + z2n)))

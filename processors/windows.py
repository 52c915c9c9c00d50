"""Event-time sliding windows made of one-minute buckets, serialisable for Faust tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MINUTE_MS = 60_000


def minute_of(epoch_ms: int) -> int:
    return epoch_ms // MINUTE_MS


@dataclass
class MinuteBuckets:
    """Counters per minute for one scope, and the latest event time seen (watermark).

    Buckets older than ``retain_minutes`` before the watermark are dropped, so memory per
    scope is bounded whatever the traffic.
    """

    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    watermark_ms: int = 0

    def add(self, minute: int, counts: dict[str, int], latest_ms: int, lateness_ms: int,
            retain_minutes: int) -> bool:
        """Count ``counts`` into ``minute``; False (nothing counted) when it is too late."""
        if self.watermark_ms and minute < minute_of(self.watermark_ms - lateness_ms):
            return False
        bucket = self.buckets.setdefault(minute, {})
        for name, amount in counts.items():
            bucket[name] = bucket.get(name, 0) + amount
        self.advance(latest_ms, retain_minutes)
        return True

    def advance(self, now_ms: int, retain_minutes: int) -> None:
        if now_ms <= self.watermark_ms:
            return
        self.watermark_ms = now_ms
        oldest = minute_of(now_ms) - retain_minutes
        for minute in [m for m in self.buckets if m <= oldest]:
            del self.buckets[minute]

    def window(self, minutes: int, now_ms: int | None = None) -> dict[str, int]:
        """Sums over the ``minutes`` buckets ending at the minute of ``now_ms`` (default:
        the watermark)."""
        last = minute_of(self.watermark_ms if now_ms is None else now_ms)
        totals: dict[str, int] = {}
        for minute, counts in self.buckets.items():
            if last - minutes < minute <= last:
                for name, amount in counts.items():
                    totals[name] = totals.get(name, 0) + amount
        return totals

    def to_json(self) -> dict[str, Any]:
        return {"b": {str(m): c for m, c in self.buckets.items()}, "w": self.watermark_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> MinuteBuckets:
        if not data:
            return cls()
        return cls({int(m): dict(c) for m, c in data["b"].items()}, int(data["w"]))

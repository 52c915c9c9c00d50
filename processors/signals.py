"""What each event contributes to which scope: the counters the rules are computed from.

A scope is a family (render, api, slow) plus at most one label, written as the string
``family|label|value`` (``render||`` is the overall render scope).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from ept.processors.durations import bucket_of
from ept.processors.rules import LABEL_OF_SCOPE_TYPE

OVERALL = "overall"


@dataclass(frozen=True, slots=True)
class Scope:
    family: str
    label: str = ""
    value: str = ""

    @property
    def key(self) -> str:
        return f"{self.family}|{self.label}|{self.value}"

    @property
    def scope_type(self) -> str:
        for scope_type, label in LABEL_OF_SCOPE_TYPE.items():
            if label == self.label:
                return scope_type
        return OVERALL

    @property
    def labels(self) -> dict[str, str]:
        return {self.label: self.value} if self.label else {}

    @classmethod
    def parse(cls, key: str) -> Scope:
        family, label, value = key.split("|", 2)
        return cls(family, label, value)


def signals_of(event_name: str, record: dict[str, Any]) -> list[tuple[Scope, str]]:
    """(scope, counter) pairs that ``record`` increments by one."""
    if event_name == "render_failed":
        template = Scope("render", "template_id", record["template_id"])
        return [(Scope("render"), "failed"), (template, "failed")]
    if event_name == "render_completed":
        template = Scope("render", "template_id", record["template_id"])
        render_type = Scope("slow", "render_type", record["render_type"])
        bucket = bucket_of(record["duration_ms"])
        return [(Scope("render"), "completed"), (template, "completed"),
                (Scope("slow"), "renders"), (render_type, "renders"),
                (Scope("duration", "render_type", record["render_type"]), bucket),
                (Scope("duration", "template_id", record["template_id"]), bucket)]
    if event_name == "slow_render":
        return [(Scope("slow"), "slow"), (Scope("slow", "render_type", record["render_type"]),
                                          "slow")]
    if event_name == "api_error":
        return [(Scope("api"), "errors"), (Scope("api", "endpoint", record["endpoint"]), "errors")]
    if event_name == "api_request_completed":
        return [(Scope("api"), "requests"),
                (Scope("api", "endpoint", record["endpoint"]), "requests")]
    return []


FAMILY_OF_KIND = {"render_error_rate": "render", "template_failures": "render",
                  "api_errors": "api", "slow_render_ratio": "slow",
                  "duration_regression": "duration"}
# The counter a count rule counts (judged at each second holding one); None for the
# kinds judged at minute ends only.
COUNTED_BY_KIND: dict[str, str | None] = {"template_failures": "failed", "api_errors": "errors",
                                          "render_error_rate": None, "slow_render_ratio": None,
                                          "duration_regression": None}
# Families counted per minute rather than per second (their rules are judged at minute
# ends only): a duration sketch is many counters, and sixty times fewer of them are kept.
MINUTE_FAMILIES = frozenset({"duration"})


def measure(kind: str, counts: dict[str, int]) -> tuple[float, int]:
    """(value, samples) of a count or ratio rule kind from summed window counters
    (``duration_regression`` is measured against its baseline: :mod:`.durations`)."""
    if kind == "render_error_rate":
        failed, total = counts.get("failed", 0), counts.get("failed", 0) + counts.get(
            "completed", 0)
        return (100.0 * failed / total if total else 0.0), total
    if kind == "template_failures":
        return float(counts.get("failed", 0)), counts.get("failed", 0)
    if kind == "api_errors":
        errors = counts.get("errors", 0)
        return float(errors), errors + counts.get("requests", 0)
    if kind == "slow_render_ratio":
        # A slow render is one render: the SDK's measuring helpers publish render_completed
        # and slow_render for it. A slow_render published alone is a render too, so the
        # ratio never exceeds 100%.
        slow = counts.get("slow", 0)
        renders = max(counts.get("renders", 0), slow)
        return (100.0 * slow / renders if renders else 0.0), renders
    raise ValueError(f"unknown rule kind {kind!r}")


def scope_partition(scope_key: str, partitions: int) -> int:
    """The signals partition of a scope (the same in every worker)."""
    return zlib.crc32(scope_key.encode()) % partitions

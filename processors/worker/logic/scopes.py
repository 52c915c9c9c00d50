"""What each event contributes to which scope: the counters the rules are computed from.

A scope is a family (render, api, slow) plus at most one label, written as the string
``family|label|value`` (``render||`` is the overall render scope).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from ept.processors.worker.logic.durations import bucket_of
from ept.processors.worker.logic.rules import LABEL_OF_SCOPE_TYPE

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


def signals_of(event_name: str, record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(family, scope key, counter) of each scope counter ``record`` increments by one.
    Keys are built as strings (the hot path of collect: one event adds to up to six)."""
    if event_name == "render_failed":
        return [("render", "render||", "failed"),
                ("render", f"render|template_id|{record['template_id']}", "failed")]
    if event_name == "render_completed":
        template, render_type = record["template_id"], record["render_type"]
        bucket = bucket_of(record["duration_ms"])
        return [("render", "render||", "completed"),
                ("render", f"render|template_id|{template}", "completed"),
                ("slow", "slow||", "renders"),
                ("slow", f"slow|render_type|{render_type}", "renders"),
                ("duration", f"duration|render_type|{render_type}", bucket),
                ("duration", f"duration|template_id|{template}", bucket)]
    if event_name == "slow_render":
        return [("slow", "slow||", "slow"),
                ("slow", f"slow|render_type|{record['render_type']}", "slow")]
    if event_name == "api_error":
        return [("api", "api||", "errors"),
                ("api", f"api|endpoint|{record['endpoint']}", "errors")]
    if event_name == "api_request_completed":
        return [("api", "api||", "requests"),
                ("api", f"api|endpoint|{record['endpoint']}", "requests")]
    return []


FAMILY_OF_KIND = {"render_error_rate": "render", "template_failures": "render",
                  "api_errors": "api", "slow_render_ratio": "slow",
                  "duration_regression": "duration", "render_volume_drop": "render",
                  "api_volume_drop": "api"}
# The counter whose events a rule is judged at (each second holding one, besides every
# minute end): what makes a count or a rate cross its threshold. None for the kinds
# judged at minute ends only.
COUNTED_BY_KIND: dict[str, str | None] = {"template_failures": "failed", "api_errors": "errors",
                                          "render_error_rate": "failed",
                                          "slow_render_ratio": "slow",
                                          "duration_regression": None,
                                          "render_volume_drop": None, "api_volume_drop": None}
# What the evidence of a family is made of, as a person says it ("0 renders in 15m").
NOUN_OF_FAMILY = {"render": "renders", "slow": "renders", "duration": "renders",
                  "api": "API calls"}
# The counters that make up a family's traffic volume (the volume drop kinds).
VOLUME_COUNTERS = {"render": ("failed", "completed"), "api": ("errors", "requests")}
# Families counted per minute rather than per second (their rules are judged at minute
# ends only): a duration sketch is many counters, and sixty times fewer of them are kept.
MINUTE_FAMILIES = frozenset({"duration"})


@dataclass(frozen=True, slots=True)
class Measurement:
    """A rule's value over its window and the evidence it rests on.

    ``samples`` are the events measured (renders, API calls); ``hits`` the failing (or
    slow) part of them, for the bounds of a rate. ``no_data`` is empty when there is
    evidence enough to judge, else what is missing, as the alert says it ("0 renders in
    15m"). ``detail`` says what the value was computed from, for the summary.
    """

    value: float
    samples: int
    hits: int = 0
    no_data: str = ""
    detail: str = ""


def measure(kind: str, counts: dict[str, int]) -> Measurement:
    """The measurement of a count or ratio rule kind from summed window counters (the
    baseline kinds are measured against their baseline in :mod:`.evaluation`)."""
    if kind == "render_error_rate" or kind == "template_failures":
        failed = counts.get("failed", 0)
        total = failed + counts.get("completed", 0)
        if kind == "template_failures":
            return Measurement(float(failed), total, failed)
        return Measurement(100.0 * failed / total if total else 0.0, total, failed)
    if kind == "api_errors":
        errors = counts.get("errors", 0)
        return Measurement(float(errors), errors + counts.get("requests", 0), errors)
    if kind == "slow_render_ratio":
        # A slow render is one render: the SDK's measuring helpers publish render_completed
        # and slow_render for it. A slow_render published alone is a render too, so the
        # ratio never exceeds 100%.
        slow = counts.get("slow", 0)
        renders = max(counts.get("renders", 0), slow)
        return Measurement(100.0 * slow / renders if renders else 0.0, renders, slow)
    raise ValueError(f"unknown rule kind {kind!r}")


def scope_partition(scope_key: str, partitions: int) -> int:
    """The signals partition of a scope (the same in every worker)."""
    return zlib.crc32(scope_key.encode()) % partitions

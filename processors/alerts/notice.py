"""The alert topic's record, :class:`AlertNotice`, and the order alerts are told in.

Pure: the alert state machine builds notices here without a Kafka client; the topic's
reader is :mod:`ept.processors.alerts.topic`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ept.core.json_record import JsonRecord

FIRING, RESOLVED = "firing", "resolved"
SEVERITIES = ("critical", "high", "medium", "low", "info")  # the most severe first
# How broad a scope is, by its label: all traffic first, templates last.
_BREADTH = {"": 0, "endpoint": 1, "render_type": 2, "template_id": 3}


def told_first(labels: dict[str, str], severity: str) -> tuple[int, int]:
    """The order alerts decided together are told in (the smaller first): the broadest
    scope, then the most severe. In a storm, the page for all traffic goes out before
    the thousands of templates under it, so routing can inhibit them."""
    label = next(iter(labels), "")
    return (_BREADTH.get(label, len(_BREADTH)),
            SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES))


class BadAlertRecord(ValueError):
    """A message on the alert topic is not an alert notice; the message says why."""


@dataclass(frozen=True)
class AlertNotice(JsonRecord):
    """One message of the alert topic (JSON; field reference in docs/alerts.md).

    Keyed on the topic by ``fingerprint``, the stable identity of a rule and its scope.
    Fields it does not know are kept in ``extra`` and written back.
    """

    invalid = BadAlertRecord

    fingerprint: str
    rule: str
    kind: str
    status: str  # FIRING or RESOLVED
    severity: str
    labels: dict[str, str]
    value: float
    samples: int
    threshold: float
    resolve_threshold: float
    window: str
    started_at: str | None
    resolved_at: str | None
    summary: str
    runbook_url: str
    action: str
    renotify: bool = False
    # Event time the notice was decided at (ms since the epoch): ordering within a
    # fingerprint, and the deduplication of re-notifications after a crash.
    decided_at_ms: int = 0
    # Told without evidence enough to judge (e.g. "0 renders in 15m"); "" otherwise.
    no_data: str = ""
    # Decided ahead of the event-time frontier, on the events read so far: a count rule
    # firing the moment it crosses, or the withdrawal of one that late events undid. The
    # frontier's own notice of the alert follows (``decided_at_ms`` orders those only).
    ahead: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertNotice:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{key: value for key, value in data.items() if key in names},
                   extra={key: value for key, value in data.items() if key not in names})

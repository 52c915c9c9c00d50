"""The alert topic: its record type, and the one reader every consumer of it uses.

Writers (the worker) publish :class:`AlertNotice` records; readers (``ept alerts``, the
dashboard, the supervisor, the worker's own reconciliation) go through
:func:`read_alerts`, so the topic is decoded in one place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from ept.core.kafka import ConsumerRole, consumer_config
from ept.core.settings import Settings
from ept.processors.rules import SEVERITIES

log = logging.getLogger("ept.alerts")

FIRING, RESOLVED = "firing", "resolved"
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
class AlertNotice:
    """One message of the alert topic (JSON; field reference in docs/alerts.md).

    Keyed on the topic by ``fingerprint``, the stable identity of a rule and its scope.
    """

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

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, payload: bytes | None) -> AlertNotice:
        """Raises BadAlertRecord when ``payload`` is not a JSON alert notice."""
        try:
            data = json.loads(payload or b"")
        except ValueError as exc:
            raise BadAlertRecord(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadAlertRecord("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise BadAlertRecord(f"missing fields: {', '.join(missing)}")
        known = {key: value for key, value in data.items() if key in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


OnAlert = Callable[[AlertNotice], None]


def read_alerts(settings: Settings, on_alert: OnAlert, stop: threading.Event | None = None,
                *, from_beginning: bool = True, until_end: bool = False,
                timeout_s: float = 30.0) -> None:
    """Call ``on_alert`` with each notice of the alert topic, in each partition's order.

    Reads from each partition's log start (``from_beginning``; never offset 0, which
    retention may have deleted) or from its end. With ``until_end`` it returns once the
    end offsets seen at the start are reached (raises TimeoutError after ``timeout_s``);
    otherwise it follows the topic until ``stop`` is set. Blocks on the broker. Messages
    that are not alert notices are logged and skipped.
    """
    stop = stop or threading.Event()
    topic = settings.topics.alerts
    consumer = Consumer(consumer_config(settings, ConsumerRole.TOPIC_READER,
                                        f"ept-alert-reader-{uuid.uuid4()}",
                                        **{"isolation.level": "read_committed"}))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            if until_end:
                return
            partitions: list[int] = []
        else:
            partitions = sorted(metadata.partitions)
        ends: dict[int, int] = {}
        if until_end:
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
                if high > low:
                    ends[partition] = high
            partitions = sorted(ends)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        if partitions:
            consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        else:
            consumer.subscribe([topic])  # the topic may not exist yet: follow it
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            if until_end and not ends:
                return
            if until_end and time.monotonic() > deadline:
                raise TimeoutError(f"alert topic {topic} not read to its end in {timeout_s}s")
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                try:
                    on_alert(AlertNotice.decode(message.value()))
                except BadAlertRecord as exc:
                    log.warning("alert topic %s[%d]@%d skipped: %s", topic, partition,
                                offset, exc)
                if partition in ends and offset + 1 >= ends[partition]:
                    del ends[partition]
    finally:
        consumer.close()

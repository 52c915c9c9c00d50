"""The worker's second stage: signals and progress reports judged per signals partition
(:class:`~ept.processors.judging.PartitionJudge`), notices published on the alert topic
exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import faust

from ept.core.settings import Settings
from ept.processors.alert_topic import read_alerts
from ept.processors.alerting import alert_notice, fingerprint
from ept.processors.evaluation import Evaluator, Notice, window_totals
from ept.processors.event_time import Frontiers
from ept.processors.judging import PartitionJudge
from ept.processors.records import ScopeState, signal_or_progress
from ept.processors.rules import Rule
from ept.processors.signals import Scope, measure, scope_partition

log = logging.getLogger("ept.worker")


class PublishedAlerts:
    """The event time of the last notice per fingerprint on the alert topic.

    Read from the topic's log start after every rebalance, since another worker may have
    published meanwhile.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._last: dict[str, int] | None = None

    def invalidate(self) -> None:
        self._last = None

    async def is_new(self, key: str, decided_at_ms: int) -> bool:
        if self._last is None:
            self._last = await asyncio.get_running_loop().run_in_executor(None, self._read)
        return decided_at_ms > self._last.get(key, -1)

    def record(self, key: str, decided_at_ms: int) -> None:
        if self._last is not None:
            self._last[key] = max(decided_at_ms, self._last.get(key, -1))

    def _read(self) -> dict[str, int]:
        """Blocks until the alert topic was read to its end (raises after 30 s)."""
        last: dict[str, int] = {}

        def keep(alert: Any) -> None:
            last[alert.fingerprint] = max(alert.decided_at_ms, last.get(alert.fingerprint, -1))

        read_alerts(self._settings, keep, until_end=True)
        return last


class EvaluateStage:
    """``evaluate``'s state: a judge per signals partition of this worker, over the
    changelogged ``scopes`` table. ``handle`` publishes on ``alerts`` (it may wait for the
    producer, and once per rebalance for the alert topic to be read)."""

    def __init__(self, settings: Settings, rules: list[Rule], source_partitions: dict[str, int],
                 scopes: MutableMapping[str, Any], alerts: faust.TopicT) -> None:
        self._settings, self._scopes, self._alerts = settings, scopes, alerts
        self._sources = source_partitions
        self.evaluator = Evaluator(rules)
        self.judges: dict[int, PartitionJudge] = {}  # per signals partition of this worker
        self._published = PublishedAlerts(settings)
        self.alerts_told = Counter[tuple[str, str]]()  # (rule, status)

    def on_assigned(self) -> None:
        self._published.invalidate()
        self.judges.clear()  # rebuilt from the restored table on first use

    async def handle(self, partition: int, value: Any) -> None:
        """Apply one message of signals partition ``partition`` and publish its notices."""
        await self._publish(self.judge_of(partition).handle(signal_or_progress(value)))

    def judge_of(self, partition: int) -> PartitionJudge:
        if partition not in self.judges:
            partitions = self._settings.topic_partitions
            keys = [key for key in list(self._scopes.keys())
                    if scope_partition(key, partitions) == partition]
            frontiers = Frontiers(self._sources, self._settings.allowed_lateness_s * 1000)
            self.judges[partition] = PartitionJudge(self.evaluator, frontiers, self._scopes,
                                                    keys)
        return self.judges[partition]

    def current_rates(self) -> list[dict[str, Any]]:
        """Each scope's rule values at its frontier (the /stats page)."""
        rates = []
        for scope_key, data in list(self._scopes.items()):
            scope, state = Scope.parse(scope_key), ScopeState.from_json(data)
            partition = scope_partition(scope_key, self._settings.topic_partitions)
            last = self.judge_of(partition).frontiers.frontier(scope.family) // 1000 - 1
            for rule in self.evaluator.rules_of(scope):
                value, samples = measure(rule.kind,
                                         window_totals(state, rule.window_minutes, last))
                alert = state.alerts.get(rule.name)
                rates.append({"rule": rule.name, "scope": scope.scope_type,
                              "labels": scope.labels, "value": round(value, 3),
                              "samples": samples, "threshold": rule.threshold,
                              "status": alert.status if alert else "inactive"})
        return rates

    async def _publish(self, notices: list[Notice]) -> None:
        for notice in notices:
            key = fingerprint(notice.rule.name, notice.scope.labels)
            if not await self._published.is_new(key, notice.at_ms):
                continue  # already on the topic (published before a restart)
            message = alert_notice(notice.rule, notice.scope.labels, notice.note, notice.at_ms)
            self.alerts_told[(notice.rule.name, notice.note.status)] += 1
            log.info("alert %s %s", notice.note.status, message.summary)
            await self._alerts.send(key=key.encode(), value=message.encode())
            self._published.record(key, notice.at_ms)

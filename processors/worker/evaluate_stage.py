"""The worker's second stage: signals and progress reports judged per signals partition
(:class:`~ept.processors.worker.logic.partition_judge.PartitionJudge`), notices published
on the alert topic exactly once, and a rule's ``auto_action`` carried out (a failing
template disabled on the template controls topic, before its alert is told).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import faust

from ept.core.settings import Settings
from ept.core.template_controls import DISABLED, TemplateControl
from ept.processors.alerts.topic import FIRING, read_alerts, told_first
from ept.processors.worker.logic.alert_state import alert_notice, fingerprint
from ept.processors.worker.logic.event_time import Frontiers
from ept.processors.worker.logic.partition_judge import PartitionJudge
from ept.processors.worker.logic.records import signal_or_progress
from ept.processors.worker.logic.rules import DISABLE_TEMPLATE, Rule
from ept.processors.worker.logic.scope_evaluation import DecidedNotice, Evaluator, measured
from ept.processors.worker.logic.scopes import Scope, scope_partition
from ept.processors.worker.logic.state_table import stored_scopes

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
        """Whether a notice of ``key`` decided at ``decided_at_ms`` is not on the topic yet.
        Waits (retrying with backoff up to 30 s) until the topic could be read: a broker
        restarting must not make the worker tell a notice twice, nor lose one."""
        for attempt in itertools.count():
            if self._last is not None:
                break
            try:
                self._last = await asyncio.get_running_loop().run_in_executor(None, self._read)
            except Exception as exc:  # the broker restarting, a leader moving...
                pause = min(30.0, 2.0 ** attempt)
                log.warning("alert topic not read (%s: %s); again in %.0f s",
                            type(exc).__name__, exc, pause)
                await asyncio.sleep(pause)
        assert self._last is not None
        return decided_at_ms > self._last.get(key, -1)

    def record(self, key: str, decided_at_ms: int) -> None:
        if self._last is not None:
            self._last[key] = max(decided_at_ms, self._last.get(key, -1))

    def _read(self) -> dict[str, int]:
        """Blocks until the alert topic was read to its end (raises after 30 s)."""
        last: dict[str, int] = {}

        def keep(alert: Any) -> None:
            key = told_key(alert.fingerprint, alert.ahead)
            last[key] = max(alert.decided_at_ms, last.get(key, -1))

        read_alerts(self._settings, keep, until_end=True)
        return last


class EvaluateStage:
    """``evaluate``'s state: a judge per signals partition of this worker, over the
    changelogged ``scopes`` table. ``handle`` publishes on ``alerts`` and ``controls`` (it
    waits for the broker's acknowledgement, and once per rebalance for the alert topic to be
    read)."""

    def __init__(self, settings: Settings, rules: list[Rule], source_partitions: dict[str, int],
                 scopes: MutableMapping[str, Any], alerts: faust.TopicT,
                 controls: faust.TopicT) -> None:
        self._settings, self._scopes = settings, scopes
        self._alerts, self._controls = alerts, controls
        self._sources = source_partitions
        self.evaluator = Evaluator(rules)
        self.judges: dict[int, PartitionJudge] = {}  # per signals partition of this worker
        self._published = PublishedAlerts(settings)
        self.alerts_told = Counter[tuple[str, str]]()  # (rule, status)

    def on_assigned(self) -> None:
        self._published.invalidate()
        self.judges.clear()  # rebuilt from the restored table on first use

    async def handle(self, partition: int, value: Any) -> None:
        """Apply one message of signals partition ``partition``, publish its notices and,
        once the broker holds them, save the states judged (see
        :mod:`~ept.processors.worker.logic.partition_judge` for why in that order)."""
        judge = self.judge_of(partition)
        try:
            for notices in judge.steps(signal_or_progress(value)):
                await self._publish(notices)
                await asyncio.sleep(0)  # the event loop's other tasks, between steps
        except BaseException:
            # The judge's memory is now ahead of the table: rebuilt from the table, the
            # next message judges those instants again rather than skip their notices.
            self.judges.pop(partition, None)
            raise
        judge.save()

    def judge_of(self, partition: int) -> PartitionJudge:
        if partition not in self.judges:
            partitions = self._settings.topic_partitions
            keys = [key for key in stored_scopes(list(self._scopes.keys()))
                    if scope_partition(key, partitions) == partition]
            frontiers = Frontiers(self._sources, self._settings.allowed_lateness_s * 1000)
            self.judges[partition] = PartitionJudge(self.evaluator, frontiers, self._scopes,
                                                    keys)
        return self.judges[partition]

    def current_rates(self) -> list[dict[str, Any]]:
        """Each scope's rule values at its frontier (the /stats page)."""
        rates = []
        for scope_key in stored_scopes(list(self._scopes.keys())):
            judge = self.judge_of(scope_partition(scope_key, self._settings.topic_partitions))
            scope, state = Scope.parse(scope_key), judge.saved_state(scope_key)
            last = judge.frontiers.frontier(scope.family) // 1000 - 1
            for scope_rule in self.evaluator.rules_of(scope):
                rule = scope_rule.for_scope(scope.scope_type, scope.value)
                if rule is None:
                    continue
                measurement = measured(rule, state, last)
                alert = state.alerts.get(rule.name)
                rates.append({"rule": rule.name, "scope": scope.scope_type,
                              "labels": scope.labels, "value": round(measurement.value, 3),
                              "samples": measurement.samples, "no_data": measurement.no_data,
                              "threshold": rule.threshold,
                              "status": alert.status if alert else "inactive"})
        return rates

    async def _publish(self, notices: list[DecidedNotice]) -> None:
        """Send the new notices, broadest scope and highest severity first, all at once,
        then wait until the broker acknowledged every one (a storm of 10,000 is one round
        trip, not 10,000). A failed send is retried (backing off up to 30 s) until it
        succeeds: the partition waits, since judging on would save states whose notices
        were never told. A template disabled by a rule is disabled before its alert is
        sent."""
        pending: list[tuple[DecidedNotice, str, str, Any, Any]] = []
        for notice in sorted(notices, key=publication_order):
            key = fingerprint(notice.rule.name, notice.scope.labels)
            told_as = told_key(key, notice.note.ahead)
            if not await self._published.is_new(told_as, notice.at_ms):
                continue  # already on the topic (published before a restart)
            message = alert_notice(notice.rule, notice.scope.labels, notice.note, notice.at_ms)
            control = automatic_control(notice, key, message.summary)
            if control is not None:
                await self._deliver(self._controls, control.template_id, control.encode(),
                                    f"template {control.template_id} disabled")
                log.warning("template %s disabled by rule %s", control.template_id,
                            notice.rule.name)
            try:
                sent = await self._alerts.send(key=key.encode(), value=message.encode())
            except Exception:  # the producer's buffer: sent again below
                sent = None
            pending.append((notice, key, told_as, message, sent))
        retold: set[str] = set()  # fingerprints whose order on the topic must be mended
        for notice, key, told_as, message, sent in pending:
            what = f"alert {notice.note.status} {message.summary}"
            try:
                if sent is None:
                    raise RuntimeError("not sent")
                await sent
            except Exception:
                retold.add(key)
            if key in retold:  # failed, or after a failed one of its own alert: told again
                await self._deliver(self._alerts, key, message.encode(), what)
            self._published.record(told_as, notice.at_ms)
            self.alerts_told[(notice.rule.name, notice.note.status)] += 1
            log.info("%s", what)

    @staticmethod
    async def _deliver(topic: faust.TopicT, key: str, value: bytes, what: str) -> None:
        for attempt in itertools.count():
            try:
                delivery = await topic.send(key=key.encode(), value=value)
                await delivery
                return
            except Exception as exc:  # the producer's own retries are exhausted
                pause = min(30.0, 2.0 ** attempt)
                log.error("%s: not delivered (%s: %s); again in %.0f s",
                          what, type(exc).__name__, exc, pause)
                await asyncio.sleep(pause)


def told_key(fingerprint: str, ahead: bool) -> str:
    """What the deduplication of published notices is keyed on: an alert's notices told
    ahead of the frontier are told apart from the frontier's own (which may be decided at
    an earlier instant than the one told ahead of it, and must still be told)."""
    return f"{fingerprint}~ahead" if ahead else fingerprint


def publication_order(notice: DecidedNotice) -> tuple[int, int, int]:
    """The order notices judged together are published in: broadest scope, then most
    severe (:func:`~ept.processors.alerts.topic.told_first`), then event time (so each
    alert's own notices keep their order)."""
    return (*told_first(notice.scope.labels, notice.rule.severity), notice.at_ms)


def automatic_control(notice: DecidedNotice, fingerprint: str, summary: str
                      ) -> TemplateControl | None:
    """The template control a rule with ``auto_action`` takes as its alert starts firing
    (not on re-notifications: a template a person re-enabled stays enabled)."""
    template_id = notice.scope.labels.get("template_id")
    if (not notice.rule.auto_action or notice.rule.action != DISABLE_TEMPLATE
            or template_id is None or notice.note.status != FIRING or notice.note.renotify
            or notice.note.ahead):  # acted on once the frontier confirms it
        return None
    return TemplateControl(template_id, DISABLED, summary, f"rule:{notice.rule.name}",
                           notice.at_ms, fingerprint)

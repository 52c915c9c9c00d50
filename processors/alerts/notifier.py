"""``ept notify``: the alert topic delivered to Alertmanager.

The notifier reads the alert topic from its log start and follows it, keeping the latest
notice of each alert (fingerprint). What changed is posted to every Alertmanager of
``EPT_ALERTMANAGER_URLS`` (each of an HA pair gets every alert; they deduplicate between
themselves), and firing alerts are posted again every ``EPT_ALERTMANAGER_RESEND_S``, so
an Alertmanager that restarted without its state learns them again.

The topic stays the source of truth and the worker never waits for delivery: an
Alertmanager that is down is retried with exponential backoff (1 s doubling to 60 s),
counted in ``/metrics``, and is posted the latest state of every alert when it answers
again. A notice resolved more than :data:`RESOLVED_KEPT_S` ago is not posted (on a start,
the topic's history holds many).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from itertools import groupby
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ept.core.settings import Settings
from ept.processors.alerts.alertmanager import DeliveryError, alert_of, post_alerts, where
from ept.processors.alerts.topic import FIRING, RESOLVED, AlertNotice, read_alerts, told_first

log = logging.getLogger("ept.notifier")

RESOLVED_KEPT_S = 3600.0
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
MAX_ALERTS_PER_POST = 500

Post = Callable[[str, list[dict[str, Any]]], None]


class Delivery:
    """What each Alertmanager still has to be told. Thread-safe; never blocks.

    ``receive`` is called by the topic reader; ``due``, ``delivered`` and ``failed`` by the
    delivery loop.
    """

    def __init__(self, urls: list[str]) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, AlertNotice] = {}
        self._pending: dict[str, set[str]] = {url: set() for url in urls}
        self._retry_at = dict.fromkeys(urls, 0.0)
        self._backoff = dict.fromkeys(urls, FIRST_BACKOFF_S)

    def receive(self, notice: AlertNotice) -> None:
        """A notice read from the topic (older ones of its alert are superseded)."""
        with self._lock:
            known = self._latest.get(notice.fingerprint)
            if known is not None and _supersedes(known, notice):
                return
            self._latest[notice.fingerprint] = notice
            for pending in self._pending.values():
                pending.add(notice.fingerprint)

    def resend_firing(self) -> None:
        """Mark every firing alert to be posted again to every Alertmanager."""
        with self._lock:
            firing = {fp for fp, notice in self._latest.items() if notice.status == FIRING}
            for pending in self._pending.values():
                pending |= firing

    def due(self, now_s: float) -> dict[str, list[AlertNotice]]:
        """The notices to post now, per Alertmanager not waiting out a backoff."""
        with self._lock:
            batches = {}
            for url, pending in self._pending.items():
                if not pending or now_s < self._retry_at[url]:
                    continue
                stale = {fp for fp in pending if self._is_stale(self._latest[fp], now_s)}
                pending -= stale
                if pending:  # the broadest, most severe first: a page before what it inhibits
                    notices = sorted((self._latest[fp] for fp in pending), key=lambda n: (
                        *told_first(n.labels, n.severity), n.fingerprint))
                    batches[url] = notices[:MAX_ALERTS_PER_POST]
            return batches

    def delivered(self, url: str, notices: list[AlertNotice]) -> None:
        with self._lock:
            self._backoff[url] = FIRST_BACKOFF_S
            self._retry_at[url] = 0.0
            for notice in notices:  # unless a newer notice came meanwhile
                if self._latest.get(notice.fingerprint) is notice:
                    self._pending[url].discard(notice.fingerprint)

    def failed(self, url: str, now_s: float) -> float:
        """Back off ``url``; returns the seconds until its next attempt."""
        with self._lock:
            wait = self._backoff[url]
            self._retry_at[url] = now_s + wait
            self._backoff[url] = min(MAX_BACKOFF_S, wait * 2)
            return wait

    def pending(self, url: str) -> int:
        with self._lock:
            return len(self._pending[url])

    @staticmethod
    def _is_stale(notice: AlertNotice, now_s: float) -> bool:
        return (notice.status == RESOLVED
                and now_s * 1000 - notice.decided_at_ms > RESOLVED_KEPT_S * 1000)


def by_breadth(notices: list[AlertNotice]) -> list[list[AlertNotice]]:
    """``notices`` (in :func:`told_first` order) in runs of one breadth of scope.

    Alertmanager hands a post's alerts to its inhibitor and its dispatcher, two
    goroutines: in a loaded test run, a group of templates posted with the page for all
    traffic was told at once (its alerts started before its ``group_wait``) before the
    inhibitor had read the page. Posted once the page's post is answered, they leave the
    inhibitor a round trip to read it: the race is narrowed, not closed (Alertmanager
    offers no way to ask whether its inhibitor has read an alert)."""
    return [list(run) for _, run in groupby(
        notices, key=lambda notice: told_first(notice.labels, notice.severity)[0])]


def _supersedes(known: AlertNotice, notice: AlertNotice) -> bool:
    """Whether ``known`` is as new as ``notice`` or newer: decided at a later event time,
    or at the same one and not withdrawn by it (a notice told ahead of the frontier and
    withdrawn carries the instant it was told at)."""
    def order(n: AlertNotice) -> tuple[int, bool]:
        return n.decided_at_ms, n.ahead and n.status == RESOLVED

    return order(known) >= order(notice)


class NotifierMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.notices = Counter("ept_notifier_notices_read", "Notices read from the alert "
                               "topic.", registry=self.registry)
        self.posts = Counter("ept_notifier_posts", "Posts to an Alertmanager, by outcome.",
                             ["alertmanager", "outcome"], registry=self.registry)
        self.alerts_sent = Counter("ept_notifier_alerts_sent", "Alerts an Alertmanager "
                                   "accepted.", ["alertmanager"], registry=self.registry)
        self.pending = Gauge("ept_notifier_alerts_pending", "Alerts not yet accepted by an "
                             "Alertmanager.", ["alertmanager"], registry=self.registry)
        self.last_success = Gauge("ept_notifier_last_success_timestamp_seconds",
                                  "When an Alertmanager last accepted a post.",
                                  ["alertmanager"], registry=self.registry)


class Notifier:
    """Follows the alert topic and delivers it; :meth:`run` blocks until ``stop`` is set."""

    def __init__(self, settings: Settings, post: Post = post_alerts,
                 clock: Callable[[], float] = time.time) -> None:
        if not settings.alertmanager_url_list:
            raise ValueError("EPT_ALERTMANAGER_URLS is empty: nowhere to deliver alerts")
        self._settings = settings
        self._urls = settings.alertmanager_url_list
        self._post, self._clock = post, clock
        self.delivery = Delivery(self._urls)
        self.metrics = NotifierMetrics()
        self._news = threading.Event()

    def run(self, stop: threading.Event, serve_metrics: bool = True) -> None:
        if serve_metrics:
            start_http_server(self._settings.notifier_port, addr=self._settings.http_host,
                              registry=self.metrics.registry)
        reader = threading.Thread(target=self._read, args=(stop,), name="ept-alert-reader",
                                  daemon=True)
        reader.start()
        log.info("delivering alerts to %s", ", ".join(map(where, self._urls)))
        next_resend = self._clock() + self._settings.alertmanager_resend_s
        while not stop.is_set():
            now = self._clock()
            if now >= next_resend:
                self.delivery.resend_firing()
                next_resend = now + self._settings.alertmanager_resend_s
            self.deliver(now)
            self._news.wait(0.5)
            self._news.clear()
        reader.join(timeout=10)

    def deliver(self, now_s: float) -> None:
        """Post what is due to each Alertmanager, each breadth of scope in a post of its
        own, the broadest first (:func:`by_breadth`). Blocks on the network (5 s per post
        at most); raises nothing."""
        for url, notices in self.delivery.due(now_s).items():
            label = where(url)
            for part in by_breadth(notices):
                alerts = [alert_of(notice, now_s, self._settings.alertmanager_resend_s,
                                   self._settings.dashboard_url) for notice in part]
                try:
                    self._post(url, alerts)
                except DeliveryError as exc:
                    wait = self.delivery.failed(url, now_s)
                    self.metrics.posts.labels(label, "error").inc()
                    log.warning("%s; retrying in %.0f s", exc, wait)
                    break
                self.delivery.delivered(url, part)
                self.metrics.posts.labels(label, "ok").inc()
                self.metrics.alerts_sent.labels(label).inc(len(alerts))
                self.metrics.last_success.labels(label).set(now_s)
            self.metrics.pending.labels(label).set(self.delivery.pending(url))

    def _read(self, stop: threading.Event) -> None:
        def receive(notice: AlertNotice) -> None:
            self.metrics.notices.inc()
            self.delivery.receive(notice)
            self._news.set()

        while not stop.is_set():
            try:
                read_alerts(self._settings, receive, stop)
            except Exception:  # the broker went away: read again from the log start
                log.exception("reading the alert topic failed; reading it again in 5 s")
                stop.wait(5)


def run_notifier(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT. Blocks."""
    import signal

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    Notifier(settings).run(stop)

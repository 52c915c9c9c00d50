"""Synthetic traffic for ``ept run --demo``: a rendering platform with scripted incidents.

Several services, templates, endpoints and render types, published through the SDK.
Before the live traffic, the last 24 hours of renders are published with their event
times (the history a real platform has): the baseline of the duration_regression rule. The
script (seconds from start): baseline; a template starts failing (15 s); an external
API rate-limits and fails (30 s); video renders slow down (45 s: the slow-render ratio
and the regression against the last day's durations); everything recovers (105 s). With the
demo rules (two-minute windows) every default rule fires, then resolves.

The render service enforces template controls: when the template_failures alert fires,
the worker disables the failing template (the demo rule's ``auto_action``) and its renders
are refused; once the script has recovered, it enables the template again, as the person
who deployed the fix would.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer

from ept import SDK_VERSION, TemplateDisabledError, Tracker
from ept.core.kafka import ProducerRole, producer_config
from ept.core.settings import Settings
from ept.core.template_controls import ENABLED, TemplateControl, publish_control
from ept.schemas import SingleObjectEncoder
from ept.thresholds import PERFORMANCE_THRESHOLDS

TEMPLATES = ("tpl_hero_001", "tpl_product_002", "tpl_testimonial_003", "tpl_story_004",
             "tpl_banner_005", "tpl_promo_summer")
ENDPOINTS = ("/api/render", "/api/render/{id}", "/api/templates", "/api/ads/generate-variants")
FAILING_TEMPLATE = "tpl_promo_summer"
FLAKY_ENDPOINT = "api.openai.com/v1/images/generations"
RENDER_TYPES, RENDER_TYPE_WEIGHTS = ("still", "video", "batch"), (6, 3, 1)
HISTORY_EVERY_MS = 20_000  # one render of the last day's every 20 s: 4,320 events
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Phase:
    name: str
    starts_at: float


SCRIPT = (
    Phase("baseline", 0), Phase("template incident", 15), Phase("API outage", 30),
    Phase("render slowdown", 45), Phase("recovery", 105),
)


def phase_at(elapsed: float) -> str:
    return [phase.name for phase in SCRIPT if elapsed >= phase.starts_at][-1]


class DemoTraffic:
    """Publishes ~60 events/s until stopped. ``run`` blocks; call it in a thread."""

    def __init__(self, settings: Settings, rate: float = 60.0, seed: int = 8) -> None:
        self._settings = settings
        self._trackers = {service: Tracker(settings, service=service, environment="demo")
                          for service in ("render-worker", "api-gateway", "variant-generator")}
        self._rate = rate
        self._random = random.Random(seed)
        self.stop = threading.Event()
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def published(self) -> int:
        return sum(t.get_error_performance_stats().delivered for t in self._trackers.values())

    def refused(self) -> int:
        """Renders refused because their template was disabled."""
        return self._trackers["render-worker"].get_error_performance_stats().renders_refused

    def run(self) -> None:
        self.publish_history()
        # A demo stopped before its recovery left the template disabled: start as scripted.
        self._trackers["render-worker"].wait_for_template_controls(10)
        self._enable_failing_template("demo start")
        self.started = time.monotonic()
        interval = 1.0 / self._rate
        next_check = 0.0
        while not self.stop.is_set():
            phase = phase_at(self.elapsed)
            if phase == "recovery" and time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                self._enable_failing_template("fix deployed (demo recovery)")
            self._one(phase)
            self.stop.wait(interval)
        for tracker in self._trackers.values():
            tracker.close(5)

    def publish_history(self) -> int:
        """Publish the last day's renders, as the render service tracked them then.
        Blocks until the broker has them; returns how many."""
        encoder, producer = SingleObjectEncoder(), Producer(
            producer_config(self._settings, ProducerRole.SDK))
        now_ms = int(time.time() * 1000)
        published = 0
        for at_ms in range(now_ms - DAY_MS, now_ms - HISTORY_EVERY_MS, HISTORY_EVERY_MS):
            template = self._random.choice(TEMPLATES)
            render_type = self._random.choices(RENDER_TYPES, RENDER_TYPE_WEIGHTS)[0]
            record = {
                "event_id": str(uuid.uuid4()), "event_time": at_ms, "service": "render-worker",
                "environment": "demo", "sdk_version": SDK_VERSION, "user_id": None,
                "account_id": None, "render_id": f"render_{uuid.uuid4().hex[:12]}",
                "template_id": template, "render_type": render_type,
                "duration_ms": self._usual_duration(render_type), "width": None,
                "height": None}
            producer.produce(self._settings.topics.event("render_completed"),
                             encoder.encode("render_completed", record), template.encode())
            producer.poll(0)
            published += 1
        producer.flush(60)
        return published

    def _usual_duration(self, render_type: str) -> float:
        return PERFORMANCE_THRESHOLDS[f"render_{render_type}"] * self._random.uniform(0.2, 0.8)

    def _enable_failing_template(self, reason: str) -> None:
        """Enable the failing template again if the worker disabled it."""
        tracker = self._trackers["render-worker"]
        if tracker.is_template_enabled(FAILING_TEMPLATE):
            return
        publish_control(tracker.settings, TemplateControl(
            FAILING_TEMPLATE, ENABLED, reason, "demo script", int(time.time() * 1000)))

    def _one(self, phase: str) -> None:
        pick = self._random.random()
        if pick < 0.55:
            self._render(phase)
        elif pick < 0.9:
            self._api_call(phase)
        else:
            self._external_call(phase)

    def _render(self, phase: str) -> None:
        tracker = self._trackers["render-worker"]
        template = self._random.choice(TEMPLATES)
        render_type = self._random.choices(RENDER_TYPES, RENDER_TYPE_WEIGHTS)[0]
        threshold = PERFORMANCE_THRESHOLDS[f"render_{render_type}"]
        duration = self._usual_duration(render_type)
        if phase == "render slowdown" and render_type == "video":
            duration = threshold * self._random.uniform(1.1, 2.5)
        render_id = f"render_{uuid.uuid4().hex[:12]}"
        try:
            tracker.refuse_disabled_template(template)
        except TemplateDisabledError:
            return  # a real service would tell its caller the template is unavailable
        dimensions = (1920, 1080) if render_type != "still" else (1080, 1080)
        failing = template == FAILING_TEMPLATE and phase in ("template incident", "API outage")
        if failing or self._random.random() < 0.0005:
            reason = "codec_error" if failing else self._random.choice(
                ("timeout", "memory_exceeded", "missing_asset"))
            tracker.track_render_failed(render_id, reason, f"{reason.replace('_', ' ')} in "
                                        f"{render_type} render", template, duration,
                                        render_type=render_type)
            return
        tracker.track_render_completed(render_id, template, render_type, duration, dimensions)
        if duration > threshold:
            tracker.track_slow_render(render_id, render_type, duration, threshold, template,
                                      dimensions)

    def _api_call(self, phase: str) -> None:
        tracker = self._trackers["api-gateway"]
        endpoint = self._random.choice(ENDPOINTS)
        method = "POST" if endpoint.startswith("/api/render") else "GET"
        duration = self._random.uniform(5, 400)
        if self._random.random() < 0.003:
            tracker.track_api_error(endpoint, 500, "Internal server error", None, duration,
                                    method=method)
        else:
            tracker.track_api_request_completed(endpoint, method, 200, duration)

    def _external_call(self, phase: str) -> None:
        tracker = self._trackers["variant-generator"]
        duration = self._random.uniform(200, 2500)
        if phase == "API outage":
            status = self._random.choice((429, 429, 503))
            tracker.track_api_error(FLAKY_ENDPOINT, status, "Rate limit reached for requests"
                                    if status == 429 else "Service unavailable", None, duration,
                                    method="POST", retry_after_s=20.0)
        else:
            tracker.track_api_request_completed(FLAKY_ENDPOINT, "POST", 200, duration)

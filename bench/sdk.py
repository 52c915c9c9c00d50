"""``make bench-sdk``: per-call latency and events/s of ``track_render_failed``, and the
cost of asking the template kill switch.

Measured with the broker up and with it down, next to two floors measured in the same
run: encoding the same record (with fastavro, and with the SDK's compiled encoder) plus a
bare ``produce()``. Targets (#27): p50 <= 0.6 of the fastavro floor of the same run,
p99 <= 25 us; each is printed with its verdict.

``is_template_enabled`` is timed over a view loaded with 10,000 template controls, next to
a bare ``dict.get`` on as many keys (target: well under a microsecond per call).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from fastavro import schemaless_writer

from bench.common import kafka_bootstrap, percentile, print_table
from ept import Tracker
from ept.core.kafka import ensure_topics
from ept.core.settings import Settings, load_settings
from ept.core.template_controls import DISABLED, ENABLED, TemplateControl
from ept.sanitization import sanitize
from ept.schemas.compiled import build_encoder
from ept.schemas.registry import current_schemas

CALLS = int(os.environ.get("EPT_BENCH_CALLS", "200000"))
P50_TARGET = 0.6  # of the fastavro floor's p50
P99_TARGET_US = 25.0
TEMPLATES = 10_000
MESSAGE = "Render operation timed out after 30 seconds"


def measure(call: Callable[[int], None], calls: int) -> tuple[list[float], float]:
    """Per-call latencies (us) and events/s over ``calls`` calls of ``call(i)``."""
    for index in range(2000):  # warm up
        call(index)
    latencies = [0.0] * calls
    clock = time.perf_counter_ns
    started = clock()
    for index in range(calls):
        before = clock()
        call(index)
        latencies[index] = (clock() - before) / 1000.0
    elapsed = (clock() - started) / 1e9
    return latencies, calls / elapsed


def floor_call(bootstrap: str, compiled: bool) -> tuple[Callable[[int], None], Producer]:
    schema = current_schemas()["render_failed"]
    header = b"\xc3\x01" + schema.fingerprint
    encode = build_encoder(schema.definition)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 20, "queue.buffering.max.messages": 2_000_000})
    record = {"event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000),
              "service": "bench", "environment": "bench", "sdk_version": "0", "user_id": None,
              "account_id": None, "render_id": "render_001", "template_id": "template_hero_001",
              "reason": "timeout", "error_message": MESSAGE, "duration_ms": 30000.0,
              "retry_attempt": 0, "render_type": None}

    def fastavro_call(index: int) -> None:
        buffer = io.BytesIO()
        buffer.write(header)
        schemaless_writer(buffer, schema.parsed, record)
        producer.produce("bench.floor", buffer.getvalue(), b"template_hero_001")
        producer.poll(0)

    def compiled_call(index: int) -> None:
        producer.produce("bench.floor", header + encode(record), b"template_hero_001")
        producer.poll(0)

    return compiled_call if compiled else fastavro_call, producer


def tracker_call(tracker: Tracker) -> Callable[[int], None]:
    def call(index: int) -> None:
        tracker.track_render_failed("render_001", "timeout", MESSAGE, "template_hero_001",
                                    30000.0, 0)

    return call


def main() -> None:
    rows = []
    with kafka_bootstrap() as bootstrap, tempfile.TemporaryDirectory() as state:
        floors = {}
        for compiled, title in ((False, "floor: fastavro encode + bare produce()"),
                                (True, "floor: compiled encode + bare produce()")):
            floor, producer = floor_call(bootstrap, compiled)
            floors[title] = measure(floor, CALLS)
            producer.flush(60)
        scenarios = {
            "broker up": load_settings(kafka_bootstrap=bootstrap, topic_prefix="bench.",
                                       state_dir=Path(state) / "up",
                                       producer_queue_max=2_000_000),
            "broker down": load_settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="bench.",
                                         state_dir=Path(state) / "down",
                                         producer_queue_max=2_000_000),
        }
        floor_p50 = percentile(next(iter(floors.values()))[0], 0.5)
        verdicts = []
        for title, (latencies, rate) in floors.items():
            rows.append([title, *figures(latencies, rate),
                         f"{percentile(latencies, 0.5) / floor_p50:.2f}"])
        for name, settings in scenarios.items():
            tracker = Tracker(settings, service="bench", environment="bench")
            latencies, rate = measure(tracker_call(tracker), CALLS)
            stats = tracker.get_error_performance_stats()
            tracker.close(timeout=30 if name == "broker up" else 0.1)
            rows.append([f"track_render_failed, {name}", *figures(latencies, rate),
                         f"{percentile(latencies, 0.5) / floor_p50:.2f}"])
            verdicts.append(verdict(f"track_render_failed, {name}", latencies, floor_p50))
            assert stats.dropped == 0 and stats.rejected == 0, stats
        switch_rows = template_switch(scenarios["broker up"].replace(topic_prefix="bench-tc."))
    print_table(f"SDK: {CALLS:,} calls on one thread (targets: p50 <= {P50_TARGET} of the "
                f"fastavro floor, p99 <= {P99_TARGET_US:g} us)",
                ["what", "p50 us", "p99 us", "max us", "events/s", "p50 / fastavro floor"], rows)
    for line in verdicts:
        print(line)
    print_table(f"Template kill switch: {CALLS:,} lookups over {TEMPLATES:,} controls "
                "(target: well under 1 us)", ["what", "ns per call", "/ dict.get"], switch_rows)
    print_table("Sanitization, worst case: 64 KiB messages built against each pattern "
                "(linear: 8x the 8 KiB time; quadratic: 64x)",
                ["input", "8 KiB ms", "64 KiB ms", "64 / 8"], sanitize_worst_case())


ADVERSARIAL = {  # name: a unit repeated to the size, built to make a pattern re-scan
    "local part then '@'": ("a", "@"), "dotted run then '@'": ("a.", "@x"),
    "scheme run then '://'": ("a", "://"), "'eyJ' repeated": ("eyJ", ""),
    "'sk-' repeated": ("sk-", ""), "digits and spaces": ("1 ", ""),
    "'password=' repeated": ("password=", ""), "hex run": ("0", ""),
}


def sanitize_worst_case() -> list[list[str]]:
    """ms to sanitize each adversarial input at 8 and 64 KiB (best of 3)."""
    rows = []
    for name, (unit, end) in ADVERSARIAL.items():
        timings = []
        for size in (8192, 65536):
            text = unit * ((size - len(end)) // len(unit)) + end
            best = float("inf")
            for _ in range(3):
                sanitize.cache_clear()
                began = time.perf_counter()
                sanitize(text)
                best = min(best, (time.perf_counter() - began) * 1000)
            timings.append(best)
        rows.append([name, f"{timings[0]:.2f}", f"{timings[1]:.2f}",
                     f"{timings[1] / max(timings[0], 1e-6):.1f}"])
    return rows


def template_switch(settings: Settings) -> list[list[str]]:
    """ns per ``is_template_enabled`` call on a loaded view, against a bare dict lookup."""
    ensure_topics(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    now = int(time.time() * 1000)
    for index in range(TEMPLATES):
        control = TemplateControl(f"tpl_{index}", DISABLED if index % 10 == 0 else ENABLED,
                                  "bench", "bench", now)
        producer.produce(settings.topics.template_controls, control.encode(),
                         control.template_id.encode())
        producer.poll(0)
    producer.flush(60)
    tracker = Tracker(settings, service="bench", environment="bench")
    try:
        assert tracker.wait_for_template_controls(60), "template controls not loaded"
        keys = [f"tpl_{index * 7 % (TEMPLATES * 2)}" for index in range(CALLS)]  # half unknown
        plain = {f"tpl_{index}": index % 10 != 0 for index in range(TEMPLATES)}
        assert [tracker.is_template_enabled(key) for key in keys[:TEMPLATES]] == [
            plain.get(key, True) for key in keys[:TEMPLATES]]
        baseline = per_call_ns(plain.get, keys)
        lookup = per_call_ns(tracker.is_template_enabled, keys)
        return [["dict.get (baseline)", f"{baseline:.0f}", "1.00"],
                ["tracker.is_template_enabled", f"{lookup:.0f}", f"{lookup / baseline:.2f}"]]
    finally:
        tracker.close(5)


def per_call_ns(call: Callable[[str], object], keys: list[str]) -> float:
    """The best of 5 runs over ``keys``, per call (the loop's own cost included)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for key in keys:
            call(key)
        best = min(best, (time.perf_counter_ns() - started) / len(keys))
    return best


def verdict(what: str, latencies: list[float], floor_p50: float) -> str:
    """The two targets, each with its figure and whether it was met."""
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    ratio = p50 / floor_p50
    return (f"{what}: p50 {p50:.2f} us = {ratio:.2f} of the fastavro floor "
            f"({floor_p50:.2f} us; target <= {P50_TARGET}: "
            f"{'met' if ratio <= P50_TARGET else 'MISSED'}); p99 {p99:.2f} us "
            f"(target <= {P99_TARGET_US:g}: {'met' if p99 <= P99_TARGET_US else 'MISSED'})")


def figures(latencies: list[float], rate: float) -> list[str]:
    return [f"{percentile(latencies, 0.5):.2f}", f"{percentile(latencies, 0.99):.2f}",
            f"{max(latencies):.0f}", f"{rate:,.0f}"]


if __name__ == "__main__":
    main()

"""Shared benchmark plumbing: a broker to measure against, percentiles, printing."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ept.deploy.broker import LocalBroker


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[str]:
    """``EPT_KAFKA_BOOTSTRAP`` if set, else a native broker in a temporary directory."""
    if os.environ.get("EPT_KAFKA_BOOTSTRAP"):
        yield os.environ["EPT_KAFKA_BOOTSTRAP"]
        return
    from tests.conftest import free_port

    with tempfile.TemporaryDirectory(prefix="ept-bench-kafka-") as data:
        broker = LocalBroker(Path(data), free_port())
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def median(values: list[float]) -> float:
    return statistics.median(values)

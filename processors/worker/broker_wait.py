"""Waiting for the broker before a service starts, instead of exiting.

Faust gives up at start when no broker answers (``NodeNotReadyError`` while it creates its
assignor's topic), and so would creating ept's topics: a worker started before its
broker, or during a broker's restart, would then depend on a supervisor to start it
again. :func:`wait_for_broker` asks the cluster for its metadata until it answers,
backing off, and says once per try that it waits (one line, no traceback).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from ept.core.kafka import connection_config
from ept.core.settings import Settings

log = logging.getLogger("ept.worker")

MAX_PAUSE_S = 30.0


def broker_answers(settings: Settings, timeout_s: float) -> str | None:
    """None when the cluster of ``settings`` gave its metadata within ``timeout_s``, else
    why not. Blocks up to about ``timeout_s``; never raises for an absent broker."""
    # librdkafka's own connection errors would repeat what the returned reason says:
    # they go to a logger that keeps only critical ones.
    quiet = logging.getLogger("ept.librdkafka.probe")
    quiet.setLevel(logging.CRITICAL)
    config: dict[str, Any] = {**connection_config(settings), "logger": quiet}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        return error.str() if isinstance(error, KafkaError) else str(exc)
    return None


def wait_for_broker(settings: Settings, stop: threading.Event | None = None,
                    say: Callable[[str], None] = log.warning,
                    first_pause_s: float = 1.0) -> bool:
    """Block until the broker of ``settings`` answers; True then, False if ``stop`` was set
    first. While it does not, says (through ``say``) that it waits and when it tries again,
    pausing ``first_pause_s``, doubled after each try up to :data:`MAX_PAUSE_S`."""
    stop = stop or threading.Event()
    pause = first_pause_s
    while not stop.is_set():
        reason = broker_answers(settings, timeout_s=5.0)
        if reason is None:
            return True
        say(f"waiting for the broker at {settings.kafka_bootstrap} ({reason}); "
            f"trying again in {pause:.0f} s")
        if stop.wait(pause):
            break
        pause = min(MAX_PAUSE_S, pause * 2)
    return False

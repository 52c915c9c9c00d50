"""The template kill switch: each template's state on the compacted ``template_controls``
topic, keyed by template id, and the one reader and writer of that topic.

A person (``ept templates``, the dashboard) or a rule with ``auto_action`` writes a
:class:`TemplateControl`; render services ask a :class:`TemplateControlView`, which keeps
the latest control of every template in memory, fed by a background consumer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from ept.core.kafka import ConsumerRole, ProducerRole, consumer_config, producer_config
from ept.core.settings import Settings

log = logging.getLogger("ept.templates")

DISABLED, ENABLED = "disabled", "enabled"
STATES = (DISABLED, ENABLED)


class BadTemplateControl(ValueError):
    """A template control is invalid (given, or read from the topic); the message says why."""


class TemplateDisabledError(RuntimeError):
    """A render was refused: its template is disabled (``control`` says why and by whom)."""

    def __init__(self, control: TemplateControl) -> None:
        self.control = control
        super().__init__(f"template {control.template_id!r} is disabled by {control.by}: "
                         f"{control.reason} (`ept templates enable {control.template_id}` "
                         f"re-enables it)")


@dataclass(frozen=True)
class TemplateControl:
    """One message of the template controls topic (JSON), keyed by ``template_id``."""

    template_id: str
    state: str  # DISABLED or ENABLED
    reason: str
    by: str  # a person, or ``rule:<name>`` for an automatic action
    at_ms: int  # wall-clock time of the decision (ms since the epoch)
    alert_fingerprint: str | None = None  # the alert that caused it, if any

    def __post_init__(self) -> None:
        if not self.template_id:
            raise BadTemplateControl("template_id: must not be empty")
        if self.state not in STATES:
            raise BadTemplateControl(f"state: must be one of {', '.join(STATES)}, "
                                     f"got {self.state!r}")

    @property
    def disabled(self) -> bool:
        return self.state == DISABLED

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, payload: bytes | None) -> TemplateControl:
        """Raises BadTemplateControl when ``payload`` is not a JSON template control."""
        try:
            data = json.loads(payload or b"")
        except ValueError as exc:
            raise BadTemplateControl(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadTemplateControl("not a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names[:5] if name not in data]
        if missing:
            raise BadTemplateControl(f"missing fields: {', '.join(missing)}")
        try:
            return cls(str(data["template_id"]), str(data["state"]), str(data["reason"]),
                       str(data["by"]), int(data["at_ms"]), data.get("alert_fingerprint"))
        except (TypeError, ValueError) as exc:
            raise BadTemplateControl(f"bad field: {exc}") from None


def publish_control(settings: Settings, control: TemplateControl, timeout_s: float = 30.0
                    ) -> None:
    """Write ``control`` and wait until the broker acknowledged it. Blocks.

    Raises KafkaException when it was not delivered within ``timeout_s``.
    """
    errors: list[Any] = []
    producer = Producer(producer_config(settings, ProducerRole.CONTROL, **{
        "message.timeout.ms": int(timeout_s * 1000)}))
    producer.produce(settings.topics.template_controls, key=control.template_id.encode(),
                     value=control.encode(),
                     on_delivery=lambda error, message: errors.append(error))
    if producer.flush(timeout_s + 5) or errors[0] is not None:
        raise KafkaException(errors[0] if errors else "template control not delivered")


def read_controls(settings: Settings, timeout_s: float = 20.0) -> list[TemplateControl]:
    """Every template's latest control, read to the topic's end. Blocks; raises
    TimeoutError when the broker did not answer within ``timeout_s``."""
    view = TemplateControlView(settings).start()
    try:
        if not view.wait_loaded(timeout_s):
            raise TimeoutError(f"{settings.topics.template_controls} on "
                               f"{settings.kafka_bootstrap} not read within {timeout_s:.0f} s")
        return view.controls()
    finally:
        view.close()


class TemplateControlView:
    """The latest control of every template, kept by a daemon thread that follows the topic
    from its start.

    :meth:`is_enabled` is a dictionary lookup: it never blocks nor raises. Until the topic
    has been read to the end seen at start (:attr:`loaded`), templates count as enabled:
    tracking never stops a render service that cannot reach Kafka. ``on_update`` is called
    (in the view's thread) with each control read after that.
    """

    def __init__(self, settings: Settings, poll_s: float = 0.2,
                 on_update: Callable[[TemplateControl], None] | None = None) -> None:
        self._settings = settings
        self._poll_s = poll_s
        self._on_update = on_update
        self._controls: dict[str, TemplateControl] = {}
        self._disabled: set[str] = set()  # the hot path's answer, kept beside the controls
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="ept-template-controls",
                                        daemon=True)

    def start(self) -> TemplateControlView:
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        """Block until the topic was read to its end (True) or ``timeout_s`` passed."""
        return self._loaded.wait(timeout_s)

    def is_enabled(self, template_id: str) -> bool:
        return template_id not in self._disabled

    def control(self, template_id: str) -> TemplateControl | None:
        return self._controls.get(template_id)

    def controls(self) -> list[TemplateControl]:
        """Every template's latest control, by template id."""
        return [self._controls[key] for key in sorted(self._controls)]

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except Exception:
                log.exception("template controls: reading %s failed; again in 5 s",
                              self._settings.topics.template_controls)
                self._stop.wait(5.0)

    def _read(self) -> None:
        """Follow the topic until stopped. Blocks; raises KafkaException on broker errors."""
        topic = self._settings.topics.template_controls
        consumer = Consumer(consumer_config(self._settings, ConsumerRole.TOPIC_READER,
                                            f"ept-template-view-{uuid.uuid4()}",
                                            **{"fetch.wait.max.ms": 100}))
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                self._loaded.set()  # no topic: nothing is disabled
                self._stop.wait(5.0)
                return
            partitions = sorted(metadata.partitions)
            ends = {}
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
                if high > low:
                    ends[partition] = high
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            started = time.monotonic()
            while not self._stop.is_set():
                if not ends and not self._loaded.is_set():
                    log.info("template controls loaded: %d disabled in %.2f s",
                             sum(c.disabled for c in self._controls.values()),
                             time.monotonic() - started)
                    self._loaded.set()
                for message in consumer.consume(500, timeout=self._poll_s):
                    if message.error() is not None:
                        continue
                    partition, offset = message.partition() or 0, message.offset() or 0
                    self._apply(message.key(), message.value(), partition, offset)
                    if partition in ends and offset + 1 >= ends[partition]:
                        del ends[partition]
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int
               ) -> None:
        try:
            control = TemplateControl.decode(value)
        except BadTemplateControl as exc:
            log.warning("template controls [%d]@%d skipped: %s", partition, offset, exc)
            return
        if key is not None and key.decode(errors="replace") != control.template_id:
            log.warning("template controls [%d]@%d skipped: key %r is not its template %r",
                        partition, offset, key, control.template_id)
            return
        self._controls[control.template_id] = control
        if control.disabled:
            self._disabled.add(control.template_id)
        else:
            self._disabled.discard(control.template_id)
        if self._on_update is not None and self._loaded.is_set():
            self._on_update(control)

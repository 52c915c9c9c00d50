"""The names of ept's Kafka topics: one attribute per topic, all under one prefix."""

from __future__ import annotations

from dataclasses import dataclass

from ept.schemas.registry import EVENT_NAMES


@dataclass(frozen=True)
class Topics:
    """Topic names under ``prefix`` (``EPT_TOPIC_PREFIX``, default ``ept.``)."""

    prefix: str

    def event(self, event_name: str) -> str:
        """The topic of one event type, e.g. ``ept.render_failed``."""
        return f"{self.prefix}{event_name}"

    @property
    def events(self) -> dict[str, str]:
        """Event name -> topic, for every event type."""
        return {name: self.event(name) for name in EVENT_NAMES}

    @property
    def alerts(self) -> str:
        """Alert notices (firing / resolved), keyed by alert fingerprint."""
        return f"{self.prefix}alerts"

    @property
    def template_controls(self) -> str:
        """Each template's kill-switch state (disabled / enabled), keyed by template id;
        compacted."""
        return f"{self.prefix}template_controls"

    @property
    def slow_thresholds(self) -> str:
        """Slow thresholds tuned from data, keyed ``<operation>[/<template id>]``;
        compacted."""
        return f"{self.prefix}slow_thresholds"

    @property
    def deletions(self) -> str:
        """Deleted accounts and users, keyed ``<kind>:<id>``; compacted."""
        return f"{self.prefix}deletions"

    @property
    def dlq(self) -> str:
        """Messages the sink could not store, unchanged, with headers naming their origin."""
        return f"{self.prefix}dlq"

    @property
    def worker_signals(self) -> str:
        """The worker's repartition topic (per-scope signals and watermark ticks)."""
        return f"{self.prefix}worker-signals"

    @property
    def worker_scopes_changelog(self) -> str:
        """The changelog of the worker's ``scopes`` table (Faust's name for it; compacted)."""
        return f"{self.prefix}worker-scopes-changelog"

    @property
    def all(self) -> list[str]:
        """Every topic ept creates."""
        return [*self.events.values(), self.alerts, self.template_controls,
                self.slow_thresholds, self.deletions,
                self.dlq, self.worker_signals, self.worker_scopes_changelog]

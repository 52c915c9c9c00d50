"""What one sink did, counted by the steps that did it (read by tests and the bench)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SinkCounters:
    consumed: int = 0
    inserted: int = 0
    skipped_already_stored: int = 0
    dead_lettered: int = 0
    dropped_deleted: int = 0  # events of a deleted account or user, never stored
    insert_failures: int = 0
    batches: int = 0

"""The record type of ept's own topics (the control topics, the alert topic): a frozen
dataclass carried as one JSON object.

Pure: no Kafka here, so the worker's pure logic and the SDK can hold records without a
client library.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Self


class JsonRecord:
    """Base of a frozen dataclass written to a topic as a JSON object of its fields.

    A subclass names the error its invalid records raise (:attr:`invalid`, a ValueError)
    and builds itself from a decoded object (:meth:`from_json`); this class checks that
    the payload is a JSON object holding every field without a default.
    """

    invalid: ClassVar[type[ValueError]]
    """Raised by :meth:`decode` (and, by convention, the subclass's ``__post_init__``)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record of ``data``, which holds every required field. Raises
        :attr:`invalid`, TypeError or ValueError when a field is bad."""
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes | None) -> Self:
        """The record in ``payload``. Raises :attr:`invalid`, saying why, when it is not
        a JSON object with the record's fields."""
        try:
            data = json.loads(payload or b"")
        except ValueError as exc:
            raise cls.invalid(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise cls.invalid("not a JSON object")
        missing = [field.name for field in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if field.default is dataclasses.MISSING
                   and field.default_factory is dataclasses.MISSING and field.name not in data]
        if missing:
            raise cls.invalid(f"missing fields: {', '.join(missing)}")
        try:
            return cls.from_json(data)
        except cls.invalid:
            raise
        except (TypeError, ValueError) as exc:
            raise cls.invalid(f"bad field: {exc}") from None


class ControlRecord(JsonRecord):
    """A record of a compacted control topic, keyed by :attr:`key`: the topic keeps the
    latest record of each key."""

    @property
    def key(self) -> str:
        raise NotImplementedError

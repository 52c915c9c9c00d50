"""The event schemas of ept, loaded from the ``.avsc`` files beside this module.

The files are the source of truth for every producer and consumer. ``released/vN/``
holds the schemas as released, so that data written by older producers stays readable
and schema changes can be checked for backward compatibility.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

NAMESPACE = "io.ept.events"
EVENT_NAMES: tuple[str, ...] = (
    "render_failed",
    "render_completed",
    "slow_render",
    "api_error",
    "api_request_completed",
)
ENVELOPE_FIELDS: tuple[str, ...] = (
    "event_id", "event_time", "service", "environment", "sdk_version", "user_id", "account_id",
)


@dataclass(frozen=True)
class EventSchema:
    """One version of one event's schema."""

    name: str
    version: str
    definition: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form, little-endian
    parsed_plain: dict[str, Any]  # the same without logical types: epoch ms, UUID strings

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(field["name"] for field in self.definition["fields"])


def _schema_from_text(name: str, version: str, text: str) -> EventSchema:
    definition = json.loads(text)
    parsed = cast(dict[str, Any], parse_schema(definition))
    digest = fingerprint(to_parsing_canonical_form(definition), "CRC-64-AVRO")
    plain = cast(dict[str, Any], parse_schema(_without_logical_types(definition)))
    return EventSchema(name, version, definition, parsed, bytes.fromhex(digest), plain)


def _without_logical_types(node: Any) -> Any:
    """A copy of a schema with ``logicalType`` annotations removed (same binary encoding)."""
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


@cache
def current_schemas() -> dict[str, EventSchema]:
    """The schema every event is written with, by event name."""
    root = resources.files("ept.schemas")
    return {
        name: _schema_from_text(name, "current", (root / f"{name}.avsc").read_text())
        for name in EVENT_NAMES
    }


@cache
def released_schemas() -> list[EventSchema]:
    """Every released schema version (``released/vN/*.avsc``), oldest first."""
    released = resources.files("ept.schemas") / "released"
    versions = sorted(
        (entry for entry in released.iterdir() if entry.name.startswith("v")),
        key=lambda entry: int(entry.name[1:]),
    )
    return [
        _schema_from_text(file.name.removesuffix(".avsc"), version.name, file.read_text())
        for version in versions
        for file in sorted(version.iterdir(), key=lambda f: f.name)
        if file.name.endswith(".avsc")
    ]


@cache
def writer_schemas_by_fingerprint() -> dict[bytes, EventSchema]:
    """Every schema a producer may have written with (current and released)."""
    known = {schema.fingerprint: schema for schema in released_schemas()}
    known.update({schema.fingerprint: schema for schema in current_schemas().values()})
    return known

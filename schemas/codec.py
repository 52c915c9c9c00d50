"""Encoding and decoding of ept events on the wire.

Two framings are recognised (see docs/wire-format.md):

* Avro single-object encoding (the default, registry-free):
  ``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO fingerprint + Avro binary body.
* Confluent Schema Registry framing: ``0x00`` + 4-byte big-endian schema id + Avro body.

:class:`Decoder` is the one decoder every consumer of the project uses.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from ept.schemas.compiled import (
    Decode,
    MalformedBody,
    Refused,
    build_decoder,
    build_encoder,
    compilable,
)
from ept.schemas.registry import (
    NAMESPACE,
    EventSchema,
    _without_logical_types,
    current_schemas,
    writer_schemas_by_fingerprint,
)
from ept.schemas.validation import CHECK_NAMES, field_checks, fields_valid

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_SINGLE_OBJECT_HEADER = 10
_CONFLUENT_HEADER = 5


class DecodeError(ValueError):
    """A payload could not be decoded. Subclasses say why; the message gives details."""


class UnknownFramingError(DecodeError):
    """The payload starts with neither the single-object nor the Confluent magic bytes."""


class UnknownSchemaError(DecodeError):
    """The payload names a schema fingerprint or registry id that is not known."""


class CorruptPayloadError(DecodeError):
    """The framing is right but the Avro body is truncated, corrupt or has trailing bytes."""


@dataclass(slots=True)  # not frozen: that costs ~0.4 us a construction, one per event read
class DecodedEvent:
    """An event's name and record; ``body`` is its Avro body when the payload was written
    with the current schema (the sink stores it as is), else None."""

    name: str
    record: dict[str, Any]
    body: bytes | None = None


class Encoder(Protocol):
    def encode(self, event_name: str, record: dict[str, Any]) -> bytes:
        """Encode ``record`` as event ``event_name``. Raises ValueError on invalid records."""
        ...


EventEncode = Callable[[dict[str, Any]], bytes]
"""Encodes one record of a given event, framing included (see :func:`event_encoders`)."""


class _FramedEncoder:
    """Avro binary body after a fixed per-event header. ``encode`` never blocks.

    Records carry ``event_id`` as a UUID string and ``event_time`` as epoch milliseconds
    (the binary encoding of the logical types). The compiled encoder of
    :mod:`schemas.compiled` writes the frame; any record it refuses is handed to fastavro,
    which writes it or raises its own error naming the problem.
    """

    def __init__(self, headers: dict[str, bytes]) -> None:
        self._headers = headers
        self._encoders = self.with_constants({})

    def encode(self, event_name: str, record: dict[str, Any]) -> bytes:
        return self._encoders[event_name](record)

    def with_constants(self, constants: dict[str, Any], checked: bool = False
                       ) -> dict[str, EventEncode]:
        """Per event, ``encode(record)``: the bytes of ``encode(name, {**record,
        **constants})``, the header and the ``constants`` fields encoded once, here. When
        ``checked``, a record that may break a field rule raises Refused instead (see
        :func:`event_encoders`)."""
        return {name: self._event_encoder(schema, constants, checked)
                for name, schema in current_schemas().items()}

    def _event_encoder(self, schema: EventSchema, constants: dict[str, Any], checked: bool
                       ) -> EventEncode:
        header, parsed = self._headers[schema.name], schema.parsed_plain

        def with_fastavro(record: dict[str, Any]) -> bytes:
            """Writes what the compiled encoder refused, or raises the error to report."""
            buffer = io.BytesIO()
            buffer.write(header)
            schemaless_writer(buffer, parsed, {**record, **constants})
            return buffer.getvalue()

        if not compilable(schema.definition):
            return _checking(schema.name, with_fastavro) if checked else with_fastavro
        return build_encoder(schema.definition, prefix=header, constants=constants,
                             fallback=with_fastavro,
                             checks=field_checks(schema.name) if checked else None,
                             names=CHECK_NAMES)


def _checking(name: str, encode: EventEncode) -> EventEncode:
    """``encode`` behind :func:`validation.fields_valid`: Refused when it says no."""
    valid = fields_valid(name)

    def checked(record: dict[str, Any]) -> bytes:
        if not valid(record):
            raise Refused(name)
        return encode(record)

    return checked


def event_encoders(encoder: Encoder, constants: dict[str, Any], *, checked: bool = False
                   ) -> dict[str, EventEncode]:
    """Per event, a function encoding a record as ``encoder`` would with the fields of
    ``constants`` added (the SDK's envelope: service, environment, version). With ept's
    encoders the constants are encoded once; another :class:`Encoder` is handed each
    record merged with them. The functions raise what ``encoder`` raises.

    When ``checked``, the event's field rules (:mod:`schemas.validation`) are checked on
    the way (inlined in the compiled encoder): a record that may break one raises
    :class:`Refused`, and :func:`validation.field_problems` tells whether and how it does.
    """
    if isinstance(encoder, _FramedEncoder):
        return encoder.with_constants(constants, checked)

    def merging(name: str) -> EventEncode:
        def encode(record: dict[str, Any]) -> bytes:
            return encoder.encode(name, {**record, **constants})

        return _checking(name, encode) if checked else encode

    return {name: merging(name) for name in current_schemas()}


class SingleObjectEncoder(_FramedEncoder):
    """Avro single-object encoding with the schemas of ``schemas/`` (registry-free)."""

    def __init__(self) -> None:
        super().__init__({name: SINGLE_OBJECT_MAGIC + schema.fingerprint
                          for name, schema in current_schemas().items()})


_registry_lock = threading.Lock()


@cache
def registry_client(url: str) -> Any:
    """The Schema Registry client for ``url`` (one per process, so ``mock://`` is shared)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    with _registry_lock:
        return SchemaRegistryClient.new_client({"url": url})


class ConfluentEncoder(_FramedEncoder):
    """Confluent wire format: registers the schemas of ``schemas/`` under ``{topic}-value``.

    The constructor talks to the registry (blocks on HTTP, raises its errors); ``encode``
    uses the schema ids it obtained and never blocks.
    """

    def __init__(self, registry_url: str, topic_for: dict[str, str]) -> None:
        from confluent_kafka.schema_registry import Schema

        client = registry_client(registry_url)
        headers = {}
        for name, schema in current_schemas().items():
            schema_id = client.register_schema(
                f"{topic_for[name]}-value", Schema(json.dumps(schema.definition), "AVRO")
            )
            headers[name] = bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")
        super().__init__(headers)


class Decoder:
    """Decodes any ept event payload into the current schema's shape.

    Data written with an older released schema is resolved to the current one. A
    registry URL enables the Confluent framing; the first payload of each schema id
    fetches the schema (blocks on HTTP), later ones use the cache.

    With ``raw=True`` logical types are not converted: ``event_time`` stays epoch
    milliseconds and ``event_id`` a string, and payloads of the current schemas are read
    by the compiled decoders of :mod:`schemas.compiled` (about twice as fast as fastavro);
    the sink and the worker use it.

    ``decode`` raises only :class:`DecodeError` subclasses, whatever the bytes.
    """

    def __init__(self, registry_url: str | None = None, *, raw: bool = False) -> None:
        self._registry_url = registry_url
        self._raw = raw
        current = current_schemas()
        self._readers = {name: self._shape(schema) for name, schema in current.items()}
        # Writer schema, and the reader to resolve it to (None when it is the current one).
        self._by_fingerprint = {
            fingerprint: (schema.name, self._shape(schema),
                          None if schema.fingerprint == current[schema.name].fingerprint
                          else self._readers[schema.name])
            for fingerprint, schema in writer_schemas_by_fingerprint().items()
        }
        # Single-object header (magic + fingerprint) -> (event, compiled decoder).
        self._compiled: dict[bytes, tuple[str, Decode]] = {
            SINGLE_OBJECT_MAGIC + schema.fingerprint: (name, build_decoder(schema.definition))
            for name, schema in current.items() if raw and compilable(schema.definition)
        }
        self._by_registry_id: dict[int, tuple[str, dict[str, Any]]] = {}

    def _shape(self, schema: EventSchema) -> dict[str, Any]:
        return schema.parsed_plain if self._raw else schema.parsed

    def decode(self, payload: bytes) -> DecodedEvent:
        if payload.__class__ is bytes:
            compiled = self._compiled.get(payload[:_SINGLE_OBJECT_HEADER])
            if compiled is not None:
                name, read = compiled
                try:
                    record = read(payload, _SINGLE_OBJECT_HEADER)
                except MalformedBody as exc:
                    raise _corrupt(name, payload, _SINGLE_OBJECT_HEADER, exc) from None
                return DecodedEvent(name, record, payload[_SINGLE_OBJECT_HEADER:])
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise CorruptPayloadError(f"payload must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        if payload[:2] == SINGLE_OBJECT_MAGIC:
            if len(payload) < _SINGLE_OBJECT_HEADER:
                raise CorruptPayloadError(
                    f"truncated single-object header: {len(payload)} bytes, need 10"
                )
            known = self._by_fingerprint.get(payload[2:10])
            if known is None:
                raise UnknownSchemaError(
                    f"unknown schema fingerprint {payload[2:10].hex()} (not in schemas/)"
                )
            name, writer, reader = known
            return self._read(name, writer, reader, payload, _SINGLE_OBJECT_HEADER)
        if payload[:1] == bytes([CONFLUENT_MAGIC]) and len(payload) >= _CONFLUENT_HEADER:
            name, parsed = self._registry_schema(int.from_bytes(payload[1:5], "big"))
            return self._read(name, parsed, self._readers[name], payload, _CONFLUENT_HEADER)
        raise UnknownFramingError(
            f"unknown framing: first bytes {payload[:4].hex() or '(empty)'}; expected c301 "
            "(single-object) or 00 (Schema Registry)"
        )

    def decode_record(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """:meth:`decode`'s event name and record, without the body: the worker's path,
        which reads tens of thousands a second. Raises as :meth:`decode` does."""
        if payload.__class__ is bytes:
            compiled = self._compiled.get(payload[:_SINGLE_OBJECT_HEADER])
            if compiled is not None:
                name, read = compiled
                try:
                    return name, read(payload, _SINGLE_OBJECT_HEADER)
                except MalformedBody as exc:
                    raise _corrupt(name, payload, _SINGLE_OBJECT_HEADER, exc) from None
        decoded = self.decode(payload)
        return decoded.name, decoded.record

    def _registry_schema(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        cached = self._by_registry_id.get(schema_id)
        if cached is not None:
            return cached
        if self._registry_url is None:
            raise UnknownSchemaError(
                f"Schema Registry framing (schema id {schema_id}) but no registry is configured "
                "(EPT_SCHEMA_REGISTRY_URL)"
            )
        try:
            text = registry_client(self._registry_url).get_schema(schema_id).schema_str
            definition = json.loads(text)
            parsed = cast(dict[str, Any], parse_schema(
                _without_logical_types(definition) if self._raw else definition))
        except Exception as exc:
            raise UnknownSchemaError(f"schema id {schema_id} not found in the registry: {exc}"
                                     ) from exc
        name = str(definition.get("name", "")).rpartition(".")[2]
        if name not in self._readers or definition.get("namespace", NAMESPACE) != NAMESPACE:
            raise UnknownSchemaError(f"schema id {schema_id} is not an ept event ({name!r})")
        self._by_registry_id[schema_id] = (name, parsed)
        return name, parsed

    def _read(self, name: str, writer: dict[str, Any], reader: dict[str, Any] | None,
              payload: bytes, offset: int) -> DecodedEvent:
        body = io.BytesIO(payload)
        body.seek(offset)
        try:
            record = schemaless_reader(body, writer, reader)
        except Exception as exc:  # fastavro raises many types on bad bytes
            raise _corrupt(name, payload, offset, exc) from exc
        if body.tell() != len(payload):
            raise CorruptPayloadError(
                f"{len(payload) - body.tell()} trailing bytes after the {name} record"
            )
        if not isinstance(record, dict):
            raise CorruptPayloadError(f"{name} body did not decode to a record")
        # No reader schema: written with the current one, so the body is in its encoding.
        return DecodedEvent(name, record, payload[offset:] if reader is None else None)


def _corrupt(name: str, payload: bytes, offset: int, cause: Exception) -> CorruptPayloadError:
    return CorruptPayloadError(f"corrupt or truncated {name} body ({len(payload) - offset} "
                               f"bytes): {type(cause).__name__}: {cause}")


@cache
def _body_encoder() -> _FramedEncoder:
    return _FramedEncoder(dict.fromkeys(current_schemas(), b""))


def current_body(event_name: str, record: dict[str, Any]) -> bytes:
    """The Avro body (no framing) of a decoded ``record`` in the current schema of
    ``event_name``; raises ValueError/TypeError when the record does not fit it."""
    return _body_encoder().encode(event_name, record)


def encoder_for(registry_url: str | None, topic_for: dict[str, str]) -> Encoder:
    """The encoder of the configured framing: Confluent with a registry, else single-object."""
    if registry_url:
        return ConfluentEncoder(registry_url, topic_for)
    return SingleObjectEncoder()


"""The wire contract of ept: event schemas (``*.avsc``), their encoders and the shared decoder."""

from ept.schemas.codec import (
    ConfluentEncoder,
    CorruptPayloadError,
    DecodedEvent,
    DecodeError,
    Decoder,
    Encoder,
    SingleObjectEncoder,
    UnknownFramingError,
    UnknownSchemaError,
    encoder_for,
)
from ept.schemas.registry import ENVELOPE_FIELDS, EVENT_NAMES, current_schemas

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENT_NAMES",
    "ConfluentEncoder",
    "CorruptPayloadError",
    "DecodeError",
    "DecodedEvent",
    "Decoder",
    "Encoder",
    "SingleObjectEncoder",
    "UnknownFramingError",
    "UnknownSchemaError",
    "current_schemas",
    "encoder_for",
]

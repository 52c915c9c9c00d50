"""The one settings object of ept, read from ``EPT_*`` environment variables.

Every component (SDK, worker, sink, CLI) reads its configuration from
:func:`load_settings`. An optional ``.env``-style file named by ``EPT_CONFIG_FILE``
is read first; real environment variables win over it.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EPT_"
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")


class SettingsError(ValueError):
    """Raised when a setting is invalid; the message names each variable and the problem."""


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ept"


class ClickHouseServer:
    """Connection parameters of a ClickHouse server, parsed from ``EPT_CLICKHOUSE_URL``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, got {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise ValueError("the URL names no host")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (8443 if self.secure else 8123)
        self.username = unquote(parts.username or "default")
        self.password = unquote(parts.password or "")
        self.database = parts.path.strip("/") or "default"

    def __repr__(self) -> str:  # never show the password
        scheme = "https" if self.secure else "http"
        return f"ClickHouseServer({scheme}://{self.username}@{self.host}:{self.port}/{self.database})"


class Settings(BaseSettings):
    """All of ept's configuration. Field ``foo_bar`` is read from ``EPT_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    state_dir: Path = Field(default_factory=_default_state_dir)
    environment: str = "development"
    service: str = "unknown"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    topic_prefix: str = "ept."
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    schema_registry_url: str | None = None

    # ClickHouse: a server URL, or else the embedded engine at clickhouse_path.
    clickhouse_url: SecretStr | None = None
    clickhouse_path: Path | None = None
    raw_retention_days: int = Field(default=30, ge=1)
    rollup_retention_days: int = Field(default=365, ge=1)

    # SDK
    strict: bool = False
    producer_queue_max: int = Field(default=100_000, ge=100)
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    flush_timeout_s: float = Field(default=5.0, ge=0)

    # Sink
    sink_batch_rows: int = Field(default=50_000, ge=1)
    sink_batch_seconds: float = Field(default=1.0, gt=0)

    # Worker
    rules_file: Path | None = None
    allowed_lateness_s: int = Field(default=120, ge=0)
    # How long a worker may go silent before its partitions move to the others (Faust
    # heartbeats every 3 s); Kafka's own default.
    worker_session_timeout_s: float = Field(default=45.0, ge=10, le=1800)

    # HTTP servers (worker stats, sink query API + dashboard)
    http_host: str = "127.0.0.1"
    worker_port: int = Field(default=6066, ge=1, le=65535)
    sink_port: int = Field(default=6067, ge=1, le=65535)
    api_token: SecretStr | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        if not _TOPIC_CHARS.match(value) or len(value) > 200:
            raise ValueError("may contain only letters, digits, '.', '_' and '-' (at most 200)")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _check_clickhouse_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            ClickHouseServer(value.get_secret_value())
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _check_registry_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https", "mock"):
            raise ValueError("must be an http(s):// URL (or mock:// in tests)")
        return value

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL"):
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"EPT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                    f"needs {', '.join(missing)}"
                )
        for name in ("kafka_ssl_ca_location", "kafka_ssl_certificate_location",
                     "kafka_ssl_key_location"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: no such file {str(path)!r}")
        return self

    @property
    def kafka_bootstrap_is_explicit(self) -> bool:
        """True when the user named a Kafka cluster (so no local broker is started)."""
        return "kafka_bootstrap" in self.model_fields_set

    @cached_property
    def clickhouse_server(self) -> ClickHouseServer | None:
        if self.clickhouse_url is None:
            return None
        return ClickHouseServer(self.clickhouse_url.get_secret_value())

    @property
    def clickhouse_data_dir(self) -> Path:
        return self.clickhouse_path or self.state_dir / "clickhouse"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def _read_config_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().startswith(ENV_PREFIX):
            raise SettingsError(f"{path}:{number}: expected EPT_NAME=value, got {line!r}")
        values[key.strip()[len(ENV_PREFIX):].lower()] = value.strip().strip("'\"")
    return values


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part]
    variable = f"{ENV_PREFIX}{location[0].upper()}" if location else "settings"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if not location or isinstance(given, dict) or "PASSWORD" in variable else (
        f" (got {given!r})"
    )
    return f"{variable}: {message}{shown}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``EPT_CONFIG_FILE``), applying ``overrides``.

    Raises:
        SettingsError: a variable is invalid; the message names each one and what is wrong.
    """
    file_values: dict[str, Any] = {}
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"EPT_CONFIG_FILE: no such file {config_file!r}")
        file_values = {
            key: value for key, value in _read_config_file(path).items()
            if f"{ENV_PREFIX}{key.upper()}" not in os.environ
        }
    try:
        return Settings(**{**file_values, **overrides})
    except ValidationError as exc:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(
            _describe(error) for error in exc.errors()  # type: ignore[arg-type]
        )) from None

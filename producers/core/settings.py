"""The one settings object of ept, read from ``EPT_*`` environment variables.

Two sections of one design: :class:`SdkSettings`, the fields a service embedding the SDK
reads (:func:`load_sdk_settings`: the Kafka cluster, the topics, the SDK's knobs), and
:class:`Settings`, those fields and every pipeline component's (worker, sink, notifier,
CLI: :func:`load_settings`). The SDK reads and validates only its own section, so a
variable meant for the sink in a render service's environment never reaches it. An
optional ``.env``-style file named by ``EPT_CONFIG_FILE`` is read first; real
environment variables win over it.

Plain dataclasses, no validation framework: the SDK imports this module, and a render
service should not load pydantic to publish an event.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from ept.core.topics import Topics

ENV_PREFIX = "EPT_"
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Values that ship in examples and must never guard anything.
_PLACEHOLDERS = frozenset({"change-me", "changeme", "change-me-too", "password", "secret",
                           "admin", "default", "token", "example", "xxx", "placeholder"})


def _weak(value: str) -> bool:
    return not value.strip() or value.strip().lower() in _PLACEHOLDERS
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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


class Secret:
    """A value never shown by ``repr`` or ``str``; read it with :meth:`get_secret_value`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ept"


class ClickHouseServer:
    """Connection parameters of a ClickHouse server, parsed from ``EPT_CLICKHOUSE_URL``.

    Raises ValueError for a URL that is not http(s)://[user[:password]@]host[:port][/db].
    """

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


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= low else f"must be >= {low:g}, got {value}"


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be a port 1..65535, got {value}"


def _topic_prefix(value: str) -> str | None:
    if not _TOPIC_CHARS.match(value) or len(value) > 200:
        return "may contain only letters, digits, '.', '_' and '-' (at most 200)"
    return None


def _bootstrap(value: str) -> str | None:
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            return f"expected host:port[,host:port...], got {server.strip()!r}"
    return None


def _clickhouse_url(value: Secret | None) -> str | None:
    if value is None:
        return None
    try:
        ClickHouseServer(value.get_secret_value())
    except ValueError as exc:
        return str(exc)
    return None


def _registry_url(value: str | None) -> str | None:
    if value is not None and urlsplit(value).scheme not in ("http", "https", "mock"):
        return "must be an http(s):// URL (or mock:// in tests)"
    return None


def _http_urls(value: str) -> str | None:
    for url in filter(None, (part.strip() for part in value.split(","))):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "expected http(s)://host[:port][,http(s)://host[:port]...]"
    return None


def _session_timeout(value: float) -> str | None:
    return None if 10 <= value <= 1800 else f"must be 10..1800, got {value}"


def _checked(check: Callable[[Any], str | None]) -> dict[str, Any]:
    """Field metadata: ``check(value)`` returns the problem with a value, or None."""
    return {"check": check}


def _field_problems(settings: Any) -> list[str]:
    """The problems the fields' own checks find, each naming its variable."""
    return [f"{ENV_PREFIX}{field.name.upper()}: {problem}"
            for field in dataclasses.fields(settings)
            if (check := field.metadata.get("check"))
            and (problem := check(getattr(settings, field.name)))]


def _weak_secrets(settings: Any, names: tuple[str, ...]) -> list[str]:
    """Each of ``names`` set to an empty or placeholder secret. Never shows a value."""
    return [f"{ENV_PREFIX}{name.upper()}: empty or a placeholder; set a real secret "
            "(or unset it)" for name in names
            if (secret := getattr(settings, name)) is not None
            and _weak(secret.get_secret_value())]


@dataclasses.dataclass(frozen=True)
class SdkSettings:
    """What a service embedding the SDK reads: the Kafka cluster, the topics, the schema
    registry and the SDK's own knobs. Field ``foo_bar`` is read from ``EPT_FOO_BAR``.

    Build it with :func:`load_sdk_settings`, which reads and validates these fields only:
    a variable meant for another component (``EPT_SQL_BIND``, ``EPT_TOPIC_PARTITIONS``...)
    never reaches a render service. Every other component reads :class:`Settings`, which
    is these fields and its own. Derive a variant with :meth:`replace`.

    Raises SettingsError (naming each variable and its problem) when built invalid.
    """

    state_dir: Path = field(default_factory=_default_state_dir)
    environment: str = "development"
    service: str = "unknown"

    # Kafka: the cluster and the topics every client of ept reaches
    kafka_bootstrap: str = field(default="127.0.0.1:9092", metadata=_checked(_bootstrap))
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: Secret | None = None
    topic_prefix: str = field(default="ept.", metadata=_checked(_topic_prefix))
    # Not in repr: a registry URL may carry credentials (https://user:key@...).
    schema_registry_url: str | None = field(default=None, repr=False,
                                            metadata=_checked(_registry_url))

    # SDK
    strict: bool = False
    producer_queue_max: int = field(default=100_000, metadata=_checked(_at_least(100)))
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=_checked(_at_least(0)))
    flush_timeout_s: float = field(default=5.0, metadata=_checked(_at_least(0)))

    # Names set explicitly (environment, file or override), not taken from the defaults.
    explicit: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))

    def _problems(self) -> list[str]:
        """Every problem of these settings; a subclass adds those of its own fields."""
        problems = _field_problems(self)
        if self.kafka_security_protocol.startswith("SASL"):
            missing = [f"{ENV_PREFIX}{name.upper()}" for name in
                       ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                       if getattr(self, name) is None]
            if missing:
                problems.append(f"EPT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                                f"needs {', '.join(missing)}")
        problems += _weak_secrets(self, ("kafka_sasl_password", "kafka_ssl_key_password"))
        for name in ("kafka_ssl_ca_location", "kafka_ssl_certificate_location",
                     "kafka_ssl_key_location"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{ENV_PREFIX}{name.upper()}: no such file {str(path)!r}")
        return problems

    @classmethod
    def names(cls) -> list[str]:
        """Every setting's field name (``EPT_`` + upper case is its variable)."""
        return [field.name for field in dataclasses.fields(cls) if field.name != "explicit"]

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (converted and checked like environment values).

        Raises SettingsError as the constructor does."""
        return _build(type(self), {**{name: getattr(self, name) for name in self.names()},
                                   **changes}, self.explicit | set(changes))

    @property
    def kafka_bootstrap_is_explicit(self) -> bool:
        """True when the user named a Kafka cluster (so no local broker is started)."""
        return "kafka_bootstrap" in self.explicit

    @cached_property
    def topics(self) -> Topics:
        """The names of ept's Kafka topics under this ``topic_prefix``."""
        return Topics(self.topic_prefix)


@dataclasses.dataclass(frozen=True)
class Settings(SdkSettings):
    """All of ept's configuration: :class:`SdkSettings` and the fields of the pipeline's
    components (topic creation, storage, worker, sink, notifier, HTTP, analysts' SQL).

    Build it with :func:`load_settings`. Raises SettingsError when built invalid.
    """

    # Topics ept creates
    topic_partitions: int = field(default=6, metadata=_checked(_at_least(1)))
    topic_replication: int = field(default=1, metadata=_checked(_at_least(1)))

    # ClickHouse: a server URL, or else the embedded engine at clickhouse_path.
    clickhouse_url: Secret | None = field(default=None, metadata=_checked(_clickhouse_url))
    clickhouse_path: Path | None = None
    # The cluster of the sharded layout (``ept clickhouse ddl --cluster``), if any.
    clickhouse_cluster: str | None = None
    raw_retention_days: int = field(default=30, metadata=_checked(_at_least(1)))
    # How long Kafka keeps events and dead letters (retention.ms of the topics ept creates).
    topic_retention_days: int = field(default=7, metadata=_checked(_at_least(1)))
    rollup_retention_days: int = field(default=365, metadata=_checked(_at_least(1)))

    # Sink
    sink_batch_rows: int = field(default=50_000, metadata=_checked(_at_least(1)))
    sink_batch_seconds: float = field(default=1.0, metadata=_checked(_at_least(0.001)))

    # Worker
    rules_file: Path | None = None
    # How far out of event-time order events of one partition may arrive and still be
    # judged with their peers: scopes are judged this far behind the slowest source.
    allowed_lateness_s: int = field(default=30, metadata=_checked(_at_least(0)))
    # How long a worker may go silent before its partitions move to the others (Faust
    # heartbeats every 3 s); Kafka's own default.
    worker_session_timeout_s: float = field(default=45.0, metadata=_checked(_session_timeout))
    # An event time this far beyond its Kafka record's timestamp is a wrong clock.
    max_clock_skew_s: int = field(default=300, metadata=_checked(_at_least(0)))
    # A source partition with no new data for this long no longer holds event time back.
    source_idle_s: float = field(default=10.0, metadata=_checked(_at_least(0.1)))

    # Alertmanager delivery (``ept notify``): API base URLs, comma-separated (each of an
    # HA pair gets every alert); empty: alerts stay on the topic only.
    alertmanager_urls: str = field(default="", metadata=_checked(_http_urls))
    # Firing alerts are posted again this often; Alertmanager resolves an alert that is
    # not posted again within four intervals.
    alertmanager_resend_s: float = field(default=60.0, metadata=_checked(_at_least(1)))
    # Where an alert links to (Alertmanager's generatorURL); default: the local dashboard.
    dashboard_public_url: str | None = None

    # HTTP servers (worker stats, sink query API + dashboard, notifier metrics)
    http_host: str = "127.0.0.1"
    worker_port: int = field(default=6066, metadata=_checked(_port))
    sink_port: int = field(default=6067, metadata=_checked(_port))
    notifier_port: int = field(default=6068, metadata=_checked(_port))
    # The Alertmanager ``ept run`` starts when none is named (the local broker's controller
    # takes Alertmanager's usual 9093).
    local_alertmanager_port: int = field(default=9095, metadata=_checked(_port))
    api_token: Secret | None = None

    # Analysts' SQL: the sink's ClickHouse-compatible HTTP endpoint on the embedded engine
    # (with EPT_CLICKHOUSE_URL, analysts connect to that server instead).
    sql_bind: str = "127.0.0.1"  # any other address needs EPT_ANALYST_PASSWORD
    sql_port: int = field(default=8123, metadata=_checked(_port))
    analyst_user: str = "analyst"
    analyst_password: Secret | None = None  # none: no credentials asked (loopback only)
    sql_max_execution_s: int = field(default=60, metadata=_checked(_at_least(1)))
    sql_max_result_rows: int = field(default=10_000_000, metadata=_checked(_at_least(1)))
    sql_max_result_bytes: int = field(default=1024 ** 3, metadata=_checked(_at_least(1)))
    sql_max_memory_bytes: int = field(default=2 * 1024 ** 3,
                                      metadata=_checked(_at_least(1024 ** 2)))
    # Analyst queries run at once (more wait): the sink's ingestion keeps its share of CPU.
    sql_max_concurrent: int = field(default=2, metadata=_checked(_at_least(1)))
    # Threads one analyst query may use (ClickHouse's max_threads): 1 leaves the other
    # cores to ingestion (make bench-sink: at 2, ingestion fell to 0.37 of idle on 2 cores).
    sql_max_threads: int = field(default=1, metadata=_checked(_at_least(1)))

    def _problems(self) -> list[str]:
        problems = super()._problems()
        problems += _weak_secrets(self, ("api_token", "analyst_password"))
        try:
            server = self.clickhouse_server
        except ValueError:  # an invalid URL, reported by its own check
            server = None
        if server is not None and server.password and _weak(server.password):
            problems.append("EPT_CLICKHOUSE_URL: the password is a placeholder")
        if self.http_host not in _LOOPBACK and self.api_token is None:
            problems.append(f"EPT_HTTP_HOST={self.http_host} serves the APIs beyond this "
                            "machine: set EPT_API_TOKEN (16 characters or more)")
        elif (self.api_token is not None and self.http_host not in _LOOPBACK
              and len(self.api_token.get_secret_value()) < 16):
            problems.append("EPT_API_TOKEN: shorter than 16 characters, served beyond "
                            "this machine")
        if self.sql_bind not in _LOOPBACK and self.analyst_password is None:
            problems.append(f"EPT_SQL_BIND={self.sql_bind} serves analysts' SQL beyond this "
                            "machine: set EPT_ANALYST_PASSWORD")
        return problems

    @cached_property
    def clickhouse_server(self) -> ClickHouseServer | None:
        if self.clickhouse_url is None:
            return None
        return ClickHouseServer(self.clickhouse_url.get_secret_value())

    @property
    def clickhouse_data_dir(self) -> Path:
        return self.clickhouse_path or self.state_dir / "clickhouse"

    @property
    def alertmanager_url_list(self) -> list[str]:
        return [url.strip() for url in self.alertmanager_urls.split(",") if url.strip()]

    @property
    def dashboard_url(self) -> str:
        return self.dashboard_public_url or f"http://{self.http_host}:{self.sink_port}/"


_S = TypeVar("_S", bound="SdkSettings")


def _convert(annotation: str, raw: Any) -> Any:
    """``raw`` as the field's type: strings (environment, file) are parsed, other values
    (overrides) are taken as given. Raises ValueError naming the problem."""
    kind = annotation.split(" | ")[0]
    if not isinstance(raw, str):
        return raw
    if kind == "Secret":
        return Secret(raw)
    text = raw.strip()
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {text!r}") from None
    if kind == "Path":
        return Path(text).expanduser()
    if kind in ("SecurityProtocol", "SaslMechanism"):
        enum = SecurityProtocol if kind == "SecurityProtocol" else SaslMechanism
        try:
            return enum(text)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(enum)}, got {text!r}") from None
    return raw


def _build(cls: type[_S], values: dict[str, Any], explicit: set[str] | frozenset[str]
           ) -> _S:
    """``cls`` from ``values``; names that are not its fields are ignored."""
    annotations = {field.name: str(field.type) for field in dataclasses.fields(cls)}
    converted: dict[str, Any] = {}
    problems = []
    for name, raw in values.items():
        if name not in annotations or name == "explicit":
            continue
        try:
            converted[name] = _convert(annotations[name], raw)
        except ValueError as exc:
            problems.append(f"{ENV_PREFIX}{name.upper()}: {exc}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return cls(**converted, explicit=frozenset(explicit & set(annotations)))


def _read_config_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().startswith(ENV_PREFIX):
            # The line itself is not shown: it may hold a secret.
            raise SettingsError(f"{path}:{number}: expected EPT_NAME=value")
        values[key.strip()[len(ENV_PREFIX):].lower()] = value.strip().strip("'\"")
    return values


def _load(cls: type[_S], overrides: dict[str, Any]) -> _S:
    """``cls`` read from ``EPT_CONFIG_FILE``, the environment (which wins over the file)
    and ``overrides`` (which win over both); only ``cls``' own fields are read."""
    values: dict[str, Any] = {}
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"EPT_CONFIG_FILE: no such file {config_file!r}")
        values.update(_read_config_file(path))
    names = set(cls.names())
    for variable, value in os.environ.items():
        name = variable[len(ENV_PREFIX):].lower()
        if variable.startswith(ENV_PREFIX) and name in names:
            values[name] = value
    values.update(overrides)
    return _build(cls, values, set(values))


def is_set_true(name: str) -> bool:
    """True when the variable ``EPT_<NAME>`` reads as true (1, true, yes, on). Never
    raises: for deciding how to report settings that did not load."""
    return os.environ.get(f"{ENV_PREFIX}{name.upper()}", "").strip().lower() in _TRUE


def load_settings(**overrides: Any) -> Settings:
    """Every component's settings, from the environment (and ``EPT_CONFIG_FILE``), with
    ``overrides`` applied.

    Raises:
        SettingsError: a variable is invalid; the message names each one and what is wrong.
    """
    return _load(Settings, overrides)


def load_sdk_settings(**overrides: Any) -> SdkSettings:
    """The SDK's settings alone: other components' variables are neither read nor checked.

    Raises:
        SettingsError: one of the SDK's variables is invalid (the message names each).
    """
    return _load(SdkSettings, overrides)

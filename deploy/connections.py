"""The one place that decides how ept reaches Kafka and ClickHouse.

Everything else asks this module for a client configuration or a client and never
looks at whether the cluster needs SASL or whether ClickHouse is embedded or a server.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from deploy.settings import Settings

_embedded_lock = threading.Lock()
_opened_here: set[Path] = set()  # embedded data directories this process has open


def kafka_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for ``settings``' cluster, plus ``extra`` options."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.value
        config["sasl.username"] = settings.kafka_sasl_username
        assert settings.kafka_sasl_password is not None  # checked by Settings
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    for name, key in (
        ("kafka_ssl_ca_location", "ssl.ca.location"),
        ("kafka_ssl_certificate_location", "ssl.certificate.location"),
        ("kafka_ssl_key_location", "ssl.key.location"),
    ):
        value = getattr(settings, name)
        if value is not None:
            config[key] = str(value)
    if settings.kafka_ssl_key_password is not None:
        config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    config.update(extra)
    return config


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` that reach the same cluster as :func:`kafka_config`."""
    import ssl

    import faust

    servers = ";".join(
        f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")
    )
    options: dict[str, Any] = {"broker": servers}
    context = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
        )
        if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                str(settings.kafka_ssl_certificate_location),
                str(settings.kafka_ssl_key_location),
                password.get_secret_value() if password else None,
            )
    if settings.kafka_sasl_mechanism is not None:
        assert settings.kafka_sasl_password is not None
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism.value,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def clickhouse_client(settings: Settings, database: str | None = None) -> Client:
    """A ClickHouse client: the server of ``EPT_CLICKHOUSE_URL``, else the embedded engine.

    The embedded engine (chdb) allows one data directory per process and one process per
    data directory; opening a directory another process holds raises an error that says so.
    """
    server = settings.clickhouse_server
    if server is not None:
        return clickhouse_connect.get_client(
            host=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            database=database or server.database,
            secure=server.secure,
        )
    return embedded_client(settings.clickhouse_data_dir, database)


def embedded_client(path: Path, database: str | None = None) -> Client:
    """A client of the embedded engine on ``path`` (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        if path not in _opened_here and _held_by_another_process(path):
            raise RuntimeError(
                f"the embedded ClickHouse data directory {path} is held by another process "
                "(only one process may open it; query through the running sink's HTTP API "
                "or set EPT_CLICKHOUSE_URL to a server)"
            )
        client = clickhouse_connect.get_client(
            interface="chdb", path=str(path), database=database or "default"
        )
        _opened_here.add(path)
        return client


def _held_by_another_process(path: Path) -> bool:
    """Whether another process has the engine open (it flocks ``<path>/status``)."""
    status = path / "status"
    if not status.exists():
        return False
    with open(status, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


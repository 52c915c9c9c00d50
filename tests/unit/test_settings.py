import pytest

from ept.core.kafka import ConsumerRole, consumer_config
from ept.core.settings import SettingsError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EPT_KAFKA_BOOTSTRAP", "EPT_TOPIC_PREFIX", "EPT_CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.topics.event("render_failed") == "ept.render_failed"
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert not settings.kafka_bootstrap_is_explicit
    assert settings.clickhouse_server is None
    assert settings.clickhouse_data_dir == settings.state_dir / "clickhouse"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("EPT_TOPIC_PREFIX", "bad prefix!", "EPT_TOPIC_PREFIX: may contain only"),
    ("EPT_KAFKA_BOOTSTRAP", "localhost", "EPT_KAFKA_BOOTSTRAP: expected host:port"),
    ("EPT_CLICKHOUSE_URL", "ftp://x/y", "EPT_CLICKHOUSE_URL: scheme must be http or https"),
    ("EPT_SINK_BATCH_ROWS", "0", "EPT_SINK_BATCH_ROWS"),
    ("EPT_WORKER_PORT", "99999", "EPT_WORKER_PORT"),
    ("EPT_STRICT", "maybe", "EPT_STRICT"),
    ("EPT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "needs EPT_KAFKA_SASL_MECHANISM"),
])
def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                            value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_clickhouse_url_is_parsed_and_password_never_shown(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("EPT_CLICKHOUSE_URL", "https://writer:s3cr%40t@ch.example:8443/analytics")
    settings = load_settings()
    server = settings.clickhouse_server
    assert server is not None
    assert (server.host, server.port, server.username, server.password, server.database,
            server.secure) == ("ch.example", 8443, "writer", "s3cr@t", "analytics", True)
    assert "s3cr" not in repr(server) and "s3cr" not in repr(settings)


def test_sasl_passes_through_to_librdkafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPT_KAFKA_BOOTSTRAP", "k1:9093,k2:9093")
    monkeypatch.setenv("EPT_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("EPT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("EPT_KAFKA_SASL_USERNAME", "ept")
    monkeypatch.setenv("EPT_KAFKA_SASL_PASSWORD", "hunter2")
    settings = load_settings()
    assert settings.kafka_bootstrap_is_explicit
    config = consumer_config(settings, ConsumerRole.TOPIC_READER, "g")
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == "hunter2"
    assert config["bootstrap.servers"] == "k1:9093,k2:9093"
    assert "hunter2" not in repr(settings)


def test_config_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ept.env"
    path.write_text("# comment\nEPT_TOPIC_PREFIX=file.\nEPT_SERVICE=from-file\n")
    monkeypatch.setenv("EPT_CONFIG_FILE", str(path))
    monkeypatch.setenv("EPT_SERVICE", "from-env")
    settings = load_settings()
    assert settings.topic_prefix == "file."
    assert settings.service == "from-env"
    path.write_text("not a setting\n")
    with pytest.raises(SettingsError, match=r"ept\.env:1"):
        load_settings()


@pytest.mark.parametrize("values", [
    {"clickhouse_url": "http://bob:hunter2-secret@:notaport/x"},
    {"clickhouse_url": "ftp://bob:hunter2-secret@host/x"},
    {"schema_registry_url": "ftp://bob:hunter2-secret@registry"},
    {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "hunter2-secret"},
    {"kafka_ssl_key_password": "hunter2-secret", "kafka_ssl_key_location": "/nope"},
    {"api_token": "hunter2-secret", "sql_bind": "0.0.0.0"},
    {"analyst_password": "hunter2-secret", "sql_port": "0"},
])
def test_no_settings_error_or_repr_shows_a_secret(values: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(**values)
    assert "hunter2" not in str(raised.value)
    valid = {k: v for k, v in values.items()
             if k in ("api_token", "analyst_password", "kafka_ssl_key_password")}
    assert "hunter2" not in repr(load_settings(**valid))


def test_a_registry_url_with_credentials_stays_out_of_repr() -> None:
    settings = load_settings(schema_registry_url="https://user:hunter2-secret@registry.example")
    assert "hunter2" not in repr(settings)
    assert settings.schema_registry_url == "https://user:hunter2-secret@registry.example"


@pytest.mark.parametrize(("values", "message"), [
    ({"api_token": ""}, "EPT_API_TOKEN: empty or a placeholder"),
    ({"api_token": "change-me"}, "EPT_API_TOKEN: empty or a placeholder"),
    ({"analyst_password": "Password"}, "EPT_ANALYST_PASSWORD: empty or a placeholder"),
    ({"clickhouse_url": "http://ept_writer:change-me@ch:8123/ept"},
     "EPT_CLICKHOUSE_URL: the password is a placeholder"),
    ({"http_host": "0.0.0.0"}, "EPT_HTTP_HOST=0.0.0.0 serves the APIs beyond this machine"),
    ({"http_host": "0.0.0.0", "api_token": "short-token"}, "shorter than 16 characters"),
])
def test_no_door_is_left_open_by_an_empty_or_placeholder_secret(values: dict[str, str],
                                                                message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**values)


def test_a_real_token_serves_beyond_loopback() -> None:
    settings = load_settings(http_host="0.0.0.0", api_token="a-real-token-of-32-characters!!")
    assert settings.api_token is not None

"""The deployment files cannot run here (no Docker engine, no cluster): check them statically."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from ept.core.settings import Settings, load_settings
from ept.core.topics import Topics
from ept.deploy.cli import main
from ept.deploy.kafka_access import Grant, component_grants, missing_passwords, parse_passwords
from ept.processors.storage.tables import cluster_ddl

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def cli_commands() -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            found.add((*prefix, name))
            if isinstance(command, click.Group):
                walk(command, (*prefix, name))

    walk(main, ())
    return found


def assert_ept_command(args: list[str]) -> None:
    words = tuple(arg for arg in args if not arg.startswith("-"))
    assert any(words[: len(cmd)] == cmd for cmd in cli_commands() if len(cmd) == len(
        [w for w in words[: len(cmd)]])), f"`ept {' '.join(args)}` is not a command of the CLI"


def assert_settings_exist(names: list[str]) -> None:
    fields = {f"EPT_{name.upper()}" for name in Settings.names()}
    for name in names:
        if name.startswith("EPT_"):
            assert name in fields, f"{name} is not a setting"


def test_compose_file_parses_and_references_real_commands_and_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "clickhouse", "worker", "sink", "dashboard"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["sink"]["deploy"]["replicas"] == 2
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for service in services.values():
        if service.get("image") == "ept:latest" and "entrypoint" not in service:
            assert_ept_command(service["command"])
            assert_settings_exist(list(service["environment"]))
    assert services["notifier"]["command"] == ["notify"]
    assert services["notifier"]["environment"]["EPT_ALERTMANAGER_URLS"] == (
        "http://alertmanager:9093")
    for volume in services["clickhouse"]["volumes"] + services["alertmanager"]["volumes"][:1]:
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / "compose" / source).resolve().exists(), source


def test_kubernetes_manifests_parse_and_reference_real_commands() -> None:
    documents = [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    kinds = {doc["kind"] for doc in documents}
    assert {"Deployment", "ConfigMap", "Kafka", "ClickHouseInstallation", "Job"} <= kinds
    for doc in documents:
        if doc["kind"] == "ConfigMap":
            assert_settings_exist(list(doc["data"]))
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert_ept_command(container["args"])
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] in ("ept-worker", "ept-sink"):
            assert doc["spec"]["replicas"] >= 2
    assert any(doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "alertmanager"
               for doc in documents)
    notifier = next(doc for doc in documents if doc["metadata"]["name"] == "ept-notifier")
    assert notifier["spec"]["template"]["spec"]["containers"][0]["args"] == ["notify"]
    kafka = next(doc for doc in documents if doc["kind"] == "KafkaNodePool")
    assert kafka["spec"]["replicas"] >= 3


def test_the_kubernetes_cluster_replicates_as_the_cluster_test_does(tmp_path: Path) -> None:
    """tests/integration/test_cluster.py kills a leader of a LocalCluster: the manifests
    must ask for the replication that test proves enough."""
    from ept.deploy.broker import LocalCluster

    node = LocalCluster(tmp_path, [19000, 19003, 19006]).brokers[0]
    node.data_dir.mkdir(parents=True)
    tested = dict(line.split("=", 1) for line in
                  node._write_properties().read_text().splitlines() if "=" in line)
    documents = [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    kafka = next(doc for doc in documents if doc["kind"] == "Kafka")["spec"]["kafka"]["config"]
    for key in ("default.replication.factor", "min.insync.replicas",
                "offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr"):
        assert str(kafka[key]) == tested[key], key
    config = next(doc for doc in documents if doc["kind"] == "ConfigMap"
                  and "EPT_TOPIC_REPLICATION" in doc["data"])
    assert config["data"]["EPT_TOPIC_REPLICATION"] == tested["default.replication.factor"]


def test_dockerfile_copies_what_exists() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["ept"]' in (DEPLOY / "Dockerfile").read_text()


def test_cluster_ddl_is_current_and_replicated() -> None:
    text = (DEPLOY / "clickhouse" / "cluster.sql").read_text()
    generated = cluster_ddl(load_settings(), "ept_cluster")
    assert generated in text, "regenerate: ept clickhouse ddl --cluster ept_cluster"
    assert text.count("ReplicatedMergeTree(") == 1
    assert text.count("ReplicatedAggregatingMergeTree(") == 2
    assert len(re.findall(r"ENGINE = Distributed\(", text)) == 3


def test_clickhouse_users_are_split_read_only_and_writer() -> None:
    from ept.processors.storage.tables import EVENTS_COLUMNS

    text = (DEPLOY / "clickhouse" / "users.sql").read_text()
    assert "readonly = 1" in text and "PROFILE 'ept_analyst_limits'" in text
    assert "INSERT" in text.split("TO ept_writer")[0]
    granted = re.search(r"GRANT SELECT\(([^)]*)\) ON ept.events TO ept_analyst", text)
    assert granted is not None
    columns = {line.split()[0] for line in EVENTS_COLUMNS.strip().splitlines()}
    assert {c.strip() for c in granted.group(1).split(",")} == columns - {
        "user_id", "account_id"}  # personal data: granted one by one


def test_broker_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """StorageTool reads "-t -KNJ..." as an unknown option: a CI run failed on one."""
    import uuid

    from ept.deploy import broker

    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 "+A..." urlsafe: "-A..."
    plain = uuid.UUID(bytes=b"\x00" * 15 + b"\x01")
    draws = iter([dashed, plain])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    assert broker.base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    assert broker._cluster_id() == broker.base64.urlsafe_b64encode(
        plain.bytes).decode().rstrip("=")


def kubernetes_documents() -> list[dict]:  # type: ignore[type-arg]
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_no_placeholder_or_default_secret_ships() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".yaml", ".sql", ".env", ""):
            text = path.read_text(errors="replace")
            assert "change-me" not in text, path
    assert not [doc for doc in kubernetes_documents() if doc["kind"] == "Secret"]
    compose = (DEPLOY / "compose" / "docker-compose.yml").read_text()
    for variable in ("EPT_API_TOKEN", "EPT_CLICKHOUSE_ADMIN_PASSWORD",
                     "EPT_CLICKHOUSE_WRITER_PASSWORD", "EPT_CLICKHOUSE_ANALYST_PASSWORD",
                     *(f"EPT_KAFKA_{c}_PASSWORD" for c in ("SDK", "WORKER", "SINK",
                                                           "NOTIFIER", "ADMIN"))):
        assert f"${{{variable}:?" in compose, variable  # compose refuses to start without
        assert f"${{{variable}:-" not in compose, variable


def test_every_kubernetes_pod_runs_locked_down_and_bounded() -> None:
    for doc in kubernetes_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys()
    policies = [doc for doc in kubernetes_documents() if doc["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies)


def test_kafka_clients_authenticate_and_get_only_their_acls() -> None:
    documents = kubernetes_documents()
    kafka = next(doc for doc in documents if doc["kind"] == "Kafka")["spec"]["kafka"]
    assert [listener["authentication"]["type"] for listener in kafka["listeners"]] == [
        "scram-sha-512"]
    assert all(listener["tls"] for listener in kafka["listeners"])
    assert kafka["authorization"] == {"type": "simple"}
    users = {doc["metadata"]["name"]: doc["spec"]["authorization"]["acls"]
             for doc in documents if doc["kind"] == "KafkaUser"}
    mirrored = {user: [Grant(acl["resource"]["type"],
                             acl["resource"].get("name", "kafka-cluster"),
                             acl["resource"].get("patternType", "literal"),
                             tuple(acl["operations"])) for acl in acls]
                for user, acls in users.items()}
    assert mirrored == component_grants(Topics("ept."))  # the proven table, unchanged
    for doc in documents:
        if doc["kind"] == "Deployment":
            env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
            user = env["EPT_KAFKA_SASL_USERNAME"]["value"]
            assert user in users
            assert env["EPT_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == user


def test_create_users_fills_passwords_the_engine_parses_and_refuses_placeholders(
        tmp_path: Path) -> None:
    import os
    import subprocess

    import chdb

    script = DEPLOY / "clickhouse" / "create-users.sh"
    tricky = "wr'it&er\\pass-1 $(x)"
    environment = {**os.environ, "CLICKHOUSE_CLIENT": "cat",
                   "EPT_CLICKHOUSE_WRITER_PASSWORD": tricky,
                   "EPT_CLICKHOUSE_ANALYST_PASSWORD": "analyst-password-2"}
    created = subprocess.run(["bash", str(script)], env=environment, capture_output=True,
                             text=True, check=True).stdout
    assert "{{" not in created and "$(x)" in created
    engine = chdb.connect(":memory:")
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", created).split(";") if s.strip()]
    for statement in statements:  # the real engine's parser accepts every statement
        engine.query(f"EXPLAIN AST {statement}")
    for weak in ("", "change-me", "short"):
        refused = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                                 env={**environment, "EPT_CLICKHOUSE_WRITER_PASSWORD": weak})
        assert refused.returncode == 1 and refused.stdout == ""
        assert "EPT_CLICKHOUSE_WRITER_PASSWORD" in refused.stderr


def test_compose_clients_use_scram_users_that_kafka_access_creates() -> None:
    services = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())[
        "services"]
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_LISTENERS"].startswith("SASL_PLAINTEXT://:9092")
    assert "PLAINTEXT://127.0.0.1:" in kafka["KAFKA_LISTENERS"]  # the operator's, loopback
    assert "ports" not in services["kafka"]
    access = services["kafka-access"]
    assert access["network_mode"] == "service:kafka"
    assert "ept kafka access --passwords" in access["command"][0]
    users = set(component_grants(Topics("ept.")))
    for name, service in services.items():
        environment = service.get("environment", {})
        if service.get("image") == "ept:latest" and name != "kafka-access":
            assert environment["EPT_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
            assert environment["EPT_KAFKA_SASL_USERNAME"] in users, name
            assert service["depends_on"]["kafka-access"] == {
                "condition": "service_completed_successfully"}, name


def test_kafka_access_reads_each_users_password_and_names_those_missing() -> None:
    passwords = parse_passwords("# ept kafka access\nept-sdk= s3cret=x \n\nept-worker=w\n"
                                "  # ept-sink=commented\nno equals sign\n")
    assert passwords == {"ept-sdk": "s3cret=x", "ept-worker": "w"}
    assert missing_passwords(Topics("ept."), passwords) == [
        "ept-admin", "ept-notifier", "ept-sink"]
    everyone = dict.fromkeys(component_grants(Topics("ept.")), "p")
    assert missing_passwords(Topics("ept."), {**everyone, "someone-else": "p"}) == []

"""Real Apache Kafka brokers (KRaft, combined broker+controller) run natively: one node
(:class:`LocalBroker`, what ``ept run`` and the tests use) or a loopback cluster of several
(:class:`LocalCluster`, the replication tests).

The broker's jars are resolved from Maven Central with ``mvn`` into a cache directory
(``~/.cache/ept/kafka-<version>``, never committed) and run with Java 17+, bound to
127.0.0.1. State lives in a data directory: ``server.properties``, ``logs/`` (the
partitions), ``broker.log`` and ``broker.json`` (pid, ports, version of the running broker).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

KAFKA_VERSION = "4.1.1"
HOST = "127.0.0.1"


def _cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own Uuid.randomUuid, never one starting with
    '-': StorageTool would read it as an option and refuse to format (1 start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class Quorum:
    """One node's place in a multi-node KRaft cluster (see :class:`LocalCluster`)."""

    node_id: int
    voters: str  # controller.quorum.voters: "1@host:port,2@host:port,..."
    cluster_id: str
    size: int


class BrokerError(RuntimeError):
    """The local broker could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    version: str
    bootstrap: str
    data_dir: Path
    pid: int | None
    answering: bool

    def describe(self) -> str:
        if not self.running:
            return f"broker not running (data dir {self.data_dir})"
        state = "answering" if self.answering else "NOT answering"
        return (
            f"Apache Kafka {self.version} (KRaft) at {self.bootstrap}, {state}; "
            f"pid {self.pid}; data dir {self.data_dir}"
        )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ept" / f"kafka-{KAFKA_VERSION}"


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"{name} not found on PATH: {hint}")
    return path


def _check_java() -> str:
    java = _require_tool(
        "java", "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
    )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr)
    if match is None or int(match.group(1)) < 17:
        raise BrokerError(
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer; `java -version` says: "
            f"{result.stderr.strip().splitlines()[0] if result.stderr else 'nothing'}"
        )
    return java


def resolve_jars(cache_dir: Path | None = None) -> Path:
    """Download the broker's jars once (``mvn``) and return the folder holding them.

    Blocks for the download (about 20 s on first use). Raises BrokerError when Maven is
    missing or Maven Central cannot be reached, with Maven's own error text.
    """
    libs = (cache_dir or _cache_dir()) / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = _require_tool("mvn", "install Apache Maven (Debian: apt-get install maven)")
    libs.mkdir(parents=True, exist_ok=True)
    pom = resources.files("ept.deploy") / "kafka" / "pom.xml"
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom_path), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
             f"-Dkafka.version={KAFKA_VERSION}"],
            capture_output=True, text=True, check=False,
        )
    if result.returncode != 0 or not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise BrokerError(f"could not resolve Kafka {KAFKA_VERSION} from Maven Central:\n{output}")
    marker.touch()
    return libs


class LocalBroker:
    """One native Kafka broker bound to 127.0.0.1:``port`` with its state in ``data_dir``.

    The controller listens on ``port + 1``. Methods block until the broker is up or
    down; none leaves a process behind when it raises.
    """

    def __init__(self, data_dir: Path, port: int = 9092,
                 scram_user: tuple[str, str] | None = None, quorum: Quorum | None = None,
                 authorize: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.quorum = quorum
        # With ``authorize``, SASL clients may do only what ACLs grant them; the plaintext
        # listener (loopback, the operator's) stays a super user.
        self.authorize = authorize
        self.bootstrap = f"{HOST}:{port}"
        # With a SCRAM user, a SASL_PLAINTEXT listener (SCRAM-SHA-512) also listens on
        # port + 2; the user is created through the admin API each time it starts.
        self.scram_user = scram_user
        self.sasl_bootstrap = f"{HOST}:{port + 2}" if scram_user else None

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _write_properties(self) -> Path:
        properties = self.data_dir / "server.properties"
        controller = self.port + 1
        listeners = [f"PLAINTEXT://{HOST}:{self.port}"]
        sasl: list[str] = []
        if self.scram_user is not None:
            listeners.append(f"SASL_PLAINTEXT://{HOST}:{self.port + 2}")
            sasl = [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
            if self.authorize:
                sasl += ["authorizer.class.name="
                         "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                         "super.users=User:ANONYMOUS"]
        quorum = self.quorum or Quorum(1, f"1@{HOST}:{controller}", "", 1)
        # Internal topics as replicated as the cluster allows; acks=all writes need 2 of 3.
        replicas, min_insync = min(3, quorum.size), min(2, quorum.size)
        properties.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={quorum.node_id}",
            f"controller.quorum.voters={quorum.voters}",
            f"listeners={','.join(listeners)},CONTROLLER://{HOST}:{controller}",
            f"advertised.listeners={','.join(listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            *sasl,
            f"log.dirs={self.data_dir / 'logs'}",
            "num.partitions=6",
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_insync}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_insync}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]))
        return properties

    def _read_state(self) -> dict[str, object] | None:
        try:
            state: dict[str, object] = json.loads(self._state_file.read_text())
            return state
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The pid of this data directory's running broker, or None."""
        state = self._read_state()
        if state is None:
            return None
        pid = int(str(state["pid"]))
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"kafka.Kafka" not in cmdline or str(self.data_dir).encode() not in cmdline:
            return None  # the pid was recycled by another process
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return pid

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers a metadata request within ``timeout`` seconds."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout)
            return True
        except Exception:
            return False

    def start(self, timeout: float = 90.0, wait: bool = True) -> BrokerStatus:
        """Start the broker (no-op when already running) and wait until it answers
        (``wait=False``: return once launched; a cluster node answers only once a
        majority of its quorum runs).

        Raises BrokerError when Java or Maven is missing, the jars cannot be resolved,
        or the broker does not answer within ``timeout`` (the process is then stopped).
        """
        if self.pid() is not None:
            state = self._read_state() or {}
            if state.get("port") == self.port:
                self._wait_until_answering(timeout)
                return self.status()
            raise BrokerError(
                f"a broker already runs on data dir {self.data_dir} at port {state.get('port')}"
            )
        java = _check_java()
        libs = resolve_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        classpath = f"{libs}/*"
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = self.quorum.cluster_id if self.quorum else _cluster_id()
            subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(properties)],
                capture_output=True, text=True, check=True,
            )
        log4j = resources.files("ept.deploy") / "kafka" / "log4j2.properties"
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 f"-Dlog4j2.configurationFile={log4j}",
                 f"-Dept.data.dir={self.data_dir}",
                 "-cp", classpath, "kafka.Kafka", str(properties)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._state_file.write_text(json.dumps(
            {"pid": process.pid, "port": self.port, "version": KAFKA_VERSION}
        ))
        if not wait:
            return self.status()
        try:
            self._wait_until_answering(timeout, process)
            if self.scram_user is not None:
                self._create_scram_user(*self.scram_user)
        except BaseException:
            self.kill()
            raise
        return self.status()

    def _create_scram_user(self, user: str, password: str) -> None:
        from confluent_kafka.admin import AdminClient

        from ept.deploy.kafka_access import set_scram_passwords

        set_scram_passwords(AdminClient({"bootstrap.servers": self.bootstrap}),
                            {user: password})

    def _wait_until_answering(self, timeout: float, process: subprocess.Popen[bytes] | None = None
                              ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {process.returncode}; "
                    f"last lines of {self.log_file}:\n{self._log_tail()}"
                )
            if self.answers(timeout=1.0):
                return
            time.sleep(0.3)
        raise BrokerError(
            f"the broker did not answer at {self.bootstrap} within {timeout:.0f}s; "
            f"last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> bool:
        """Shut the broker down cleanly (SIGTERM, then SIGKILL after ``timeout``).

        Returns False when no broker was running. Blocks until the process is gone.
        """
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """SIGKILL the broker (for fault tests); its data stays for a restart."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid()
        if pid is None:
            self._state_file.unlink(missing_ok=True)
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.pid() is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.1)
        self._state_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self.pid()
        state = self._read_state() or {}
        return BrokerStatus(
            running=pid is not None,
            version=str(state.get("version", KAFKA_VERSION)),
            bootstrap=f"{HOST}:{state.get('port', self.port)}",
            data_dir=self.data_dir,
            pid=pid,
            answering=pid is not None and self.answers(),
        )



class LocalCluster:
    """``len(ports)`` KRaft nodes (each broker and controller) on loopback, one data
    directory each under ``data_dir``: node ``i`` serves clients on ``ports[i]`` and its
    controller on ``ports[i] + 1``. Internal topics get 3 replicas, ``min.insync.replicas``
    is 2 (with 3 nodes): a node may die without losing an acknowledged write.
    """

    def __init__(self, data_dir: Path, ports: list[int]) -> None:
        voters = ",".join(f"{i + 1}@{HOST}:{port + 1}" for i, port in enumerate(ports))
        cluster_id = _cluster_id()
        self.brokers = [LocalBroker(data_dir / f"node{i + 1}", port,
                                    quorum=Quorum(i + 1, voters, cluster_id, len(ports)))
                        for i, port in enumerate(ports)]
        self.bootstrap = ",".join(broker.bootstrap for broker in self.brokers)

    def start(self, timeout: float = 120.0) -> None:
        """Launch every node, then wait until each answers. Raises BrokerError (and stops
        them all) otherwise."""
        try:
            for broker in self.brokers:
                broker.start(wait=False)
            for broker in self.brokers:
                broker.start(timeout)
        except BaseException:
            self.stop()
            raise

    def node(self, node_id: int) -> LocalBroker:
        return self.brokers[node_id - 1]

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()

"""Apache Kafka in KRaft mode from its official jars: fetched, checked, started, stopped.

The broker the service is proven on. ``ops/kafka/pom.xml`` pins the version of Apache
Kafka (``org.apache.kafka:kafka_2.13``) and ``ops/kafka/jars.sha256`` the sha256 of every
jar it resolves to; :func:`fetch_kafka` fetches them from Maven Central with ``mvn``
into ``KAFKA_CACHE_DIR/<version>/libs`` and refuses any jar whose checksum differs.
:class:`KafkaCluster` runs 1 to 5 nodes on this machine, each a broker and a KRaft
controller in one JVM (``java`` of ``JAVA_HOME``, else of ``PATH``), with the
replication a real cluster has: with 3 nodes every topic gets 3 replicas and
``min.insync.replicas=2``. ``fraudctl stack up --broker kafka --brokers 3`` and the test
fixtures use it; faults are injected per node (:meth:`KafkaCluster.kill`,
:meth:`~KafkaCluster.freeze`, :meth:`~KafkaCluster.restart`).

Examples
--------
>>> cfg = node_properties(1, [(1, "127.0.0.1", 9092, 9192)], "/tmp/k", replicas=1)
>>> cfg["listeners"]
'PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9192'
>>> cfg["controller.quorum.voters"]
'1@127.0.0.1:9192'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PROJECT_ROOT, Settings
from ..exceptions import StackError

__all__ = [
    "KAFKA_POM",
    "KAFKA_CHECKSUMS",
    "kafka_version",
    "pinned_jars",
    "fetch_kafka",
    "java_bin",
    "node_properties",
    "ListenerSecurity",
    "sasl_ssl_listener",
    "KafkaNode",
    "KafkaCluster",
]

#: The Maven project that pins Apache Kafka's version.
KAFKA_POM = PROJECT_ROOT / "ops" / "kafka" / "pom.xml"
#: ``sha256  file name`` of every jar the pom resolves to (``sha256sum`` format).
KAFKA_CHECKSUMS = PROJECT_ROOT / "ops" / "kafka" / "jars.sha256"

_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.clients
        level: WARN
"""


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The ``kafka.version`` property of ``ops/kafka/pom.xml`` (e.g. ``"4.4.0"``)."""
    import xml.etree.ElementTree as ET

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise StackError(f"{pom}: no <kafka.version> property")
    return node.text.strip()


def pinned_jars(checksums: Path = KAFKA_CHECKSUMS) -> dict[str, str]:
    """``{jar file name: sha256 hex}`` from ``ops/kafka/jars.sha256``."""
    pinned: dict[str, str] = {}
    for line in checksums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            pinned[name.strip().lstrip("*")] = digest
    return pinned


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(libs: Path, pinned: dict[str, str]) -> list[str]:
    """Problems of the jars in ``libs`` against ``pinned`` (empty: all good)."""
    problems = []
    present = {p.name for p in libs.glob("*.jar")}
    for name, digest in sorted(pinned.items()):
        if name not in present:
            problems.append(f"{name} missing")
        elif _sha256(libs / name) != digest:
            problems.append(f"{name}: sha256 differs from ops/kafka/jars.sha256")
    for extra in sorted(present - set(pinned)):
        problems.append(f"{extra} is not pinned in ops/kafka/jars.sha256")
    return problems


def fetch_kafka(settings: Settings, *, quiet: bool = True) -> Path:
    """The folder of Apache Kafka's jars, fetched and checked if not cached yet.

    Parameters
    ----------
    settings : Settings
        ``KAFKA_CACHE_DIR``: the jars go to ``<it>/<version>/libs``.
    quiet : bool, default=True
        Maven's output only on failure.

    Returns
    -------
    pathlib.Path
        ``KAFKA_CACHE_DIR/<version>/libs``, every jar of ``ops/kafka/jars.sha256`` in it
        with its pinned sha256.

    Raises
    ------
    StackError
        ``mvn`` missing or failing (no network to Maven Central), or a jar whose sha256
        differs from the pinned one (the cached folder is then not used).
    """
    version = kafka_version()
    pinned = pinned_jars()
    libs = settings.kafka_cache_dir / version / "libs"
    if libs.is_dir() and not _verify(libs, pinned):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Apache Kafka's jars are not cached and `mvn` is not on PATH: install Maven "
            "(apt-get install maven) or set KAFKA_CACHE_DIR to a folder that holds them"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = [
        mvn, "-B", "-q", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise StackError(f"fetching Apache Kafka {version} with Maven failed: {tail}")
    problems = _verify(staging, pinned)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(f"Apache Kafka {version} jars refused: " + "; ".join(problems[:5]))
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def java_bin() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``.

    Raises
    ------
    StackError
        No Java runtime found.
    """
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError(
            "Apache Kafka needs Java 17 or newer: none on PATH (apt-get install "
            "openjdk-17-jre-headless) and JAVA_HOME unset"
        )
    return found


def node_properties(
    node_id: int,
    voters: list[tuple[int, str, int, int]],
    data_dir: str,
    *,
    replicas: int,
    extra: dict[str, str] | None = None,
    client_protocol: str = "PLAINTEXT",
) -> dict[str, str]:
    """``server.properties`` of one combined broker + controller node.

    Parameters
    ----------
    node_id : int
        This node's id, one of ``voters``.
    voters : list of (node_id, host, broker_port, controller_port)
        Every node of the cluster.
    data_dir : str
        Its log directory.
    replicas : int
        Default replication factor of new topics and of the internal topics
        (consumer offsets, transactions); ``min.insync.replicas`` is ``replicas - 1``
        (at least 1): with 3 replicas a write needs 2.
    extra : dict, optional
        Further properties, overriding these.
    client_protocol : str, default="PLAINTEXT"
        Security protocol of the client listener (``SASL_SSL``: see
        :func:`sasl_ssl_listener`), which inter-broker traffic uses too; the listener
        is named after it.
    """
    _, host, port, cport = next(v for v in voters if v[0] == node_id)
    min_isr = str(max(1, replicas - 1))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(f"{i}@{h}:{c}" for i, h, _, c in voters),
        "listeners": f"{client_protocol}://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"{client_protocol}://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client_protocol,
        "listener.security.protocol.map": f"{client_protocol}:{client_protocol},CONTROLLER:PLAINTEXT",
        "log.dirs": data_dir,
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        # a test or a demo joins groups right after start: no 3 s wait for more members
        "group.initial.rebalance.delay.ms": "0",
        # as production clusters are run: every topic is created on purpose
        "auto.create.topics.enable": "false",
        "log.retention.hours": "-1",
        "unclean.leader.election.enable": "false",
    }
    props.update(extra or {})
    return props


@dataclass(frozen=True)
class ListenerSecurity:
    """Security of a :class:`KafkaCluster`'s client listener (inter-broker traffic uses
    it too), built by :func:`sasl_ssl_listener`.

    Attributes
    ----------
    protocol : str
        ``SASL_SSL``: the client listener's security protocol and name.
    properties : dict
        Broker properties (TLS keystore, SASL, controller listener, authorizer).
    format_args : tuple of str
        Further arguments of the storage tool's ``format`` (the SCRAM credentials).
    client_options : dict
        aiokafka options of the cluster's own metadata requests (its super user).
    """

    protocol: str
    # they hold the super user's password: never in a repr
    properties: dict[str, str] = field(repr=False)
    format_args: tuple[str, ...] = field(repr=False)
    client_options: dict[str, Any] = field(repr=False)


def sasl_ssl_listener(
    keystore: Path,
    ca_file: Path,
    admin_password: str,
    users: dict[str, str],
    *,
    admin: str = "admin",
    mechanism: str = "SCRAM-SHA-512",
) -> ListenerSecurity:
    """A SASL_SSL client listener with SCRAM users and ACLs enforced.

    * clients: SCRAM (``mechanism``) over TLS; the broker's key and certificate chain
      in ``keystore`` (PEM), signed by the CA of ``ca_file`` (PEM), which the
      brokers trust for their own connections (certificates checked, hostname included);
    * inter-broker traffic: the same listener, as ``admin``;
    * the controller listener: SASL_PLAINTEXT with PLAIN and one static user, ``admin``
      (KRaft controllers cannot check SCRAM: its credentials live in the metadata they
      serve); keep it on loopback or a private network;
    * ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a principal
      may only do what an ACL allows (``fraudctl acls apply``); ``admin`` is the one
      super user (the brokers themselves, and whoever writes the ACLs);
    * ``users`` (name -> password) and ``admin`` get SCRAM credentials when the
      storage is formatted (``--add-scram``).

    Parameters
    ----------
    keystore : pathlib.Path
        PEM file of the brokers' private key (PKCS#8, unencrypted: keep the file
        readable by Kafka's user only) followed by its certificate chain.
    ca_file : pathlib.Path
        PEM certificate of the CA that signed the brokers' certificates.
    admin_password : str
    users : dict of str to str
        SCRAM users to create, name -> password (names without ``,``, ``=``, ``]``).
    admin : str, default="admin"
    mechanism : str, default="SCRAM-SHA-512"
        ``SCRAM-SHA-512`` or ``SCRAM-SHA-256``.
    """
    import ssl

    for name, secret in {admin: admin_password, **users}.items():
        if not name or any(c in name + secret for c in ',=[]"'):
            raise ValueError(f"SCRAM user {name!r}: names and passwords without , = [ ] \"")
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    listener = f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"
    properties = {
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        listener: f'{scram} required username="{admin}" password="{admin_password}";',
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain} required username="{admin}" password="{admin_password}" '
            f'user_{admin}="{admin_password}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{admin}",
    }
    format_args = tuple(
        arg
        for name, secret in {admin: admin_password, **users}.items()
        for arg in ("--add-scram", f"{mechanism}=[name={name},password={secret}]")
    )
    client_options = {
        "security_protocol": "SASL_SSL",
        "ssl_context": ssl.create_default_context(cafile=str(ca_file)),
        "sasl_mechanism": mechanism,
        "sasl_plain_username": admin,
        "sasl_plain_password": admin_password,
    }
    return ListenerSecurity("SASL_SSL", properties, format_args, client_options)


@dataclass
class KafkaNode:
    """One node (broker + controller) of a :class:`KafkaCluster`."""

    node_id: int
    host: str
    port: int
    controller_port: int
    data_dir: Path
    log_path: Path
    config_path: Path
    pid: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` of its client listener."""
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        """Its JVM runs (a frozen one counts as alive)."""
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """A KRaft cluster of ``len(ports)`` nodes on one host, each in its own JVM.

    Parameters
    ----------
    libs : pathlib.Path
        The jars (:func:`fetch_kafka`).
    base_dir : pathlib.Path
        Its data, configuration and logs (``node-<id>/``).
    ports : list of (int, int)
        ``(broker port, controller port)`` of each node, node ids 1, 2, ...
    host : str, default="127.0.0.1"
    heap : str, default="512m"
        The JVM's ``-Xmx`` per node.
    extra : dict, optional
        Further broker properties for every node.
    security : ListenerSecurity, optional
        A secured client listener (:func:`sasl_ssl_listener`); default: PLAINTEXT.
    """

    libs: Path
    base_dir: Path
    ports: list[tuple[int, int]]
    host: str = "127.0.0.1"
    heap: str = "512m"
    extra: dict[str, str] = field(default_factory=dict)
    security: ListenerSecurity | None = None
    nodes: list[KafkaNode] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.ports) <= 5:
            raise StackError(f"a local Kafka cluster has 1 to 5 nodes, not {len(self.ports)}")
        replicas = min(3, len(self.ports))
        voters = [(i + 1, self.host, p, c) for i, (p, c) in enumerate(self.ports)]
        for node_id, host, port, cport in voters:
            folder = self.base_dir / f"node-{node_id}"
            node = KafkaNode(
                node_id, host, port, cport, folder / "data", folder / "kafka.log",
                folder / "server.properties",
            )
            sec = self.security
            props = node_properties(
                node_id, voters, str(node.data_dir), replicas=replicas,
                extra={**(sec.properties if sec else {}), **self.extra},
                client_protocol=sec.protocol if sec else "PLAINTEXT",
            )
            folder.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            self.nodes.append(node)
        (self.base_dir / "log4j2.yaml").write_text(_LOG4J2)

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (aiokafka's ``bootstrap_servers``)."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def url(self) -> str:
        """``kafka://h:p;kafka://h:p...`` (``KAFKA_BROKER_URL``, Faust's broker URL)."""
        return ";".join(f"kafka://{n.bootstrap}" for n in self.nodes)

    @property
    def replicas(self) -> int:
        """Replication factor of the topics it creates by default."""
        return min(3, len(self.nodes))

    @property
    def _client_options(self) -> dict[str, Any]:
        return dict(self.security.client_options) if self.security else {}

    def node(self, node_id: int) -> KafkaNode:
        """The node of id ``node_id`` (1-based)."""
        return self.nodes[node_id - 1]

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            java_bin(), f"-Xmx{heap}", "-Xss1m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.yaml'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def format(self) -> None:
        """Format every node's log directory with one new cluster id (once, before start).

        Raises
        ------
        StackError
            The storage tool fails.
        """
        cluster_id = _kraft_cluster_id()
        for node in self.nodes:
            if (node.data_dir / "meta.properties").exists():
                continue
            proc = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                    "-c", str(node.config_path), "--ignore-formatted",
                    *(self.security.format_args if self.security else ()),
                ),
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
                raise StackError(f"formatting Kafka node {node.node_id} failed: {tail}")

    def start_node(self, node: KafkaNode) -> None:
        """Start ``node``'s JVM (detached, output appended to its ``kafka.log``)."""
        if node.alive():
            return
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                self._java("kafka.Kafka", str(node.config_path), heap=self.heap),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        node.pid = node.process.pid

    def start(self, timeout_seconds: float = 90.0) -> None:
        """Format (first time), start every node, wait until the cluster serves clients.

        Raises
        ------
        StackError
            A node exits, or the cluster does not answer within ``timeout_seconds``.
        """
        self.format()
        for node in self.nodes:
            self.start_node(node)
        try:
            self.wait_ready(timeout_seconds)
        except StackError:
            self.stop()
            raise

    def wait_ready(self, timeout_seconds: float = 90.0, nodes: list[KafkaNode] | None = None) -> None:
        """Wait until each of ``nodes`` (default: all) answers metadata and the
        cluster lists every node as a live broker."""
        from .stack import kafka_ready

        deadline = time.monotonic() + timeout_seconds
        for node in nodes or self.nodes:
            while not kafka_ready(node.bootstrap, timeout_seconds=2.0, **self._client_options):
                if node.process is not None and node.process.poll() is not None:
                    raise StackError(
                        f"Kafka node {node.node_id} exited with code "
                        f"{node.process.returncode}; log {node.log_path}: {_tail(node.log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Kafka node {node.node_id} at {node.bootstrap} not ready after "
                        f"{timeout_seconds:g}s; log {node.log_path}: {_tail(node.log_path)}"
                    )
                time.sleep(0.2)
        while len(self.live_brokers()) < sum(1 for n in self.nodes if n.alive()):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka cluster: not every node registered after {timeout_seconds:g}s")
            time.sleep(0.2)

    def live_brokers(self) -> list[int]:
        """Node ids the cluster's metadata lists as brokers (asked of a live node)."""
        from .stack import _run

        async def ask() -> list[int]:
            from aiokafka.client import AIOKafkaClient

            live = [n.bootstrap for n in self.nodes if n.alive()]
            client = AIOKafkaClient(
                bootstrap_servers=live, request_timeout_ms=3000, **self._client_options
            )
            try:
                await client.bootstrap()
                return sorted(b.nodeId for b in client.cluster.brokers())
            except Exception:  # noqa: BLE001 - not ready
                return []
            finally:
                await client.close()

        return _run(ask())

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown)."""
        node = self.node(node_id)
        if node.alive():
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)

    def terminate(self, node_id: int, timeout_seconds: float = 60.0) -> None:
        """SIGTERM one node (controlled shutdown: leadership moves first), SIGKILL after
        ``timeout_seconds``."""
        node = self.node(node_id)
        if not node.alive():
            return
        os.killpg(node.process.pid, signal.SIGTERM)
        try:
            node.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)

    def freeze(self, node_id: int) -> None:
        """SIGSTOP one node: it holds its connections and answers nothing."""
        os.killpg(self.node(node_id).process.pid, signal.SIGSTOP)

    def thaw(self, node_id: int) -> None:
        """SIGCONT a frozen node."""
        os.killpg(self.node(node_id).process.pid, signal.SIGCONT)

    def restart(self, node_id: int, timeout_seconds: float = 90.0) -> None:
        """Start a stopped node again and wait until it serves."""
        node = self.node(node_id)
        self.start_node(node)
        self.wait_ready(timeout_seconds, nodes=[node])

    def stop(self, timeout_seconds: float = 20.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout_seconds``); data is kept."""
        for node in self.nodes:
            if node.alive():
                try:
                    os.killpg(node.process.pid, signal.SIGCONT)
                    os.killpg(node.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + timeout_seconds
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(10)


def _kraft_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""

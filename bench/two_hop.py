"""The latency floor of two consumer hops: a bare aiokafka relay (no Faust, no state).

``python -m bench.two_hop`` reads every partition of ``TRANSACTIONS_TOPIC`` and
produces each record to ``<APP_ID>-hop`` (hop 1, like the worker's first stage), reads
that topic and produces each record to ``SCORED_TOPIC`` (hop 2, like the scoring
stage), wrapped as ``{"transaction": <value>}`` so the latency phase's reader matches
it to its transaction. Both hops use the worker's client settings
(``BROKER_FETCH_MAX_WAIT_SECONDS`` and ``BROKER_FETCH_CAUGHT_UP_WAIT_SECONDS``,
``PRODUCER_LINGER_SECONDS``) in one process and one
event loop, as the worker does. It does only the part of the worker's path no design
can avoid; the latency phase measures it at the same rate, in the same run, as the
ceiling the worker's latency is compared with. It runs until SIGTERM.

Settings read: KAFKA_BROKER_URL, APP_ID, TRANSACTIONS_TOPIC, SCORED_TOPIC,
TOPIC_PARTITIONS, BROKER_FETCH_MAX_WAIT_SECONDS, BROKER_FETCH_CAUGHT_UP_WAIT_SECONDS,
PRODUCER_LINGER_SECONDS.
"""

from __future__ import annotations

import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.config import Settings
from app.stream.offsets import client_options
from app.replay import ensure_topics
from app.stream.streaming import adapt_fetch_wait

__all__ = ["relay", "hop_topic"]


def hop_topic(settings: Settings) -> str:
    """The internal topic between the two hops."""
    return f"{settings.app_id}-hop"


async def _hop(settings: Settings, src: str, dst: str, wrap: bool, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    # the worker's fetch waits (app.stream.main.create_app)
    waits_ms = (max(1, round(w * 1000)) for w in settings.broker_fetch_waits_seconds)
    adapt_fetch_wait(consumer, *waits_ms)
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all",
        linger_ms=int(settings.producer_linger_seconds * 1000),
    )
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(src, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            futures = []
            for tp, records in batch.items():
                for r in records:
                    value = b'{"transaction":' + r.value + b"}" if wrap else r.value
                    futures.append(await producer.send(dst, value, key=r.key, partition=tp.partition))
            for f in futures:  # acknowledged before the next fetch, as the worker does
                await f
    finally:
        await producer.stop()
        await consumer.stop()


async def relay(settings: Settings) -> None:
    """Run both hops until SIGTERM or SIGINT."""
    mid = hop_topic(settings)
    await ensure_topics(settings, [settings.transactions_topic, mid, settings.scored_topic])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(
        _hop(settings, settings.transactions_topic, mid, False, stop),
        _hop(settings, mid, settings.scored_topic, True, stop),
    )


if __name__ == "__main__":
    asyncio.run(relay(Settings()))

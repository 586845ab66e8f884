"""Find alert ids on the alert topic: did a dead worker's send get through?

An alert's record is on the partition the Kafka default partitioner gives its key (the
account id; aiokafka ``DefaultPartitioner``, what the worker's producer uses) and, if
its send got through, at or after the first offset whose timestamp is at or after the
reservation time (:func:`app.alerting.plan.lookup_start_ms`). That offset comes from
``offsets_for_times``; a broker that gives none for the time (an error, or an answer
without a timestamp, as Tansu gives for a time past its last record) is read from the
partition's beginning instead (counted by ``source`` in
``fraud_alert_topic_lookups_total``). Reading stops at the partition's *true* end
(:func:`app.stream.offsets.true_end_offsets`: Tansu reports too low an end offset), taken
when the search starts: the record looked for, if acknowledged, is below it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Sequence

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from ..config import Settings
from ..exceptions import BrokerUnavailableError
from ..stream.offsets import client_options, topic_partitions, true_end_offsets

__all__ = ["AlertTopicLookup", "LookupResult", "alert_partition"]

log = logging.getLogger(__name__)

#: the Kafka default partitioner (murmur2 of the key; its ``__call__`` is a classmethod)
_partitioner = DefaultPartitioner()


def alert_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition the producer gives a record with ``key`` among ``partitions`` (all
    the topic's partitions)."""
    ordered = sorted(partitions)
    return _partitioner(key, ordered, ordered)


@dataclass
class LookupResult:
    """What a search found.

    Attributes
    ----------
    found : set of str
        Alert ids that are on the topic.
    starts : dict of str to int
        Partitions read, by where reading started: ``timestamp`` or ``beginning``.
    records_read : int
    """

    found: set[str]
    starts: dict[str, int]
    records_read: int


class AlertTopicLookup:
    """Searches the alert topic with an assign-only consumer (no group, no commits),
    created on first use and kept until :meth:`close`.

    Parameters
    ----------
    settings : Settings
        Broker connection (``KAFKA_*``), ``ALERTS_TOPIC`` and
        ``ALERT_LOOKUP_TIMEOUT_SECONDS``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.alerts_topic
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _get_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[int]:
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:  # a consumer with no subscription knows no topic (topic_partitions)
            parts = (await topic_partitions(self.settings, [self.topic])).get(self.topic)
        if not parts:
            raise BrokerUnavailableError(f"alert topic {self.topic!r} has no partitions")
        return sorted(parts)

    async def find(self, wanted: Sequence[tuple[str, bytes, int]]) -> LookupResult:
        """Which of ``wanted`` are on the alert topic.

        Parameters
        ----------
        wanted : sequence of (alert_id, key, from_ms)
            The alert id, its record key (the account id) and the timestamp (UTC epoch
            ms) from which its record would be.

        Returns
        -------
        LookupResult

        Raises
        ------
        BrokerUnavailableError
            The broker failed, or the search took longer than
            ``ALERT_LOOKUP_TIMEOUT_SECONDS``.
        """
        if not wanted:
            return LookupResult(set(), {}, 0)
        async with self._lock:
            try:
                return await asyncio.wait_for(
                    self._find(wanted), self.settings.alert_lookup_timeout_seconds
                )
            except asyncio.TimeoutError:
                raise BrokerUnavailableError(
                    f"searching {self.topic!r} for {len(wanted)} reserved alerts took longer "
                    f"than {self.settings.alert_lookup_timeout_seconds:g}s "
                    "(ALERT_LOOKUP_TIMEOUT_SECONDS)"
                ) from None
            except KafkaError as exc:
                raise BrokerUnavailableError(
                    f"searching {self.topic!r} for reserved alerts failed ({exc})"
                ) from None

    async def _find(self, wanted: Sequence[tuple[str, bytes, int]]) -> LookupResult:
        consumer = await self._get_consumer()
        partitions = await self._partitions(consumer)
        ids_of: dict[TopicPartition, set[str]] = {}
        from_ms: dict[TopicPartition, int] = {}
        for alert_id, key, ms in wanted:
            tp = TopicPartition(self.topic, alert_partition(key, partitions))
            ids_of.setdefault(tp, set()).add(alert_id)
            from_ms[tp] = min(ms, from_ms.get(tp, ms))
        tps = sorted(ids_of)
        ends = await true_end_offsets(consumer, tps)  # assigns them
        beginnings = await consumer.beginning_offsets(tps)
        try:
            by_time = await consumer.offsets_for_times(from_ms)
        except KafkaError as exc:
            log.warning("offsets_for_times on %s failed (%s): reading from the beginning", self.topic, exc)
            by_time = {}
        starts = {"timestamp": 0, "beginning": 0}
        position: dict[TopicPartition, int] = {}
        for tp in tps:
            answer = by_time.get(tp, "unknown")
            if answer is None:
                # Kafka's answer "no record at or after that time": the alert is not there
                position[tp] = ends[tp]
                starts["timestamp"] += 1
            elif answer != "unknown" and answer.timestamp is not None and answer.timestamp >= 0:
                position[tp] = max(answer.offset, beginnings[tp])
                starts["timestamp"] += 1
            else:
                position[tp] = beginnings[tp]
                starts["beginning"] += 1
            consumer.seek(tp, position[tp])
        found: set[str] = set()
        read = 0
        todo = [tp for tp in tps if position[tp] < ends[tp]]
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        break
                    read += 1
                    alert_id = _alert_id(r.value)
                    if alert_id in ids_of[tp]:
                        found.add(alert_id)
                if records:
                    position[tp] = records[-1].offset + 1
            todo = [
                tp for tp in todo if position[tp] < ends[tp] and not ids_of[tp] <= found
            ]
        return LookupResult(found, starts, read)

    async def close(self) -> None:
        """Stop the consumer, if one was created."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def _alert_id(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc.get("alert_id") if isinstance(doc, dict) else None

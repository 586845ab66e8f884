"""Run one alert sink: its own consumer group on ``fraud-alerts``, commit after confirm.

For each fetched batch, partition by partition in offset order: the records become
:class:`~app.sinks.types.SinkMessage` (a record that is no alert is logged, counted in
``fraud_sink_skipped_total`` and committed past), the sink delivers them, and only then
is the offset after the last one committed. A failed delivery is retried from the
first unconfirmed message, waiting ``SINK_RETRY_INITIAL_DELAY_SECONDS`` doubling up to
``SINK_RETRY_MAX_DELAY_SECONDS``, for as long as it takes: a sink that is down holds
its backlog (``fraud_sink_backlog_records``) and loses nothing. Stopping during a retry
commits nothing of that batch: it is delivered after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ..exceptions import BrokerUnavailableError, SinkDeliveryError
from ..metrics import SinkMetrics
from ..redis_store import backoff_delays
from .types import AlertSink, SinkMessage, message_of

__all__ = ["SinkRunner", "consumer_group"]

log = logging.getLogger(__name__)


def consumer_group(app_id: str, sink_name: str) -> str:
    """The consumer group of a sink: ``<APP_ID>-sink-<name>`` (one per sink, none shared
    with the workers).

    >>> consumer_group("fraud-detector", "rabbitmq")
    'fraud-detector-sink-rabbitmq'
    """
    return f"{app_id}-sink-{sink_name}"


class SinkRunner:
    """Feed one sink from the alerts topic (see the module docstring).

    Parameters
    ----------
    sink : AlertSink
    topic : str
        The alerts topic.
    group_id : str
        Its consumer group (:func:`consumer_group`).
    client_options : dict
        aiokafka connection keywords (:func:`app.stream.offsets.client_options`).
    metrics : SinkMetrics
    batch_max_records : int, default=100
    retry_initial_delay_seconds, retry_max_delay_seconds : float, default=0.5, 30.0
    backlog_interval_seconds : float, default=5.0
        How often the backlog gauge is sampled.
    """

    def __init__(
        self,
        sink: AlertSink,
        topic: str,
        group_id: str,
        client_options: dict[str, Any],
        metrics: SinkMetrics,
        batch_max_records: int = 100,
        retry_initial_delay_seconds: float = 0.5,
        retry_max_delay_seconds: float = 30.0,
        backlog_interval_seconds: float = 5.0,
    ) -> None:
        self.sink = sink
        self.topic = topic
        self.group_id = group_id
        self._options = client_options
        self.metrics = metrics
        self.batch_max_records = batch_max_records
        self._delays = backoff_delays(retry_initial_delay_seconds, retry_max_delay_seconds)
        self.backlog_interval_seconds = backlog_interval_seconds
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set."""
        consumer = self._consumer = AIOKafkaConsumer(
            self.topic,
            **self._options,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise BrokerUnavailableError(f"{self.sink.name}: Kafka broker unavailable ({exc})") from None
        backlog = asyncio.create_task(self._sample_backlog(stop))
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=self.batch_max_records)
                for tp, records in sorted(batch.items()):
                    if not await self._deliver(tp, records, stop):
                        return
                    try:
                        await consumer.commit({tp: records[-1].offset + 1})
                    except KafkaError as exc:  # revoked meanwhile: its new owner redelivers
                        log.warning("%s: commit of %s failed (%s)", self.sink.name, tp, exc)
        finally:
            backlog.cancel()
            await self.sink.close()
            await consumer.stop()

    async def _deliver(self, tp: TopicPartition, records, stop: asyncio.Event) -> bool:
        """Deliver one partition's records; False if stopped before all were confirmed."""
        name, m = self.sink.name, self.metrics
        todo: list[SinkMessage] = []
        for r in records:
            msg = message_of(r.partition, r.offset, r.value)
            if isinstance(msg, str):
                log.warning("%s: skipped %s[%d]@%d: %s", name, tp.topic, r.partition, r.offset, msg)
                m.skipped.labels(sink=name).inc()
            else:
                todo.append(msg)
        started = time.monotonic()
        attempt = 0
        while todo:
            try:
                await self.sink.send_many(todo)
                m.sent.labels(sink=name).inc(len(todo))
                m.up.labels(sink=name).set(1)
                todo = []
            except SinkDeliveryError as exc:
                m.sent.labels(sink=name).inc(exc.confirmed)
                m.failed.labels(sink=name).inc()
                m.up.labels(sink=name).set(0)
                todo = todo[exc.confirmed :]
                wait = self._delays[min(attempt, len(self._delays) - 1)]
                attempt += 1
                log.warning("%s: %s; %d alerts left, retry in %.1fs", name, exc, len(todo), wait)
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return False  # stopped: nothing of this batch is committed
                except asyncio.TimeoutError:
                    pass
        m.delivery.labels(sink=name).observe(time.monotonic() - started)
        return True

    async def _sample_backlog(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._sample_backlog_once()
            except Exception:  # noqa: BLE001 - rebalancing, broker away: next time
                log.debug("%s: backlog not sampled", self.sink.name, exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), self.backlog_interval_seconds)
            except asyncio.TimeoutError:
                pass

    async def _sample_backlog_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = sorted(consumer.assignment())
        total = 0
        if tps:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                committed = await consumer.committed(tp)
                total += max(0, ends[tp] - (committed if committed is not None else starts[tp]))
        self.metrics.backlog.labels(sink=self.sink.name).set(total)

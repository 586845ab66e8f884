"""The control plane's shell: publish model and rule changes, and follow them in workers.

Two single-partition topics carry changes to every worker:

- ``CONTROL_TOPIC`` (``fraud-control``): :class:`app.events.ModelControl`, the whole
  desired model state (active + shadows), key ``models``;
- ``RULES_TOPIC`` (``fraud-rules``): :class:`app.events.RuleSet`, key = rule-set id.

Why a Kafka topic and not Redis pub/sub: pub/sub delivers only to the clients connected
at that instant (a worker that is restarting or reconnecting misses the message, with
no trace), while a topic keeps every change in order and lets any worker read it again.
Each worker reads both topics *in full, outside the consumer group*
(:class:`ControlFollower`: no group id, partition 0 assigned explicitly): a group would
hand the single partition to one worker only. Messages are whole states, so reading
from the beginning ends on the right state, and a message applied twice changes nothing.
Redis keeps the current state too (``model:active``, ``model:shadows``,
``rules:current``) for ``fraudctl`` and for tools that do not read Kafka.

The decision logic is pure (:class:`app.decisions.Controller`); this module only moves
bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from ..config import Settings
from ..decisions.controller import ApplyResult, Controller
from ..exceptions import BrokerUnavailableError
from .offsets import client_options

__all__ = ["CONTROL_KEY", "publish", "publish_async", "ensure_control_topics", "ControlFollower"]

log = logging.getLogger(__name__)

#: Record key of every ``fraud-control`` message (one state, one key: compaction-safe).
CONTROL_KEY = b"models"
_POLL_MS = 200


async def ensure_control_topics(settings: Settings, topics: list[str] | None = None) -> None:
    """Create ``CONTROL_TOPIC`` and ``RULES_TOPIC`` (or only ``topics``) with one
    partition each if missing (one partition: one order for every worker).

    Raises
    ------
    BrokerUnavailableError
    """
    from .offsets import ensure_topics

    one = settings.model_copy(update={"topic_partitions": 1})
    await ensure_topics(one, topics or [settings.control_topic, settings.rules_topic])


async def publish_async(settings: Settings, topic: str, key: bytes, value: bytes) -> int:
    """Send one record and wait for the broker's acknowledgement (acks=all).

    Returns
    -------
    int
        Its offset.

    Raises
    ------
    BrokerUnavailableError
        The broker cannot be reached or did not acknowledge.
    """
    from .offsets import broker_error

    # only the topic written: a principal may hold no right on the other one
    await ensure_control_topics(settings, [topic])
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    try:
        await producer.start()
        meta = await producer.send_and_wait(topic, value=value, key=key, partition=0)
        return meta.offset
    except KafkaError as exc:
        raise await broker_error(settings, exc, f"publishing to {topic}") from None
    finally:
        await producer.stop()


def publish(settings: Settings, topic: str, key: bytes, value: bytes) -> int:
    """:func:`publish_async` from synchronous code (the CLI)."""
    return asyncio.run(publish_async(settings, topic, key, value))


class ControlFollower:
    """Reads ``CONTROL_TOPIC`` and ``RULES_TOPIC`` from the beginning and feeds them to a
    :class:`~app.decisions.Controller`, for as long as the worker runs.

    Parameters
    ----------
    settings : Settings
    controller : Controller
    on_result : callable, optional
        Called with each :class:`~app.decisions.controller.ApplyResult` (metrics).

    Notes
    -----
    Of the model messages fetched together only the last is applied (each is a whole
    state), and :meth:`catch_up` reads the whole history before applying it, so a
    worker starting or reconnecting loads only the models it will serve and never
    passes through an older state. Loading runs in a thread; the event loop keeps scoring with the current
    snapshot meanwhile.
    """

    def __init__(
        self,
        settings: Settings,
        controller: Controller,
        on_result: Callable[[ApplyResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.controller = controller
        self.on_result = on_result
        self.applied = 0
        self._kinds = {settings.control_topic: "model", settings.rules_topic: "rules"}
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect and assign partition 0 of both topics, from their beginning.

        Raises
        ------
        BrokerUnavailableError
        """
        await ensure_control_topics(self.settings)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            raise BrokerUnavailableError(f"control topics: cannot connect ({exc})") from None
        consumer.assign([TopicPartition(t, 0) for t in self._kinds])
        await consumer.seek_to_beginning()
        self._consumer = consumer

    async def catch_up(self) -> list[ApplyResult]:
        """Read the history until nothing more comes, then apply it: the last model
        state only (never an older one on the way), and the rule sets in order."""
        assert self._consumer is not None, "start() first"
        history: dict = {}
        while True:
            batches = await self._consumer.getmany(timeout_ms=_POLL_MS)
            if not batches:
                break
            for tp, records in batches.items():
                history.setdefault(tp, []).extend(records)
        return await self._apply(history)

    async def poll_once(self) -> list[ApplyResult]:
        """Fetch what arrived and apply it; the results, in order."""
        assert self._consumer is not None, "start() first"
        return await self._apply(await self._consumer.getmany(timeout_ms=_POLL_MS))

    async def _apply(self, batches: dict) -> list[ApplyResult]:
        results = []
        for tp, records in sorted(batches.items(), key=lambda kv: kv[0].topic):
            kind = self._kinds[tp.topic]
            if kind == "model":
                records = records[-1:]
            for rec in records:
                result = await asyncio.to_thread(self.controller.apply_raw, kind, rec.value or b"")
                self.applied += result.applied
                (log.info if result.applied else log.warning)(
                    "control %s offset %s: %s", tp.topic, rec.offset, result.detail
                )
                if self.on_result:
                    self.on_result(result)
                results.append(result)
        return results

    async def run(self, retry_delay_seconds: float = 1.0) -> None:
        """:meth:`start`, then :meth:`poll_once` until cancelled; a broker failure is
        logged and retried (scoring goes on with the current snapshot meanwhile)."""
        while True:
            try:
                if self._consumer is None:
                    await self.start()
                    await self.catch_up()
                await self.poll_once()
            except asyncio.CancelledError:
                await self.stop()
                raise
            except (KafkaError, BrokerUnavailableError, TimeoutError) as exc:
                # TimeoutError: aiokafka's admin client when too few brokers answer
                log.warning("control topics unavailable (%s); retrying", exc or type(exc).__name__)
                await self.stop()
                await asyncio.sleep(retry_delay_seconds)

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

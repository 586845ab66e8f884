"""A correction to Faust's acknowledgements: an event a stream skipped is not processed.

Faust's stream loop skips an event fetched while flow control is suspended (a
rebalance or a shutdown is under way) or fetched in an older consumer generation, and
then *acknowledges* it, as it does for events a filter dropped. Its offset then counts
as done: the next commit (at the latest when the worker leaves the group) moves past
it, and the worker that takes the partition over starts after it. The event is never
processed anywhere (faust-streaming issues #221, #312; caught here by
``tests/test_faults.py::test_worker_stopped_while_sharing_partitions``: one transaction
in a few runs was lost when a worker stopped).

:class:`ProcessedOnlyEvent` refuses the acknowledgement of an event whose value no
stream ever read: the stream reads ``event.value`` only when it hands the event on, so
an unread value means a skipped event. Its offset stays uncommitted and the partition's
next owner fetches it again (at least once, never lost).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, AsyncIterator, Iterable

import faust

log = logging.getLogger(__name__)

__all__ = [
    "ProcessedOnlyEvent",
    "guard_offset_gaps",
    "next_offset_of",
    "produce",
    "set_fetch_max_wait",
]


class ProcessedOnlyEvent(faust.Event):
    """A Faust event that can be acknowledged only once a stream handed its value on.

    Used as the app's ``Event`` class (:func:`app.main.create_app`).
    """

    def __init__(self, app: Any, key: Any, value: Any, headers: Any, message: Any) -> None:
        self.taken = False
        super().__init__(app, key, value, headers, message)
        self.taken = False  # the base class's assignment of value is no hand-over

    @property
    def value(self) -> Any:
        """The event's value; reading it marks the event as handed on."""
        self.taken = True
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def ack(self) -> bool:
        """Acknowledge the event if a stream handed it on; else leave it uncommitted.

        A skipped event is still dropped from the consumer's set of messages in
        progress: Faust waits for that set to empty before a rebalance or a shutdown
        completes, and a skipped event is not in progress (without this a worker
        stopped during a catch-up waited forever on SIGTERM)."""
        if not self.taken:
            msg = self.message
            log.debug(  # one per skipped event: thousands in a shutdown during a catch-up
                "event %s[%s]@%s skipped by the stream (rebalance or shutdown under "
                "way): left unacknowledged, read again after the next rebalance",
                msg.topic, msg.partition, msg.offset,
            )
            unacked = getattr(getattr(self.app, "_consumer", None), "_unacked_messages", None)
            if unacked is not None:
                unacked.discard(self.message)
            return False
        return super().ack()


#: Faust consumer -> {partition: offset of the next record it must hand on}
_next_offsets: "weakref.WeakKeyDictionary[Any, dict[Any, int]]" = weakref.WeakKeyDictionary()


def guard_offset_gaps(topics: Iterable[str]) -> None:
    """Make the Faust consumer fetch again any records it skipped on ``topics``.

    On the stream's source topics (never compacted, no transaction markers) offsets
    are contiguous: a record handed on after a jump past the next expected offset
    means the consumer dropped the records in between. Seen on the development
    broker: a worker restarted while records arrived received each partition's first
    new batch only after the one behind it (the resumed partitions fetch between
    Faust's ``resume_partitions`` and its seek to the committed offsets, see
    ``faust.tables.recovery.Recovery._resume_streams``); Faust counts the missing
    range as a gap and commits past it, so the batch was never processed
    (``tests/test_faults.py::test_restart_restores_full_table_after_multi_record_batches``
    lost 56 to 379 of 4,791 transactions in 6 runs of 7). With this guard the record past the
    gap is not handed on; the partition is sought back to the expected offset and
    the gap fetched again (logged as a warning).

    Parameters
    ----------
    topics : iterable of str
        Names of the guarded topics. Idempotent: a second call changes nothing.
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer.getmany, "_gap_guard", False):
        return
    guarded = frozenset(topics)
    original_getmany = Consumer.getmany
    original_seek = Consumer.seek
    original_perform_seek = Consumer.perform_seek

    def expected(consumer: Any) -> dict[Any, int]:
        table = _next_offsets.get(consumer)
        if table is None:
            table = _next_offsets[consumer] = {}
        return table

    async def perform_seek(self: Any) -> None:
        await original_perform_seek(self)
        nxt = expected(self)
        nxt.clear()  # a new assignment: committed offsets, or unknown
        for tp, offset in self._read_offset.items():
            if offset is not None:
                nxt[tp] = offset

    async def seek(self: Any, partition: Any, offset: int) -> None:
        await original_seek(self, partition, offset)
        expected(self)[partition] = offset

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        nxt = expected(self)
        stalled: set = set()
        async for tp, message in original_getmany(self, timeout):
            if tp in stalled:
                continue  # fetched again after the seek below
            if tp.topic in guarded:
                want = nxt.get(tp)
                if want is not None and message.offset > want:
                    log.warning(
                        "%s[%s]: consumer skipped offsets %d..%d; fetching them again",
                        tp.topic, tp.partition, want, message.offset - 1,
                    )
                    stalled.add(tp)
                    await seek(self, tp, want)
                    continue
                if want is None or message.offset >= want:
                    nxt[tp] = message.offset + 1
            yield tp, message

    getmany._gap_guard = True  # type: ignore[attr-defined]
    Consumer.getmany = getmany  # type: ignore[method-assign]
    Consumer.seek = seek  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def next_offset_of(consumer: Any, tp: Any) -> int | None:
    """Offset of the next record of ``tp`` that ``consumer`` will hand on, as the gap
    guard tracks it: the committed offset after a (re)assignment, then the offset after
    each record handed on. None when unknown (no committed offset, nothing read yet, or
    :func:`guard_offset_gaps` not installed). Reads no broker: safe in a timer."""
    table = _next_offsets.get(consumer)
    return None if table is None else table.get(tp)


async def produce(
    app: Any,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    partition: int | None = None,
) -> Any:
    """Hand one record straight to the worker's Kafka producer, skipping Faust's
    per-record topic machinery (most of a send's cost).

    The topic is first added to the topics the producer's metadata tracks. aiokafka
    does not add a topic it already found in a metadata answer, and once it tracks
    any topic its metadata refreshes ask for those only: a record for a topic left
    out then waits for a leader forever, and every later send waits behind it (a
    worker stalled this way within a minute of a three-day replay). So *every* record
    the worker produces goes through here: a topic sent to another way could be the
    one left out.

    Parameters
    ----------
    app : faust.App
        A started app (its producer is running).
    topic : str
    value : bytes
    key : bytes, optional
    partition : int, optional
        None: the Kafka default partitioner's choice for ``key``.

    Returns
    -------
    asyncio.Future of aiokafka RecordMetadata
        Resolves when the broker has the record; raises what the send raised.
    """
    producer = app.producer
    client = producer._ensure_producer().client
    if topic not in client._topics:
        await client.add_topic(topic)
    return await producer.send(topic, key, value, partition, None, None)


def set_fetch_max_wait(seconds: float) -> None:
    """Give the worker's group consumer a fetch wait of ``seconds`` instead of Faust's
    fixed 1.5 s (``AIOKafkaConsumerThread._create_worker_consumer``).

    The broker holds a fetch until data arrives or this wait ends; every record crosses
    two consumer hops (stage 1, stage 2), so the wait shows in the latency of live
    traffic. Applies to consumers created after the call.

    Parameters
    ----------
    seconds : float
        In (0, 1.5].

    Raises
    ------
    ValueError
        ``seconds`` out of range.
    """
    if not 0 < seconds <= 1.5:
        raise ValueError(f"seconds: expected in (0, 1.5]; got {seconds!r}")
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread._create_worker_consumer, "_original", None)
    create = create or AIOKafkaConsumerThread._create_worker_consumer
    wait_ms = int(round(seconds * 1000))

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms  # read by its Fetcher when it starts
        return consumer

    _create_worker_consumer._original = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]

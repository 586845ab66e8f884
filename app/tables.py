"""Every table of the service.

:class:`PartitionedTable` corrects where Faust writes a key (changelog partition, RocksDB
database) when an agent takes batches. Verified on the faust-streaming, aiokafka and
mode-streaming versions in
:data:`app.compat.VERIFIED_VERSIONS`; ``python -m app worker`` refuses to start on others.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator

import faust
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event, current_event

from .main import app
from .streaming import produce

__all__ = ["PartitionedTable", "account_states", "terminal_states"]


class PartitionedTable(faust.Table):
    """A table whose writes name their changelog partition.

    Faust picks a write's changelog partition from the stream's *current* event; an
    agent that processes a batch (``take_events``) writes after the whole batch, when
    the current event is the batch's last, possibly of another partition. Writing with
    :meth:`set_in_partition` puts each key's changelog record in the partition of the
    event that carried it, so recovery and rebalancing give each worker its keys.
    A RocksDB store (``STORE_URL=rocksdb://``) also picks its per-partition database
    from the current event: the write is made with the current event seen as one of
    ``partition``, so the key lands in the database of its own partition (the one
    handed over on a rebalance).
    """

    _write_partition: int | None = None

    def set_in_partition(self, key: Any, value: Any, partition: int) -> None:
        """``table[key] = value`` with its changelog record in ``partition``."""
        self._write_partition = partition
        try:
            with _event_of_partition(partition):
                self[key] = value
        finally:
            self._write_partition = None

    async def put(
        self,
        key: Any,
        value: Any,
        partition: int,
        on_sent: Callable[[Any], None] | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """``table[key] = value`` with its changelog record sent straight to ``partition``.

        Faust's ``__setitem__`` queues each changelog record in its producer buffer,
        which hands them to the producer one event-loop turn at a time and makes the
        agent wait ("producer buffer full") once a hundred are queued. Here the store is
        updated at once and the record, serialized as Faust serializes it, handed
        straight to the worker's Kafka producer (:func:`app.streaming.produce`, not
        through Faust's topic layer: a third of the cost of a write), so a batch's
        records leave in a few produce requests. When the broker has it, its offset is
        recorded as Faust records it (``_on_changelog_sent``: a RocksDB store keeps it
        to know which changelog records it holds) and ``on_sent`` is called with the
        future. ``headers`` go on the changelog record (its ``traceparent``).

        Returns
        -------
        asyncio.Future of aiokafka RecordMetadata
            Resolves when the broker has the changelog record; await it before
            acknowledging the batch.
        """
        if isinstance(self.data, MemoryStore):  # one dict: no database to pick
            self.data[key] = value
        else:
            with _event_of_partition(partition):  # RocksDB picks its database by it
                self.data[key] = value
        topic = self.changelog_topic
        key_bytes, _ = topic.prepare_key(key, self.key_serializer)
        value_bytes, _ = topic.prepare_value(value, self.value_serializer)
        fut = await produce(
            self.app, topic.get_topic_name(), value_bytes, key=key_bytes, partition=partition,
            headers=headers,
        )
        fut.add_done_callback(self._on_put_sent)
        if on_sent is not None:
            fut.add_done_callback(on_sent)
        return fut

    def _on_put_sent(self, fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._on_changelog_sent(fut)  # reads fut.result(): the RecordMetadata

    def partition_for_key(self, key: Any) -> int | None:
        """The partition set by :meth:`set_in_partition`, else Faust's choice."""
        if self._write_partition is not None:
            return self._write_partition
        return super().partition_for_key(key)


class _MessageIn:
    """What a table write reads of the current message: its partition (a RocksDB store
    picks its database by it)."""

    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


class _EventIn:
    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = _MessageIn(partition)


@contextmanager
def _event_of_partition(partition: int) -> Iterator[None]:
    """Within the block, Faust's current event reads as one of ``partition``.

    In an agent that takes batches (``take_events``) there is no current event at all
    when it writes, or one of another partition.
    """
    event = current_event()
    if event is not None and event.message.partition == partition:
        yield
        return
    stand_in = _EventIn(partition)
    token = _current_event.set(weakref.ref(stand_in))
    try:
        yield
    finally:
        _current_event.reset(token)


#: account id -> :meth:`app.features.AccountState.to_bytes` of its last 30 days.
account_states: PartitionedTable = app.tables.add(  # type: ignore[assignment]
    PartitionedTable(
        app,
        name="account_states",
        # types, not a Schema: Faust derives the changelog's serializers from them
        # (str keys as JSON strings, bytes values raw) for writes and recovery alike
        key_type=str,
        value_type=bytes,
        help="Per-account transaction history of the last 30 days (feature state).",
    )
)

#: terminal id -> :meth:`app.features.TerminalState.to_bytes`: its transactions and
#: known frauds of the last ``delay + 30`` days.
terminal_states: PartitionedTable = app.tables.add(  # type: ignore[assignment]
    PartitionedTable(
        app,
        name="terminal_states",
        key_type=str,
        value_type=bytes,
        help="Per-terminal transactions and known frauds (terminal-risk feature state).",
    )
)

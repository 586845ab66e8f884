"""Every table of the service.

:class:`PartitionedTable` corrects where Faust writes a key (changelog partition, RocksDB
database) when an agent takes batches. Verified on the faust-streaming, aiokafka and
mode-streaming versions in
:data:`app.compat.VERIFIED_VERSIONS`; ``python -m app worker`` refuses to start on others.
"""

from __future__ import annotations

import itertools
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterable, Iterator, Mapping

import faust
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event, current_event

from ..config import get_settings
from ..changelog import BATCH_KEY_PREFIX, is_batch_key, pack_changes, unpack_changes
from .main import app
from .streaming import produce_many

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

    :meth:`put_many` writes a batch's changes as *batch records* (:mod:`app.changelog`):
    one changelog record per partition holding every key the batch changed there.
    Restoring (active or standby, memory or RocksDB store) unpacks them into the
    single-key changes they stand for (:meth:`apply_changelog_batch`), in changelog
    order with the single-key records around them, so a changelog of old single-key
    records, of batch records or of both restores every key.
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
        """``table[key] = value`` with its changelog record sent straight to ``partition``
        (:meth:`put_many` of one key).

        Returns
        -------
        asyncio.Future of aiokafka RecordMetadata
            Resolves when the broker has the changelog record; await it before
            acknowledging the batch.
        """
        return (await self.put_many({key: value}, {key: partition}, on_sent, headers))[0]

    async def put_many(
        self,
        values: Mapping[Any, Any],
        partition_of: Mapping[Any, int],
        on_sent: Callable[[Any], None] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Awaitable[Any]]:
        """``table[key] = value`` for every key, with one changelog *batch record* per
        partition (:mod:`app.changelog`) instead of one record per key
        (``CHANGELOG_BATCH_RECORDS``; false: a record per key, in one producer batch
        per partition).

        Faust's ``__setitem__`` would queue one changelog record per key in its producer
        buffer, handed to the producer one event-loop turn at a time (the agent waits,
        "producer buffer full", once a hundred are queued). Here the store is updated
        at once (each key in the RocksDB database of its partition) and the batch
        records, keys and values serialized as Faust serializes a single-key record's,
        are built with aiokafka's batch API and handed straight to the worker's
        producer (:func:`app.stream.streaming.produce_many`, not Faust's topic layer). When
        the broker has a producer batch, the offset of its last record is recorded as
        Faust records a changelog write's (a RocksDB store keeps it to know which
        changelog records it holds) and ``on_sent`` is called with its future, once
        per changelog record in it.

        Parameters
        ----------
        values : mapping of key to value
            The keys' new values (of the table's key and value types).
        partition_of : mapping of key to int
            The changelog partition of every key of ``values`` (that of the event
            that carried it).
        on_sent : callable, optional
            Done-callback of each changelog record's future (counts records sent).
        headers : list of (str, bytes), optional
            Headers of every changelog record written (its ``traceparent``).

        Returns
        -------
        list of asyncio.Future of aiokafka RecordMetadata
            One per partition and producer batch (more when a partition's changes
            exceed :data:`app.changelog.BATCH_RECORD_MAX_BYTES`, or a producer batch);
            await them all before acknowledging the batch.
        """
        if not values:
            return []
        topic = self.changelog_topic
        changes: dict[int, list[tuple[bytes, bytes | None]]] = {}
        memory = isinstance(self.data, MemoryStore)
        for key, value in values.items():
            partition = partition_of[key]
            if memory:  # one dict: no database to pick
                self.data[key] = value
            else:
                with _event_of_partition(partition):  # RocksDB picks its database by it
                    self.data[key] = value
            key_bytes, _ = topic.prepare_key(key, self.key_serializer)
            value_bytes, _ = topic.prepare_value(value, self.value_serializer)
            changes.setdefault(partition, []).append((key_bytes, value_bytes))
        if get_settings().changelog_batch_records:
            records = [
                (self._batch_key(), value, partition, headers)
                for partition, entries in changes.items()
                for value in pack_changes(entries)
            ]
        else:  # a record per key, still one producer batch per partition
            records = [
                (key, value, partition, headers)
                for partition, entries in changes.items()
                for key, value in entries
            ]
        futures = []
        for batch in await produce_many(self.app, topic.get_topic_name(), records):
            fut = batch.future
            fut.add_done_callback(_persist_offset(self, batch.records))
            for _ in range(batch.records if on_sent is not None else 0):
                fut.add_done_callback(on_sent)
            futures.append(fut)
        return futures

    def _batch_key(self) -> bytes:
        """Serialized key of a new batch record: unique per worker process and write."""
        key = f"{BATCH_KEY_PREFIX}{_WRITER_ID}:{next(_batch_seq)}"
        return self.changelog_topic.prepare_key(key, self.key_serializer)[0]

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Apply changelog events read by Faust's recovery (active or standby) to the
        store, batch records unpacked into the single-key changes they stand for."""
        self.data.apply_changelog_batch(
            self._unpacked(batch), to_key=self._to_key, to_value=self._to_value
        )

    def _unpacked(self, events: Iterable[Any]) -> Iterator[Any]:
        loads_key = self.app.serializers.loads_key
        key_type, key_serializer = self.key_type, self.key_serializer
        for event in events:
            if not is_batch_key(event.key):
                yield event
                continue
            msg = event.message
            if msg.value is None:  # a batch record's tombstone: nothing to apply
                continue
            for key_bytes, value_bytes in unpack_changes(msg.value):
                yield _ChangeEvent(
                    loads_key(key_type, key_bytes, serializer=key_serializer),
                    value_bytes,
                    _ChangeMessage(key_bytes, value_bytes, msg.partition, msg.tp, msg.offset),
                )

    def partition_for_key(self, key: Any) -> int | None:
        """The partition set by :meth:`set_in_partition`, else Faust's choice."""
        if self._write_partition is not None:
            return self._write_partition
        return super().partition_for_key(key)


#: writer id of this process in batch-record keys (with a sequence number: unique keys,
#: so that log compaction never drops a batch record for another one)
_WRITER_ID = uuid.uuid4().hex[:16]
_batch_seq = itertools.count()


def _persist_offset(table: "PartitionedTable", records: int) -> Callable[[Any], None]:
    """Done-callback of a batch of ``records`` changelog records: the offset of its last
    record is recorded as Faust's ``Table._on_changelog_sent`` records one write's."""

    def persist(fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        meta = fut.result()
        if meta is None:  # acks=0: no offset known
            return
        tp, last = meta.topic_partition, meta.offset + records - 1
        if table.app.in_transaction:
            table.app.tables.persist_offset_on_commit(table.data, tp, last)
        else:
            table.data.set_persisted_offset(tp, last)

    return persist


class _ChangeMessage:
    """What a store's ``apply_changelog_batch`` reads of a changelog message, for one
    change of a batch record (its partition and offset are the batch record's).

    The attributes are those ``faust.stores.memory.Store`` and
    ``faust.stores.rocksdb.Store`` read in ``apply_changelog_batch`` (faust-streaming
    0.15.3); ``tests/test_changelog_restore.py`` restores through both."""

    __slots__ = ("key", "value", "partition", "tp", "offset")

    def __init__(self, key: bytes, value: bytes | None, partition: int, tp: Any, offset: int):
        self.key, self.value, self.partition, self.tp, self.offset = key, value, partition, tp, offset


class _ChangeEvent:
    """What a store's ``apply_changelog_batch`` reads of a changelog event: the decoded
    key, the value and the message."""

    __slots__ = ("key", "value", "message")

    def __init__(self, key: Any, value: bytes | None, message: _ChangeMessage):
        self.key, self.value, self.message = key, value, message


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

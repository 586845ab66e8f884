"""Every table of the service."""

from __future__ import annotations

from typing import Any, Awaitable

import faust

from .main import app

__all__ = ["PartitionedTable", "account_states", "terminal_states"]


class PartitionedTable(faust.Table):
    """A table whose writes name their changelog partition.

    Faust picks a write's changelog partition from the stream's *current* event; an
    agent that processes a batch (``take_events``) writes after the whole batch, when
    the current event is the batch's last, possibly of another partition. Writing with
    :meth:`set_in_partition` puts each key's changelog record in the partition of the
    event that carried it, so recovery and rebalancing give each worker its keys.
    """

    _write_partition: int | None = None

    def set_in_partition(self, key: Any, value: Any, partition: int) -> None:
        """``table[key] = value`` with its changelog record in ``partition``."""
        self._write_partition = partition
        try:
            self[key] = value
        finally:
            self._write_partition = None

    async def put(self, key: Any, value: Any, partition: int) -> Awaitable[Any]:
        """``table[key] = value`` with its changelog record sent straight to ``partition``.

        Faust's ``__setitem__`` queues each changelog record in its producer buffer,
        which hands them to the producer one event-loop turn at a time and makes the
        agent wait ("producer buffer full") once a hundred are queued. Here the store is
        updated at once and the record handed to the producer directly, so a batch's
        records leave in a few produce requests.

        Returns
        -------
        awaitable
            Resolves when the broker has the changelog record; await it before
            acknowledging the batch.
        """
        self.data[key] = value
        return await self.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            callback=self._on_changelog_sent,
        )

    def partition_for_key(self, key: Any) -> int | None:
        """The partition set by :meth:`set_in_partition`, else Faust's choice."""
        if self._write_partition is not None:
            return self._write_partition
        return super().partition_for_key(key)


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

"""Every table of the service."""

from __future__ import annotations

from typing import Any

import faust

from .main import app

__all__ = ["PartitionedTable", "account_states"]


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
        # types, not a Schema: Faust derives the changelog's serializers from them (str
        # keys as JSON strings, bytes values raw), for writes and for recovery alike
        key_type=str,
        value_type=bytes,
        help="Per-account transaction history of the last 30 days (feature state).",
    )
)

"""Every table of the service."""

from __future__ import annotations

import faust

from .main import app

__all__ = ["account_states"]

#: account id -> :meth:`app.features.AccountState.to_bytes` of its last 30 days.
#: ``use_partitioner``: the changelog partition is chosen from the key (the same
#: partitioner the producers of ``transactions`` use), not from whichever event the
#: batch saw last — batches span partitions.
account_states = app.Table(
    "account_states",
    schema=faust.Schema(
        key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ),
    use_partitioner=True,
    help="Per-account transaction history of the last 30 days (feature state).",
)

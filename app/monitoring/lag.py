"""Consumer lag per partition, from end offsets and the consumer's read offsets. Pure.

The lag of a partition is how many records it holds that the worker has not read yet:
``end offset - (last read offset + 1)``. A partition nothing was read from yet counts
from its committed offset (``None``: from 0, the group starts at the earliest record).
Brokers that report a stale end offset (Tansu, see docs/operations.md) can make it negative: it is
clamped to 0.

Examples
--------
>>> consumer_lag({("tx", 0): 100, ("tx", 1): 7, ("tx", 2): None},
...              {("tx", 0): 89, ("tx", 1): None}, {("tx", 1): 5})
{('tx', 0): 10, ('tx', 1): 2}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

__all__ = ["consumer_lag"]


def consumer_lag(
    end_offsets: Mapping[Hashable, int | None],
    read_offsets: Mapping[Hashable, int | None],
    committed_offsets: Mapping[Hashable, int | None] | None = None,
) -> dict[Hashable, int]:
    """Records not yet read, per partition.

    Parameters
    ----------
    end_offsets : mapping of partition to int or None
        Offset the next record written to the partition will get (high watermark);
        ``None`` when not known yet (the partition is then left out).
    read_offsets : mapping of partition to int or None
        Offset of the last record read from the partition, if any.
    committed_offsets : mapping of partition to int or None, optional
        Committed offset (next to read) of partitions nothing was read from yet.

    Returns
    -------
    dict of partition to int
        Lag in records, >= 0, for every partition with a known end offset.
    """
    committed_offsets = committed_offsets or {}
    out = {}
    for tp, end in end_offsets.items():
        if end is None or end < 0:
            continue
        read = read_offsets.get(tp)
        next_offset = read + 1 if read is not None else (committed_offsets.get(tp) or 0)
        out[tp] = max(0, int(end) - int(next_offset))
    return out

"""The Kafka default partitioner's choice for a string key, computed once per key.

Kafka's default partitioner (Java client, aiokafka's ``DefaultPartitioner``) places a
keyed record in partition ``(murmur2(key) & 0x7fffffff) % n``. aiokafka's murmur2 is
pure Python (about 10 µs for a terminal id); the scoring stage needs it for every
transaction it forwards, for a few thousand distinct terminal ids. :func:`key_partition`
remembers the answer per (key, partition count).

Examples
--------
>>> key_partition("T42", 4) == key_partition("T42", 4)
True
>>> 0 <= key_partition("T42", 4) < 4
True
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

__all__ = ["key_partition"]

#: Distinct (key, partition count) pairs remembered (least recently used dropped).
CACHE_SIZE = 1 << 17


@lru_cache(maxsize=CACHE_SIZE)
def key_partition(key: str, n_partitions: int) -> int:
    """Index, in ``[0, n_partitions)``, of the partition Kafka's default partitioner
    gives the UTF-8 key ``key`` among ``n_partitions`` (sorted by id).

    Raises
    ------
    ValueError
        ``n_partitions`` < 1.
    """
    if n_partitions < 1:
        raise ValueError(f"n_partitions: expected >= 1, got {n_partitions!r}")
    return (murmur2(key.encode()) & 0x7FFFFFFF) % n_partitions

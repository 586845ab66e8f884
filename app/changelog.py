"""Batch records of a table changelog: many keys' new values in one Kafka record.

A worker writes, per micro-batch and changelog partition, *one* record holding every
state the batch changed there (instead of one record per key and transaction). Its key
is a string that no real key can be: :data:`BATCH_KEY_PREFIX` (a NUL character, which
the ids of :mod:`app.events` never contain) followed by a writer id and a sequence
number, so batch records never overwrite each other in a compacted topic. Its value is
:func:`pack_changes` of the ``{key bytes: value bytes}`` changes, the key and value
bytes exactly as a single-key record of the same table would carry them, so a table
unpacks a batch record into the single-key changes it stands for
(:meth:`app.stream.tables.PartitionedTable.apply_changelog_batch`) and old single-key records
and batch records can be mixed in one changelog.

Value layout (version 1), all integers big-endian::

    0x01                               format version
    then per change:
      uint32  key length               the serialized key (JSON string for str keys)
      int32   value length, -1: delete the serialized value
      key bytes, value bytes

Pure: no Faust or Kafka imports.
"""

from __future__ import annotations

import struct
from typing import Iterable, Iterator

from .exceptions import ChangelogFormatError

__all__ = [
    "BATCH_KEY_PREFIX",
    "BATCH_RECORD_MAX_BYTES",
    "FORMAT_VERSION",
    "is_batch_key",
    "pack_changes",
    "unpack_changes",
]

#: Start of the key of every batch record (decoded key, a str): cannot begin a real key.
BATCH_KEY_PREFIX = "\x00changelog-batch:"
#: Version byte of :func:`pack_changes`' layout.
FORMAT_VERSION = 1
#: Largest value of one batch record, in bytes (a larger batch is split): well under
#: the 1 MiB a Kafka broker accepts per record by default (``message.max.bytes``).
BATCH_RECORD_MAX_BYTES = 256 * 1024

_HEAD = struct.Struct(">Ii")
_DELETED = -1


def is_batch_key(key: object) -> bool:
    """Whether a changelog record's (decoded) key is that of a batch record.

    >>> is_batch_key(BATCH_KEY_PREFIX + "w1:7"), is_batch_key("acc-1"), is_batch_key(None)
    (True, False, False)
    """
    return isinstance(key, str) and key.startswith(BATCH_KEY_PREFIX)


def pack_changes(
    changes: Iterable[tuple[bytes, bytes | None]], max_bytes: int = BATCH_RECORD_MAX_BYTES
) -> list[bytes]:
    """Pack ``(key bytes, value bytes or None for a delete)`` changes into batch values.

    Parameters
    ----------
    changes : iterable of (bytes, bytes or None)
        Serialized keys and values, in write order (a later change of a key wins).
    max_bytes : int, default=BATCH_RECORD_MAX_BYTES
        Largest packed value; a change alone larger than this gets a value of its own.

    Returns
    -------
    list of bytes
        One or more batch values (none for no changes), in order.

    Raises
    ------
    ValueError
        ``max_bytes`` below 64.

    Examples
    --------
    >>> pack_changes([(b'"a"', b"\\x01"), (b'"b"', None)])
    [b'\\x01\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x01"a"\\x01\\x00\\x00\\x00\\x03\\xff\\xff\\xff\\xff"b"']
    >>> len(pack_changes([(b'"k%d"' % i, bytes(40)) for i in range(10)], max_bytes=200))
    4
    """
    if max_bytes < 64:
        raise ValueError(f"max_bytes: expected >= 64; got {max_bytes!r}")
    values: list[bytes] = []
    parts: list[bytes] = [bytes((FORMAT_VERSION,))]
    size = 1
    pack = _HEAD.pack
    for key, value in changes:
        n = _HEAD.size + len(key) + (0 if value is None else len(value))
        if size > 1 and size + n > max_bytes:
            values.append(b"".join(parts))
            parts, size = [bytes((FORMAT_VERSION,))], 1
        if value is None:
            parts += (pack(len(key), _DELETED), key)
        else:
            parts += (pack(len(key), len(value)), key, value)
        size += n
    if size > 1:
        values.append(b"".join(parts))
    return values


def unpack_changes(value: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """The ``(key bytes, value bytes or None)`` changes of one batch value, in order.

    Raises
    ------
    ChangelogFormatError
        Unknown version byte, or a truncated value.

    Examples
    --------
    >>> [packed] = pack_changes([(b'"a"', b"x"), (b'"b"', None), (b'"a"', b"yz")])
    >>> list(unpack_changes(packed))
    [(b'"a"', b'x'), (b'"b"', None), (b'"a"', b'yz')]
    >>> list(unpack_changes(packed[:-1]))
    Traceback (most recent call last):
    ...
    app.exceptions.ChangelogFormatError: truncated changelog batch record: ...
    """
    if not value or value[0] != FORMAT_VERSION:
        head = value[:1].hex() if value else "empty"
        raise ChangelogFormatError(f"changelog batch record of unknown format (first byte {head})")
    end = len(value)
    pos = 1
    unpack = _HEAD.unpack_from
    size = _HEAD.size
    while pos < end:
        if pos + size > end:
            raise ChangelogFormatError(f"truncated changelog batch record: header at byte {pos} of {end}")
        klen, vlen = unpack(value, pos)
        pos += size
        stop = pos + klen + max(vlen, 0)
        if stop > end:
            raise ChangelogFormatError(f"truncated changelog batch record: change at byte {pos} of {end}")
        key = value[pos : pos + klen]
        pos += klen
        if vlen == _DELETED:
            yield key, None
        else:
            yield key, value[pos:stop]
        pos = stop

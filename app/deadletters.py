"""Working the dead-letter topic: read, select and plan a re-drive (pure).

A dead letter (:class:`app.events.DeadLetter`) names the record's source topic,
partition and offset, the reason and the record's bytes. ``fraudctl dead-letters``
(:mod:`app.cli.deadletters`) reads the topic, selects with :class:`Selection` and
re-drives with :func:`plan_redrive`: each record goes back to its source topic with
its original key and the header :data:`app.events.REDRIVE_HEADER` =
``<dead-letter topic>/<partition>/<offset>``. A worker that rejects that record again
keeps the header on the new dead letter (:func:`carried_headers`), so a second
re-drive refuses it; a record already re-driven once (the command marks its source
topic, partition and offset in Redis) is refused too.

Examples
--------
>>> header_value("transactions-dead-letter", 2, 17)
'transactions-dead-letter/2/17'
>>> parse_id("2/17")
(2, 17)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from .encoding import ENCODING_HEADER
from .events import REDRIVE_HEADER

#: Headers a dead letter keeps from its record: the re-drive origin, and the encoding a
#: re-drive must send the payload with.
_CARRIED = (REDRIVE_HEADER, ENCODING_HEADER)

__all__ = [
    "DeadLetterEntry",
    "Selection",
    "RedrivePlan",
    "carried_headers",
    "header_value",
    "parse_id",
    "read_entry",
    "select",
    "source_of",
    "plan_redrive",
]


def header_value(dlq_topic: str, partition: int, offset: int) -> str:
    """The re-drive header's value: where the dead letter is."""
    return f"{dlq_topic}/{partition}/{offset}"


def parse_id(text: str) -> tuple[int, int]:
    """``"<partition>/<offset>"`` of a dead letter on the dead-letter topic.

    Raises
    ------
    ValueError
        If ``text`` is not two non-negative integers separated by ``/``.
    """
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"dead-letter id {text!r}: expected <partition>/<offset>, e.g. 0/42")
    return int(parts[0]), int(parts[1])


def carried_headers(
    records: Iterable[tuple[tuple[str, int, int], Sequence[tuple[str, bytes]] | None]],
) -> dict[tuple[str, int, int], list[tuple[str, bytes]]]:
    """The headers a record's dead letter must keep, by (topic, partition, offset).

    Parameters
    ----------
    records : iterable of ((topic, partition, offset), headers)
        Records as consumed; ``headers`` as aiokafka gives them (or None).

    Returns
    -------
    dict
        Only records that carry :data:`app.events.REDRIVE_HEADER` or
        :data:`app.encoding.ENCODING_HEADER`: those headers.

    Examples
    --------
    >>> carried_headers([(("tx", 0, 5), [("fraud-redriven-from", b"dlq/1/9")]),
    ...                  (("tx", 0, 6), None)])
    {('tx', 0, 5): [('fraud-redriven-from', b'dlq/1/9')]}
    """
    out: dict[tuple[str, int, int], list[tuple[str, bytes]]] = {}
    for where, headers in records:
        kept = [(k, v) for k, v in (headers or ()) if k in _CARRIED]
        if kept:
            out[where] = kept
    return out


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of the dead-letter topic, read tolerantly.

    A dead letter that is not a :class:`~app.events.DeadLetter` (or has a reason this
    version does not know) is still listed: ``reason`` is what it says, or
    ``"unreadable"`` with ``detail`` telling why.

    Attributes
    ----------
    partition, offset : int
        Where it is on the dead-letter topic (its id: ``"<partition>/<offset>"``).
    timestamp_ms : int
        Kafka timestamp of the dead letter.
    source_topic : str
    source_partition, source_offset : int
        Where the rejected record was (-1 if unknown).
    reason, detail : str
    raw_value : bytes or None
        The rejected payload (None if unreadable); a prefix when ``raw_truncated``.
    raw_key : bytes or None
    raw_size_bytes : int
    raw_truncated : bool
    rejected_time_ms : int
    redriven_from : str or None
        The re-drive header: the record had been re-driven from that dead letter and
        was rejected again.
    encoding : bytes or None
        The record's encoding header (None: JSON); a re-drive sends it again.
    """

    partition: int
    offset: int
    timestamp_ms: int
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    detail: str
    raw_value: bytes | None
    raw_key: bytes | None
    raw_size_bytes: int
    raw_truncated: bool
    rejected_time_ms: int
    redriven_from: str | None = None
    encoding: bytes | None = None

    @property
    def id(self) -> str:
        """``"<partition>/<offset>"`` on the dead-letter topic."""
        return f"{self.partition}/{self.offset}"


def _b64(value) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None


def read_entry(
    partition: int,
    offset: int,
    timestamp_ms: int,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> DeadLetterEntry:
    """Read one dead-letter record; never raises for a bad value.

    Examples
    --------
    >>> e = read_entry(0, 3, 0, b'{"source_topic": "tx", "partition": 1, "offset": 7, '
    ...                b'"reason": "future_timestamp", "detail": "d", "raw_value_b64": "eyJ9", '
    ...                b'"raw_size_bytes": 3, "raw_sha256": "", "rejected_time_ms": 5}')
    >>> e.id, e.reason, e.raw_value, e.source_offset
    ('0/3', 'future_timestamp', b'{"}', 7)
    >>> read_entry(0, 4, 0, b"junk").reason
    'unreadable'
    """
    redriven = encoding = None
    for k, v in headers or ():
        if k == REDRIVE_HEADER:
            redriven = v.decode("utf-8", "replace")
        elif k == ENCODING_HEADER:
            encoding = v
    try:
        d = orjson.loads(value) if value is not None else None
        if not isinstance(d, dict):
            raise TypeError(f"not a JSON object: {type(d).__name__}")
        return DeadLetterEntry(
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            source_topic=str(d["source_topic"]),
            source_partition=int(d["partition"]),
            source_offset=int(d["offset"]),
            reason=str(d["reason"]),
            detail=str(d.get("detail", "")),
            raw_value=_b64(d.get("raw_value_b64")),
            raw_key=_b64(d.get("raw_key_b64")),
            raw_size_bytes=int(d.get("raw_size_bytes", 0)),
            raw_truncated=bool(d.get("raw_truncated", False)),
            rejected_time_ms=int(d.get("rejected_time_ms", timestamp_ms)),
            redriven_from=redriven,
            encoding=encoding,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return DeadLetterEntry(
            partition, offset, timestamp_ms, "", -1, -1, "unreadable",
            f"not a dead letter: {exc!r}"[:300], None, None, 0, False, timestamp_ms, redriven,
            encoding,
        )


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on; every given criterion must hold.

    Attributes
    ----------
    reasons : tuple of str
        Any of these reasons (empty: any reason).
    since_ms, until_ms : int or None
        ``since_ms <= rejected_time_ms < until_ms``.
    source_partition : int or None
        Source partition.
    offset_from, offset_to : int or None
        ``offset_from <= source offset <= offset_to``.
    ids : tuple of (int, int)
        Only these dead letters (partition, offset on the dead-letter topic).
    """

    reasons: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    source_partition: int | None = None
    offset_from: int | None = None
    offset_to: int | None = None
    ids: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing narrows the selection (every dead letter)."""
        return self == Selection()

    def matches(self, e: DeadLetterEntry) -> bool:
        """Whether dead letter ``e`` is selected."""
        return (
            (not self.reasons or e.reason in self.reasons)
            and (self.since_ms is None or e.rejected_time_ms >= self.since_ms)
            and (self.until_ms is None or e.rejected_time_ms < self.until_ms)
            and (self.source_partition is None or e.source_partition == self.source_partition)
            and (self.offset_from is None or e.source_offset >= self.offset_from)
            and (self.offset_to is None or e.source_offset <= self.offset_to)
            and (not self.ids or (e.partition, e.offset) in self.ids)
        )


def select(entries: Iterable[DeadLetterEntry], selection: Selection) -> list[DeadLetterEntry]:
    """The selected dead letters, in source order (topic, partition, offset)."""
    chosen = [e for e in entries if selection.matches(e)]
    return sorted(chosen, key=lambda e: (e.source_topic, e.source_partition, e.source_offset, e.partition, e.offset))


@dataclass
class RedrivePlan:
    """What a re-drive sends and what it refuses.

    Attributes
    ----------
    send : list of DeadLetterEntry
        To re-produce to their source topic, in source order; at most one per source
        record (a record dead-lettered twice, e.g. read again after a worker restart,
        has two dead letters: the first is sent).
    refused : list of (DeadLetterEntry, str)
        With the reason in words.
    """

    send: list[DeadLetterEntry] = field(default_factory=list)
    refused: list[tuple[DeadLetterEntry, str]] = field(default_factory=list)


def source_of(e: DeadLetterEntry) -> tuple[str, int, int]:
    """(topic, partition, offset) of the rejected record: what a re-drive marks."""
    return (e.source_topic, e.source_partition, e.source_offset)


def plan_redrive(
    selected: Sequence[DeadLetterEntry],
    redriven: set[tuple[str, int, int]],
    source_topics: Iterable[str],
) -> RedrivePlan:
    """Decide which selected dead letters a re-drive sends back.

    Parameters
    ----------
    selected : sequence of DeadLetterEntry
        As :func:`select` returns them.
    redriven : set of (str, int, int)
        Source records already re-driven (:func:`source_of`; the command's marks).
    source_topics : iterable of str
        Topics a record may be re-driven to (the service's input topics).

    Returns
    -------
    RedrivePlan

    Examples
    --------
    >>> e = read_entry(0, 1, 0, b'{"source_topic": "tx", "partition": 0, "offset": 7, '
    ...   b'"reason": "too_large", "raw_value_b64": "e30=", "raw_size_bytes": 2}')
    >>> plan = plan_redrive([e, e], set(), ["tx"])
    >>> [x.id for x in plan.send], [why for _, why in plan.refused]
    (['0/1'], ['another dead letter of the same record is re-driven'])
    >>> [why for _, why in plan_redrive([e], {("tx", 0, 7)}, ["tx"]).refused]
    ['already re-driven']
    """
    allowed = set(source_topics)
    plan = RedrivePlan()
    sending: set[tuple[str, int, int]] = set()
    for e in selected:
        if source_of(e) in sending:
            plan.refused.append((e, "another dead letter of the same record is re-driven"))
        elif e.reason == "unreadable" or e.raw_value is None:
            plan.refused.append((e, "no readable payload"))
        elif e.raw_truncated:
            plan.refused.append((e, f"payload kept truncated ({e.raw_size_bytes} bytes in all)"))
        elif e.source_topic not in allowed:
            plan.refused.append((e, f"source topic {e.source_topic} is not an input topic"))
        elif e.redriven_from is not None:
            plan.refused.append((e, f"rejected again after a re-drive from {e.redriven_from}"))
        elif source_of(e) in redriven:
            plan.refused.append((e, "already re-driven"))
        else:
            plan.send.append(e)
            sending.add(source_of(e))
    return plan

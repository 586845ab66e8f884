"""Replay handbook transactions, and their labels, onto Kafka in event-time order.

The pure part plans the records: :func:`plan_records` turns a :func:`read_handbook
<app.data.handbook.read_handbook>` frame into one stream ordered by event time, where
each transaction's :class:`~app.events.Label` appears once the replay's event time has
passed the transaction's time plus the labelling delay; :class:`Pacer` spaces
transactions evenly in wall-clock time. The shell, :func:`replay_frame`, produces that
stream with aiokafka: transactions to ``Settings.transactions_topic``, labels to
``Settings.labels_topic``, transactions keyed by account id and labels by terminal id
(the labels feed the per-terminal state, so a terminal's labels land on the partition
number of its state), both stamped with their event time (``event_time_ms`` and
``label_time_ms``), which drives every window downstream.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({
...     "TRANSACTION_ID": [0, 1], "CUSTOMER_ID": [7, 8], "TERMINAL_ID": [3, 3],
...     "TX_DATETIME": pd.to_datetime(["2018-04-01 00:00:00", "2018-04-03 00:00:00"]),
...     "TX_AMOUNT": [12.5, 3.0], "TX_FRAUD": [0, 1]})
>>> [(r.is_label, r.key, r.timestamp_ms) for r in plan_records(df, labels_delay_ms=DAY_MS)]
[(False, b'7', 1522540800000), (True, b'3', 1522627200000), (False, b'8', 1522713600000), (True, b'3', 1522800000000)]
>>> [r.is_label for r in plan_records(df, labels_delay_ms=DAY_MS, tail_labels=False)]
[False, True, False]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from .stream.offsets import broker_error, client_options, ensure_topics, use_idempotent_producer
from pydantic import ValidationError

from .config import Settings
from .data.handbook import DEFAULT_CURRENCY
from .events import (
    MAX_AMOUNT_MINOR,
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    CONTRACTS,
    Label,
    Transaction,
    encode,
)
from .encoding import ENCODING_HEADER, encode_avro
from .encoding import header_value as encoding_header
from .exceptions import BrokerUnavailableError, DataError
from .tracing import headers_with
from .tracing import new as new_traceparent

__all__ = [
    "DAY_MS",
    "DEFAULT_LABELS_DELAY_MS",
    "PlannedRecord",
    "ReplayStats",
    "Pacer",
    "select_days",
    "plan_records",
    "client_options",
    "ensure_topics",
    "replay_frame",
]

#: One day in milliseconds.
DAY_MS = 86_400_000
#: Default delay between a transaction and its label: 7 days, in ms.
DEFAULT_LABELS_DELAY_MS = 7 * DAY_MS

_ID_PATTERN = r"[A-Za-z0-9_.:\-]{1,64}"
_TOPIC_ALREADY_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
_TOPIC_LISTED_SECONDS = 10.0
_TX_FIELDS = tuple(Transaction.model_fields)
_LABEL_FIELDS = tuple(Label.model_fields)


class PlannedRecord(NamedTuple):
    """One record to produce: a transaction (``is_label=False``) or a label."""

    is_label: bool
    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class ReplayStats:
    """What a replay produced.

    Attributes
    ----------
    transactions, labels : int
        Records acknowledged by the broker (``acks=all``), per topic.
    elapsed_seconds : float
        Wall time from the first send to the last acknowledgement.
    """

    transactions: int
    labels: int
    elapsed_seconds: float

    @property
    def transactions_per_second(self) -> float:
        """Transactions produced per second of wall time (0 if nothing was produced)."""
        return self.transactions / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def records_per_second(self) -> float:
        """Transactions plus labels produced per second of wall time."""
        total = self.transactions + self.labels
        return total / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


class Pacer:
    """Even wall-clock spacing of events at a fixed rate.

    Event ``i`` is due ``i / rate_per_second`` seconds after the first call. When the
    caller falls more than ``max_lag_seconds`` behind (the sink is slower than the
    rate), the schedule restarts from now instead of catching up in a burst.

    Parameters
    ----------
    rate_per_second : float
        Events per second, > 0.
    max_lag_seconds : float, default=0.5
        Largest backlog caught up on; beyond it the schedule is reset.
    clock : callable returning float seconds, default=time.monotonic

    Raises
    ------
    ValueError
        If ``rate_per_second <= 0`` or ``max_lag_seconds < 0``.

    Examples
    --------
    >>> now = [10.0]
    >>> pacer = Pacer(4, clock=lambda: now[0])
    >>> [pacer.wait_seconds() for _ in range(3)]
    [0.0, 0.25, 0.5]
    >>> now[0] = 10.6
    >>> pacer.wait_seconds()
    0.15
    """

    def __init__(
        self,
        rate_per_second: float,
        max_lag_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second!r}")
        if max_lag_seconds < 0:
            raise ValueError(f"max_lag_seconds must be >= 0, got {max_lag_seconds!r}")
        self.interval_seconds = 1.0 / rate_per_second
        self.max_lag_seconds = max_lag_seconds
        self._clock = clock
        self._start: float | None = None
        self._index = 0

    def wait_seconds(self) -> float:
        """Seconds to wait before the next event is due (0 if it is due); counts it."""
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._index * self.interval_seconds
        if now - due > self.max_lag_seconds:
            self._start, self._index, due = now, 0, now
        self._index += 1
        return round(max(0.0, due - now), 9)

    @property
    def rate_per_second(self) -> float:
        """The current rate, events per second."""
        return 1.0 / self.interval_seconds

    def set_rate(self, rate_per_second: float) -> None:
        """Space the next events at ``rate_per_second`` (> 0), from the next one on.

        Examples
        --------
        >>> now = [0.0]
        >>> pacer = Pacer(10, clock=lambda: now[0])
        >>> pacer.wait_seconds(), pacer.wait_seconds()
        (0.0, 0.1)
        >>> pacer.set_rate(2)
        >>> pacer.wait_seconds(), pacer.wait_seconds()
        (0.0, 0.5)

        Raises
        ------
        ValueError
            ``rate_per_second <= 0``.
        """
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second!r}")
        self.interval_seconds = 1.0 / rate_per_second
        self._start, self._index = None, 0


def select_days(df: pd.DataFrame, days: int, first_day: date | None = None) -> pd.DataFrame:
    """Keep ``days`` whole UTC days of a handbook frame.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`~app.data.handbook.read_handbook` frame (``TX_DATETIME`` as datetime64).
    days : int
        Number of days to keep, >= 1.
    first_day : date, optional
        The first day kept; default: the day of the earliest transaction.

    Returns
    -------
    pandas.DataFrame
        The rows with ``first_day <= TX_DATETIME < first_day + days``.

    Raises
    ------
    ValueError
        If ``days < 1``.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days!r}")
    if df.empty:
        return df
    first = pd.Timestamp(first_day) if first_day else df["TX_DATETIME"].min().normalize()
    times = df["TX_DATETIME"]
    keep = (times >= first) & (times < first + timedelta(days=days))
    return df[keep].reset_index(drop=True)


def _check_frame(df: pd.DataFrame, amounts_minor: np.ndarray, times_ms: np.ndarray) -> None:
    """Raise :class:`DataError` naming the first row that is no valid wire event."""

    def bad(mask: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.argmax(mask))
            tid = df["TRANSACTION_ID"].iloc[i]
            raise DataError(f"row {i} (TRANSACTION_ID={tid}): {what}")

    bad((amounts_minor < 0) | (amounts_minor > MAX_AMOUNT_MINOR), "amount out of range")
    bad((times_ms < MIN_EVENT_TIME_MS) | (times_ms >= MAX_EVENT_TIME_MS), "time out of range")
    for column in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"):
        values = df[column]
        if not pd.api.types.is_numeric_dtype(values):
            ok = values.astype(str).str.fullmatch(_ID_PATTERN).to_numpy(dtype=bool)
            bad(~ok, f"{column} is not an id of 1-64 characters [A-Za-z0-9_.:-]")


def _same_as_model(model: type[Transaction] | type[Label], value: dict[str, Any]) -> bytes:
    """``value`` encoded; raise :class:`DataError` if the model rejects it or encodes it
    differently (the fast path below must produce exactly :func:`app.events.encode`)."""
    fast = orjson.dumps(value)
    try:
        slow = encode(model.model_validate(value))
    except ValidationError as exc:
        raise DataError(f"{model.__name__} {value}: {exc.errors()[0]['msg']}") from None
    if fast != slow:  # a field was added to the model: the fast path is out of date
        raise DataError(f"{model.__name__} encoding differs from the model: {fast!r}")
    return fast


def plan_records(
    df: pd.DataFrame,
    labels_delay_ms: int = DEFAULT_LABELS_DELAY_MS,
    *,
    labels: bool = True,
    tail_labels: bool = True,
    currency: str = DEFAULT_CURRENCY,
    arrivals: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[PlannedRecord]:
    """The records of a replay, in event-time order.

    Each row becomes a :class:`~app.events.Transaction` (value: its
    :func:`~app.events.encode` JSON, key: the account id, timestamp: ``event_time_ms``).
    With ``labels``, each row's :class:`~app.events.Label` (``label_time_ms =
    event_time_ms + labels_delay_ms``) is merged in: it follows every transaction whose
    time is at or before its label time and precedes the first one after. Labels timed
    after the last transaction (the "tail") come at the end, unless ``tail_labels`` is
    False.

    Parameters
    ----------
    df : pandas.DataFrame of shape (n_transactions, 9)
        A :func:`~app.data.handbook.read_handbook` frame, sorted by event time.
    labels_delay_ms : int, default=7 days
        Delay from a transaction to its label, in ms, >= 0.
    labels : bool, default=True
        Whether to emit labels at all.
    tail_labels : bool, default=True
        Whether to emit labels timed after the last transaction.
    currency : str, default="EUR"
    arrivals : (ndarray of int64, ndarray of bool), optional
        Each row's label time (UTC epoch ms) and whether an investigator gave it
        (``source="investigation"``), from
        :func:`app.features.offline.investigation_arrivals`; replaces
        ``labels_delay_ms``. Labels are merged in label-time order.

    Yields
    ------
    PlannedRecord
        ``n_transactions`` transactions and up to ``n_transactions`` labels.

    Raises
    ------
    ValueError
        If ``labels_delay_ms < 0`` or ``df`` is not sorted by ``TX_DATETIME``.
    DataError
        If a row is no valid event (amount or time out of range, malformed id); checked
        for all rows before anything is yielded.
    """
    if labels_delay_ms < 0:
        raise ValueError(f"labels_delay_ms must be >= 0, got {labels_delay_ms!r}")
    n = len(df)
    if n == 0:
        return
    times_ms = df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    if (np.diff(times_ms) < 0).any():
        raise ValueError("df must be sorted by TX_DATETIME (read_handbook sorts it)")
    amounts = np.rint(df["TX_AMOUNT"].to_numpy(dtype=float) * 100).astype(np.int64)
    _check_frame(df, amounts, times_ms)
    if arrivals is None:
        label_ms = times_ms + int(labels_delay_ms)
        order = np.arange(n)
        sources = ["chargeback"] * n
    else:
        given, investigated = (np.asarray(a).reshape(-1) for a in arrivals)
        if len(given) != n or len(investigated) != n:
            raise ValueError(f"arrivals: expected {n} label times and sources")
        if (given < times_ms).any():
            raise ValueError("arrivals: a label time is before its transaction's time")
        order = np.argsort(given, kind="stable")
        label_ms = given.astype(np.int64)[order]
        sources = np.where(investigated, "investigation", "chargeback").tolist()
    if labels and label_ms[-1] >= MAX_EVENT_TIME_MS:
        raise DataError(f"labels_delay_ms={labels_delay_ms} puts label times past 2100")
    tids = [str(v) for v in df["TRANSACTION_ID"].to_numpy()]
    cids = [str(v) for v in df["CUSTOMER_ID"].to_numpy()]
    mids = [str(v) for v in df["TERMINAL_ID"].to_numpy()]
    frauds = df["TX_FRAUD"].to_numpy().astype(bool)
    times, amounts_list = times_ms.tolist(), amounts.tolist()
    rows = order.tolist()

    def transaction(i: int) -> PlannedRecord:
        value = (tids[i], cids[i], mids[i], amounts_list[i], currency, times[i])
        return PlannedRecord(
            False, cids[i].encode(), orjson.dumps(dict(zip(_TX_FIELDS, value))), times[i]
        )

    label_list = label_ms.tolist()

    def label(j: int) -> PlannedRecord:
        # the j-th label in label-time order, of row ``rows[j]``
        r, when = rows[j], label_list[j]
        value = (tids[r], cids[r], mids[r], bool(frauds[r]), times[r], when, sources[r], None)
        return PlannedRecord(
            True, mids[r].encode(), orjson.dumps(dict(zip(_LABEL_FIELDS, value))), when
        )

    first = transaction(0)
    _same_as_model(Transaction, orjson.loads(first.value))
    if labels:
        _same_as_model(Label, orjson.loads(label(0).value))

    # label j goes right after transaction after[j] - 1: the last one timed <= its time
    after = np.searchsorted(times_ms, label_ms, side="right").tolist()
    inline = int(np.searchsorted(label_ms, times_ms[-1], side="right")) if labels else 0
    j = 0
    for i in range(n):
        yield first if i == 0 else transaction(i)
        while j < inline and after[j] <= i + 1:
            yield label(j)
            j += 1
    if labels and tail_labels:
        for j in range(inline, n):
            yield label(j)


class _Deliveries:
    """Counts acknowledged records and keeps the first delivery error."""

    def __init__(self) -> None:
        self.transactions = 0
        self.labels = 0
        self.failed = 0
        self.error: BaseException | None = None

    @property
    def settled(self) -> int:
        """Records whose delivery succeeded or failed."""
        return self.transactions + self.labels + self.failed

    def _failed(self, future: asyncio.Future) -> bool:
        if future.cancelled() or future.exception() is not None:
            if self.error is None:
                self.error = future.exception() if not future.cancelled() else KafkaError(
                    "send cancelled"
                )
            self.failed += 1
            return True
        return False

    def transaction_done(self, future: asyncio.Future) -> None:
        if not self._failed(future):
            self.transactions += 1

    def label_done(self, future: asyncio.Future) -> None:
        if not self._failed(future):
            self.labels += 1


async def replay_frame(
    df: pd.DataFrame,
    settings: Settings,
    rate: float | None = None,
    labels_delay_ms: int = DEFAULT_LABELS_DELAY_MS,
    *,
    labels: bool = True,
    tail_labels: bool = True,
    create_topics: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    progress_every: int = 2_000,
    arrivals: tuple[np.ndarray, np.ndarray] | None = None,
    from_ms: int | None = None,
    until_ms: int | None = None,
    send_time_stamps: bool = False,
    pacer: Pacer | None = None,
) -> ReplayStats:
    """Produce a handbook frame's transactions and labels to Kafka (see :func:`plan_records`).

    Parameters
    ----------
    df : pandas.DataFrame of shape (n_transactions, 9)
        A :func:`~app.data.handbook.read_handbook` frame.
    settings : Settings
        Broker (``kafka_broker_url``), topics (``transactions_topic``, ``labels_topic``)
        and ``topic_partitions`` for topics it creates.
    rate : float, optional
        Transactions per second, evenly spaced in wall-clock time (labels are not
        counted); default: as fast as possible.
    labels_delay_ms : int, default=7 days
        Delay from a transaction to its label, in ms, >= 0.
    labels, tail_labels : bool, default=True
        See :func:`plan_records`.
    create_topics : bool, default=True
        Create the topics first if missing.
    on_progress : callable(transactions_sent, labels_sent), optional
        Called every ``progress_every`` records and once at the end.
    progress_every : int, default=2000
    arrivals : (ndarray of int64, ndarray of bool), optional
        Label times and sources instead of ``labels_delay_ms`` (see
        :func:`plan_records`).
    from_ms, until_ms : int, optional
        Produce only the records (transactions and labels) timed in ``[from_ms,
        until_ms)``, UTC epoch ms: a replay split in two parts (a history replayed
        fast, then live days at ``rate``) produces each label once.
    send_time_stamps : bool, default=False
        Kafka timestamp = send time (live traffic: latency is measured from it)
        instead of the event time. Every record also carries a new W3C
        ``traceparent`` header (:mod:`app.tracing`).
    pacer : Pacer, optional
        Spaces the transactions instead of ``Pacer(rate)``: the caller may change its
        rate while the replay runs (:meth:`Pacer.set_rate`).

    Returns
    -------
    ReplayStats
        Counts of records acknowledged by the broker (``acks=all``) and the elapsed time.

    Raises
    ------
    ValueError
        If ``rate <= 0`` or ``labels_delay_ms < 0``.
    DataError
        If a row is no valid event (nothing is produced then).
    BrokerUnavailableError
        If the broker cannot be reached, refuses a topic or fails a delivery.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 transactions per second, got {rate!r}")
    plan = plan_records(df, labels_delay_ms, labels=labels, tail_labels=tail_labels,
                        arrivals=arrivals)
    if from_ms is not None or until_ms is not None:
        lo = MIN_EVENT_TIME_MS if from_ms is None else from_ms
        hi = MAX_EVENT_TIME_MS + DEFAULT_LABELS_DELAY_MS * 1000 if until_ms is None else until_ms
        plan = (r for r in plan if lo <= r.timestamp_ms < hi)

    def stamp(timestamp_ms: int) -> int:
        return int(time.time() * 1000) if send_time_stamps else timestamp_ms

    first = next(plan, None)  # validates every row before touching the broker
    if first is None:
        return ReplayStats(0, 0, 0.0)
    tx_topic, label_topic = settings.transactions_topic, settings.labels_topic
    if create_topics:
        await ensure_topics(settings, [tx_topic, label_topic] if labels else [tx_topic])
    try:
        idempotent = await use_idempotent_producer(settings, settings.broker_connect_timeout_seconds)
    except KafkaError as exc:
        raise await broker_error(settings, exc) from None
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=5, enable_idempotence=idempotent
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise await broker_error(settings, exc) from None
    tx_encode, tx_headers = _encoder(Transaction, "transactions", settings.transactions_encoding)
    label_encode, label_headers = _encoder(Label, "transaction-labels", settings.labels_encoding)
    pacer = pacer or (Pacer(rate) if rate else None)
    deliveries = _Deliveries()
    sent_tx = sent_labels = 0
    started = time.perf_counter()
    try:
        for record in _chain(first, plan):
            if record.is_label:
                future = await producer.send(
                    label_topic, label_encode(record.value), key=record.key,
                    timestamp_ms=stamp(record.timestamp_ms),
                    headers=(label_headers or []) + headers_with(new_traceparent()),
                )
                future.add_done_callback(deliveries.label_done)
                sent_labels += 1
            else:
                if pacer is not None:
                    wait = pacer.wait_seconds()
                    if wait > 0.001:
                        await asyncio.sleep(wait)
                future = await producer.send(
                    tx_topic, tx_encode(record.value), key=record.key,
                    timestamp_ms=stamp(record.timestamp_ms),
                    headers=(tx_headers or []) + headers_with(new_traceparent()),
                )
                future.add_done_callback(deliveries.transaction_done)
                sent_tx += 1
            if (sent_tx + sent_labels) % progress_every == 0:
                if deliveries.error is not None:
                    raise deliveries.error
                if on_progress is not None:
                    on_progress(sent_tx, sent_labels)
        await producer.flush()
        for attempt in range(500):  # let the delivery callbacks of the last batches run
            if deliveries.settled == sent_tx + sent_labels:
                break
            await asyncio.sleep(0 if attempt < 10 else 0.01)
        if deliveries.error is not None:
            raise deliveries.error
    except KafkaError as exc:
        problem = await broker_error(settings, exc)
        if type(problem) is not BrokerUnavailableError:  # refused: an ACL, credentials
            raise problem from None
        raise BrokerUnavailableError(
            f"delivery to {settings.kafka_broker_url} failed after {sent_tx} transactions "
            f"and {sent_labels} labels ({exc})"
        ) from None
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    if on_progress is not None:
        on_progress(sent_tx, sent_labels)
    return ReplayStats(deliveries.transactions, deliveries.labels, elapsed)


def _encoder(model, contract: str, encoding: str):
    """(JSON value -> value to send, headers) for a topic's encoding setting."""
    if encoding == "json":
        return (lambda value: value), None
    headers = [(ENCODING_HEADER, encoding_header(encoding, CONTRACTS[contract].version))]
    return (lambda value: encode_avro(model, orjson.loads(value))), headers


def _chain(first: PlannedRecord, rest: Iterator[PlannedRecord]) -> Iterator[PlannedRecord]:
    yield first
    yield from rest

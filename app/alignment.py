"""Event-time alignment of the scoring stage (pure: no Faust, Kafka or Redis).

The scoring stage gets its transactions from every partition of the first stage, and
its labels from ``transaction-labels``. A transaction at event time ``t`` may be
featurized only when its terminal's state holds

* every transaction with event time ``<= t - delay`` (the terminal windows end there),
  which the first stage's *watermarks* tell: each first-stage partition reports the
  latest event time it has forwarded (so everything before it has come: partitions
  are in event-time order), or that it is caught up (nothing left to read); a
  watermark ``> t - delay`` is needed, as more records may share its time;
* every label with ``label_time_ms < t``: labels of a partition come in label-time
  order, so once a label timed ``>= t`` has been seen, every earlier one has; or the
  labels partition is caught up and idle (live traffic, where labels are sparse and
  arrive in real time: nothing to wait for).

:class:`EventTimeAligner` holds transactions until both hold (or until a wall-clock
limit passes, counted as a timeout) and releases them. Features of a held transaction
only read state older than its own time, so state can be updated as records arrive;
releasing in any order gives the same features as a replay in event-time order
(:func:`app.features.offline.build_features`). Late transactions (already past the
watermarks) are released at once.

Examples
--------
>>> a = EventTimeAligner(n_sources=2, delay_ms=10, label_wait_max_seconds=5.0)
>>> a.add(0, "tx@100", event_time_ms=100, now_s=0.0)
>>> a.release(now_s=0.1)
[]
>>> a.on_watermark(0, source=0, event_time_ms=95, caught_up=False)
>>> a.on_watermark(0, source=1, event_time_ms=0, caught_up=True)
>>> a.on_label_time(0, 100)
>>> [(r.item, r.timed_out) for r in a.release(now_s=0.2)]
[('tx@100', False)]
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, TypeVar

__all__ = ["EventTimeAligner", "Released"]

T = TypeVar("T")

_INF = math.inf


@dataclass(slots=True)
class Released(Generic[T]):
    """A transaction let through by :meth:`EventTimeAligner.release`.

    Attributes
    ----------
    partition : int
        Scoring-stage partition it came from.
    item : object
        What was passed to :meth:`EventTimeAligner.add`.
    event_time_ms : int
    waited_seconds : float
        Wall-clock time it was held.
    timed_out : bool
        True when it was released by ``label_wait_max_seconds`` rather than by the
        watermarks (its features may then miss records still in flight).
    """

    partition: int
    item: T
    event_time_ms: int
    waited_seconds: float
    timed_out: bool


@dataclass
class _Partition:
    #: source partition -> latest event time forwarded (inf: caught up)
    watermarks: dict[int, float] = field(default_factory=dict)
    #: latest label time seen
    label_time_ms: float = -_INF
    #: the labels partition is read to its end and quiet
    labels_idle: bool = False
    #: (event time, seq, added at (s), item)
    pending: list[tuple[int, int, float, Any]] = field(default_factory=list)


class EventTimeAligner(Generic[T]):
    """Holds scoring-stage transactions until their features are complete.

    Parameters
    ----------
    n_sources : int
        Partitions of the first stage; each reports its own watermark. >= 1.
    delay_ms : int
        The terminal features' delay in ms: a transaction at ``t`` needs transactions
        up to ``t - delay_ms``. >= 0.
    label_wait_max_seconds : float
        Longest wall-clock hold; a transaction held longer is released anyway (and
        flagged ``timed_out``). 0 releases everything at once (no alignment). >= 0.

    Raises
    ------
    ValueError
        On a parameter out of range.
    """

    def __init__(self, n_sources: int, delay_ms: int, label_wait_max_seconds: float) -> None:
        if n_sources < 1:
            raise ValueError(f"n_sources must be >= 1, got {n_sources}")
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        if label_wait_max_seconds < 0:
            raise ValueError(
                f"label_wait_max_seconds must be >= 0, got {label_wait_max_seconds}"
            )
        self.n_sources = n_sources
        self.delay_ms = delay_ms
        self.label_wait_max_seconds = label_wait_max_seconds
        self._parts: dict[int, _Partition] = {}
        self._seq = itertools.count()

    def _part(self, partition: int) -> _Partition:
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition()
        return p

    # -- inputs ---------------------------------------------------------------------

    def on_watermark(
        self, partition: int, source: int, event_time_ms: int, caught_up: bool
    ) -> None:
        """First-stage ``source`` has forwarded to ``partition`` everything up to
        ``event_time_ms`` (or everything it had, when ``caught_up``)."""
        if not 0 <= source < self.n_sources:
            raise ValueError(f"source must be in [0, {self.n_sources}), got {source}")
        wm = self._part(partition).watermarks
        wm[source] = _INF if caught_up else max(float(event_time_ms), _finite(wm.get(source)))

    def on_label_time(self, partition: int, label_time_ms: int) -> None:
        """A label timed ``label_time_ms`` was applied on ``partition``."""
        p = self._part(partition)
        p.label_time_ms = max(p.label_time_ms, float(label_time_ms))
        p.labels_idle = False

    def on_labels_idle(self, partition: int, idle: bool) -> None:
        """Whether the labels partition is read to its end and quiet: then held
        transactions do not wait for a later label."""
        self._part(partition).labels_idle = idle

    def add(self, partition: int, item: T, event_time_ms: int, now_s: float) -> None:
        """Hold ``item``, a transaction at ``event_time_ms`` (``now_s``: wall clock, s)."""
        heapq.heappush(
            self._part(partition).pending, (event_time_ms, next(self._seq), now_s, item)
        )

    def revoke(self, partitions: Iterable[int]) -> list[T]:
        """Forget partitions taken away by a rebalance; returns the items dropped (the
        new owner reads them again from the last committed offset)."""
        dropped: list[T] = []
        for q in partitions:
            p = self._parts.pop(q, None)
            if p is not None:
                dropped += [entry[3] for entry in p.pending]
        return dropped

    # -- outputs --------------------------------------------------------------------

    def oldest_pending_ms(self, partition: int) -> int | None:
        """Event time of the oldest held transaction of ``partition``, if any."""
        p = self._parts.get(partition)
        return p.pending[0][0] if p and p.pending else None

    def keep_from_ms(self, partition: int) -> int | None:
        """Oldest event time a transaction of ``partition`` may still be featurized
        at: its oldest held one, or the lowest first-stage watermark (later records
        of an in-order source are not older); state before it minus the windows can
        go. None: no constraint (everything is caught up and nothing is held)."""
        p = self._parts.get(partition)
        oldest = float(p.pending[0][0]) if p and p.pending else _INF
        low = min(oldest, self.watermark_ms(partition))
        if low == _INF:
            return None
        return -(2**62) if low == -_INF else int(low)

    def pending_partitions(self) -> list[int]:
        """Partitions holding transactions."""
        return [q for q, p in self._parts.items() if p.pending]

    def pending(self) -> int:
        """Transactions held, all partitions."""
        return sum(len(p.pending) for p in self._parts.values())

    def watermark_ms(self, partition: int) -> float:
        """Lowest first-stage watermark of ``partition`` (-inf until every source has
        reported; inf when all are caught up)."""
        p = self._parts.get(partition)
        if p is None or len(p.watermarks) < self.n_sources:
            return -_INF
        return min(p.watermarks.values())

    def _ready(self, p: _Partition, wm: float, t: int) -> bool:
        return wm > t - self.delay_ms and (p.label_time_ms >= t or p.labels_idle)

    def release(self, now_s: float) -> list[Released[T]]:
        """Transactions whose features are complete, or held too long.

        A transaction at ``t`` is complete when every first-stage watermark of its
        partition is ``> t - delay_ms`` (or caught up) and a label timed ``>= t`` has
        been seen on its partition (or its labels partition is idle). Oldest first within a partition; within a
        partition, a complete transaction behind an incomplete one waits for it.
        """
        out: list[Released[T]] = []
        limit = self.label_wait_max_seconds
        for q, p in self._parts.items():
            wm = self.watermark_ms(q)
            pend = p.pending
            while pend:
                t, _, added, item = pend[0]
                waited = now_s - added
                ready = self._ready(p, wm, t)
                if not ready and waited < limit:
                    break
                heapq.heappop(pend)
                out.append(Released(q, item, t, max(0.0, waited), not ready))
        return out


def _finite(x: float | None) -> float:
    return -_INF if x is None or x == _INF else x

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

:class:`EventTimeAligner` holds transactions until both hold and releases them. There
is no wall-clock deadline while event time moves: under a backlog or on a busy machine
a transaction waits as long as its watermarks and labels advance. Only a *stalled*
source releases a transaction with features known to be incomplete: the scoring-stage
partition is read to its end (nothing more to read that could carry progress) and the
first-stage partition it waits for has not advanced for ``stall_seconds`` (its worker is
gone and no other took it over yet, or it is stuck), or, for labels, no label came for
as long while the labels partition is not idle. Such a release is flagged with its cause
(``"watermark"`` or ``"labels"``) and counted by the shell
(``fraud_alignment_timeouts_total{cause}``).

Features of a held transaction only read state older than its own time, so state can
be updated as records arrive; releasing in any order gives the same features as a
replay in event-time order (:func:`app.features.offline.build_features`). Late
transactions (already past the watermarks) are released at once.

Examples
--------
>>> a = EventTimeAligner(n_sources=2, delay_ms=10, stall_seconds=30.0)
>>> a.add(0, "tx@100", event_time_ms=100, now_s=0.0)
>>> a.release(now_s=0.1)
[]
>>> a.on_watermark(0, source=0, event_time_ms=95, caught_up=False, now_s=0.1)
>>> a.on_watermark(0, source=1, event_time_ms=0, caught_up=True, now_s=0.1)
>>> a.on_label_time(0, 100, now_s=0.1)
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
    cause : str or None
        None when its features are complete; ``"watermark"`` or ``"labels"`` when it
        was released because that source stalled (its features may then miss records
        still in flight).
    """

    partition: int
    item: T
    event_time_ms: int
    waited_seconds: float
    cause: str | None = None

    @property
    def timed_out(self) -> bool:
        """True when released by a stalled source rather than by complete features."""
        return self.cause is not None


@dataclass
class _Partition:
    #: wall-clock time (s) the partition was first seen (assigned)
    created_s: float = 0.0
    #: source partition -> latest event time forwarded (inf: caught up)
    watermarks: dict[int, float] = field(default_factory=dict)
    #: source partition -> wall-clock time (s) its watermark last advanced
    progress_s: dict[int, float] = field(default_factory=dict)
    #: latest label time seen
    label_time_ms: float = -_INF
    #: wall-clock time (s) the label time last advanced
    label_progress_s: float = -_INF
    #: the labels partition is read to its end and quiet
    labels_idle: bool = False
    #: the partition's own input (transactions and watermarks) is read to its end
    input_idle: bool = False
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
    stall_seconds : float
        How long (wall clock) a source must have made no progress, while the
        partition's input is read to its end, before the transactions waiting for it
        are released anyway (flagged with a ``cause``). 0 turns the alignment off:
        everything is released at once. >= 0.

    Raises
    ------
    ValueError
        On a parameter out of range.
    """

    def __init__(self, n_sources: int, delay_ms: int, stall_seconds: float) -> None:
        if n_sources < 1:
            raise ValueError(f"n_sources must be >= 1, got {n_sources}")
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
        if stall_seconds < 0:
            raise ValueError(f"stall_seconds must be >= 0, got {stall_seconds}")
        self.n_sources = n_sources
        self.delay_ms = delay_ms
        self.stall_seconds = stall_seconds
        self._parts: dict[int, _Partition] = {}
        self._seq = itertools.count()

    def _part(self, partition: int, now_s: float | None = None) -> _Partition:
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition(created_s=now_s or 0.0)
        return p

    # -- inputs ---------------------------------------------------------------------

    def on_watermark(
        self,
        partition: int,
        source: int,
        event_time_ms: int,
        caught_up: bool,
        now_s: float = 0.0,
    ) -> None:
        """First-stage ``source`` has forwarded to ``partition`` everything up to
        ``event_time_ms`` (or everything it had, when ``caught_up``); ``now_s``: wall
        clock (s), to tell a source that advances from one that stalled."""
        if not 0 <= source < self.n_sources:
            raise ValueError(f"source must be in [0, {self.n_sources}), got {source}")
        p = self._part(partition, now_s)
        wm = p.watermarks
        old = wm.get(source)
        new = _INF if caught_up else max(float(event_time_ms), _finite(old))
        wm[source] = new
        if old is None or new > old:
            p.progress_s[source] = now_s

    def on_label_time(self, partition: int, label_time_ms: int, now_s: float = 0.0) -> None:
        """A label timed ``label_time_ms`` was applied on ``partition``."""
        p = self._part(partition, now_s)
        if label_time_ms > p.label_time_ms:
            p.label_time_ms = float(label_time_ms)
            p.label_progress_s = now_s
        p.labels_idle = False

    def on_labels_idle(self, partition: int, idle: bool) -> None:
        """Whether the labels partition is read to its end and quiet: then held
        transactions do not wait for a later label."""
        self._part(partition).labels_idle = idle

    def on_input_idle(self, partition: int, idle: bool) -> None:
        """Whether the partition's own input (transactions and watermarks) is read to
        its end: only then can a source that made no progress be taken as stalled
        (else its progress may be in what is still to be read)."""
        self._part(partition).input_idle = idle

    def add(self, partition: int, item: T, event_time_ms: int, now_s: float) -> None:
        """Hold ``item``, a transaction at ``event_time_ms`` (``now_s``: wall clock, s)."""
        heapq.heappush(
            self._part(partition, now_s).pending, (event_time_ms, next(self._seq), now_s, item)
        )

    def revoke(self, partitions: Iterable[int]) -> list[T]:
        """Forget partitions taken away by a rebalance (or handed over at a stop);
        returns the items dropped (the next owner reads them again from the last
        committed offset)."""
        dropped: list[T] = []
        for q in list(partitions):
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

    def partitions(self) -> list[int]:
        """Partitions the aligner knows (assigned and heard from)."""
        return list(self._parts)

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

    def _cause(self, p: _Partition, wm: float, t: int, now_s: float) -> tuple[bool, str | None]:
        """(release?, cause) of a held transaction at ``t``."""
        wm_ok = wm > t - self.delay_ms
        labels_ok = p.label_time_ms >= t or p.labels_idle
        if wm_ok and labels_ok:
            return True, None
        if not p.input_idle:
            return False, None  # progress may be in what is still to be read
        limit = self.stall_seconds
        if not wm_ok:
            cut = t - self.delay_ms
            blockers = [s for s in range(self.n_sources) if p.watermarks.get(s, -_INF) <= cut]
            if any(now_s - p.progress_s.get(s, p.created_s) < limit for s in blockers):
                return False, None
        if not labels_ok and now_s - max(p.label_progress_s, p.created_s) < limit:
            return False, None
        return True, "watermark" if not wm_ok else "labels"

    def release(self, now_s: float) -> list[Released[T]]:
        """Transactions whose features are complete, or whose source stalled.

        A transaction at ``t`` is complete when every first-stage watermark of its
        partition is ``> t - delay_ms`` (or caught up) and a label timed ``>= t`` has
        been seen on its partition (or its labels partition is idle). Oldest first
        within a partition; a complete transaction behind an incomplete one waits for
        it. With ``stall_seconds == 0`` everything is released at once.
        """
        out: list[Released[T]] = []
        off = self.stall_seconds == 0
        for q, p in self._parts.items():
            wm = self.watermark_ms(q)
            pend = p.pending
            while pend:
                t, _, added, item = pend[0]
                go, cause = (True, None) if off else self._cause(p, wm, t, now_s)
                if not go:
                    break
                heapq.heappop(pend)
                out.append(Released(q, item, t, max(0.0, now_s - added), cause))
        return out


def _finite(x: float | None) -> float:
    return -_INF if x is None or x == _INF else x

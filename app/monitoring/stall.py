"""Stalled source partitions: assigned, with records past the worker's position, and not
read from for a while. Pure.

A worker can own a partition and never read it again while the consumer group looks
healthy (every partition assigned, no error): the partition's records then wait for
ever, and a quarter of the cards go unscored until someone notices the lag.
:class:`PartitionWatch` tells such partitions from idle ones (nothing to read) and from
busy ones (reading, however slowly), from samples of each partition's position and end
offset; the worker's shell (:func:`app.monitoring.worker.watch_partitions`) samples it,
exports how long each partition has stalled and seeks a stalled one back to its
committed offset.

Examples
--------
>>> w = PartitionWatch(stall_seconds=20)
>>> w.observe(0.0, {"tx-0": 5}, {"tx-0": 9}).stalled
[]
>>> w.observe(10.0, {"tx-0": 5}, {"tx-0": 12}).waiting_seconds
{'tx-0': 10.0}
>>> r = w.observe(21.0, {"tx-0": 5}, {"tx-0": 14})
>>> r.stalled, r.new, r.started
(['tx-0'], ['tx-0'], ['tx-0'])
>>> w.recovered("tx-0", 21.0)
>>> w.observe(42.0, {"tx-0": 5}, {"tx-0": 14}).started  # recovered again, told once
[]
>>> w.observe(25.0, {"tx-0": 6}, {"tx-0": 14}).resumed
['tx-0']
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field

__all__ = ["PartitionWatch", "WatchReport"]


@dataclass
class WatchReport:
    """What one :meth:`PartitionWatch.observe` found.

    Attributes
    ----------
    waiting_seconds : dict of partition to float
        Every watched partition: seconds since its position last moved while records
        waited past it; 0.0 when it moved since the last sample or has nothing to read.
    stalled : list of partition
        Partitions waiting for at least ``stall_seconds``.
    new : list of partition
        Those of ``stalled`` not stalled at the previous sample, or ``stall_seconds``
        more since the last :meth:`PartitionWatch.recovered`: to recover now.
    started : list of partition
        Those of ``new`` that begin a stall episode (to be told once).
    resumed : list of partition
        Partitions of an episode that moved again or have nothing left to read: the
        episode ends.
    """

    waiting_seconds: dict[Hashable, float] = field(default_factory=dict)
    stalled: list[Hashable] = field(default_factory=list)
    new: list[Hashable] = field(default_factory=list)
    started: list[Hashable] = field(default_factory=list)
    resumed: list[Hashable] = field(default_factory=list)


class PartitionWatch:
    """Tracks how long each partition has had records past a position that does not move.

    Parameters
    ----------
    stall_seconds : float
        A partition whose position has not moved for this long, in seconds, while its
        end offset is past it, is stalled. > 0.

    Raises
    ------
    ValueError
        If ``stall_seconds`` is not > 0.
    """

    def __init__(self, stall_seconds: float) -> None:
        if not stall_seconds > 0:
            raise ValueError(f"stall_seconds must be > 0, got {stall_seconds!r}")
        self.stall_seconds = float(stall_seconds)
        # partition -> (position, time it was first seen there with records waiting)
        self._since: dict[Hashable, tuple[int | None, float]] = {}
        self._stalled: set[Hashable] = set()
        self._episodes: set[Hashable] = set()

    def observe(
        self,
        now: float,
        positions: Mapping[Hashable, int | None],
        ends: Mapping[Hashable, int | None],
        held_back: Collection[Hashable] = (),
    ) -> WatchReport:
        """One sample of the assigned partitions.

        Parameters
        ----------
        now : float
            A monotonic time, in seconds.
        positions : mapping of partition to int or None
            Offset of the next record the worker will process (None: unknown, e.g.
            nothing read or committed yet: counted from the first sample).
        ends : mapping of partition to int or None
            End offset (high watermark) of each partition; None: unknown (not watched
            this time).
        held_back : collection of partition, optional
            Partitions the worker does not fetch on purpose right now (its stream has
            their records in hand: backpressure); their wait starts anew, as if they
            moved.

        Returns
        -------
        WatchReport
            Partitions no longer in ``positions`` are forgotten.
        """
        report = WatchReport()
        for tp in list(self._since):
            if tp not in positions:
                del self._since[tp]
                self._stalled.discard(tp)
                self._episodes.discard(tp)
        for tp, position in positions.items():
            end = ends.get(tp)
            if end is None:
                continue
            waiting = end > (position or 0)
            seen = self._since.get(tp)
            if not waiting or seen is None or seen[0] != position or tp in held_back:
                self._since[tp] = (position, now)
                self._stalled.discard(tp)
                if tp in self._episodes:
                    self._episodes.discard(tp)
                    report.resumed.append(tp)
                report.waiting_seconds[tp] = 0.0
                continue
            waited = now - seen[1]
            report.waiting_seconds[tp] = waited
            if waited >= self.stall_seconds:
                report.stalled.append(tp)
                if tp not in self._stalled:
                    self._stalled.add(tp)
                    report.new.append(tp)
                if tp not in self._episodes:
                    self._episodes.add(tp)
                    report.started.append(tp)
        return report

    def recovered(self, tp: Hashable, now: float) -> None:
        """Count ``tp``'s wait anew from ``now`` (after a seek), so another recovery is
        tried only after another ``stall_seconds``; its episode goes on until it moves."""
        position, _ = self._since.get(tp, (None, now))
        self._since[tp] = (position, now)
        self._stalled.discard(tp)

"""Log lines that hostile input and outages cannot multiply.

- :class:`RateLimitedLog`: the first event of a key (dead letters: reason and
  partition) is logged in full; the next ones within ``interval_seconds`` are only
  counted, and the first event after the interval logs a summary of them (count, offset
  range) with itself. 2,000 hostile records give a handful of lines, not 2,000; the
  metric and the dead-letter topic still keep every record.
- :class:`OutageLog`: a dependency's state changes are logged once each: when it first
  fails ("unreachable since ...") and when it answers again ("reachable again after
  ... s, N failed calls").

Examples
--------
>>> lines = []
>>> clock = iter([0.0, 1.0, 2.0, 61.0]).__next__
>>> rl = RateLimitedLog(lambda msg, *a: lines.append(msg % a), interval_seconds=60, clock=clock)
>>> [rl.event(("bad_json", 0), offset, "dead-lettered t[0]@%d: bad json", offset)
...  for offset in (10, 11, 12, 13)]
[True, False, False, True]
>>> lines
['dead-lettered t[0]@10: bad json', 'dead-lettered t[0]@13: bad json (and 2 more of bad_json on partition 0 in 61 s, offsets 11..12)']
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Hashable

__all__ = ["RateLimitedLog", "OutageLog"]


@dataclass
class _Window:
    start: float
    suppressed: int = 0
    first_offset: int | None = None
    last_offset: int | None = None


class RateLimitedLog:
    """At most one full line per key per ``interval_seconds``; the rest summarised.

    Parameters
    ----------
    emit : callable
        ``emit(message, *args)``, e.g. ``log.warning``.
    interval_seconds : float, default=60.0
        Length of a key's window, in seconds (> 0).
    clock : callable, optional
        Monotonic seconds (default :func:`time.monotonic`).

    Raises
    ------
    ValueError
        ``interval_seconds`` <= 0.
    """

    def __init__(self, emit: Callable[..., None], interval_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        self._emit = emit
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def event(self, key: tuple, offset: int, message: str, *args: object) -> bool:
        """One event of ``key`` (``(reason, partition)``) at ``offset``.

        Returns
        -------
        bool
            Whether a line was written.
        """
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.start < self.interval_seconds:
            window.suppressed += 1
            if window.first_offset is None:
                window.first_offset = offset
            window.last_offset = offset
            return False
        if window is not None and window.suppressed:
            message += " (and %d more of %s on partition %s in %.0f s, offsets %s..%s)"
            args = (*args, window.suppressed, key[0], key[1] if len(key) > 1 else "-",
                    now - window.start, window.first_offset, window.last_offset)
        self._windows[key] = _Window(start=now)
        self._emit(message, *args)
        return True


class OutageLog:
    """One line when a dependency becomes unreachable, one when it is back.

    Parameters
    ----------
    name : str
        The dependency, as the lines name it ("Redis").
    warn, info : callable
        ``warn(message, *args)`` for the outage, ``info(message, *args)`` for the end.
    clock : callable, optional
        Monotonic seconds (default :func:`time.monotonic`).

    Examples
    --------
    >>> lines = []
    >>> out = OutageLog("Redis", lambda m, *a: lines.append(m % a), lambda m, *a: lines.append(m % a),
    ...                 clock=iter([5.0, 9.5]).__next__)
    >>> for up in (False, False, False, True, True):
    ...     out.observe(up)
    >>> lines
    ['Redis unreachable: calls fail and are retried (metrics: fraud_redis_up, fraud_redis_errors_total)', 'Redis reachable again after 4.5 s (3 failed calls)']
    """

    def __init__(self, name: str, warn: Callable[..., None], info: Callable[..., None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._warn, self._info, self._clock = warn, info, clock
        self._down_since: float | None = None
        self._failures = 0

    def observe(self, up: bool) -> None:
        """The outcome of one call: ``True`` answered, ``False`` failed."""
        if not up:
            self._failures += 1
            if self._down_since is None:
                self._down_since = self._clock()
                slug = self.name.lower()
                self._warn("%s unreachable: calls fail and are retried (metrics: fraud_%s_up, "
                           "fraud_%s_errors_total)", self.name, slug, slug)
            return
        if self._down_since is not None:
            self._info("%s reachable again after %.1f s (%d failed calls)", self.name,
                       self._clock() - self._down_since, self._failures)
            self._down_since, self._failures = None, 0

"""Exactly-once alerts: what to do with each alert id, given what Redis holds (pure).

Each alert id goes through three states in Redis:

- *free*: neither key exists;
- *reserved*: ``{prefix}alerting:{id}`` holds a :class:`Reservation` (when, by whom),
  written with ``SET NX`` before the alert is sent;
- *alerted*: ``{prefix}alerted:{id}`` exists, written once the broker acknowledged the
  alert (the commit); the reservation is deleted with it.

A worker that dies between the broker's acknowledgement and the ``alerted`` write
leaves the id reserved but not alerted. Whoever processes the transaction again looks
at the alert topic itself (the alert's partition, from the reservation time on):
found, the id is marked alerted and nothing is sent; not found, the reservation is
taken over and the alert sent. A reservation younger than the in-flight bound may
belong to a live worker still sending (two owners of one partition for a moment in a
rebalance): it is waited on, not looked up.

Nothing here touches Redis or Kafka: :func:`plan_alerts` decides, the shell
(:mod:`app.alerting.sink`) does.

Examples
--------
>>> r = Reservation(reserved_ms=1_000, owner="w1")
>>> Reservation.decode(r.encode()) == r
True
>>> states = {
...     "a": AlertIdState(),
...     "b": AlertIdState(alerted=True),
...     "c": AlertIdState(reservation=Reservation(95_000, "w2")),
...     "d": AlertIdState(reservation=Reservation(10_000, "w2")),
... }
>>> p = plan_alerts(states, now_ms=100_000, in_flight_ms=10_000)
>>> p.reserve, p.suppress, p.wait, p.look_up
(['a'], ['b'], ['c'], ['d'])
>>> p.wait_ms
5000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = [
    "Reservation",
    "AlertIdState",
    "AlertPlan",
    "plan_alerts",
    "lookup_start_ms",
    "LOOKUP_CLOCK_MARGIN_MS",
]

#: The alert topic is searched from this long before the reservation time, in ms: the
#: record's timestamp (producer time of the same process, or the broker's append time)
#: is at or after the reservation unless a clock stepped back by more than this.
LOOKUP_CLOCK_MARGIN_MS = 60_000


@dataclass(frozen=True)
class Reservation:
    """Value of a reservation key: when the alert was reserved, by which worker call.

    Parameters
    ----------
    reserved_ms : int
        UTC epoch ms at which the reservation was written (the reserving worker's clock).
    owner : str
        Token of the worker process (and batch) that wrote it; a retried write of the
        same value is recognised as its own.
    """

    reserved_ms: int
    owner: str

    def encode(self) -> bytes:
        """``b"<reserved_ms>:<owner>"``."""
        return f"{self.reserved_ms}:{self.owner}".encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> "Reservation":
        """Parse :meth:`encode`'s bytes; anything else counts as reserved at epoch 0 (so
        it is looked up from the start of the topic, never trusted as in flight).

        >>> Reservation.decode(b"garbage")
        Reservation(reserved_ms=0, owner='garbage')
        """
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        ms, sep, owner = text.partition(":")
        if sep and ms.isdigit():
            return cls(int(ms), owner)
        return cls(0, text)


@dataclass(frozen=True)
class AlertIdState:
    """What Redis holds about one alert id."""

    alerted: bool = False
    reservation: Reservation | None = None


@dataclass
class AlertPlan:
    """What to do with each alert id of a batch (ids keep the batch's order).

    Attributes
    ----------
    reserve : list of str
        Free: reserve (``SET NX``), then send.
    suppress : list of str
        Already alerted: send nothing.
    wait : list of str
        Reserved less than the in-flight bound ago and not alerted: possibly being sent
        by a live worker; read again after :attr:`wait_ms`.
    look_up : list of str
        Reserved longer ago and not alerted: its sender died after (or before) the
        send; look for the alert on the topic.
    wait_ms : int
        How long until the first id of :attr:`wait` passes the in-flight bound (0 when
        nothing waits).
    """

    reserve: list[str] = field(default_factory=list)
    suppress: list[str] = field(default_factory=list)
    wait: list[str] = field(default_factory=list)
    look_up: list[str] = field(default_factory=list)
    wait_ms: int = 0


def plan_alerts(
    states: Mapping[str, AlertIdState], now_ms: int, in_flight_ms: int
) -> AlertPlan:
    """Decide, for each alert id, whether to reserve and send it, suppress it, wait for
    a live sender, or look it up on the alert topic.

    Parameters
    ----------
    states : mapping of str to AlertIdState
        Every alert id of the batch, in the batch's order.
    now_ms : int
        The deciding worker's clock, UTC epoch ms.
    in_flight_ms : int
        A reservation younger than this may still be in the hands of a live worker
        (``ALERT_RESERVATION_IN_FLIGHT_SECONDS``); ``>= 0``.

    Returns
    -------
    AlertPlan

    Raises
    ------
    ValueError
        ``in_flight_ms`` is negative.
    """
    if in_flight_ms < 0:
        raise ValueError(f"in_flight_ms must be >= 0, got {in_flight_ms}")
    plan = AlertPlan()
    waits: list[int] = []
    for alert_id, state in states.items():
        if state.alerted:
            plan.suppress.append(alert_id)
        elif state.reservation is None:
            plan.reserve.append(alert_id)
        else:
            # a reservation from the future (another worker's clock ahead) counts as
            # just made: waited on for the whole bound, then looked up
            age = max(0, now_ms - state.reservation.reserved_ms)
            if age < in_flight_ms:
                plan.wait.append(alert_id)
                waits.append(in_flight_ms - age)
            else:
                plan.look_up.append(alert_id)
    plan.wait_ms = min(waits) if waits else 0
    return plan


def lookup_start_ms(reservation: Reservation, margin_ms: int = LOOKUP_CLOCK_MARGIN_MS) -> int:
    """Timestamp from which the alert topic is searched for a reserved alert.

    >>> lookup_start_ms(Reservation(100_000, "w"), margin_ms=60_000)
    40000
    >>> lookup_start_ms(Reservation(1_000, "w"), margin_ms=60_000)
    0
    """
    return max(0, reservation.reserved_ms - margin_ms)

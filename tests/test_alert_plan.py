"""The pure decision of exactly-once alerts (app/alerting/plan.py): given what Redis
holds about each alert id, send, suppress, wait or look the id up on the topic."""

from __future__ import annotations

import pytest

from app.alerting.plan import (
    AlertIdState,
    Reservation,
    lookup_start_ms,
    plan_alerts,
)

NOW = 1_800_000_000_000
BOUND = 10_000


def _plan(state: AlertIdState):
    p = plan_alerts({"t": state}, NOW, BOUND)
    return {k: getattr(p, k) for k in ("reserve", "suppress", "wait", "look_up") if getattr(p, k)}


@pytest.mark.parametrize(
    "state, expected",
    [
        pytest.param(AlertIdState(), {"reserve": ["t"]}, id="free-is-reserved-and-sent"),
        pytest.param(AlertIdState(alerted=True), {"suppress": ["t"]}, id="alerted-is-suppressed"),
        pytest.param(
            AlertIdState(alerted=True, reservation=Reservation(NOW - 10**9, "w")),
            {"suppress": ["t"]},
            id="alerted-wins-over-a-leftover-reservation",
        ),
        pytest.param(
            AlertIdState(reservation=Reservation(NOW - 1, "w")),
            {"wait": ["t"]},
            id="reserved-just-now-may-be-in-flight",
        ),
        pytest.param(
            AlertIdState(reservation=Reservation(NOW - BOUND, "w")),
            {"look_up": ["t"]},
            id="reserved-at-the-bound-is-looked-up",
        ),
        pytest.param(
            AlertIdState(reservation=Reservation(NOW - 3_600_000, "w")),
            {"look_up": ["t"]},
            id="crash-between-send-and-mark-is-looked-up",
        ),
        pytest.param(
            AlertIdState(reservation=Reservation(NOW + 60_000, "w")),
            {"wait": ["t"]},
            id="reservation-from-a-clock-ahead-is-waited-on",
        ),
        pytest.param(
            AlertIdState(reservation=Reservation.decode(b"not a reservation")),
            {"look_up": ["t"]},
            id="unreadable-reservation-is-looked-up",
        ),
    ],
)
def test_plan_of_one_id(state, expected):
    assert _plan(state) == expected


def test_plan_keeps_the_batch_order_and_the_shortest_wait():
    states = {
        "a": AlertIdState(),
        "b": AlertIdState(reservation=Reservation(NOW - 2_000, "w")),
        "c": AlertIdState(alerted=True),
        "d": AlertIdState(reservation=Reservation(NOW - 7_000, "w")),
        "e": AlertIdState(),
        "f": AlertIdState(reservation=Reservation(NOW - 20_000, "w")),
    }
    p = plan_alerts(states, NOW, BOUND)
    assert (p.reserve, p.suppress, p.wait, p.look_up) == (["a", "e"], ["c"], ["b", "d"], ["f"])
    assert p.wait_ms == 3_000  # d passes the bound first


def test_every_id_gets_exactly_one_decision():
    import random

    rng = random.Random(12)
    states = {}
    for i in range(500):
        kind = rng.randrange(4)
        states[str(i)] = (
            AlertIdState() if kind == 0
            else AlertIdState(alerted=True) if kind == 1
            else AlertIdState(reservation=Reservation(NOW - rng.randrange(0, 2 * BOUND), "w"))
        )
    p = plan_alerts(states, NOW, BOUND)
    decided = p.reserve + p.suppress + p.wait + p.look_up
    assert sorted(decided) == sorted(states) and len(set(decided)) == len(states)


def test_no_in_flight_bound_looks_every_reservation_up():
    p = plan_alerts({"t": AlertIdState(reservation=Reservation(NOW, "w"))}, NOW, 0)
    assert p.look_up == ["t"] and p.wait_ms == 0


def test_negative_bound_is_refused():
    with pytest.raises(ValueError, match="in_flight_ms must be >= 0, got -1"):
        plan_alerts({}, NOW, -1)


def test_reservation_round_trip_and_lookup_start():
    r = Reservation(NOW, "abc:def")  # the owner may hold the separator
    assert Reservation.decode(r.encode()) == r
    assert lookup_start_ms(r) == NOW - 60_000
    assert lookup_start_ms(r, margin_ms=0) == NOW

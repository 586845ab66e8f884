"""The scoring stage's alert step: reserve, send, commit (the thin shell of
:mod:`app.alerting.plan`).

For a batch's alerts: read their ids' states in Redis, :func:`~app.alerting.plan.plan_alerts`,
then

1. suppress the ids already alerted;
2. reserve the free ones (``SET NX``, value: reservation time and this worker's token);
3. wait for ids reserved moments ago by someone else (a live worker may be sending), then
   decide again;
4. look the older reserved-but-unmarked ones up on the alert topic
   (:class:`~app.alerting.lookup.AlertTopicLookup`): found, mark them alerted and send
   nothing; not found, take their reservation over (compare-and-set) and send;
5. send every alert this call holds the reservation of, wait for the broker's
   acknowledgements, then mark them alerted (the commit).

Every Redis call goes through :class:`app.redis_store.RedisStore`'s bounded retries; a
failure raises, and the caller exits without acknowledging the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Awaitable, Callable, Sequence

from ..exceptions import FraudError
from ..monitoring.worker import observe_alerts
from .plan import AlertIdState, Reservation, lookup_start_ms, plan_alerts

__all__ = ["raise_alerts", "AlertReservationError", "WORKER_TOKEN"]

#: Identifies this worker process in its reservations.
WORKER_TOKEN = uuid.uuid4().hex[:16]
log = logging.getLogger(__name__)
#: Rounds of deciding before giving up (each waits at most the in-flight bound).
_MAX_ROUNDS = 8


class AlertReservationError(FraudError):
    """Alert ids stayed reserved by others through every round of deciding."""


def _now_ms() -> int:
    return int(time.time() * 1000)


async def raise_alerts(
    rt,
    alerts: Sequence,
    received_ms: Sequence[int],
    duplicates_in_batch: int,
    send: Callable[[object], Awaitable[asyncio.Future]],
) -> list:
    """Publish each alert of a batch exactly once; the alerts sent by this call.

    Parameters
    ----------
    rt : app.stream.runtime.Runtime
        Settings, metrics, the Redis store and the alert topic lookup.
    alerts : sequence of app.events.Alert
        The batch's alerts (one per transaction).
    received_ms : sequence of int
        When each alert's transaction arrived at the worker, UTC epoch ms (latency).
    duplicates_in_batch : int
        Alerts already dropped as repeats within the batch (counted as suppressed).
    send : callable
        ``await send(alert)`` hands the alert to the producer; returns the future of
        the broker's acknowledgement.

    Raises
    ------
    RedisUnavailableError, BrokerUnavailableError, AlertReservationError
        The batch must not be acknowledged.
    """
    s, m, store = rt.settings, rt.metrics, rt.store
    ttl = s.alert_dedup_ttl_seconds
    in_flight_ms = int(s.alert_reservation_in_flight_seconds * 1000)
    by_id = {a.alert_id: (a, r) for a, r in zip(alerts, received_ms)}
    pending = list(by_id)
    ours: list[str] = []
    suppressed = duplicates_in_batch
    for _ in range(_MAX_ROUNDS):
        raw = dict(zip(pending, await store.alert_states(pending)))
        states = {
            i: AlertIdState(alerted, Reservation.decode(res) if res is not None else None)
            for i, (alerted, res) in raw.items()
        }
        plan = plan_alerts(states, _now_ms(), in_flight_ms)
        suppressed += len(plan.suppress)
        again: list[str] = []
        if plan.reserve:
            value = Reservation(_now_ms(), WORKER_TOKEN).encode()
            held = await store.reserve_alerts(plan.reserve, value, ttl)
            ours += [i for i, ok in zip(plan.reserve, held) if ok]
            again += [i for i, ok in zip(plan.reserve, held) if not ok]  # raced: decide again
        if plan.look_up:
            result = await rt.alert_lookup().find(
                [
                    (i, by_id[i][0].transaction.account_id.encode(),
                     lookup_start_ms(states[i].reservation))
                    for i in plan.look_up
                ]
            )
            for start, n in result.starts.items():
                m.alert_topic_lookups.labels(source=start).inc(n)
            found = [i for i in plan.look_up if i in result.found]
            await store.mark_alerted(found, ttl)
            m.alert_reservations_resolved.labels(outcome="found").inc(len(found))
            suppressed += len(found)
            missing = [i for i in plan.look_up if i not in result.found]
            value = Reservation(_now_ms(), WORKER_TOKEN).encode()
            taken = await store.take_over_reservations(
                [(i, raw[i][1]) for i in missing], value, ttl  # the value as read
            )
            resent = [i for i, ok in zip(missing, taken) if ok]
            now = _now_ms()
            log.info(
                "worker %s looked up reservations of other workers on %s: %s",
                WORKER_TOKEN, rt.settings.alerts_topic,
                ", ".join(
                    f"{i} (by {states[i].reservation.owner}, "
                    f"{(now - states[i].reservation.reserved_ms) / 1000:.1f} s ago): "
                    + ("found" if i in result.found else "sent again" if i in resent else "taken by another")
                    for i in plan.look_up
                ),
            )
            m.alert_reservations_resolved.labels(outcome="resent").inc(len(resent))
            ours += resent
            again += [i for i, ok in zip(missing, taken) if not ok]  # someone else took it
        if plan.wait:
            m.alert_reservations_waited.inc(len(plan.wait))
            again += plan.wait
            await asyncio.sleep(min(plan.wait_ms, in_flight_ms) / 1000)
        if not again:
            break
        pending = again
    else:
        raise AlertReservationError(
            f"{len(pending)} alert ids still reserved by other workers after {_MAX_ROUNDS} "
            f"rounds (e.g. {pending[:3]})"
        )
    m.alerts_suppressed.inc(suppressed)
    sent_ms = _now_ms()
    futures = [(await send(by_id[i][0]), *by_id[i]) for i in ours]
    for fut, a, received in futures:
        await fut
        m.alert_latency.observe(max(0.0, time.time() - received / 1000))
        m.alerts.labels(model_version=a.model_version).inc()
    await store.mark_alerted(ours, ttl)
    took_ms = _now_ms() - sent_ms
    if ours and took_ms > in_flight_ms:
        log.warning(
            "worker %s: %d alerts took %.1f s from the send to the mark, longer than "
            "ALERT_RESERVATION_IN_FLIGHT_SECONDS (%g s): %s",
            WORKER_TOKEN, len(ours), took_ms / 1000, in_flight_ms / 1000, ", ".join(ours[:5]),
        )
    sent = [a for _, a, _ in futures]
    observe_alerts(m, sent)
    return sent


"""Exactly-once alerts, the shell parts against a real Redis and a real Tansu broker:
the reservation keys (app/redis_store.py), the search of the alert topic
(app/alerting/lookup.py) and the alert step that combines them (app/alerting/sink.py).
The crash windows themselves are in tests/test_alert_faults.py (real workers)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from app.alerting.lookup import AlertTopicLookup, alert_partition
from app.alerting.plan import Reservation
from app.config import Settings
from app.metrics import Metrics
from app.redis_store import RedisStore
from app.stream.runtime import Runtime

from .test_alerts_cli import make_alert

pytestmark = pytest.mark.broker

TTL = 3600


def _store(redis_url: str) -> RedisStore:
    return RedisStore(redis_url, f"test:{uuid.uuid4().hex[:8]}:", retry_max_seconds=2)


def test_reservation_keys(redis_url):
    async def run():
        store = _store(redis_url)
        try:
            mine = Reservation(1_000, "w1").encode()
            assert await store.reserve_alerts(["a", "b"], mine, TTL) == [True, True]
            # a retried call (same value) still holds them; another worker does not
            assert await store.reserve_alerts(["a"], mine, TTL) == [True]
            assert await store.reserve_alerts(["a", "c"], Reservation(2_000, "w2").encode(), TTL) == [False, True]
            assert await store.alert_states(["a", "d"]) == [(False, mine), (False, None)]
            # take-over only from the value seen (compare-and-set), and idempotent
            new = Reservation(3_000, "w3").encode()
            stale = Reservation(9, "x").encode()
            assert await store.take_over_reservations([("a", stale), ("b", mine)], new, TTL) == [False, True]
            assert await store.take_over_reservations([("b", mine)], new, TTL) == [True]
            await store.mark_alerted(["a", "b"], TTL)
            assert await store.alert_states(["a", "b"]) == [(True, None), (True, None)]
            assert await store.already_alerted(["a", "b", "c"]) == [True, True, False]
        finally:
            await store.close()

    asyncio.run(run())


async def _publish(bootstrap: str, topic: str, alerts) -> dict[str, int]:
    """Alerts as a worker sends them (key = account id, default partitioner, batched);
    their partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futs = [
            (a.alert_id, await producer.send(topic, a.model_dump_json().encode(),
                                            key=a.transaction.account_id.encode()))
            for a in alerts
        ]
        return {i: (await f).partition for i, f in futs}
    finally:
        await producer.stop()


def test_lookup_finds_alerts_on_their_partition(broker, make_topic):
    topic = make_topic("alerts", 4)
    settings = Settings(kafka_broker_url=broker.url, alerts_topic=topic)
    alerts = [make_alert(i) for i in range(12)]
    before = int(time.time() * 1000)

    async def run():
        placed = await _publish(broker.bootstrap, topic, alerts[:10])
        for a in alerts[:10]:  # the producer's partition is the one the lookup computes
            assert placed[a.alert_id] == alert_partition(a.transaction.account_id.encode(), range(4))
        lookup = AlertTopicLookup(settings)
        try:
            key = lambda a: a.transaction.account_id.encode()  # noqa: E731
            wanted = [(a.alert_id, key(a), before - 60_000) for a in (alerts[0], alerts[7], alerts[11])]
            hit = await lookup.find(wanted)
            assert hit.found == {alerts[0].alert_id, alerts[7].alert_id}
            assert sum(hit.starts.values()) >= 1 and hit.records_read >= 2
            # from a time after every record: nothing to find, whatever the broker answers
            later = await lookup.find([(alerts[0].alert_id, key(alerts[0]), int(time.time() * 1000) + 3_600_000)])
            print("starts (timestamp / beginning):", hit.starts, later.starts)
            # Kafka: no offset for that time, nothing read; Tansu: no timestamp in its
            # answer, read from the beginning (where alerts[0] is)
            if later.starts.get("beginning"):
                assert later.found == {alerts[0].alert_id}
            else:
                assert later.found == set() and later.records_read == 0
        finally:
            await lookup.close()

    asyncio.run(run())


def test_alert_step_resolves_each_state(broker, make_topic, redis_url):
    """found on the topic -> marked, not sent; reserved long ago but not on the topic ->
    sent; alerted -> suppressed; free -> sent; reserved a moment ago by a live worker
    that marks it meanwhile -> waited on, then suppressed; an unreadable reservation ->
    looked up from the beginning, not found, taken over and sent."""
    from app.alerting.sink import raise_alerts

    topic = make_topic("alerts", 4)
    settings = Settings(
        kafka_broker_url=broker.url, alerts_topic=topic, alert_reservation_in_flight_seconds=2.0
    )
    found, resent, alerted, free, live, garbled = (make_alert(i) for i in range(6))
    now = int(time.time() * 1000)
    old = Reservation(now - 3_600_000, "dead-worker").encode()

    async def run():
        store = _store(redis_url)
        rt = Runtime(settings=settings, metrics=Metrics(CollectorRegistry()), store=store)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await _publish(broker.bootstrap, topic, [found])  # the dead worker's send got through
            await store.reserve_alerts([found.alert_id, resent.alert_id], old, TTL)
            await store.mark_alerted([alerted.alert_id], TTL)
            await store.reserve_alerts([live.alert_id], Reservation(now, "live-worker").encode(), TTL)
            await store.reserve_alerts([garbled.alert_id], b"not a reservation", TTL)

            async def live_worker_commits():
                await asyncio.sleep(0.5)
                await store.mark_alerted([live.alert_id], TTL)

            async def send(a):
                return await producer.send(topic, a.model_dump_json().encode(),
                                           key=a.transaction.account_id.encode())

            batch = [found, resent, alerted, free, live, garbled]
            committer = asyncio.create_task(live_worker_commits())
            sent = await raise_alerts(rt, batch, [now] * len(batch), 0, send)
            await committer
            states = await store.alert_states([a.alert_id for a in batch])
            on_topic = await rt.alert_lookup().find(
                [(a.alert_id, a.transaction.account_id.encode(), now - 60_000) for a in batch]
            )
        finally:
            await producer.stop()
            await rt.close()
            await store.close()
        return rt.metrics, sent, states, on_topic

    m, sent, states, on_topic = asyncio.run(run())
    assert sorted(a.alert_id for a in sent) == sorted([free.alert_id, resent.alert_id, garbled.alert_id])
    assert states == [(True, None)] * 6  # every one committed, no reservation left
    assert on_topic.found == {found.alert_id, resent.alert_id, free.alert_id, garbled.alert_id}
    sample = lambda name, **labels: m.registry.get_sample_value(name, labels or None)  # noqa: E731
    assert sample("fraud_alert_reservations_resolved_total", outcome="found") == 1
    assert sample("fraud_alert_reservations_resolved_total", outcome="resent") == 2
    assert sample("fraud_alert_reservations_waited_total") == 1
    assert sample("fraud_alerts_suppressed_total") == 3  # found, alerted, live
    assert sample("fraud_alerts_total", model_version="test-model-1") == 3

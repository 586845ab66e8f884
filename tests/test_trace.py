"""``fraudctl trace`` and the ``traceparent`` header on the real broker, a real worker
process and real Redis: the story of an alerted transaction and of a dead-lettered one,
and the trace context continued from the input record to its scored record, its alert
and its dead letter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from app import tracing
from app.cli.trace import partition_for_key
from app.events import Label, Transaction, encode
from app.features import ACCOUNT_FEATURE_NAMES

from .worker_utils import Worker, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]

T0 = 1_530_662_400_000
FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")


def _tx(i: int, account: str) -> Transaction:
    return Transaction(
        transaction_id=f"tr-{i}", account_id=account, terminal_id=f"term-{i % 3}",
        amount_minor=1000 + i, currency="EUR", event_time_ms=T0 + i * 60_000,
    )


async def _produce(bootstrap: str, records: list[tuple[str, bytes, bytes, str | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, value, tp in records:
            headers = tracing.headers_with(tp) if tp else None
            await (await producer.send(topic, value, key=key, headers=headers))
    finally:
        await producer.stop()


def _trace(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FRAUDCTL, "trace", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def traced(broker, _redis_reachable, tmp_path_factory):
    """A worker alerting on every transaction (ALERT_THRESHOLD=0) fed 6 transactions
    (5 with a traceparent, one without), one bad transaction with a traceparent and
    a label; yields (env, the input traceparents by transaction id)."""
    tmp_path = tmp_path_factory.mktemp("trace")
    redis.Redis.from_url(_redis_reachable).flushdb()  # alert ids of an earlier run
    env = worker_env(broker.url, _redis_reachable, tmp_path, ALERT_THRESHOLD="0")
    worker = Worker(env, tmp_path / "worker.log").start()
    inputs = {f"tr-{i}": tracing.new() for i in range(5)}
    inputs["tr-5"] = None
    bad_tp = tracing.new()
    txs = [_tx(i, "acc-7" if i % 2 else "acc-8") for i in range(6)]
    records = [
        (env["TRANSACTIONS_TOPIC"], t.account_id.encode(), encode(t), inputs[t.transaction_id])
        for t in txs
    ]
    bad = orjson.dumps({**_tx(9, "acc-7").model_dump(), "amount_minor": -5})
    records.append((env["TRANSACTIONS_TOPIC"], b"acc-7", bad, bad_tp))
    label = Label(transaction_id="tr-1", account_id="acc-7", terminal_id="term-1", is_fraud=True,
                  transaction_time_ms=txs[1].event_time_ms,
                  label_time_ms=txs[1].event_time_ms + 7 * 86_400_000)
    try:
        worker.wait_ready()
        asyncio.run(_produce(broker.bootstrap, records))
        worker.wait_metric("fraud_transactions_scored_total", len(txs), timeout=120)
        worker.wait_metric("fraud_events_rejected_total", 1, timeout=60)
        worker.wait_metric("fraud_alerts_total", len(txs), timeout=60)
        asyncio.run(_produce(broker.bootstrap, [
            (env["LABELS_TOPIC"], b"term-1", encode(label), None)
        ]))
        worker.wait_metric("fraud_labels_consumed_total", 1, timeout=60)
        yield env, inputs, bad_tp
    finally:
        worker.stop()


def _trace_id(tp: str) -> str:
    return tracing.parse(tp).trace_id


def test_traceparent_is_continued_from_input_to_scored_and_alert(broker, traced):
    env, inputs, bad_tp = traced
    for topic in ("SCORED_TOPIC", "ALERTS_TOPIC"):
        records = read_topic(broker.bootstrap, env[topic])
        assert len(records) == len(inputs)
        for r in records:
            tid = orjson.loads(r.value)["transaction"]["transaction_id"]
            out = tracing.from_headers(r.headers)
            assert out is not None, f"{topic} record of {tid} has no traceparent"
            if inputs[tid] is not None:
                assert _trace_id(out) == _trace_id(inputs[tid])
                assert tracing.parse(out).parent_id != tracing.parse(inputs[tid]).parent_id
    # a transaction that came without one: its scored record and alert share a trace
    by_topic = {
        topic: {
            orjson.loads(r.value)["transaction"]["transaction_id"]: tracing.from_headers(r.headers)
            for r in read_topic(broker.bootstrap, env[topic])
        }
        for topic in ("SCORED_TOPIC", "ALERTS_TOPIC")
    }
    assert _trace_id(by_topic["SCORED_TOPIC"]["tr-5"]) == _trace_id(by_topic["ALERTS_TOPIC"]["tr-5"])
    [dead] = read_topic(broker.bootstrap, env["DEAD_LETTER_TOPIC"])
    assert _trace_id(tracing.from_headers(dead.headers)) == _trace_id(bad_tp)


def test_trace_of_an_alerted_transaction(traced):
    env, inputs, _ = traced
    run = _trace(env, "tr-1", "--format", "json")
    assert run.returncode == 0, run.stderr
    story = orjson.loads(run.stdout)
    assert (story["account_id"], story["terminal_id"]) == ("acc-7", "term-1")
    assert story["alerted"] and not story["dead_lettered"], story["steps"]
    kinds = [s["kind"] for s in story["steps"]]
    assert kinds == ["entered", "forwarded", "scored", "alert", "label"]
    entered, forwarded, scored, alert, label = story["steps"]
    assert entered["topic"] == env["TRANSACTIONS_TOPIC"] and entered["key"] == "acc-7"
    assert entered["traceparent"] == inputs["tr-1"]
    assert entered["partition"] == partition_for_key("acc-7", 4)
    assert forwarded["topic"] == f"{env['APP_ID']}-transactions-by-terminal"
    assert forwarded["partition"] == partition_for_key("term-1", 4)
    assert scored["partition"] == alert["partition"] == partition_for_key("acc-7", 4)
    assert scored["outcome"] == alert["outcome"] == "review"
    assert scored["model_version"] and scored["model_version"] == alert["model_version"]
    assert alert["threshold"] == 0.0 and alert["score"] == scored["score"]
    assert label["is_fraud"] is True and label["key"] == "term-1"
    assert set(story["account_features"]) == set(ACCOUNT_FEATURE_NAMES)
    assert story["terminal_features"]
    for step in (scored, alert):
        assert _trace_id(step["traceparent"]) == _trace_id(inputs["tr-1"])

    hinted = _trace(env, "tr-1", "--account", "acc-7", "--format", "json")
    assert orjson.loads(hinted.stdout)["steps"] == story["steps"]
    table = _trace(env, "tr-1")
    assert table.returncode == 0, table.stderr
    assert "alerted" in table.stdout and "fraud-alerts" not in table.stderr
    assert env["ALERTS_TOPIC"] in table.stdout and "top reasons" in table.stdout


def test_trace_of_a_dead_lettered_transaction(traced):
    env, _, bad_tp = traced
    run = _trace(env, "tr-9", "--format", "json")
    assert run.returncode == 0, run.stderr
    story = orjson.loads(run.stdout)
    assert story["dead_lettered"] and not story["alerted"]
    assert [s["kind"] for s in story["steps"]] == ["entered", "dead-lettered"]
    entered, dead = story["steps"]
    assert dead["reason"] == "bad_amount" and dead["source_topic"] == env["TRANSACTIONS_TOPIC"]
    assert (dead["source_partition"], dead["source_offset"]) == (entered["partition"], entered["offset"])
    assert _trace_id(dead["traceparent"]) == _trace_id(bad_tp)


def test_trace_of_an_unknown_transaction_exits_1(traced):
    env, _, _ = traced
    run = _trace(env, "no-such-id")
    assert run.returncode == 1
    assert "no record mentions it" in run.stdout

"""Bad input against a real worker, the real broker and real Redis: every bad payload
reaches the dead-letter topic with its reason, the worker keeps going, and every valid
event around them is scored."""

from __future__ import annotations

import math

import orjson
import pytest

from app.events import DeadLetter, ScoredTransaction, Transaction, encode

from .worker_utils import Worker, produce, read_topic, worker_env

pytestmark = [pytest.mark.broker]

T0 = 1_530_662_400_000
GOOD = {
    "transaction_id": "x",
    "account_id": "acc-1",
    "terminal_id": "m-1",
    "amount_minor": 1234,
    "currency": "EUR",
    "event_time_ms": T0,
}

BAD = [
    pytest.param(b"\x00\xff garbage", "not_json", id="random-bytes"),
    pytest.param(b'{"transaction_id": "t", "account_id": ', "not_json", id="truncated-json"),
    pytest.param(b"[1, 2, 3]", "not_object", id="json-array"),
    pytest.param(orjson.dumps({k: v for k, v in GOOD.items() if k != "amount_minor"}), "missing_field", id="missing-amount"),
    pytest.param(orjson.dumps({**GOOD, "amount_minor": "12.34"}), "wrong_type", id="amount-as-string"),
    pytest.param(orjson.dumps({**GOOD, "amount_minor": -100}), "bad_amount", id="negative-amount"),
    pytest.param(b'{"transaction_id":"x","account_id":"acc-1","terminal_id":"m-1","amount_minor":NaN,"event_time_ms":1530662400000}', "not_json", id="nan-amount"),
    pytest.param(b'{"transaction_id":"x","account_id":"acc-1","terminal_id":"m-1","amount_minor":Infinity,"event_time_ms":1530662400000}', "not_json", id="infinite-amount"),
    pytest.param(orjson.dumps({**GOOD, "amount_minor": 10**14}), "bad_amount", id="absurd-amount"),
    pytest.param(b'{"transaction_id":"x","account_id":"acc-1","terminal_id":"m-1","amount_minor":1000000000000000000000000000000,"event_time_ms":1530662400000}', "wrong_type", id="amount-beyond-64-bit"),
    pytest.param(orjson.dumps({**GOOD, "event_time_ms": "2018-07-04 10:00"}), "wrong_type", id="unparseable-time"),
    pytest.param(orjson.dumps({**GOOD, "event_time_ms": 10**17}), "bad_timestamp", id="absurd-time"),
    pytest.param(orjson.dumps({**GOOD, "currency": "euro"}), "bad_currency", id="bad-currency"),
    pytest.param(orjson.dumps({**GOOD, "account_id": "a" * 1_000_000}), "too_large", id="1MB-string"),
    pytest.param(b"", "not_json", id="empty"),
    pytest.param(b"x" * 3_300_000, "too_large", id="3MB-payload-kept-truncated"),
]


def _valid(i: int) -> Transaction:
    return Transaction(**{**GOOD, "transaction_id": f"ok-{i}", "event_time_ms": T0 + i * 1000})


def test_bad_payloads_go_to_dead_letter_topic(broker, redis_url, tmp_path):
    env = worker_env(broker.url, redis_url, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    bad = [(p.values[0], p.values[1], p.id) for p in BAD]
    records: list[tuple[bytes, bytes]] = []
    for i, (payload, _, _) in enumerate(bad):
        records.append((b"acc-1", encode(_valid(i))))
        records.append((b"acc-1", payload))
    records.append((b"acc-1", encode(_valid(len(bad)))))
    try:
        worker.wait_ready()
        produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], records)
        n_valid = len(bad) + 1
        worker.wait_metric("fraud_transactions_scored_total", n_valid, timeout=120)
        worker.wait_metric("fraud_events_rejected_total", len(bad), timeout=60)
        worker.assert_alive()

        dead = [DeadLetter.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["DEAD_LETTER_TOPIC"])]
        assert [d.reason for d in dead] == [reason for _, reason, _ in bad]
        assert [d.raw_value for d in dead] == [payload[:2 * 2**20] for payload, _, _ in bad]
        assert [d.raw_size_bytes for d in dead] == [len(payload) for payload, _, _ in bad]
        assert [d.raw_truncated for d in dead] == [len(p) > 2 * 2**20 for p, _, _ in bad]
        assert all(d.source_topic == env["TRANSACTIONS_TOPIC"] for d in dead)
        assert [d.offset for d in dead] == [2 * i + 1 for i in range(len(bad))]
        for reason in {r for _, r, _ in bad}:
            expected = sum(1 for _, r, _ in bad if r == reason)
            assert worker.metric("fraud_events_rejected_total", reason=reason) == expected

        scored = [ScoredTransaction.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["SCORED_TOPIC"])]
        assert sorted(s.transaction.transaction_id for s in scored) == sorted(f"ok-{i}" for i in range(n_valid))
        assert all(0.0 <= s.score <= 1.0 and not math.isnan(s.score) for s in scored)
    finally:
        worker.stop()

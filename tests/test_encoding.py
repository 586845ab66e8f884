"""Avro encoding of the inputs, chosen per record by the ``fraud-encoding`` header: the
same validation and dead-lettering as JSON, unit by unit and through a real worker."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.encoding import ENCODING_HEADER, avro_schema, decode_avro, encode_avro
from app.events import (
    CONTRACTS,
    REJECT_REASONS,
    DeadLetter,
    Label,
    ScoredTransaction,
    Transaction,
    decode_label,
    decode_transaction,
)
from app.exceptions import InvalidEventError

from .worker_utils import Worker, read_topic, worker_env

T0 = 1_530_662_400_000
AVRO = f"avro/{CONTRACTS['transactions'].version}".encode()


def _tx(i: int, **over) -> dict:
    return {
        "transaction_id": f"tx-{i}", "account_id": f"acc-{i % 3}", "terminal_id": f"m-{i % 4}",
        "amount_minor": 1000 + i, "currency": "EUR", "event_time_ms": T0 + i * 60_000, **over,
    }


def test_avro_schema_is_generated_from_the_model():
    schema = avro_schema(Transaction)
    assert [f["name"] for f in schema["fields"]] == list(Transaction.model_fields)
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["amount_minor"] == "long" and types["transaction_id"] == "string"
    assert next(f for f in schema["fields"] if f["name"] == "currency")["default"] == "EUR"


def test_avro_record_is_read_as_its_json_would_be():
    for i in range(5):
        value = _tx(i)
        raw = encode_avro(Transaction, value)
        assert len(raw) < len(orjson.dumps(value)) / 2
        assert decode_transaction(raw, encoding=AVRO) == decode_transaction(orjson.dumps(value))
    label = {"transaction_id": "t", "account_id": "a", "terminal_id": "m", "is_fraud": True,
             "transaction_time_ms": T0, "label_time_ms": T0 + 1}
    raw = encode_avro(Label, label)
    assert decode_label(raw, encoding=f"avro/{CONTRACTS['transaction-labels'].version}".encode()) == Label(**label)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(_tx(1, amount_minor=-5), "bad_amount", id="negative-amount"),
        pytest.param(_tx(1, currency="euro"), "bad_currency", id="bad-currency"),
        pytest.param(_tx(1, account_id="a b"), "bad_id", id="bad-id"),
        pytest.param(_tx(1, event_time_ms=10**17), "bad_timestamp", id="absurd-time"),
    ],
)
def test_avro_values_get_the_reasons_json_gets(value, reason):
    for raw, encoding in ((encode_avro(Transaction, value), AVRO), (orjson.dumps(value), None)):
        with pytest.raises(InvalidEventError) as info:
            decode_transaction(raw, encoding=encoding)
        assert info.value.reason == reason


def test_bad_avro_and_unknown_encodings_are_bad_encoding():
    good = encode_avro(Transaction, _tx(1))
    for raw, encoding in [
        (good[:-3], AVRO),  # truncated
        (good + b"\x00", AVRO),  # bytes left over
        (good, b"avro/99"),  # a contract version this reader does not read
        (good, b"protobuf"),
        (b'{"transaction_id": "x"}', AVRO),  # JSON labelled as Avro
    ]:
        with pytest.raises(InvalidEventError) as info:
            decode_transaction(raw, encoding=encoding)
        assert info.value.reason == "bad_encoding", (raw, encoding)
    with pytest.raises(InvalidEventError) as info:
        decode_transaction(b"x" * 70_000, encoding=AVRO)
    assert info.value.reason == "too_large"
    with pytest.raises(ValueError, match="not a Transaction"):
        encode_avro(Transaction, {"transaction_id": 3})
    with pytest.raises(ValueError):
        decode_avro(Transaction, b"")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v, cut: encode_avro(Transaction, v)[:cut],
              st.builds(_tx, st.integers(0, 10**6)), st.integers(0, 60)),
    st.builds(lambda raw, flip, pos: raw[:pos] + bytes([flip]) + raw[pos + 1:],
              st.builds(lambda i: encode_avro(Transaction, _tx(i)), st.integers(0, 10**6)),
              st.integers(0, 255), st.integers(0, 40)),
))
def test_any_bytes_labelled_avro_give_a_transaction_or_a_known_reason(raw):
    try:
        tx = decode_transaction(raw, max_bytes=4096, encoding=AVRO)
    except InvalidEventError as err:
        assert err.reason in REJECT_REASONS and len(err.detail) <= 300
    else:
        assert isinstance(tx, Transaction)


# --- through a real worker -----------------------------------------------------------


async def _produce(bootstrap: str, topic: str, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, headers in records:
            await (await producer.send(topic, value, key=key, headers=headers))
    finally:
        await producer.stop()


@pytest.mark.broker
def test_worker_scores_avro_and_json_alike_and_dead_letters_bad_avro(broker, redis_url, tmp_path):
    """Avro and JSON transactions interleaved, some with a wrong key (re-keyed by the
    worker: the header must follow), and two bad Avro records: every valid one is
    scored once, the bad ones are dead letters with reason ``bad_encoding`` that keep
    their encoding header (a re-drive sends them as they came)."""
    env = worker_env(broker.url, redis_url, tmp_path)
    records = []
    n = 30
    for i in range(n):
        value = _tx(i)
        key = b"wrong-key" if i % 10 == 3 else value["account_id"].encode()
        if i % 2:
            records.append((key, encode_avro(Transaction, value), [(ENCODING_HEADER, AVRO)]))
        else:
            records.append((key, orjson.dumps(value), None))
    records.append((b"acc-0", b"\x02\xff\xff", [(ENCODING_HEADER, AVRO)]))
    records.append((b"acc-0", encode_avro(Transaction, _tx(99)), [(ENCODING_HEADER, b"avro/99")]))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        asyncio.run(_produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], records))
        worker.wait_metric("fraud_transactions_scored_total", n, timeout=180)
        worker.wait_metric("fraud_events_rejected_total", 2, timeout=60, reason="bad_encoding")
        assert worker.metric("fraud_transactions_rekeyed_total") == 3
    finally:
        worker.stop()
    scored = [ScoredTransaction.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["SCORED_TOPIC"])]
    assert Counter(s.transaction.transaction_id for s in scored) == Counter({f"tx-{i}": 1 for i in range(n)})
    dead = read_topic(broker.bootstrap, env["DEAD_LETTER_TOPIC"])
    assert sorted(DeadLetter.model_validate_json(r.value).reason for r in dead) == ["bad_encoding"] * 2
    assert sorted(dict(r.headers)[ENCODING_HEADER] for r in dead) == sorted([AVRO, b"avro/99"])

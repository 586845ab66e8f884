"""Hostile input, property-based (hypothesis): random bytes, truncated and oversized JSON,
wrong types, extreme numbers, unicode, deep nesting.

* The decoder and one pipeline batch (pure): 10,000 generated payloads; none raises
  anything but :class:`~app.exceptions.InvalidEventError` with a known reason, each
  rejected one becomes a dead letter that carries it whole, and the valid events
  around it are scored.
* A real worker on the real broker: 10,000 generated payloads interleaved with valid
  events; the worker never stops, every rejected payload is on the dead-letter topic
  with the reason the decoder gives, and every valid event is scored.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.events import (
    MAX_AMOUNT_MINOR,
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    REJECT_REASONS,
    DeadLetter,
    Transaction,
    decode_transaction,
    encode,
)
from app.exceptions import InvalidEventError
from app.decisions import Snapshot
from app.pipeline import RawRecord, featurize_accounts, receive_terminal_records, score_enriched

from . import fault_utils as fu
from .worker_utils import Worker, worker_env

#: Generated payloads per property (the issue asks for at least 10,000).
EXAMPLES = 10_000
#: MAX_EVENT_BYTES of the tests (smaller than the default 65,536, so that oversized
#: payloads stay a few KiB and 10,000 of them fit in a quick test).
MAX_BYTES = 4_096
T0 = 1_530_662_400_000
FIELDS = ("transaction_id", "account_id", "terminal_id", "amount_minor", "currency", "event_time_ms")

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
_ids = st.one_of(
    st.text(alphabet="ABCxyz0189_.:-", min_size=1, max_size=64),
    st.text(max_size=80),  # unicode, empty, too long
    st.integers(),
)
_extreme_ints = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, -1, MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR + 1, 2**63 - 1, 2**63, -(2**63),
                     MIN_EVENT_TIME_MS - 1, MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS - 1, MAX_EVENT_TIME_MS]),
    st.floats(),
)


@st.composite
def _transaction_like(draw) -> bytes:
    """A transaction object with some fields wrong, missing or extra."""
    obj = {
        "transaction_id": draw(_ids),
        "account_id": draw(_ids),
        "terminal_id": draw(_ids),
        "amount_minor": draw(_extreme_ints),
        "currency": draw(st.one_of(st.just("EUR"), st.text(max_size=5), _json)),
        "event_time_ms": draw(st.one_of(st.integers(MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS), _extreme_ints, st.text(max_size=20))),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
        obj.pop(name, None)
    if draw(st.booleans()):
        obj[draw(st.text(max_size=10))] = draw(_json)
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.sampled_from(FIELDS))] = draw(_json)
    return _dumps(obj)


def _dumps(obj) -> bytes:
    """JSON of ``obj``; Python's ``json`` for what orjson refuses (ints past 64 bits,
    NaN, Infinity: these then are not JSON a strict parser accepts)."""
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_payloads = st.one_of(
    st.binary(max_size=300),  # random bytes
    _transaction_like(),
    _transaction_like().flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])),  # truncated
    _json.map(_dumps),  # any JSON, mostly not an object
    st.integers(1, 5000).map(_deep),  # deep nesting
    st.integers(1, 2000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),  # unicode, lone surrogates
    st.integers(MAX_BYTES - 100, MAX_BYTES * 2).map(
        lambda n: orjson.dumps({"transaction_id": "x" * n, "account_id": "a"})
    ),  # oversized JSON
)


def _verdict(raw: bytes) -> str | Transaction:
    """The decoder's verdict: a Transaction, or the reason it was rejected."""
    try:
        return decode_transaction(raw, MAX_BYTES)
    except InvalidEventError as err:
        assert err.reason in REJECT_REASONS
        assert isinstance(err.detail, str) and len(err.detail) <= 300
        return err.reason


def _valid(i: int, account: str = "acc-h") -> bytes:
    return encode(
        Transaction(
            transaction_id=f"ok-{i}", account_id=account, terminal_id="m-1",
            amount_minor=1000 + i, currency="EUR", event_time_ms=T0 + i * 1000,
        )
    )


@pytest.fixture(scope="module")
def scorer():
    from app.config import Settings
    from app.scoring.model import Scorer
    from app.scoring.registry import default_version, load_model

    s = Settings()
    return Scorer(load_model(default_version(s.models_dir), s.models_dir))


def test_decoder_never_crashes():
    """10,000 generated payloads: a Transaction or InvalidEventError with a known reason."""
    seen = {"rejected": 0, "valid": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_payloads)
    def check(raw: bytes) -> None:
        verdict = _verdict(raw)
        if isinstance(verdict, str):
            seen["rejected"] += 1
        else:
            seen["valid"] += 1
            assert decode_transaction(encode(verdict)) == verdict  # round trip

    check()
    assert seen["rejected"] + seen["valid"] >= EXAMPLES
    assert seen["rejected"] > EXAMPLES // 2, seen


def test_batch_dead_letters_every_generated_payload_and_scores_the_rest(scorer):
    """The pipeline on 10,000 generated payloads interleaved with valid events, in
    batches of 500 as the agent runs them: each rejected payload becomes one dead letter
    with the decoder's reason that carries it whole, every valid event is scored."""
    payloads = _generate(EXAMPLES)
    verdicts = [_verdict(p) for p in payloads]
    records = []
    for i, raw in enumerate(payloads):
        records.append(RawRecord(_valid(i), b"acc-h", "transactions", 0, 2 * i, 0.0))
        records.append(RawRecord(raw, b"acc-h", "transactions", 0, 2 * i + 1, 0.0))
    states: dict = {}
    terminal_states: dict = {}
    dead, scored = [], []
    for start in range(0, len(records), 500):
        # both stages of the worker, as its agents call them
        accounts = featurize_accounts(records[start : start + 500], states.get, MAX_BYTES)
        states.update(accounts.states)
        dead += accounts.dead_letters
        forwarded = [RawRecord(e.to_bytes(), None, "by-terminal", 0, i, 0)
                     for i, e in enumerate(accounts.enriched)]
        intake = receive_terminal_records(forwarded, terminal_states.get, "transaction-labels")
        terminal_states.update(intake.states)
        result = score_enriched([item for _, item, _ in intake.arrived], terminal_states.get,
                                Snapshot.of(scorer, 0.5), 3)
        scored += [s.transaction.transaction_id for s in result.scored]
    expected = [(2 * i + 1, v) for i, v in enumerate(verdicts) if isinstance(v, str)]
    assert [(d.offset, d.reason) for d in dead] == expected
    for d in dead:
        raw = payloads[(d.offset - 1) // 2]
        assert d.raw_value == raw and d.raw_size_bytes == len(raw)
        assert DeadLetter.model_validate_json(encode(d)) == d  # it can be sent
    assert {f"ok-{i}" for i in range(len(payloads))} <= set(scored)


@functools.lru_cache(maxsize=2)
def _generate(n: int) -> tuple[bytes, ...]:
    """``n`` payloads drawn by hypothesis (deterministically), for the worker test."""
    out: list[bytes] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_payloads)
    def collect(raw: bytes) -> None:
        out.append(raw)

    collect()
    return tuple(out)


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]
) -> list[tuple[int, int]]:
    """Send ``records`` in order; the (partition, offset) each got. The worker may append
    to the same partition meanwhile (a re-keyed record), so offsets are not positions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 2**20, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        return [((md := await f).partition, md.offset) for f in futures]
    finally:
        await producer.stop()


@pytest.mark.broker
@pytest.mark.slow
def test_worker_survives_generated_payloads(broker, redis_url, tmp_path):
    payloads = _generate(EXAMPLES)
    assert len(payloads) >= EXAMPLES
    # a worker also dead-letters a decodable transaction timed after its arrival by more
    # than the allowed clock skew (produced now: the generated times reach 2100)
    from app.config import Settings

    skew_limit_ms = int(time.time() * 1000) + int(Settings().max_clock_skew_seconds * 1000)
    decoded = [_verdict(p) for p in payloads]
    future = [isinstance(v, Transaction) and v.event_time_ms > skew_limit_ms for v in decoded]
    # one of another account is first re-keyed (produced again under its account id), so
    # its dead letter names the re-keyed record's offset, not the payload's
    rekeyed_future = sum(f and v.account_id != "acc-h" for f, v in zip(future, decoded))
    verdicts = [
        ("future_timestamp" if v.account_id == "acc-h" else "rekeyed") if f else v
        for f, v in zip(future, decoded)
    ]
    records: list[tuple[bytes, bytes]] = []
    for i, raw in enumerate(payloads):
        records.append((b"acc-h", _valid(i)))
        records.append((b"acc-h", raw))
    records.append((b"acc-h", _valid(len(payloads))))
    rejected = [v for v in verdicts if isinstance(v, str)]
    valid_ids = {f"ok-{i}" for i in range(len(payloads) + 1)}
    generated_valid = {v.transaction_id for v in verdicts if not isinstance(v, str)}

    env = worker_env(broker.url, redis_url, tmp_path, MAX_EVENT_BYTES=str(MAX_BYTES))
    worker = Worker(env, tmp_path / "worker.log").start()
    started = time.monotonic()
    try:
        worker.wait_ready()
        placed = asyncio.run(_produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], records))
        worker.wait_metric("fraud_events_rejected_total", len(rejected), timeout=300)
        dead_records = asyncio.run(
            fu._read(broker.bootstrap, [env["DEAD_LETTER_TOPIC"]], 3.0, 120.0,
                     until=lambda rs: len(rs) >= len(rejected))
        )
        out = fu.collect(broker.bootstrap, env, valid_ids | generated_valid)
        worker.assert_alive()
        by_reason = {r: worker.metric("fraud_events_rejected_total", reason=r) for r in REJECT_REASONS}
    finally:
        worker.stop()
    # the log is not flooded: a line per reason and partition per interval (60 s), the
    # ones left out summarised; the topic and the metric above keep every record
    lines = (tmp_path / "worker.log").read_text(errors="replace").count("dead-lettered ")
    windows = 1 + int((time.monotonic() - started) // 60)
    keys = len({(d.reason, d.partition) for d in (DeadLetter.model_validate_json(r.value) for r in dead_records)})
    assert 0 < lines <= keys * windows, (lines, keys, windows, len(rejected))
    dead = [DeadLetter.model_validate_json(r.value) for r in dead_records]
    # every rejected payload, in order, with the decoder's reason and its bytes
    by_offset = {(d.partition, d.offset): d for d in dead}
    assert len(by_offset) == len(dead) == len(rejected)
    expected = [
        (placed[2 * i + 1], v) for i, v in enumerate(verdicts) if isinstance(v, str) and v != "rekeyed"
    ]
    assert [(o, by_offset[o].reason) for o, _ in expected] == expected
    assert sum(d.reason == "future_timestamp" for d in dead) == sum(future)
    assert len(dead) == len(expected) + rekeyed_future
    in_place = [p for p, v in zip(payloads, verdicts) if isinstance(v, str) and v != "rekeyed"]
    for (o, _), raw in zip(expected, in_place):
        d = by_offset[o]
        assert d.raw_size_bytes == len(raw)
        assert d.raw_value == raw[: 2 * 2**20]
    assert valid_ids <= set(out.scored), f"lost {len(valid_ids - set(out.scored))} valid events"
    assert generated_valid <= set(out.scored)
    assert sum(by_reason.values()) == len(rejected)
    fu.report("hostile-input-worker", {
        "payloads_generated": len(payloads), "rejected": len(rejected),
        "rejected_by_reason": {r: int(c) for r, c in by_reason.items() if c},
        "valid_interleaved": len(valid_ids), "generated_valid": len(generated_valid),
        "losses": len(valid_ids - set(out.scored)),
    })

"""A worker restores ``account_states`` from any changelog: the single-key records of
the version before batch records (one record per key and transaction), batch records
(:mod:`app.changelog`, one record per batch and partition), or a mix of both, on the
memory and the RocksDB store.

Real broker, real worker process. The changelog is written directly with aiokafka, in
large producer batches (the multi-record batches the Tansu end-offset correction is
for), each key in the partition its transactions go to. Then one new transaction per
account: the account features of its ``scored-transactions`` record are those of the
expected state of that account (exactly, 1e-9), so every key is compared, and
``fraud_table_accounts`` is the number of keys expected.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from app.changelog import BATCH_KEY_PREFIX, pack_changes
from app.events import ScoredTransaction, Transaction, encode
from app.features import AccountState
from app.features.extract import ACCOUNT_FEATURE_NAMES, extract_account

from . import fault_utils as fu
from .conftest import _create_topics
from .worker_utils import Worker, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 4
ACCOUNTS = 240
T0_MS = 1_530_662_400_000
DAY_MS = 86_400_000

_partitioner = DefaultPartitioner()


def _partition(account: str) -> int:
    parts = list(range(PARTITIONS))
    return _partitioner(account.encode(), parts, parts)


def _state(account: int, n: int, version: int) -> AccountState:
    rng = random.Random(account * 1000 + version)
    times = sorted(T0_MS + rng.randrange(0, 20 * DAY_MS) for _ in range(n))
    return AccountState(
        times_ms=times,
        amounts_minor=[rng.randrange(100, 90_000) for _ in range(n)],
        ids=[f"h{account}-{version}-{k}" for k in range(n)],
    )


def _key(account: str) -> bytes:
    return json.dumps(account).encode()  # the table's key serializer: JSON strings


def _writes(kind: str) -> list[tuple[int, list[tuple[bytes, bytes | None]], bool]]:
    """The changelog to write, as ``(partition, changes, batch)`` in write order
    (``batch``: one batch record holding ``changes``, else one single-key record per
    change). The state it must restore is the last change of each key
    (:func:`_expected`)."""
    accounts = [f"acc-{i}" for i in range(ACCOUNTS)]
    by_part: dict[int, list[str]] = {}
    for a in accounts:
        by_part.setdefault(_partition(a), []).append(a)
    writes: list[tuple[int, list[tuple[bytes, bytes | None]], bool]] = []

    def value(a: str, version: int) -> bytes:
        i = int(a.split("-")[1])
        return _state(i, 3 + (i + version) % 9, version).to_bytes()

    for p, accs in by_part.items():
        if kind == "old":  # the version before: a record per key and transaction
            for version in range(3):
                writes.append((p, [(_key(a), value(a, version)) for a in accs], False))
        elif kind == "new":  # a batch record per micro-batch and partition
            for version in range(3):
                for lo in range(0, len(accs), 25):
                    chunk = accs[lo + version : lo + 25]
                    writes.append((p, [(_key(a), value(a, version)) for a in chunk], True))
        else:  # a changelog of the version before, continued by this one
            writes.append((p, [(_key(a), value(a, 0)) for a in accs], False))
            half = accs[: len(accs) // 2]
            writes.append((p, [(_key(a), value(a, 1)) for a in half], True))
            writes.append((p, [(_key(a), value(a, 2)) for a in half[::3]], False))
            writes.append((p, [(_key(half[1]), None)], False))  # a tombstone after a batch
            writes.append((p, [(_key(half[2]), None), (_key(accs[-1]), value(accs[-1], 3))], True))
            writes.append((p, [(_key(half[2]), value(half[2], 4))], True))  # back again
    return writes


def _expected(writes) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for _, changes, _ in writes:
        for key, value in changes:
            if value is None:
                state.pop(json.loads(key), None)
            else:
                state[json.loads(key)] = value
    return state


async def _write_changelog(bootstrap: str, topic: str, writes) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_batch_size=1 << 20, linger_ms=20, acks="all"
    )
    await producer.start()
    try:
        futures = []
        for n, (p, changes, batch) in enumerate(writes):
            if batch:
                key = _key(f"{BATCH_KEY_PREFIX}test:{n}")
                for packed in pack_changes(changes):
                    futures.append(await producer.send(topic, packed, key=key, partition=p))
            else:
                for key, value in changes:
                    futures.append(await producer.send(topic, value, key=key, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _send_transactions(bootstrap: str, topic: str, txs: list[Transaction]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for tx in txs:
            await producer.send(topic, encode(tx), key=tx.account_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("old", id="changelog-of-the-version-before"),
        pytest.param("new", id="batch-records"),
        pytest.param("mixed", id="old-records-then-batch-records"),
    ],
)
def test_worker_restores_every_key_from_old_new_and_mixed_changelogs(
    broker, redis_url, tmp_path: Path, store: str, kind: str
):
    env = worker_env(
        broker.url, redis_url, tmp_path,
        APP_ID=f"restore-{uuid.uuid4().hex[:10]}",
        STORE_URL=f"{store}://",
        TOPIC_PARTITIONS=str(PARTITIONS),
        LABEL_WAIT_MAX_SECONDS="1",
    )
    changelog = f"{env['APP_ID']}-account_states-changelog"
    asyncio.run(_create_topics(broker.bootstrap, [env["TRANSACTIONS_TOPIC"], changelog], PARTITIONS))
    writes = _writes(kind)
    expected = _expected(writes)
    assert any(v is None for _, ch, _ in writes for _, v in ch) == (kind == "mixed")
    asyncio.run(_write_changelog(broker.bootstrap, changelog, writes))

    # one new transaction per account, a day after everything in its history
    txs = [
        Transaction(
            transaction_id=f"new-{i}", account_id=f"acc-{i}", terminal_id=f"term-{i % 7}",
            amount_minor=1234 + i, event_time_ms=T0_MS + 25 * DAY_MS + i * 1000,
        )
        for i in range(ACCOUNTS)
    ]
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout=180)
        restored = worker.wait_metric("fraud_table_accounts", len(expected), timeout=120)
        asyncio.run(_send_transactions(broker.bootstrap, env["TRANSACTIONS_TOPIC"], txs))
        worker.wait_metric("fraud_transactions_scored_total", len(txs), timeout=180)
    finally:
        worker.stop()
    assert restored == len(expected)
    ids = {t.transaction_id for t in txs}
    records = asyncio.run(fu._read(broker.bootstrap, [env["SCORED_TOPIC"]], 2.0, 60.0))
    scored = {
        st.transaction.transaction_id: st
        for st in (ScoredTransaction.model_validate_json(r.value) for r in records)
        if st.transaction.transaction_id in ids
    }
    assert set(scored) == ids
    wrong = []
    for tx in txs:
        raw = expected.get(tx.account_id)
        state = AccountState.from_bytes(raw) if raw else AccountState()
        want = dict(zip(ACCOUNT_FEATURE_NAMES, extract_account(state, tx)))
        got = scored[tx.transaction_id].features
        if any(abs(got[name] - want[name]) > 1e-9 for name in ACCOUNT_FEATURE_NAMES):
            wrong.append(tx.account_id)
    assert wrong == [], f"{len(wrong)} of {len(txs)} accounts restored wrong: {wrong[:10]}"

"""Event time in the first stage, as plain Python (the worker-level forms are in
tests/test_operations.py): out-of-order arrival within the allowed lateness, redeliveries,
and event times from a bad clock.

The rule these tests hold the pipeline to (docs/guarantees.md, "Event time"):

* a transaction's account features are those of its account's history *before it in
  event time* among the transactions that arrived before it; so a transaction that
  arrives after a later one of its account has exact features, and each later
  transaction already featurized without it is counted once
  (``AccountBatch.revised``, ``fraud_account_features_revised_total``): the count is
  exactly the set of transactions whose features differ from the offline builder's;
* a redelivery is a duplicate, never late or out of order;
* an event time later than the record's Kafka timestamp (or its arrival) by more than
  the allowed clock skew is dead-lettered (``future_timestamp``) and changes no state.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.data.handbook import to_transactions
from app.data.simulate import simulate
from app.events import Transaction, encode
from app.features import ACCOUNT_FEATURE_NAMES, AccountState
from app.features.offline import build_features
from app.pipeline import RawRecord, featurize_accounts

N_ACCOUNT = len(ACCOUNT_FEATURE_NAMES)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def txs() -> list[Transaction]:
    df = simulate(n_customers=80, n_terminals=50, start_date="2018-04-01", n_days=20, seed=11)
    return list(to_transactions(df))


def _stream(order: list[Transaction], batch: int = 137, skew_ms: int | None = None,
            timestamps: dict[str, int] | None = None):
    """Run stage 1 over ``order`` (one partition, batches of ``batch``); returns the
    account features per id, the states, and the summed counters."""
    states: dict[str, AccountState] = {}
    feats: dict[str, list[float]] = {}
    totals = {"late": 0, "out_of_order": 0, "revised": 0, "duplicates": 0, "dead": []}
    offset = itertools.count()
    for i in range(0, len(order), batch):
        recs = [
            RawRecord(encode(tx), tx.account_id.encode(), "transactions", 0, next(offset),
                      received_ms=1_900_000_000_000,
                      timestamp_ms=(timestamps or {}).get(tx.transaction_id, tx.event_time_ms))
            for tx in order[i : i + batch]
        ]
        out = featurize_accounts(recs, states.get, now_ms=0, allowed_lateness_ms=HOUR_MS,
                                 max_clock_skew_ms=skew_ms)
        states.update(out.states)
        for e in out.enriched:
            feats.setdefault(e.transaction.transaction_id, e.account_features)
        for k in ("late", "out_of_order", "revised", "duplicates"):
            totals[k] += getattr(out, k)
        totals["dead"] += out.dead_letters
    return feats, states, totals


def _reversed_in_blocks(txs: list[Transaction], block_ms: int) -> list[Transaction]:
    blocks: dict[int, list[Transaction]] = {}
    for tx in txs:
        blocks.setdefault(tx.event_time_ms // block_ms, []).append(tx)
    return [tx for k in sorted(blocks) for tx in reversed(blocks[k])]


def test_in_order_arrival_gives_the_offline_features_and_counts_nothing(txs):
    feats, _, totals = _stream(txs)
    expected = build_features(txs)[:, :N_ACCOUNT]
    got = np.array([feats[tx.transaction_id] for tx in txs])
    assert np.abs(got - expected).max() <= 1e-9
    assert (totals["late"], totals["out_of_order"], totals["revised"]) == (0, 0, 0)


@pytest.mark.parametrize("block_minutes", [5, 30], ids=["5-min-blocks", "30-min-blocks"])
def test_reordering_within_the_lateness_is_counted_exactly(txs, block_minutes):
    """Reversing the order inside blocks shorter than the allowed lateness: the
    transactions that arrive after a later one of their account get the offline
    features; the ones whose features miss an earlier transaction are exactly those
    counted as revised (each once), and nothing is late."""
    order = _reversed_in_blocks(txs, block_minutes * 60_000)
    assert order != txs
    feats, states, totals = _stream(order)
    expected = build_features(txs)[:, :N_ACCOUNT]
    got = np.array([feats[tx.transaction_id] for tx in txs])
    differs = {txs[i].transaction_id for i in np.flatnonzero(np.abs(got - expected).max(axis=1) > 1e-9)}
    revised = {i for s in states.values() for i in s.revised}
    assert differs, "the reordering must change some features"
    assert differs <= revised
    # a revised transaction whose features still equal offline: only when the missed
    # one falls outside every window it reads (none here: all are within 30 days and
    # seconds_since_previous_tx or a count moves) - so the sets are equal
    assert revised == differs
    assert totals["revised"] == len(differs)
    assert totals["late"] == 0
    assert totals["out_of_order"] > 0


def test_redeliveries_are_duplicates_not_late(txs):
    part = txs[:2_000]
    feats, _, totals = _stream(part + part)
    assert totals["duplicates"] == len(part)
    assert (totals["late"], totals["out_of_order"], totals["revised"]) == (0, 0, 0)


def test_late_beyond_the_lateness_is_counted_late_and_out_of_order(txs):
    acct = txs[0].account_id
    mine = [tx for tx in txs if tx.account_id == acct]
    assert len(mine) >= 3
    first, rest = mine[0], mine[1:]
    assert rest[-1].event_time_ms - first.event_time_ms > HOUR_MS
    _, states, totals = _stream(rest + [first])
    assert totals["late"] == 1 and totals["out_of_order"] == 1
    in_window = [t for t in rest if t.event_time_ms <= first.event_time_ms + 30 * 86_400_000]
    assert totals["revised"] == len(in_window)


def test_a_far_future_transaction_is_dead_lettered_and_wipes_nothing(txs):
    """One transaction dated 2099 per account, then the normal stream: without the
    bound the accounts' states expire their whole real history; with it the
    far-future records are dead-lettered and every feature equals offline."""
    accounts = sorted({tx.account_id for tx in txs})[:50]
    future = [
        Transaction(transaction_id=f"future-{a}", account_id=a, terminal_id="m-x",
                    amount_minor=100, event_time_ms=4_070_908_800_000)  # 2099-01-01
        for a in accounts
    ]
    # the producer's clock is bad too: Kafka timestamp = the forged event time
    stamps = {tx.transaction_id: tx.event_time_ms for tx in future}
    feats, states, totals = _stream(future + txs, skew_ms=300_000, timestamps=stamps)
    assert [d.reason for d in totals["dead"]] == ["future_timestamp"] * len(future)
    assert {d.raw_value for d in totals["dead"]} == {encode(tx) for tx in future}
    expected = build_features(txs)[:, :N_ACCOUNT]
    got = np.array([feats[tx.transaction_id] for tx in txs])
    assert np.abs(got - expected).max() <= 1e-9
    assert totals["late"] == 0
    # the control: without the bound, the same stream blinds those accounts
    feats_unbounded, _, totals_unbounded = _stream(future + txs, skew_ms=None)
    mine = [i for i, tx in enumerate(txs) if tx.account_id in set(accounts)]
    got_unbounded = np.array([feats_unbounded[txs[i].transaction_id] for i in mine])
    assert totals_unbounded["late"] == len(mine)  # every later one of theirs counted late
    assert (np.abs(got_unbounded - expected[mine]).max(axis=1) > 1e-9).sum() > len(mine) // 2


def test_a_record_timestamp_in_the_past_bounds_the_event_time():
    """A replayed record's Kafka timestamp (its event time) bounds it even when it
    arrives years later; within the skew it passes."""
    tx = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
                     amount_minor=100, event_time_ms=1_530_000_000_000)
    ok = RawRecord(encode(tx), b"a1", "transactions", 0, 0, received_ms=1_900_000_000_000,
                   timestamp_ms=tx.event_time_ms - 299_000)
    late_clock = RawRecord(encode(tx), b"a1", "transactions", 0, 1,
                           received_ms=1_900_000_000_000, timestamp_ms=tx.event_time_ms - 301_000)
    out = featurize_accounts([ok], lambda a: None, now_ms=0, max_clock_skew_ms=300_000)
    assert not out.dead_letters and len(out.enriched) == 1
    out = featurize_accounts([late_clock], lambda a: None, now_ms=0, max_clock_skew_ms=300_000)
    assert [d.reason for d in out.dead_letters] == ["future_timestamp"] and not out.states


def test_revised_ids_survive_the_table_encoding():
    s = AccountState([10, 20, 30], [1, 2, 3], ["a", "b", "c"])
    s.revise_after(15)
    assert AccountState.from_bytes(s.to_bytes()) == s
    assert AccountState.from_bytes(AccountState([10], [1], ["a"]).to_bytes()).revised == []
    odd = AccountState([10, 20], [1, 2], ["a", "b"], ["b"])
    odd.amounts_minor[0] = -1  # forces the JSON form
    assert AccountState.from_bytes(odd.to_bytes()) == odd

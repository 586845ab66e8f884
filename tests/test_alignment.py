"""Event-time alignment of the scoring stage (:mod:`app.alignment`), with the pure
pipeline functions the agents call, under adversarial delivery orders.

A simulated handbook history is split as the service splits it: transactions into
account partitions (first stage), labels and the first stage's output into terminal
partitions (scoring stage). A seeded scheduler then delivers batches in a random
order: one account partition runs days ahead of another, labels overtake or trail the
transactions, batches have random sizes. Whatever the order, every transaction must
be released once, with exactly the features of the offline builder that training
uses (:func:`app.features.offline.build_features`). The broker version of this check
is ``tests/test_parity.py``.
"""

from __future__ import annotations

import random
import zlib
from collections import deque

import numpy as np
import orjson
import pytest

from app.alignment import EventTimeAligner
from app.decisions import Snapshot
from app.data.handbook import to_labels, to_transactions
from app.data.simulate import simulate
from app.events import Transaction, encode
from app.features import FEATURE_NAMES, AccountState, TerminalState
from app.features.offline import build_features
from app.features.state import DAY_MS
from app.pipeline import (
    Enriched,
    RawRecord,
    Watermark,
    featurize_accounts,
    forward_records,
    receive_terminal_records,
    score_enriched,
)

TX, LABELS, BY_TERMINAL = "transactions", "transaction-labels", "by-terminal"
DELAY_MS = 7 * DAY_MS


class _ZeroScorer:
    version = "test"

    def score_many(self, X):
        return np.zeros(len(X))

    def explain_many(self, X, top_k=3):
        return [[] for _ in range(len(X))]


def _partition(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


@pytest.fixture(scope="module")
def history():
    df = simulate(n_customers=60, n_terminals=40, start_date="2018-04-01", n_days=50, seed=3)
    txs = list(to_transactions(df))
    labels = sorted(to_labels(df, DELAY_MS), key=lambda lb: lb.label_time_ms)
    expected = build_features(txs, labels)
    return txs, labels, expected


def _run(txs, labels, seed: int, n_src: int = 3, n_dst: int = 2):
    rng = random.Random(seed)
    src = [deque() for _ in range(n_src)]  # (offset, raw) per account partition
    for tx in txs:
        p = _partition(tx.account_id, n_src)
        src[p].append(encode(tx))
    dst: list[deque] = [deque() for _ in range(n_dst)]  # (topic, raw) per scoring partition
    label_q = [deque() for _ in range(n_dst)]
    for lb in labels:
        label_q[_partition(lb.terminal_id, n_dst)].append(encode(lb))
    offsets = {}

    def record(topic, p, raw):
        off = offsets.get((topic, p), 0)
        offsets[(topic, p)] = off + 1
        return RawRecord(raw, None, topic, p, off, 0)

    accounts: dict[str, AccountState] = {}
    terminals: dict[str, TerminalState] = {}
    latest = [0] * n_src
    aligner = EventTimeAligner(n_sources=n_src, delay_ms=DELAY_MS, stall_seconds=1e9)
    released: dict[str, dict[str, float]] = {}

    def stage1(p: int) -> None:
        batch = [record(TX, p, src[p].popleft()) for _ in range(min(len(src[p]), rng.randint(1, 400)))]
        for rec in batch:  # featurize_accounts keys records by account id
            rec.key = orjson.loads(rec.value)["account_id"].encode()
        out = featurize_accounts(batch, accounts.get, now_ms=0)
        accounts.update(out.states)
        # micro-batches (max_items small so a partition's share spans several records)
        for q, raw in forward_records(out.enriched, lambda t: _partition(t, n_dst), max_items=7):
            dst[q].append(raw)
        latest[p] = max(latest[p], out.event_times.get(p, 0))
        wm = Watermark(p, latest[p], caught_up=not src[p]).to_bytes()
        for q in range(n_dst):
            dst[q].append(wm)

    def stage2(q: int, from_labels: bool) -> None:
        queue, topic = (label_q[q], LABELS) if from_labels else (dst[q], BY_TERMINAL)
        batch = [record(topic, q, queue.popleft()) for _ in range(min(len(queue), rng.randint(1, 300)))]
        intake = receive_terminal_records(batch, terminals.get, LABELS, aligner.keep_from_ms, now_ms=0)
        terminals.update(intake.states)
        for p, wm in intake.watermarks:
            aligner.on_watermark(p, wm.source, wm.event_time_ms, wm.caught_up)
        for p, t in intake.label_times.items():
            aligner.on_label_time(p, t)
        for p, item, _ in intake.arrived:
            aligner.add(p, item, item.transaction.event_time_ms, now_s=0.0)
        done = aligner.release(now_s=0.0)
        assert not any(r.timed_out for r in done)
        scored = score_enriched([r.item for r in done], terminals.get, Snapshot.of(_ZeroScorer(), 1.0), 0)
        for st in scored.scored:
            assert st.transaction.transaction_id not in released, "released twice"
            released[st.transaction.transaction_id] = st.features

    # skewed speeds: each partition (and the labels) progress at their own random pace
    speed_src = [rng.uniform(0.2, 3.0) for _ in range(n_src)]
    speed_dst = [rng.uniform(0.2, 3.0) for _ in range(2 * n_dst)]
    while any(src) or any(dst) or any(label_q):
        actions = [(w, ("s1", p)) for p, w in enumerate(speed_src) if src[p]]
        actions += [(speed_dst[q], ("s2", q, False)) for q in range(n_dst) if dst[q]]
        actions += [(speed_dst[n_dst + q], ("s2", q, True)) for q in range(n_dst) if label_q[q]]
        weights, choices = zip(*actions)
        action = rng.choices(choices, weights)[0]
        if action[0] == "s1":
            stage1(action[1])
        else:
            stage2(action[1], action[2])
    assert aligner.pending() == 0
    return released


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_any_delivery_order_gives_the_offline_features(history, seed):
    txs, labels, expected = history
    released = _run(txs, labels, seed)
    assert len(released) == len(txs)
    got = np.array([[released[tx.transaction_id][n] for n in FEATURE_NAMES] for tx in txs])
    risk = FEATURE_NAMES.index("terminal_risk_30d_delay_7d")
    assert (expected[:, risk] > 0).any(), "the history must exercise the label-driven features"
    mismatched = np.flatnonzero(np.abs(got - expected).max(axis=1) > 1e-9)
    assert mismatched.size == 0, f"{mismatched.size} of {len(txs)} differ"


def test_without_alignment_skew_changes_features(history):
    """The control: released at once (no waiting), the same skewed deliveries give
    other features — the alignment above is what makes them exact."""
    txs, labels, expected = history
    import app.alignment as alignment

    original = alignment.EventTimeAligner._cause
    alignment.EventTimeAligner._cause = lambda self, p, wm, t, now_s: (True, None)
    try:
        released = _run(txs, labels, seed=0)
    finally:
        alignment.EventTimeAligner._cause = original
    got = np.array([[released[tx.transaction_id][n] for n in FEATURE_NAMES] for tx in txs])
    assert (np.abs(got - expected).max(axis=1) > 1e-9).sum() > 0


def test_aligner_rejects_bad_parameters():
    with pytest.raises(ValueError, match="n_sources"):
        EventTimeAligner(0, 1, 1.0)
    with pytest.raises(ValueError, match="delay_ms"):
        EventTimeAligner(1, -1, 1.0)
    with pytest.raises(ValueError, match="stall_seconds"):
        EventTimeAligner(1, 1, -1.0)
    with pytest.raises(ValueError, match="source"):
        EventTimeAligner(2, 1, 1.0).on_watermark(0, source=2, event_time_ms=0, caught_up=False)


def test_a_slow_but_moving_watermark_is_waited_for_however_long():
    """A busy machine or a backlog slows the watermarks: no wall-clock deadline
    releases a transaction while its source advances, even long after it came."""
    a = EventTimeAligner(n_sources=1, delay_ms=10, stall_seconds=2.0)
    a.on_label_time(0, 10**6, now_s=0.0)
    a.add(0, "x", event_time_ms=100, now_s=0.0)
    for step in range(1, 60):  # one advance every second, for a minute, never enough
        a.on_watermark(0, source=0, event_time_ms=step, caught_up=False, now_s=float(step))
        a.on_input_idle(0, True)
        assert a.release(now_s=step + 0.9) == []
    a.on_watermark(0, source=0, event_time_ms=91, caught_up=False, now_s=61.0)
    [r] = a.release(now_s=61.0)
    assert (r.item, r.timed_out, r.cause) == ("x", False, None)


def test_a_stalled_source_releases_with_its_cause_only_once_the_input_is_read():
    a = EventTimeAligner(n_sources=2, delay_ms=10, stall_seconds=2.0)
    a.on_label_time(0, 10**6, now_s=0.0)
    a.on_watermark(0, source=0, event_time_ms=0, caught_up=True, now_s=0.0)
    a.on_watermark(0, source=1, event_time_ms=5, caught_up=False, now_s=0.0)
    a.add(0, "x", event_time_ms=100, now_s=0.0)
    assert a.release(now_s=10.0) == []  # input not read to its end: progress may be there
    a.on_input_idle(0, True)
    [r] = a.release(now_s=10.0)
    assert (r.item, r.cause, r.timed_out, r.waited_seconds) == ("x", "watermark", True, 10.0)


def test_a_source_never_heard_from_stalls_from_the_assignment_on():
    a = EventTimeAligner(n_sources=2, delay_ms=10, stall_seconds=5.0)
    a.on_label_time(0, 10**6, now_s=100.0)
    a.on_watermark(0, source=0, event_time_ms=0, caught_up=True, now_s=100.0)
    a.add(0, "x", event_time_ms=100, now_s=100.0)
    a.on_input_idle(0, True)
    assert a.release(now_s=104.0) == []
    assert [r.cause for r in a.release(now_s=105.5)] == ["watermark"]


def test_labels_that_stop_coming_stall_only_past_the_limit():
    a = EventTimeAligner(n_sources=1, delay_ms=10, stall_seconds=3.0)
    a.on_watermark(0, source=0, event_time_ms=0, caught_up=True, now_s=0.0)
    a.on_label_time(0, 50, now_s=0.0)
    a.add(0, "x", event_time_ms=100, now_s=0.0)
    a.on_input_idle(0, True)
    assert a.release(now_s=2.0) == []
    assert [r.cause for r in a.release(now_s=3.5)] == ["labels"]


def test_zero_stall_seconds_turns_the_alignment_off():
    a = EventTimeAligner(n_sources=3, delay_ms=10, stall_seconds=0.0)
    a.add(0, "x", event_time_ms=100, now_s=0.0)
    [r] = a.release(now_s=0.0)
    assert (r.item, r.timed_out) == ("x", False)


def test_idle_labels_partition_does_not_hold_live_traffic():
    a = EventTimeAligner(n_sources=1, delay_ms=10, stall_seconds=60.0)
    a.on_watermark(0, source=0, event_time_ms=0, caught_up=True)
    a.add(0, "live", event_time_ms=100, now_s=0.0)
    assert a.release(now_s=0.1) == []  # no label timed >= 100 seen
    a.on_labels_idle(0, True)
    assert [r.item for r in a.release(now_s=0.2)] == ["live"]


def test_revoked_partitions_drop_their_held_transactions():
    a = EventTimeAligner(n_sources=1, delay_ms=10, stall_seconds=60.0)
    a.add(0, "a", 100, 0.0)
    a.add(1, "b", 100, 0.0)
    assert a.revoke([1]) == ["b"]
    assert a.pending() == 1 and a.pending_partitions() == [0]


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"wm": "x"}', b'{"tx": {}}', b'{"f": []}', b"null"],
    ids=["empty", "not-json", "list", "bad-watermark", "tx-without-fields", "no-tx", "null"],
)
def test_a_foreign_record_on_the_internal_topic_is_dead_lettered(raw):
    """Stage 2's internal topic is written by the service; a record that is not one of
    its records goes to the dead-letter topic instead of stopping the worker."""
    out = receive_terminal_records([RawRecord(raw, None, BY_TERMINAL, 0, 7, 0)], lambda _t: None,
                                   LABELS, now_ms=0)
    [dead] = out.dead_letters
    assert (dead.reason, dead.offset, dead.raw_value) == ("invalid", 7, raw)
    assert not out.arrived and not out.watermarks


def test_a_micro_batch_with_a_bad_item_is_dead_lettered_whole():
    """A by-terminal record is one unit: a malformed item rejects the record (dead
    letter with its raw bytes), and nothing of it reaches terminal state."""
    good = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
                       amount_minor=100, event_time_ms=1_530_000_000_000)
    [(q, raw)] = forward_records([Enriched(good, [0.0], 0)], lambda t: 0)
    body = orjson.loads(raw)
    body["b"].append({"tx": {"terminal_id": "m1"}, "f": [], "r": 0})  # no event time
    bad = orjson.dumps(body)
    intake = receive_terminal_records(
        [RawRecord(raw, None, BY_TERMINAL, q, 0, 0), RawRecord(bad, None, BY_TERMINAL, q, 1, 0)],
        lambda _t: None, LABELS, now_ms=0)
    assert [(p, e.transaction.transaction_id, i) for p, e, i in intake.arrived] == [(0, "t1", 0)]
    assert [(d.reason, d.offset, d.raw_value) for d in intake.dead_letters] == [("invalid", 1, bad)]
    assert intake.states["m1"].ids == ["t1"]

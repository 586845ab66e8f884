"""End to end: real Tansu broker, real Redis, a real worker process.

Three days of handbook transactions are replayed; every transaction that the same model
scores at or above the threshold offline must yield exactly one alert with the right
content, no other transaction may yield one, and a second replay of the same days must
yield no new alert.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest

from app.config import Settings
from app.events import Alert, ScoredTransaction
from app.features import FEATURE_NAMES
from app.features.offline import features_frame
from app.replay import replay_frame
from app.scoring.model import Scorer
from app.scoring.registry import default_version, load_model

from .datasets import handbook_days
from .worker_utils import Worker, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.both_brokers]


def test_replay_alerts_exactly_once(broker, redis_url, tmp_path):
    df = handbook_days("2018-04-01", 3)
    n = len(df)
    settings = Settings()
    scorer = Scorer(load_model(default_version(settings.models_dir), settings.models_dir))
    threshold = 0.5
    feats = features_frame(df, labels_delay_days=None)  # this replay sends no labels
    scores = scorer.score_many(feats[list(FEATURE_NAMES)].to_numpy())
    expected = {
        str(t): (float(s), row)
        for t, s, row in zip(df["TRANSACTION_ID"], scores, feats[list(FEATURE_NAMES)].to_numpy())
        if s >= threshold
    }
    assert expected, "the slice must contain transactions the model alerts on"

    env = worker_env(broker.url, redis_url, tmp_path, ALERT_THRESHOLD=str(threshold))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        run = Settings(
            kafka_broker_url=broker.url,
            transactions_topic=env["TRANSACTIONS_TOPIC"],
            labels_topic=env["LABELS_TOPIC"],
        )
        stats = asyncio.run(replay_frame(df, run, labels=False))
        assert stats.transactions == n
        worker.wait_metric("fraud_transactions_scored_total", n)

        alerts = [Alert.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["ALERTS_TOPIC"])]
        counts = Counter(a.alert_id for a in alerts)
        assert set(counts) == set(expected)
        assert max(counts.values()) == 1
        by_id = {r["TRANSACTION_ID"]: r for r in df.to_dict("records")}
        for a in alerts:
            score, row = expected[a.alert_id]
            assert a.score == pytest.approx(score, abs=1e-9)
            assert np.allclose([a.features[k] for k in FEATURE_NAMES], row, rtol=0, atol=1e-9)
            assert a.model_version == scorer.version
            src = by_id[int(a.alert_id)]
            assert a.transaction.account_id == str(src["CUSTOMER_ID"])
            assert a.transaction.terminal_id == str(src["TERMINAL_ID"])
            assert a.transaction.amount_minor == round(src["TX_AMOUNT"] * 100)
            assert a.event_time_ms == a.transaction.event_time_ms
            assert a.alert_time_ms >= a.event_time_ms
            assert 0 < len(a.reasons) <= 3
            assert a.reasons[0].feature in FEATURE_NAMES

        scored = read_topic(broker.bootstrap, env["SCORED_TOPIC"])
        assert len({ScoredTransaction.model_validate_json(r.value).transaction.transaction_id for r in scored}) == n

        # a second replay of the same days: scored again, no new alert
        stats = asyncio.run(replay_frame(df, run, labels=False, create_topics=False))
        assert stats.transactions == n
        worker.wait_metric("fraud_transactions_scored_total", 2 * n)
        assert worker.metric("fraud_duplicate_transactions_total") == n
        assert worker.metric("fraud_alerts_suppressed_total") == len(expected)
        again = read_topic(broker.bootstrap, env["ALERTS_TOPIC"])
        assert len(again) == len(alerts)
        assert worker.metric("fraud_alerts_total") == len(expected)
    finally:
        worker.stop()


def test_restarted_worker_restores_its_table(broker, redis_url, tmp_path):
    """A worker stopped and started again recovers ``account_states`` from its changelog
    (with normal producer batching: recovery probes the true end offsets on Tansu) and
    keeps processing: the
    same transactions replayed again (without labels) are all recognised as duplicates,
    no alert is raised twice, and none waits for a label (the labels partitions were
    read to their end before the restart)."""
    df = handbook_days("2018-04-01", 2)
    df = df[df["CUSTOMER_ID"] % 4 == 0].reset_index(drop=True)
    n = len(df)
    env = worker_env(broker.url, redis_url, tmp_path)
    run = Settings(
        kafka_broker_url=broker.url,
        transactions_topic=env["TRANSACTIONS_TOPIC"],
        labels_topic=env["LABELS_TOPIC"],
    )
    first = Worker(env, tmp_path / "worker-1.log").start()
    try:
        first.wait_ready()
        asyncio.run(replay_frame(df, run, labels=True))
        first.wait_metric("fraud_transactions_scored_total", n)
        first.wait_metric("fraud_labels_consumed_total", n)
        accounts = first.metric("fraud_table_accounts")
        alerts = first.metric("fraud_alerts_total")
    finally:
        first.stop()
    second = Worker(env, tmp_path / "worker-2.log").start()
    try:
        second.wait_ready()
        asyncio.run(replay_frame(df, run, labels=False, create_topics=False))
        second.wait_metric("fraud_transactions_scored_total", n)
        time.sleep(3)  # processing is at least once: the first worker's last
        # uncommitted events (if any) come again, before the replayed ones
        scored = second.metric("fraud_transactions_scored_total")
        assert scored >= n
        # every transaction the restarted worker saw was already in its restored state
        assert second.metric("fraud_duplicate_transactions_total") == scored
        assert second.metric("fraud_table_accounts") == accounts > 0
        assert second.metric("fraud_alerts_total") == 0
        assert second.metric("fraud_alerts_suppressed_total") >= alerts
        # the labels partitions, read to their end before the restart and quiet since,
        # count as idle: nothing waited for the LABEL_WAIT_MAX_SECONDS bound
        assert second.metric("fraud_alignment_timeouts_total") == 0
        second.assert_alive()
    finally:
        second.stop()

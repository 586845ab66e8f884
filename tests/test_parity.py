"""Parity: the stream computes exactly the features and scores training sees.

At least 14 days of the shared handbook file (simulated data without ``../shared``) are
replayed with their labels (7 days later, in event-time order) through the real broker
and a real worker with ``scored-transactions`` on. Every transaction's features and
score on that topic must equal the offline computation (``features_frame`` + the same
model) to 1e-9, for 100 % of transactions, with the same count on both sides. The
same holds with simulated investigators (``fraudctl replay --investigators 100``):
labels of investigated cards arrive 2 hours after the alert, the others 7 days late.

CI replays the 14 days for one card in ``PARITY_CARD_SAMPLE`` (default 4): every card's
and terminal's history within the sample is complete, so the check is as strict, on a
quarter of the volume. The full volume: ``PARITY_CARD_SAMPLE=1 make test
PYTEST_ARGS=tests/test_parity.py`` (about 134,000 transactions).

The topics have 4 partitions (``PARITY_PARTITIONS``), as in production: the scoring
stage receives each terminal's transactions from every account partition, and the
event-time alignment (:mod:`app.alignment`) holds each transaction until every one of
them has passed its time minus the delay and its labels partition has passed its time.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from app.config import Settings
from app.features import FEATURE_NAMES
from app.features.labels import InvestigationPolicy
from app.features.offline import features_frame
from app.replay import DAY_MS, replay_frame
from app.scoring.investigators import investigation_arrivals_of, policy_scorer

from .datasets import handbook_days
from .parity_utils import compare, of_features
from .worker_utils import Worker, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DAYS = 14
SAMPLE = int(os.environ.get("PARITY_CARD_SAMPLE", "4"))
PARTITIONS = int(os.environ.get("PARITY_PARTITIONS", "4"))
#: The investigators' slice: 10 days of one card in 8 (their verdicts within hours).
INVESTIGATOR_DAYS, INVESTIGATOR_SAMPLE = 10, 8


def test_stream_features_and_scores_equal_offline(broker, redis_url, tmp_path):
    df = handbook_days("2018-04-01", DAYS)
    df = df[df["CUSTOMER_ID"] % SAMPLE == 0].reset_index(drop=True)
    assert df["TX_DATETIME"].dt.floor("D").nunique() == DAYS
    offline = features_frame(df, labels_delay_days=7)
    X = offline[list(FEATURE_NAMES)].to_numpy()
    risk = FEATURE_NAMES.index("terminal_risk_30d_delay_7d")
    assert (X[:, risk] > 0).sum() > 0, "the slice must exercise the label-driven features"
    _replay_and_compare(df, X, None, broker, redis_url, tmp_path)


def test_stream_with_investigators_equals_offline(broker, redis_url, tmp_path):
    """``fraudctl replay --investigators 100``'s labels (verdicts 2 hours after the
    alert, the rest 7 days late) give the stream the features training computes."""
    df = handbook_days("2018-04-01", INVESTIGATOR_DAYS)
    df = df[df["CUSTOMER_ID"] % INVESTIGATOR_SAMPLE == 0].reset_index(drop=True)
    settings = Settings()
    arrivals = investigation_arrivals_of(df, InvestigationPolicy(k=100),
                                         policy_scorer(settings.models_dir))
    assert arrivals[1].any()
    offline = features_frame(df, arrivals=arrivals)
    X = offline[list(FEATURE_NAMES)].to_numpy()
    known = FEATURE_NAMES.index("terminal_known_frauds_30d")
    sooner = features_frame(df, labels_delay_days=7)["terminal_known_frauds_30d"].to_numpy()
    assert (X[:, known] > sooner).sum() > 0, "verdicts must reach the terminal features sooner"
    _replay_and_compare(df, X, arrivals, broker, redis_url, tmp_path)


def _replay_and_compare(df, X, arrivals, broker, redis_url, tmp_path) -> None:
    """Replay ``df`` (with ``arrivals``' labels, else 7 days late) through a real worker
    and check every scored transaction against ``X`` and the model's scores of it."""
    n = len(df)
    expected = of_features(df, X)
    env = worker_env(
        broker.url, redis_url, tmp_path, PUBLISH_SCORED="true", TOPIC_PARTITIONS=str(PARTITIONS)
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        run = Settings(
            kafka_broker_url=broker.url,
            topic_partitions=PARTITIONS,
            transactions_topic=env["TRANSACTIONS_TOPIC"],
            labels_topic=env["LABELS_TOPIC"],
        )
        stats = asyncio.run(replay_frame(df, run, labels_delay_ms=7 * DAY_MS,
                                         arrivals=arrivals))
        assert stats.transactions == n and stats.labels > 0
        worker.wait_metric("fraud_transactions_scored_total", n, timeout=900)
        records = read_topic(broker.bootstrap, env["SCORED_TOPIC"], idle_seconds=3)
        timeouts = worker.metric("fraud_alignment_timeouts_total")
    finally:
        worker.stop()

    result = compare(records, expected)
    ids = [s.transaction.transaction_id for s in result.scored]
    assert len(ids) == n and set(ids) == set(expected.row_of), "each transaction scored exactly once"
    print(
        f"parity: {n} transactions, {stats.labels} labels, {len(result.mismatched)} mismatched, "
        f"max |feature diff| {result.worst_feature:.3g}, max |score diff| {result.worst_score:.3g}, "
        f"alignment timeouts {timeouts:.0f}"
    )
    assert not result.mismatched, f"{len(result.mismatched)} of {n} differ, e.g. {result.mismatched[:5]}"

"""The whole loop on real processes: a worker scores a replayed day and alerts, the review
console turns the alerts into cases, an analyst's verdict reaches the worker as
investigation labels, and the delayed feed's labels for the same transactions are then
counted as duplicates or contradictions; the worker keeps running throughout."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.config import Settings
from app.events import Label, encode
from app.replay import replay_frame

from .datasets import handbook_days
from .review_utils import Console, run_cli
from .test_review_console import _produce
from .worker_utils import Worker, free_port, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.both_brokers]


def test_a_verdict_reaches_the_worker_and_the_feed_after_it_is_deduplicated(broker, redis_url, tmp_path):
    df = handbook_days("2018-04-01", 1)
    env = worker_env(broker.url, redis_url, tmp_path, ALERT_THRESHOLD="0.3",
                     REVIEW_PORT=str(free_port()), CASES_TOPIC=f"cases-{tmp_path.name[-30:]}".replace("_", "-"))
    worker = Worker(env, tmp_path / "worker.log").start()
    console = None
    try:
        worker.wait_ready()
        run = Settings(kafka_broker_url=broker.url, transactions_topic=env["TRANSACTIONS_TOPIC"],
                       labels_topic=env["LABELS_TOPIC"])
        asyncio.run(replay_frame(df, run, labels=False))
        worker.wait_metric("fraud_transactions_scored_total", len(df))
        n_alerts = worker.metric("fraud_alerts_total")
        assert n_alerts > 0, "the slice must alert at this threshold"

        console = Console(env, tmp_path / "review.log").start()
        console.wait(lambda: console.alerts_in_cases() >= n_alerts, "every alert in a case",
                     timeout=180)
        out = run_cli(env, "review", "list", "--format", "json")
        assert out.returncode == 0, out.stderr
        listed = [json.loads(line) for line in out.stdout.splitlines()]
        assert [c["max_score"] for c in listed] == sorted((c["max_score"] for c in listed), reverse=True)
        top = next(c for c in listed if c["alerts"] >= 2)  # the riskiest card alerted twice

        out = run_cli(env, "review", "confirm", top["case_id"], "--analyst", "Ann", "--key", "loop-1")
        assert out.returncode == 0, out.stderr
        case = json.loads(run_cli(env, "review", "show", top["case_id"], "--format", "json").stdout)
        n = len(case["alerts"])
        worker.wait_metric("fraud_verdicts_total", n, source="investigation", verdict="fraud")

        # weeks later the feed labels the same transactions: one agrees, one contradicts
        verdict_time = case["history"][-1]["time_ms"]
        feed = []
        for i, alert in enumerate(case["alerts"][:2]):
            tx = alert["transaction"]
            feed.append(Label(
                transaction_id=tx["transaction_id"], account_id=tx["account_id"],
                terminal_id=tx["terminal_id"], is_fraud=(i == 0),
                transaction_time_ms=tx["event_time_ms"], label_time_ms=verdict_time + 1,
            ))
        asyncio.run(_produce(broker.bootstrap, env["LABELS_TOPIC"],
                             [(l.terminal_id.encode(), encode(l)) for l in feed]))
        worker.wait_metric("fraud_verdicts_total", len(feed), source="chargeback")
        assert worker.metric("fraud_label_duplicates_total") == 1
        assert worker.metric("fraud_label_contradictions_total") == 1
        worker.assert_alive()
        console.alive()
    finally:
        if console is not None:
            console.stop()
        worker.stop()

"""``fraudctl backfill`` loads history into a real worker's state without an alert; the
live days after it alert exactly as a warm worker would.

Real Tansu broker, real Redis, a real worker process; the backfill is the CLI command as
an operator runs it (a subprocess with the workers' environment)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pandas as pd
import pytest

from app.config import Settings
from app.data.simulate import write_handbook_csv
from app.events import Alert
from app.features import FEATURE_NAMES
from app.features.offline import features_frame
from app.replay import replay_frame
from app.scoring.model import Scorer

from .datasets import handbook_days
from .worker_utils import ROOT, Worker, read_topic, worker_env

LIVE_FROM = "2018-04-02"
THRESHOLD = 0.5


def _fraudctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from app.cli import main; main()", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_backfill_refuses_when_the_workers_would_alert_on_the_history(tmp_path):
    df = handbook_days("2018-04-01", 1)
    history = write_handbook_csv(df, tmp_path / "history.csv")
    env = worker_env("kafka://127.0.0.1:1", "redis://127.0.0.1:1/0", tmp_path,
                     ALERTS_FROM="2018-04-01T12:00:00")
    r = _fraudctl("backfill", str(history), env=env)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "the workers would alert on it" in line and "ALERTS_FROM" in line


@pytest.mark.broker
@pytest.mark.slow
def test_backfill_builds_state_without_alerts_then_live_days_alert(broker, redis_url, tmp_path):
    df = handbook_days("2018-04-01", 2)
    live = df["TX_DATETIME"] >= pd.Timestamp(LIVE_FROM)
    scorer = Scorer.from_registry(Settings().models_dir)
    feats = features_frame(df, labels_delay_days=None)  # no labels are sent here
    scores = scorer.score_many(feats[list(FEATURE_NAMES)].to_numpy())
    ids = df["TRANSACTION_ID"].astype(str).to_numpy()
    would_alert = scores >= THRESHOLD
    assert (would_alert & ~live.to_numpy()).any(), "the history must hold alerting scores"
    expected = set(ids[would_alert & live.to_numpy()])
    assert expected

    history = write_handbook_csv(df[~live], tmp_path / "history.csv")
    env = worker_env(broker.url, redis_url, tmp_path, ALERT_THRESHOLD=str(THRESHOLD),
                     ALERTS_FROM=LIVE_FROM)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        r = _fraudctl("backfill", str(history), "--no-labels", env=env)
        assert r.returncode == 0, r.stderr
        assert f"backfilled {int((~live).sum()):,} transactions" in r.stdout
        worker.wait_metric("fraud_transactions_scored_total", int((~live).sum()))
        run = Settings(kafka_broker_url=broker.url, transactions_topic=env["TRANSACTIONS_TOPIC"],
                       labels_topic=env["LABELS_TOPIC"])
        asyncio.run(replay_frame(df[live].reset_index(drop=True), run, labels=False))
        worker.wait_metric("fraud_transactions_scored_total", len(df))
        alerts = [Alert.model_validate_json(r.value)
                  for r in read_topic(broker.bootstrap, env["ALERTS_TOPIC"])]
        assert {a.alert_id for a in alerts} == expected  # none of the history, every live one
    finally:
        worker.stop()

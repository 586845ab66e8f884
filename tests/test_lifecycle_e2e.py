"""End to end (issue 4): promote a model and apply a rule set during a replay.

Real Tansu broker, real Redis, a real worker process. While two days of handbook
transactions are replayed at a fixed rate, ``fraudctl models promote`` switches the
model and ``fraudctl rules apply`` brings a rule; then a tampered artifact is published.
It shows:

- no transaction lost or scored twice (``scored-transactions`` holds each id once);
- per partition, records and alerts carry the old version, then the new one, never
  back: the switch happens between two batches;
- every alert carries the version that scored it (the same as its scored record);
- the new rule's outcomes appear within 5 seconds of ``rules apply`` returning;
- a tampered artifact is refused (``fraud_control_messages_total{kind="model",
  result="refused"}``) and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from app.config import Settings
from app.stream.control import CONTROL_KEY, publish
from app.events import Alert, ModelControl, ScoredTransaction, encode
from app.replay import replay_frame
from app.scoring.registry import load_model, save_model

from .datasets import handbook_days
from .worker_utils import Worker, read_topic, worker_env

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
]

ROOT = Path(__file__).resolve().parent.parent
FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")
RATE_TX_PER_S = 1000
RULE = {"id": "big-amount", "attribute": "transaction.amount", "op": ">", "value": 100,
        "outcome": "block"}


def _registry(tmp: Path) -> tuple[Path, str]:
    """The shipped model plus copies named v2-e2e and v3-e2e (same estimator)."""
    models = tmp / "models"
    models.mkdir()
    base = load_model(None, ROOT / "models")
    shutil.copytree(base.path, models / base.version)
    (models / "ACTIVE").write_text(base.version + "\n")
    c = base.card
    for v in ("v2-e2e", "v3-e2e"):
        save_model(base.estimator, models, data=c.data, metrics=c.metrics, baseline=c.baseline,
                   alert_threshold=c.alert_threshold, threshold_rationale="e2e copy",
                   justification=c.justification, version=v)
    return models, base.version


def _fraudctl(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([FRAUDCTL, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_promote_and_rules_during_a_replay(broker, redis_url, tmp_path):
    df = handbook_days("2018-04-01", 2)
    n = len(df)
    models, base = _registry(tmp_path)
    tag = tmp_path.name[-20:].replace("_", "-")
    env = worker_env(broker.url, redis_url, tmp_path, ALERT_THRESHOLD="0.5",
                     MODELS_DIR=str(models), CONTROL_TOPIC=f"control-{tag}",
                     RULES_TOPIC=f"rules-{tag}")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        run = Settings(kafka_broker_url=broker.url, transactions_topic=env["TRANSACTIONS_TOPIC"],
                       labels_topic=env["LABELS_TOPIC"])
        replay = threading.Thread(
            target=lambda: asyncio.run(replay_frame(df, run, rate=RATE_TX_PER_S, labels=False)))
        replay.start()

        worker.wait_metric("fraud_transactions_scored_total", n // 4)
        _fraudctl(env, "models", "promote", "v2-e2e")

        worker.wait_metric("fraud_transactions_scored_total", n // 3)
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps({"id": "e2e", "version": 1, "rules": [RULE]}))
        applying_ms = int(time.time() * 1000)
        _fraudctl(env, "rules", "apply", str(rules_file))
        applied_ms = int(time.time() * 1000)

        replay.join(timeout=300)
        worker.wait_metric("fraud_transactions_scored_total", n)

        # a tampered artifact is refused; the worker keeps serving v2-e2e
        art = models / "v3-e2e" / "model.joblib"
        art.write_bytes(art.read_bytes()[:-10] + b"0123456789")
        publish(Settings(kafka_broker_url=broker.url, control_topic=env["CONTROL_TOPIC"]),
                env["CONTROL_TOPIC"], CONTROL_KEY,
                encode(ModelControl(action="promote", active_version="v3-e2e",
                                    issued_time_ms=int(time.time() * 1000))))
        worker.wait_metric("fraud_control_messages_total", 1, timeout=30, kind="model",
                           result="refused")
        assert "sha256" in worker.tail()
        extra = handbook_days("2018-04-03", 1).head(200)
        asyncio.run(replay_frame(extra, run, labels=False, create_topics=False))
        worker.wait_metric("fraud_transactions_scored_total", n + len(extra))
        worker.assert_alive()

        scored_records = read_topic(broker.bootstrap, env["SCORED_TOPIC"])
        alert_records = read_topic(broker.bootstrap, env["ALERTS_TOPIC"])
    finally:
        worker.stop()

    scored = [(r.partition, r.offset, ScoredTransaction.model_validate_json(r.value))
              for r in scored_records]
    alerts = [(r.partition, r.offset, Alert.model_validate_json(r.value)) for r in alert_records]

    # no transaction lost or scored twice
    counts = Counter(s.transaction.transaction_id for _, _, s in scored)
    expected_ids = {str(t) for t in df["TRANSACTION_ID"]} | {str(t) for t in extra["TRANSACTION_ID"]}
    assert set(counts) == expected_ids
    assert max(counts.values()) == 1

    # old version, then the new one, per partition; the tampered v3 never serves
    for records in (scored, alerts):
        by_partition = defaultdict(list)
        for p, o, rec in sorted(records, key=lambda x: (x[0], x[1])):
            by_partition[p].append(rec.model_version)
        for versions in by_partition.values():
            switched = versions.index("v2-e2e") if "v2-e2e" in versions else len(versions)
            assert set(versions[:switched]) <= {base}
            assert set(versions[switched:]) <= {"v2-e2e"}
    assert {s.model_version for _, _, s in scored} == {base, "v2-e2e"}

    # every alert carries the version (and decision) of its scored record
    by_id = {s.transaction.transaction_id: s for _, _, s in scored}
    for _, _, a in alerts:
        s = by_id[a.alert_id]
        assert (a.model_version, a.outcome, a.rules_fired, a.rule_set_version) == (
            s.model_version, s.outcome, s.rules_fired, s.rule_set_version)
        assert s.decision == "alert"
    assert {s.transaction.transaction_id for s in by_id.values() if s.decision == "alert"} == {
        a.alert_id for _, _, a in alerts}

    # the rule: absent before apply, in force on everything scored 5 s after it returned
    for s in by_id.values():
        if s.scored_time_ms < applying_ms:
            assert s.rule_set_version == "none@0" and s.rules_fired == []
        if s.scored_time_ms >= applied_ms + 5000:
            assert s.rule_set_version == "e2e@1"
            big = s.transaction.amount_minor > 100 * 100
            assert ("big-amount" in s.rules_fired) == big
            if big:
                assert s.outcome == "block" and s.decision == "alert"
    late = [s for s in by_id.values() if s.scored_time_ms >= applied_ms + 5000]
    assert any("big-amount" in s.rules_fired for s in late), "the replay ended too early"

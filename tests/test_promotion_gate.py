"""The promotion gate: a version replaces the active one only when validated on a window
at least as recent and no worse on card precision@100 on one same window; ``--force
--reason`` passes over it and is recorded; ``--dry-run`` changes nothing.

The cards are the shipped model's, rewritten with other windows and figures (the
artifact is the shipped one, so every version verifies). Redis is the real server.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import date
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.scoring.compare import (
    Comparison,
    VersionResult,
    promotion_gate,
    record_comparison,
)
from app.scoring.lifecycle import plan_promote, read_lifecycle, Lifecycle
from app.scoring.registry import ModelCard, active_file_version, read_card

from .conftest import TEST_REDIS_URL

SHIPPED = Path(__file__).resolve().parent.parent / "models"


def _variant(base: ModelCard, version: str, test: tuple[str, str] | None = None,
             cp: float | None = None) -> ModelCard:
    """``base`` as another version, tested on ``test`` days, with card precision ``cp``."""
    data = base.data
    if test:
        data = data.model_copy(update={"test": data.test.model_copy(update={
            "start": date.fromisoformat(test[0]), "end": date.fromisoformat(test[1])})})
    metrics, others = base.metrics, base.metrics_other_rules
    if cp is not None:
        metrics = metrics.model_copy(update={"card_precision_at_100": cp})
        others = [m.model_copy(update={"card_precision_at_100": cp}) for m in others]
    return base.model_copy(update={"version": version, "data": data, "metrics": metrics,
                                   "metrics_other_rules": others})


@pytest.fixture()
def champion() -> ModelCard:
    return read_card(active_file_version(SHIPPED), SHIPPED)


def _comparison(a: str, b: str, cp_a: float, cp_b: float, end: str) -> Comparison:
    def result(v: str, cp: float) -> VersionResult:
        return VersionResult(version=v, known_compromised_rule="handbook-daily", roc_auc=0.8,
                             average_precision=0.5, card_precision_at_100=cp,
                             card_precision_daily=[cp], alerts=10, alerts_fraud=5,
                             alert_precision=0.5)
    return Comparison(created_at="2026-12-07T00:00:00+00:00", data_source="bank.csv",
                      train_start=date(2018, 7, 1), test_start=date(2018, 7, 25),
                      test_end=date.fromisoformat(end), gap_days=7, test_transactions=100,
                      test_frauds=5, results=[result(a, cp_a), result(b, cp_b)])


@pytest.mark.parametrize(
    ("test", "cp", "comparisons", "allowed", "needle"),
    [
        pytest.param(("2018-04-20", "2018-04-26"), 0.9, [], False, "older than the active",
                     id="older-window-better-figures-refused"),
        pytest.param(None, 0.05, [], False, "is worse on card precision@100",
                     id="same-window-worse-refused"),
        pytest.param(None, 0.5, [], True, "", id="same-window-better-passes"),
        pytest.param(("2018-07-25", "2018-07-31"), 0.9, [], False, "have no evaluation on one "
                     "same window", id="newer-window-no-common-evaluation-refused"),
        pytest.param(("2018-07-25", "2018-07-31"), 0.9, [(0.3, 0.2, "2018-07-31")], False,
                     "worse on card precision@100 (rule handbook-daily): 0.200 against 0.300",
                     id="newer-window-worse-in-comparison-refused"),
        pytest.param(("2018-07-25", "2018-07-31"), 0.1, [(0.3, 0.4, "2018-07-31")], True, "",
                     id="newer-window-better-in-comparison-passes"),
        pytest.param(("2018-07-25", "2018-07-31"), 0.9, [(0.3, 0.4, "2018-07-10")], False,
                     "have no evaluation", id="comparison-on-an-older-window-is-no-evidence"),
    ],
)
def test_gate(champion, test, cp, comparisons, allowed, needle):
    challenger = _variant(champion, "v3-challenger", test, cp)
    records = [_comparison(champion.version, challenger.version, *c) for c in comparisons]
    verdict = promotion_gate(champion, challenger, records)
    assert verdict.allowed is allowed, verdict
    assert needle in "; ".join(verdict.reasons)


def test_a_forced_promotion_records_its_reason():
    lc = plan_promote(Lifecycle(active="v1"), "v2", now_ms=5, by="fraudctl", forced=True,
                      reason="regulator asked for the new features")
    event = lc.history[-1]
    assert (lc.active, event.forced, event.reason) == ("v2", True,
                                                        "regulator asked for the new features")


@pytest.fixture()
def registry(tmp_path, champion, monkeypatch):
    """The shipped active model and an April-validated copy with better-looking figures."""
    models = tmp_path / "models"
    shutil.copytree(SHIPPED / champion.version, models / champion.version)
    (models / "ACTIVE").write_text(champion.version + "\n")
    older = _variant(champion, "v1-april", ("2018-04-20", "2018-04-26"), cp=0.9)
    shutil.copytree(SHIPPED / champion.version, models / older.version)
    (models / older.version / "card.json").write_text(older.model_dump_json(indent=2))
    prefix = f"test-gate-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("KAFKA_BROKER_URL", "kafka://127.0.0.1:1")  # never reached
    get_settings.cache_clear()
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.set(f"{prefix}model:active", champion.version.encode())
    yield models, client, prefix
    client.delete(f"{prefix}model:active")
    client.close()
    get_settings.cache_clear()


def test_promoting_an_older_validated_model_is_refused_and_changes_nothing(registry, champion):
    models, client, prefix = registry
    runner = CliRunner()
    before = (models / "ACTIVE").read_text()

    dry = runner.invoke(cli, ["models", "promote", "v1-april", "--dry-run",
                              "--models-dir", str(models)])
    assert dry.exit_code == 2, dry.output
    assert "dry run: promote v1-april" in dry.stdout and "refused" in dry.stdout
    assert "nothing would change" in dry.stdout

    refused = runner.invoke(cli, ["models", "promote", "v1-april", "--models-dir", str(models)])
    assert refused.exit_code == 2, refused.output
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "older than the active" in line
    assert "--force --reason TEXT" in line

    no_reason = runner.invoke(cli, ["models", "promote", "v1-april", "--force",
                                    "--models-dir", str(models)])
    assert no_reason.exit_code == 2 and "--force needs --reason" in no_reason.stderr

    forced_dry = runner.invoke(cli, ["models", "promote", "v1-april", "--force", "--reason",
                                     "audit", "--dry-run", "--models-dir", str(models)])
    assert forced_dry.exit_code == 0, forced_dry.output
    assert "would pass with --force" in forced_dry.stdout

    # nothing changed anywhere
    assert (models / "ACTIVE").read_text() == before
    assert not (models / "LIFECYCLE.json").exists()
    assert client.get(f"{prefix}model:active") == champion.version.encode()
    assert read_lifecycle(models).active == champion.version


def test_a_recorded_comparison_lets_a_newer_and_better_model_through(registry, champion):
    models, _, _ = registry
    newer = _variant(champion, "v2-august", ("2018-07-25", "2018-07-31"), cp=0.1)
    shutil.copytree(SHIPPED / champion.version, models / newer.version)
    (models / newer.version / "card.json").write_text(newer.model_dump_json(indent=2))
    runner = CliRunner()
    args = ["models", "promote", "v2-august", "--dry-run", "--models-dir", str(models)]
    assert runner.invoke(cli, args).exit_code == 2  # no evaluation on one same window yet
    record_comparison(models, _comparison(champion.version, "v2-august", 0.3, 0.35, "2018-07-31"))
    ok = runner.invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert "gate passed (comparison of" in ok.stdout and "would publish" in ok.stdout


@pytest.mark.broker
def test_a_forced_promotion_is_published_and_recorded_with_its_reason(
    registry, champion, broker, monkeypatch
):
    models, client, prefix = registry
    monkeypatch.setenv("KAFKA_BROKER_URL", broker.url)
    monkeypatch.setenv("CONTROL_TOPIC", f"control-gate-{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    r = CliRunner().invoke(cli, ["models", "promote", "v1-april", "--force", "--reason",
                                 "rollback drill on April data", "--models-dir", str(models)])
    assert r.exit_code == 0, r.output
    assert "forced past the gate" in r.stdout
    lc = read_lifecycle(models)
    event = lc.history[-1]
    assert (lc.active, event.action, event.forced, event.reason) == (
        "v1-april", "promote", True, "rollback drill on April data")
    assert lc.history[0].active == champion.version  # what was served before
    assert (models / "ACTIVE").read_text().strip() == "v1-april"
    assert client.get(f"{prefix}model:active") == b"v1-april"


@pytest.mark.broker
def test_compare_from_a_live_shadow_counts_overlap_and_precision_from_labels(
    registry, champion, broker, monkeypatch
):
    """Records as the stream writes them (the active version with a shadow) and labels
    as they arrive, on a real broker; the command reads both topics to their end."""
    from app.events import Label, ScoredTransaction, Transaction

    from .worker_utils import produce

    models, _, _ = registry
    tag = uuid.uuid4().hex[:8]
    scored_topic, labels_topic = f"scored-{tag}", f"labels-{tag}"
    monkeypatch.setenv("KAFKA_BROKER_URL", broker.url)
    monkeypatch.setenv("LABELS_TOPIC", labels_topic)
    get_settings.cache_clear()

    def scored(tid: str, version: str, a: float, b: float) -> bytes:
        tx = Transaction(transaction_id=tid, account_id="a1", terminal_id="m1",
                         amount_minor=100, event_time_ms=1_525_737_600_000)
        return ScoredTransaction(
            transaction=tx, score=a, decision="pass", model_version=version, features={},
            scored_time_ms=1_525_737_600_100, outcome="approve",
            shadow_scores={"v1-april": b}).model_dump_json().encode()

    produce(broker.bootstrap, scored_topic, [
        (b"a1", scored("t1", champion.version, 0.9, 0.1)),   # only the champion alerts
        (b"a1", scored("t2", champion.version, 0.1, 0.9)),   # only the shadow
        (b"a1", scored("t3", champion.version, 0.9, 0.95)),  # both
        (b"a1", scored("t4", champion.version, 0.1, 0.1)),   # neither
        (b"a1", scored("t5", "v9-other", 0.9, 0.9)),         # another active version
    ])
    produce(broker.bootstrap, labels_topic, [
        (b"m1", Label(transaction_id=t, account_id="a1", terminal_id="m1", is_fraud=f,
                      transaction_time_ms=1_525_737_600_000, label_time_ms=1_525_741_200_000,
                      source="investigation").model_dump_json().encode())
        for t, f in (("t1", False), ("t2", True), ("t3", True))
    ])
    r = CliRunner().invoke(cli, ["models", "compare", "active", "v1-april", "--from-topic",
                                 scored_topic, "--models-dir", str(models), "--format", "json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["transactions"], got["alerts_both"], got["alerts_only_champion"],
            got["alerts_only_challenger"], got["labelled"]) == (4, 1, 1, 1, 3)
    assert (got["champion_alert_precision"], got["challenger_alert_precision"]) == (0.5, 1.0)


def test_a_comparison_on_the_challengers_own_training_days_does_not_pass_the_gate(champion):
    """A model scored on the rows it was fitted on looks better than it is: such a
    comparison is no evidence, even when it is recent and favours the challenger."""
    newer = _variant(champion, "v2-august", ("2018-07-25", "2018-07-31"))
    fit = newer.data.test.model_copy(update={"start": date(2018, 7, 1),
                                              "end": date(2018, 7, 31)})
    fitted = newer.data.model_copy(update={"source": "bank.csv", "fit": fit})
    newer = newer.model_copy(update={"data": fitted})
    leaky = _comparison(champion.version, "v2-august", 0.3, 0.35, "2018-07-31")
    verdict = promotion_gate(champion, newer, [leaky])
    assert not verdict.allowed and "no evaluation on one same window" in verdict.reasons[0]
    elsewhere = leaky.model_copy(update={"data_source": "other-bank.csv"})
    assert promotion_gate(champion, newer, [elsewhere]).allowed

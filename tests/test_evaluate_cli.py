"""``fraudctl evaluate``: offline scores, the stream's scores read from a real broker, and
prequential validation, on a small simulated split (seconds)."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from app.cli import cli
from app.data.handbook import read_handbook, to_labels, to_transactions
from app.data.simulate import simulate, write_handbook_csv
from app.events import ScoredTransaction, encode
from app.features import AccountState, TerminalState
from app.decisions import Snapshot
from app.features.offline import event_order
from app.features.state import DAY_MS
from app.pipeline import RawRecord, featurize_accounts, receive_terminal_records, score_enriched
from app.scoring import Scorer
from app.scoring.evaluate import evaluate_scores, handbook_split, prequential_folds
from app.scoring.train import HISTORY_DAYS, prequential, read_features, train

# train 07-10..07-14, gap 3 days, test 07-18..07-20
SPLIT = ["--train-start", "2018-07-10", "--train-end", "2018-07-14",
         "--gap-days", "3", "--test-days", "3"]
TEST_START, TEST_END = date(2018, 7, 18), date(2018, 7, 20)
METRICS = ("roc_auc", "average_precision", "card_precision_at_k")


@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory) -> Path:
    df = simulate(n_customers=150, n_terminals=1500, start_date="2018-06-01", n_days=54,
                  seed=11)
    return write_handbook_csv(df, tmp_path_factory.mktemp("data") / "sim.csv.gz")


@pytest.fixture(scope="module")
def models_dir(sim_csv, tmp_path_factory) -> tuple[Path, str]:
    """A registry with one small model trained on the simulated split."""
    path = tmp_path_factory.mktemp("models")
    card = train(sim_csv, "2018-07-10", "2018-07-14", 3, 3, models_dir=path,
                 model="random_forest")
    return path, card.version


def _evaluate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _stream_scored(df: pd.DataFrame, scorer: Scorer) -> list[ScoredTransaction]:
    """Scored transactions as the workers make them: the pipeline's two stages, in
    event-time order, with each label arriving 7 days after its transaction.

    Genuine labels change no state (``TerminalState.label_one``) and a fraud label only
    the state of its terminal, so transactions go through the stages in batches that
    end just before a fraud label of a terminal among them.
    """
    accounts: dict[str, AccountState] = {}
    terminals: dict[str, TerminalState] = {}
    out: list[ScoredTransaction] = []
    pending: list[RawRecord] = []
    pending_terminals: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        stage1 = featurize_accounts(pending, accounts.get, now_ms=0)
        accounts.update(stage1.states)
        records = [RawRecord(e.to_bytes(), None, "by-terminal", 0, i, 0)
                   for i, e in enumerate(stage1.enriched)]
        intake = receive_terminal_records(records, terminals.get, "transaction-labels",
                                          now_ms=0)
        terminals.update(intake.states)
        stage2 = score_enriched([item for _, item, _ in intake.arrived], terminals.get,
                                Snapshot.of(scorer, 0.5), top_reasons=0, now_ms=0)
        out.extend(stage2.scored)
        pending.clear()
        pending_terminals.clear()

    for kind, item in event_order(to_transactions(df), to_labels(df, 7 * DAY_MS)):
        if kind == 0:
            pending.append(RawRecord(encode(item), item.account_id.encode(), "transactions",
                                     0, len(pending), 0))
            pending_terminals.add(item.terminal_id)
        elif item.is_fraud:
            if item.terminal_id in pending_terminals:
                flush()
            state = terminals.setdefault(item.terminal_id, TerminalState())
            state.label_one(item, (7 + 30) * DAY_MS)
    flush()
    return out


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=str(i % 7).encode())
                   for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.mark.broker
def test_stream_scores_read_from_the_topic_give_the_offline_figures(
    sim_csv, models_dir, broker, make_topic
):
    path, version = models_dir
    common = [str(sim_csv), *SPLIT, "--models-dir", str(path), "--model", version]
    offline = _evaluate(*common)
    assert offline["source"] == "offline" and offline["model_versions"] == [version]
    assert offline["n_frauds"] > 0 and offline["n_transactions"] > 0
    assert offline["known_compromised"] == "before-test"

    # the stream's scored records: HISTORY_DAYS of warm-up, then the test window
    df = read_handbook(sim_csv, TEST_START - timedelta(days=HISTORY_DAYS), TEST_END)
    scored = _stream_scored(df, Scorer.from_registry(path, version))
    assert len(scored) == len(df)
    values = [encode(s) for s in scored]
    values += values[-50:]  # a redelivery: the first score is kept
    values.append(b"not json")  # skipped, with a count
    topic = make_topic("scored", partitions=3)
    asyncio.run(_produce(broker.bootstrap, topic, values))

    streamed = _evaluate(str(sim_csv), *SPLIT, "--from-topic", topic, "--broker",
                         broker.bootstrap)
    assert streamed["source"] == f"topic {topic}"
    assert streamed["model_versions"] == [version]
    assert (streamed["records_read"], streamed["records_skipped"]) == (len(values) - 1, 1)
    assert streamed["duplicates"] == 50
    assert streamed["missing"] == 0
    for key in (*METRICS, "card_precision_daily", "fraud_cards_daily", "n_transactions",
                "n_frauds", "perfect_card_precision_at_k"):
        assert streamed[key] == pytest.approx(offline[key], abs=1e-12), key

    # and the other rule on the same records: more rows, still the same figures
    daily = _evaluate(*common, "--known-compromised", "handbook-daily")
    daily_topic = _evaluate(str(sim_csv), *SPLIT, "--from-topic", topic, "--broker",
                            broker.bootstrap, "--known-compromised", "handbook-daily")
    assert daily["n_transactions"] >= offline["n_transactions"]
    for key in (*METRICS, "n_transactions"):
        assert daily_topic[key] == pytest.approx(daily[key], abs=1e-12), key


def test_offline_figures_are_the_models_scores_on_the_test_rows(sim_csv, models_dir):
    path, version = models_dir
    got = _evaluate(str(sim_csv), *SPLIT, "--models-dir", str(path), "--model", version)
    frame, _ = read_features(sim_csv, date(2018, 7, 10), TEST_END)
    _, mask = handbook_split(frame, date(2018, 7, 10), date(2018, 7, 14), 3, 3)
    scorer = Scorer.from_registry(path, version)
    test = frame.loc[mask]
    want = evaluate_scores(test, scorer.score_many(test[list(scorer.feature_names)].to_numpy()))
    for key in (*METRICS, "n_transactions", "card_precision_daily"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert len(got["card_precision_daily"]) == 3


def test_prequential_refits_the_models_family_on_shifted_folds(sim_csv, models_dir):
    path, version = models_dir
    got = _evaluate(str(sim_csv), *SPLIT, "--models-dir", str(path), "--model", version,
                    "--prequential", "2")
    assert got["source"] == "prequential"
    assert [(f["train_start"], f["test_start"]) for f in got["folds"]] == [
        ("2018-07-10", "2018-07-18"), ("2018-07-07", "2018-07-15"),
    ]
    assert prequential_folds(date(2018, 7, 10), date(2018, 7, 14), 3, 2)[1][0] == date(2018, 7, 7)
    for m in METRICS:
        values = [f[m] for f in got["folds"]]
        assert got[f"{m}_mean"] == pytest.approx(np.mean(values))
        assert got[f"{m}_std"] == pytest.approx(np.std(values))
    # the same folds by the library function, with a fresh estimator of the same family
    from sklearn.base import clone

    from app.scoring.registry import load_model

    frame, _ = read_features(sim_csv, date(2018, 7, 7), TEST_END)
    estimator = load_model(version, path).estimator
    folds = prequential(frame, lambda: clone(estimator), date(2018, 7, 10), date(2018, 7, 14),
                        3, 3, n_folds=2)
    assert [f["average_precision"] for f in folds] == pytest.approx(
        [f["average_precision"] for f in got["folds"]])


def test_table_output_names_the_three_figures(sim_csv, models_dir):
    path, version = models_dir
    result = CliRunner().invoke(cli, ["evaluate", str(sim_csv), *SPLIT, "--models-dir",
                                      str(path), "--model", version])
    assert result.exit_code == 0, result.output
    for label in ("ROC AUC", "average precision", "card precision@100", "daily CP@100",
                  "perfect ranking", "rule before-test", version):
        assert label in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--from-topic", "x", "--prequential", "2"], "exclude each other",
                     id="topic-and-prequential"),
        pytest.param(["--model", "v404"], "no model version v404", id="unknown-model"),
        pytest.param(["--train-start", "2018-05-25", "--train-end", "2018-06-05"],
                     "the data starts on 2018-06-01, after 2018-05-25", id="before-data"),
        pytest.param(["--known-compromised", "weekly"], "weekly", id="unknown-rule"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(sim_csv, models_dir, args, needle):
    path, _ = models_dir
    result = CliRunner().invoke(cli, ["evaluate", str(sim_csv), "--models-dir", str(path),
                                      *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.broker
def test_a_missing_topic_or_a_dead_broker_is_one_line(sim_csv, broker):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(sim_csv), *SPLIT, "--from-topic",
                                 "no-such-topic-here", "--broker", broker.bootstrap])
    assert result.exit_code == 2
    assert "topic 'no-such-topic-here' does not exist" in result.stderr
    dead = runner.invoke(cli, ["evaluate", str(sim_csv), *SPLIT, "--from-topic", "t",
                               "--broker", "127.0.0.1:1"])
    assert dead.exit_code == 2
    assert "unavailable" in dead.stderr

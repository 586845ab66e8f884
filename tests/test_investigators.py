"""Simulated investigators: the label-arrival rule, the replay's labels, the features
they feed, and ``fraudctl evaluate --investigators`` against the same computation.

The stream side (a real broker and worker) is in ``tests/test_parity.py``.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.data.handbook import read_handbook, to_labels
from app.data.simulate import simulate, write_handbook_csv
from app.events import Label, Transaction
from app.features import FEATURE_NAMES, TerminalState, extract_terminal, terminal_feature_names
from app.features.labels import InvestigationPolicy, label_arrivals
from app.features.offline import features_frame, investigation_arrivals
from app.features.state import DAY_MS
from app.replay import plan_records
from app.scoring.evaluate import evaluate_scores, handbook_split
from app.scoring.investigators import investigation_arrivals_of, policy_scorer
from app.scoring.train import read_features, train

H = 3_600_000
T0 = 1_530_403_200_000  # 2018-07-01T00:00Z


def _random_day_stream(seed: int, days: int = 6, n: int = 600, cards: int = 40):
    rng = np.random.default_rng(seed)
    times = np.sort(T0 + rng.integers(0, days * DAY_MS, n))
    card_ids = rng.integers(0, cards, n)
    scores = rng.random(n)
    return times, card_ids, scores


# --- the rule --------------------------------------------------------------------------


def test_without_investigators_every_label_is_a_chargeback_seven_days_late():
    times, cards, scores = _random_day_stream(0)
    when, inv = label_arrivals(times, cards, scores, InvestigationPolicy(k=0))
    assert (when == times + 7 * DAY_MS).all() and not inv.any()
    when2, _ = label_arrivals(times, cards, None, InvestigationPolicy())
    assert (when2 == when).all()


@pytest.mark.parametrize("k", [1, 3, 10], ids=lambda k: f"k{k}")
def test_at_most_k_cards_a_day_each_at_an_alert_reaching_yesterdays_kth_score(k):
    times, cards, scores = _random_day_stream(1)
    policy = InvestigationPolicy(k=k, verdict_delay_ms=2 * H)
    when, inv = label_arrivals(times, cards, scores, policy)
    day = times // DAY_MS
    # alerts: the rows whose time + 2 h is a verdict time of their card's labels
    verdicts = {(int(cards[i]), int(when[i])) for i in np.flatnonzero(inv)}
    alerts = [i for i in range(len(times)) if (int(cards[i]), int(times[i] + 2 * H)) in verdicts]
    assert len(alerts) == len(verdicts) > 0
    per_day = pd.Series([int(day[i]) for i in alerts]).value_counts()
    assert per_day.max() <= k
    assert int(day[0]) not in per_day.index, "nobody is investigated on the first day"
    for i in alerts:
        prev = day == day[i] - 1
        card_max = pd.Series(scores[prev]).groupby(cards[prev]).max().sort_values()[::-1]
        assert scores[i] >= card_max.iloc[min(k, len(card_max)) - 1]
    # a verdict labels the card's transactions up to its alert, never a later one
    for card, v in verdicts:
        rows = np.flatnonzero((cards == card) & (when == v))
        assert (times[rows] <= v - 2 * H).all()
    # and nothing is labelled later than its chargeback
    assert (when <= times + 7 * DAY_MS).all()
    assert (when[inv] < times[inv] + 7 * DAY_MS).all()


def test_labels_known_by_a_time_never_depend_on_later_scores():
    times, cards, scores = _random_day_stream(2)
    policy = InvestigationPolicy(k=4)
    when, inv = label_arrivals(times, cards, scores, policy)
    cut = T0 + 3 * DAY_MS + 5 * H
    later = scores.copy()
    rng = np.random.default_rng(9)
    later[times > cut] = rng.random(int((times > cut).sum()))
    when2, inv2 = label_arrivals(times, cards, later, policy)
    known, known2 = when <= cut, when2 <= cut
    assert (known == known2).all()
    assert (when[known] == when2[known]).all() and (inv[known] == inv2[known]).all()
    assert inv[known].any(), "the check must see verdicts"


def test_same_input_same_arrivals():
    times, cards, scores = _random_day_stream(3)
    a = label_arrivals(times, cards, scores, InvestigationPolicy(k=5))
    b = label_arrivals(times, cards.astype(str), scores, InvestigationPolicy(k=5))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        pytest.param(lambda: InvestigationPolicy(k=-1), "k: expected", id="negative-k"),
        pytest.param(lambda: InvestigationPolicy(k=1, verdict_delay_ms=-5), "verdict_delay_ms",
                     id="negative-delay"),
        pytest.param(lambda: label_arrivals([2, 1], [0, 0], [0.1, 0.2], InvestigationPolicy(k=1)),
                     "non-decreasing", id="unsorted"),
        pytest.param(lambda: label_arrivals([1, 2], [0, 0], None, InvestigationPolicy(k=1)),
                     "required", id="no-scores"),
        pytest.param(lambda: label_arrivals([1, 2], [0, 0], [0.1, np.nan],
                                            InvestigationPolicy(k=1)), "finite", id="nan-score"),
        pytest.param(lambda: label_arrivals([1, 2], [0], [0.1, 0.2], InvestigationPolicy(k=1)),
                     "cards: expected 2", id="short-cards"),
    ],
)
def test_bad_input_is_a_clear_error(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


# --- what the replay emits ----------------------------------------------------------------


def _frame(times: np.ndarray, cards: np.ndarray, fraud: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(times)),
        "TX_DATETIME": pd.to_datetime(times, unit="ms"),
        "CUSTOMER_ID": cards,
        "TERMINAL_ID": np.arange(len(times)) % 7,
        "TX_AMOUNT": 10.0,
        "TX_FRAUD": fraud,
    })


def test_replay_emits_each_label_once_at_its_arrival_with_its_source():
    times, cards, scores = _random_day_stream(4, n=300)
    fraud = (scores > 0.8).astype(int)
    df = _frame(times, cards, fraud)
    when, inv = label_arrivals(times, cards, scores, InvestigationPolicy(k=3))
    records = list(plan_records(df, arrivals=(when, inv)))
    labels = [Label.model_validate_json(r.value) for r in records if r.is_label]
    assert len(labels) == len(df)
    got = {int(lb.transaction_id): (lb.label_time_ms, lb.source) for lb in labels}
    for i in range(len(df)):
        assert got[i] == (when[i], "investigation" if inv[i] else "chargeback")
    assert [lb.label_time_ms for lb in labels] == sorted(when.tolist())
    # each label follows every transaction timed at or before it, precedes the later ones
    last_tx = -1
    for r in records:
        if r.is_label:
            assert last_tx <= r.timestamp_ms
            nxt = [x.timestamp_ms for x in records[records.index(r):] if not x.is_label]
            assert not nxt or nxt[0] > r.timestamp_ms
        else:
            last_tx = r.timestamp_ms
    # the offline builder reads the very same labels
    offline = list(to_labels(df, 0, label_times_ms=when, investigated=inv))
    assert [orjson.loads(r.value) for r in records if r.is_label] == [
        orjson.loads(lb.model_dump_json()) for lb in offline]


def test_replay_refuses_a_label_before_its_transaction():
    df = _frame(np.array([T0, T0 + H]), np.array([1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="before its transaction"):
        list(plan_records(df, arrivals=(np.array([T0 - 1, T0 + 2 * H]), np.array([1, 0]))))


def test_a_label_without_source_is_a_chargeback():
    raw = {"transaction_id": "t", "account_id": "a", "terminal_id": "m", "is_fraud": True,
           "transaction_time_ms": T0, "label_time_ms": T0 + DAY_MS}
    assert Label.model_validate(raw).source == "chargeback"
    with pytest.raises(ValueError):
        Label.model_validate({**raw, "source": "rumour"})


# --- the features they feed -------------------------------------------------------------


def _tx(tid: str, t: int, terminal: str = "m") -> Transaction:
    return Transaction(transaction_id=tid, account_id="a", terminal_id=terminal,
                       amount_minor=100, event_time_ms=t)


def test_known_frauds_count_only_labels_that_arrived_before_the_transaction():
    state = TerminalState()
    horizon = 37 * DAY_MS
    state.update_one(_tx("f", T0), horizon)
    verdict = T0 + 2 * H
    state.label_one(Label(transaction_id="f", account_id="a", terminal_id="m", is_fraud=True,
                          transaction_time_ms=T0, label_time_ms=verdict,
                          source="investigation"), horizon)
    names = terminal_feature_names(7)

    def feats(t: int) -> dict[str, float]:
        return dict(zip(names, extract_terminal(state, _tx("x", t), 7)))

    assert feats(verdict)["terminal_known_frauds_1d"] == 0.0  # label timed at t: not known
    after = feats(verdict + 1)
    assert after["terminal_known_frauds_1d"] == after["terminal_known_frauds_30d"] == 1.0
    assert after["terminal_risk_30d_delay_7d"] == 0.0  # the delayed windows do not see it yet
    assert feats(T0 + DAY_MS + 1)["terminal_known_frauds_1d"] == 0.0  # out of the 1-day window
    assert feats(T0 + 2 * DAY_MS)["terminal_known_frauds_7d"] == 1.0


# --- evaluate, train and the replay agree ---------------------------------------------------

SPLIT = ["--train-start", "2018-07-10", "--train-end", "2018-07-14",
         "--gap-days", "3", "--test-days", "3"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    df = simulate(n_customers=150, n_terminals=600, start_date="2018-06-01", n_days=54,
                  seed=5)
    path = write_handbook_csv(df, tmp_path_factory.mktemp("data") / "sim.csv.gz")
    models = tmp_path_factory.mktemp("models")
    card = train(path, "2018-07-10", "2018-07-14", 3, 3, models_dir=models,
                 model="random_forest")
    return path, models, card.version


def test_evaluate_with_investigators_is_the_replays_labels_through_the_offline_builder(sim):
    path, models, version = sim
    result = CliRunner().invoke(cli, ["evaluate", str(path), *SPLIT, "--models-dir",
                                      str(models), "--investigators", "5", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["investigators"] == 5 and got["policy_model"] == version
    assert got["investigation_fraud_labels"] > 0

    # what `fraudctl replay --investigators 5 --start <simulation start>` emits
    start = got["simulation_start"]
    df = read_handbook(path, start, "2018-07-20")
    scorer = policy_scorer(models)
    when, inv = investigation_arrivals_of(df, InvestigationPolicy(k=5), scorer)
    labels = [Label.model_validate_json(r.value) for r in plan_records(df, arrivals=(when, inv))
              if r.is_label]
    assert sum(lb.source == "investigation" for lb in labels) == got["investigation_labels"]

    # the same arrivals through the offline builder give evaluate's figures
    frame = features_frame(df, arrivals=(when, inv))
    _, mask = handbook_split(frame, date(2018, 7, 10), date(2018, 7, 14), 3, 3)
    test = frame.loc[mask]
    want = evaluate_scores(test, scorer.score_many(test[list(FEATURE_NAMES)].to_numpy()))
    for key in ("roc_auc", "average_precision", "card_precision_at_k", "n_transactions"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # and read_features (training) computes the same frame
    frame2, _ = read_features(path, date(2018, 7, 10), date(2018, 7, 20),
                              history_days=(date(2018, 7, 10) - date.fromisoformat(start)).days,
                              investigators=InvestigationPolicy(k=5), policy_model=scorer)
    assert (frame2["LABEL_TIME_MS"].to_numpy() == when).all()
    np.testing.assert_array_equal(frame2[list(FEATURE_NAMES)].to_numpy(),
                                  frame[list(FEATURE_NAMES)].to_numpy())
    # investigators' labels reach the terminals sooner than chargebacks
    known = frame["terminal_known_frauds_30d"].to_numpy()
    chargeback_only = features_frame(df)
    assert (known > chargeback_only["terminal_known_frauds_30d"].to_numpy()).any()


def test_investigators_need_a_known_policy_model_and_offline_scoring(sim):
    path, models, _ = sim
    runner = CliRunner()
    bad = runner.invoke(cli, ["evaluate", str(path), *SPLIT, "--models-dir", str(models),
                              "--investigators", "5", "--policy-model", "v404"])
    assert bad.exit_code == 2 and "v404" in bad.stderr and "Traceback" not in bad.output
    topic = runner.invoke(cli, ["evaluate", str(path), *SPLIT, "--models-dir", str(models),
                                "--investigators", "5", "--from-topic", "scored"])
    assert topic.exit_code == 2 and "--from-topic" in topic.stderr
    neg = runner.invoke(cli, ["evaluate", str(path), "--investigators", "-1"])
    assert neg.exit_code == 2


def test_investigation_arrivals_need_a_score_when_investigators_work():
    df = _frame(np.array([T0, T0 + H]), np.array([1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="score"):
        investigation_arrivals(df, InvestigationPolicy(k=1))


@pytest.mark.broker
def test_fraudctl_replay_with_investigators_emits_the_arrivals_on_the_labels_topic(
    sim, broker, new_topic_name
):
    """The command a user runs: its labels are those evaluate and training compute."""
    import asyncio
    import os
    import subprocess

    from .test_replay import FRAUDCTL, _read_topic

    path, models, _ = sim
    topics = {"TRANSACTIONS_TOPIC": new_topic_name("inv-tx"),
              "LABELS_TOPIC": new_topic_name("inv-labels"), "MODELS_DIR": str(models)}
    args = [str(path), "--start", "2018-07-01", "--days", "6", "--investigators", "5",
            "--verdict-delay-hours", "3", "--broker", broker.bootstrap]
    result = subprocess.run(
        [*FRAUDCTL, "replay", *args],
        env={**os.environ, "COLUMNS": "200", **topics}, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "labels by investigation" in result.stderr
    df = read_handbook(path, "2018-07-01", "2018-07-06")
    policy = InvestigationPolicy(k=5, verdict_delay_ms=3 * H)
    when, inv = investigation_arrivals_of(df, policy, policy_scorer(models))
    records, _ = asyncio.run(_read_topic(broker.bootstrap, topics["LABELS_TOPIC"], len(df)))
    labels = [Label.model_validate_json(r.value) for r in records]
    assert len(labels) == len(df)
    by_id = {lb.transaction_id: lb for lb in labels}
    for i, tid in enumerate(df["TRANSACTION_ID"].astype(str)):
        assert (by_id[tid].label_time_ms, by_id[tid].source) == (
            when[i], "investigation" if inv[i] else "chargeback")
    assert inv.any()
    # the 7-day-only mode of the same command refuses a mixed delay
    mixed = subprocess.run(
        [*FRAUDCTL, "replay", *args, "--labels-delay-days", "3"],
        env={**os.environ, **topics}, capture_output=True, text=True, timeout=120,
    )
    assert mixed.returncode == 2 and "--labels-delay-days 7" in mixed.stderr

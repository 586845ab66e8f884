"""The handbook's metrics (chapter 4) and split (chapter 5), on frames worked out by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.scoring.evaluate import (
    KnownCompromised,
    card_precision_top_k,
    detectable_frauds,
    evaluate_scores,
    handbook_split,
    known_compromised_cards,
    prequential_folds,
    scores_by_transaction,
    summarize_folds,
    window_counts,
)

from .datasets import SHARED


def _frame(rows: list[tuple[str, object, int]]) -> pd.DataFrame:
    """rows of (datetime text, customer, fraud)."""
    return pd.DataFrame(
        {
            "TX_DATETIME": pd.to_datetime([r[0] for r in rows]),
            "CUSTOMER_ID": [r[1] for r in rows],
            "TX_FRAUD": [r[2] for r in rows],
        }
    )


# Day 1: A and B compromised, C D E genuine. Day 2: A again, C now compromised, D E genuine.
TWO_DAYS = _frame(
    [
        ("2018-07-18 09:00", "A", 1),
        ("2018-07-18 10:00", "B", 1),
        ("2018-07-18 11:00", "C", 0),
        ("2018-07-18 12:00", "D", 0),
        ("2018-07-18 13:00", "E", 0),
        ("2018-07-19 09:00", "A", 1),
        ("2018-07-19 10:00", "C", 1),
        ("2018-07-19 11:00", "D", 0),
        ("2018-07-19 12:00", "E", 0),
    ]
)
PERFECT = [0.9, 0.8, 0.3, 0.2, 0.1, 0.9, 0.8, 0.2, 0.1]
REVERSED = [0.1, 0.2, 0.7, 0.8, 0.9, 0.1, 0.2, 0.8, 0.9]


def test_perfect_ranking_reaches_the_most_achievable():
    # day 1: top 2 = A, B -> 2/2; A and B are found. Day 2: A is dropped, C is the only
    # compromised card left -> 1/2. The most any ranking can get is the same.
    daily, mean, fraud_cards = card_precision_top_k(TWO_DAYS, PERFECT, k=2)
    assert daily == [1.0, 0.5]
    assert mean == 0.75
    assert fraud_cards == [2, 1]
    best = np.mean([min(2, n) / 2 for n in fraud_cards])
    assert mean == best


def test_reversed_ranking_gives_zero():
    # genuine cards always outrank compromised ones; nothing is found, A stays on day 2
    daily, mean, fraud_cards = card_precision_top_k(TWO_DAYS, REVERSED, k=2)
    assert daily == [0.0, 0.0]
    assert mean == 0.0
    assert fraud_cards == [2, 2]


def test_without_removal_a_found_card_counts_again():
    daily, mean, _ = card_precision_top_k(TWO_DAYS, PERFECT, k=2, remove_detected=False)
    assert daily == [1.0, 1.0]  # day 2: A (found on day 1) and C
    assert mean == 1.0


def test_only_cards_in_the_top_k_count_as_found():
    # k=1: day 1 finds A only; B (not in the top 1) is still there on day 2 and, with
    # the highest score of day 2, is found then.
    frame = _frame(
        [
            ("2018-07-18 09:00", "A", 1),
            ("2018-07-18 10:00", "B", 1),
            ("2018-07-19 09:00", "A", 1),
            ("2018-07-19 10:00", "B", 1),
            ("2018-07-19 11:00", "C", 0),
        ]
    )
    daily, _, fraud_cards = card_precision_top_k(frame, [0.9, 0.8, 0.9, 0.8, 0.5], k=1)
    assert daily == [1.0, 1.0]
    assert fraud_cards == [2, 1]


def test_a_card_takes_its_max_score_and_max_label_of_the_day():
    # F: a genuine tx scored 0.95 and a fraud scored 0.05 -> card score 0.95, label 1.
    frame = _frame(
        [
            ("2018-07-18 09:00", "F", 0),
            ("2018-07-18 10:00", "F", 1),
            ("2018-07-18 11:00", "G", 1),
            ("2018-07-18 12:00", "H", 0),
        ]
    )
    daily, _, _ = card_precision_top_k(frame, [0.95, 0.05, 0.5, 0.9], k=1)
    assert daily == [1.0]


def test_precision_divides_by_k_even_with_fewer_cards():
    frame = _frame([("2018-07-18 09:00", 1, 1), ("2018-07-18 10:00", 2, 0)])
    daily, mean, _ = card_precision_top_k(frame, [0.9, 0.1], k=100)
    assert daily == [0.01]
    assert mean == 0.01


def test_ties_are_broken_by_customer_id():
    frame = _frame([("2018-07-18 09:00", 2, 1), ("2018-07-18 10:00", 1, 0)])
    daily, _, _ = card_precision_top_k(frame, [0.5, 0.5], k=1)
    assert daily == [0.0]  # customer 1 (genuine) comes first


def test_days_are_calendar_days_in_order():
    frame = _frame(
        [
            ("2018-07-19 00:00", "A", 1),  # listed first, but the second day
            ("2018-07-18 23:59", "A", 1),
            ("2018-07-18 23:58", "B", 0),
        ]
    )
    daily, _, _ = card_precision_top_k(frame, [0.9, 0.9, 0.1], k=1)
    assert daily == [1.0, 0.0]  # A found on the 18th, dropped on the 19th


def test_evaluate_scores_drops_known_compromised_cards_from_every_metric():
    frame = _frame(
        [
            ("2018-07-18 09:00", "A", 1),
            ("2018-07-18 10:00", "B", 1),
            ("2018-07-18 11:00", "C", 0),
            ("2018-07-18 12:00", "D", 0),
        ]
    )
    scores = [0.9, 0.2, 0.5, 0.1]
    every = evaluate_scores(frame, scores, k=1)
    # AUC: pairs (pos, neg) ranked right: (A,C) (A,D) (B,D) of 4 -> 0.75
    # AP: ranking A+ C- B+ D- -> (1/1 + 2/3) / 2
    assert every["roc_auc"] == pytest.approx(0.75)
    assert every["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert every["card_precision_at_k"] == 1.0
    assert (every["n_transactions"], every["n_frauds"], every["n_removed"]) == (4, 2, 0)
    known = evaluate_scores(frame, scores, k=1, known_compromised={"A"})
    # B against C, D: only (B, D) is right -> 0.5; ranking C- B+ D- -> AP 1/2
    assert known["roc_auc"] == pytest.approx(0.5)
    assert known["average_precision"] == pytest.approx(0.5)
    assert known["card_precision_at_k"] == 0.0
    assert (known["n_transactions"], known["n_frauds"], known["n_removed"]) == (3, 1, 1)


def test_one_class_leaves_auc_and_ap_undefined():
    frame = _frame([("2018-07-18 09:00", "A", 0), ("2018-07-18 10:00", "B", 0)])
    m = evaluate_scores(frame, [0.3, 0.4], k=1)
    assert m["roc_auc"] is None and m["average_precision"] is None
    assert m["card_precision_at_k"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        pytest.param({"scores": [0.1]}, "expected 9 values", id="wrong-length"),
        pytest.param({"scores": PERFECT, "k": 0}, "k: expected an integer >= 1", id="k-zero"),
        pytest.param({"scores": [np.nan] * 9}, "finite", id="nan-score"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        card_precision_top_k(TWO_DAYS, **kwargs)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="CUSTOMER_ID"):
        evaluate_scores(TWO_DAYS.drop(columns="CUSTOMER_ID"), PERFECT)


def _reference(days, cards, frauds, scores, k):
    """Card precision@k written the slow, obvious way."""
    detected: set = set()
    daily = []
    for day in sorted(set(days)):
        best: dict = {}
        for d, c, y, s in zip(days, cards, frauds, scores):
            if d != day or c in detected:
                continue
            s0, y0 = best.get(c, (-1.0, 0))
            best[c] = (max(s0, s), max(y0, y))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        found = [c for c, (_, y) in ranked if y == 1]
        daily.append(len(found) / k)
        detected.update(found)
    return daily


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 6), st.booleans(), st.floats(0, 1)),
        min_size=1,
        max_size=40,
    ),
    k=st.integers(1, 4),
)
def test_matches_a_direct_reading_of_the_definition(rows, k):
    days = [f"2018-07-{18 + r[0]:02d} 12:00" for r in rows]
    frame = _frame([(d, r[1], int(r[2])) for d, r in zip(days, rows)])
    scores = [r[3] for r in rows]
    daily, mean, _ = card_precision_top_k(frame, scores, k=k)
    expected = _reference([d[:10] for d in days], [r[1] for r in rows],
                          [int(r[2]) for r in rows], scores, k)
    assert daily == pytest.approx(expected)
    assert mean == pytest.approx(np.mean(expected))


# train 07-01, gap 1 day (07-02), test 07-03..07-04
LABEL_DELAY = _frame(
        [
            ("2018-06-30 12:00", "W", 1),  # before the train window: never "known"
            ("2018-07-01 12:00", "X", 1),  # train fraud: known on both test days
            ("2018-07-02 12:00", "Y", 1),  # gap fraud: known from 07-04
            ("2018-07-03 12:00", "W", 0),
            ("2018-07-03 12:00", "X", 0),
            ("2018-07-03 12:00", "Y", 0),
            ("2018-07-03 13:00", "Z", 1),  # test fraud: known from 07-05, after the test
            ("2018-07-04 12:00", "X", 0),
            ("2018-07-04 12:00", "Y", 0),
            ("2018-07-04 12:00", "Z", 0),
            ("2018-07-05 12:00", "Z", 0),  # after the test window
        ]
    )


def _kept(frame, mask):
    kept = frame.loc[mask, ["TX_DATETIME", "CUSTOMER_ID"]]
    return [(t.day, c) for t, c in kept.itertuples(index=False)]


def test_handbook_daily_rule_learns_gap_frauds_one_day_at_a_time():
    # on test day t the frauds of 07-01..t-2 are known (the handbook code)
    train, test = handbook_split(LABEL_DELAY, date(2018, 7, 1), date(2018, 7, 1), 1, 2,
                                 known_compromised="handbook-daily")
    assert LABEL_DELAY.index[train].tolist() == [1]
    assert _kept(LABEL_DELAY, test) == [(3, "W"), (3, "Y"), (3, "Z"), (4, "Z")]


def test_before_test_rule_drops_every_card_defrauded_from_train_start_on():
    # the default: X (train fraud) and Y (gap fraud) are dropped from the whole window;
    # W's fraud is before the train start, Z's inside the test window: both stay
    train, test = handbook_split(LABEL_DELAY, date(2018, 7, 1), date(2018, 7, 1), 1, 2)
    assert LABEL_DELAY.index[train].tolist() == [1]
    assert _kept(LABEL_DELAY, test) == [(3, "W"), (3, "Z"), (4, "Z")]
    same = handbook_split(LABEL_DELAY, date(2018, 7, 1), date(2018, 7, 1), 1, 2,
                          known_compromised=KnownCompromised.before_test)[1]
    assert (same == test).all()


def test_known_compromised_cards_of_a_day_range():
    assert sorted(known_compromised_cards(LABEL_DELAY, date(2018, 7, 1), date(2018, 7, 2))) == [
        "X", "Y"]
    assert len(known_compromised_cards(LABEL_DELAY, date(2018, 7, 2), date(2018, 7, 1))) == 0


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="before-test, handbook-daily"):
        handbook_split(LABEL_DELAY, date(2018, 7, 1), date(2018, 7, 1), 1, 2,
                       known_compromised="weekly")


def test_split_defaults_are_the_handbooks_7_7_7():
    frame = _frame(
        [("2018-07-04 00:00", "A", 0), ("2018-07-10 23:59", "B", 1),
         ("2018-07-11 00:00", "C", 0), ("2018-07-17 23:59", "D", 1),
         ("2018-07-18 00:00", "B", 0), ("2018-07-18 00:01", "D", 0),
         ("2018-07-24 23:59", "E", 0), ("2018-07-25 00:00", "F", 0)]
    )
    train, test = handbook_split(frame, date(2018, 7, 4), date(2018, 7, 10),
                                 known_compromised="handbook-daily")
    assert frame.loc[train, "CUSTOMER_ID"].tolist() == ["A", "B"]
    # B (fraud on a train day) is dropped; D (fraud on the last gap day) is not yet known
    assert frame.loc[test, "CUSTOMER_ID"].tolist() == ["D", "E"]
    _, test = handbook_split(frame, date(2018, 7, 4), date(2018, 7, 10))
    assert frame.loc[test, "CUSTOMER_ID"].tolist() == ["E"]  # before-test: D is known too


def test_window_counts():
    assert window_counts(TWO_DAYS) == {"transactions": 9, "frauds": 4, "fraud_cards": 3}


@pytest.mark.skipif(not SHARED.exists(), reason="the shared handbook file is absent")
@pytest.mark.parametrize(
    ("rule", "perfect"),
    [pytest.param("before-test", 0.299, id="before-test-is-the-issues-0.299"),
     pytest.param("handbook-daily", 0.367, id="handbook-daily")],
)
def test_perfect_ranking_on_the_issues_split_of_the_shared_file(shared_split, rule, perfect):
    frame = shared_split
    _, test = handbook_split(frame, date(2018, 7, 4), date(2018, 7, 10), 7, 7, rule)
    sub = frame.loc[test]
    m = evaluate_scores(sub, sub["TX_FRAUD"].to_numpy())
    assert m["card_precision_at_k"] == pytest.approx(perfect, abs=0.001)
    assert m["perfect_card_precision_at_k"] == m["card_precision_at_k"]
    assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0


@pytest.fixture(scope="module")
def shared_split() -> pd.DataFrame:
    from app.data.handbook import read_handbook

    return read_handbook(SHARED, "2018-07-04", "2018-07-24")


def test_prequential_folds_move_back_by_the_test_length():
    folds = prequential_folds(date(2018, 7, 4), date(2018, 7, 10), test_days=7, n_folds=3)
    assert folds == [
        (date(2018, 7, 4), date(2018, 7, 10)),
        (date(2018, 6, 27), date(2018, 7, 3)),
        (date(2018, 6, 20), date(2018, 6, 26)),
    ]
    # model selection: moved back by gap + test first, so fold 0 tests on the train week
    [first] = prequential_folds(date(2018, 7, 4), date(2018, 7, 10), 7, 1, shift_days=14)
    assert first == (date(2018, 6, 20), date(2018, 6, 26))
    with pytest.raises(ValueError, match="n_folds"):
        prequential_folds(date(2018, 7, 4), date(2018, 7, 10), 7, 0)


def test_summarize_folds_gives_mean_and_population_std_of_defined_values():
    folds = [
        {"roc_auc": 0.8, "average_precision": 0.5, "card_precision_at_k": 0.2},
        {"roc_auc": 0.9, "average_precision": None, "card_precision_at_k": 0.3},
    ]
    s = summarize_folds(folds)
    assert s["roc_auc"] == pytest.approx((0.85, 0.05))
    assert s["average_precision"] == (0.5, 0.0)
    assert s["card_precision_at_k"] == pytest.approx((0.25, 0.05))
    assert summarize_folds([{"roc_auc": None}])["roc_auc"] is None


def test_scores_by_transaction_keeps_the_first_score_of_a_redelivery():
    scores, found, duplicates = scores_by_transaction(
        ["t1", "t2", "t3"], [("t2", 0.2), ("t1", 0.1), ("t2", 0.9), ("zz", 0.5)]
    )
    assert scores[:2].tolist() == [0.1, 0.2] and np.isnan(scores[2])
    assert found.tolist() == [True, True, False]
    assert duplicates == 1


def test_detectable_frauds_follow_the_scenarios_and_the_terminal_risk():
    frame = pd.DataFrame({
        "TX_FRAUD": [0, 1, 1, 1, 1, 0],
        "TX_FRAUD_SCENARIO": [0, 1, 2, 2, 3, 0],
        "risk": [0.5, 0.0, 0.0, 0.2, 0.0, 0.0],
    })
    assert detectable_frauds(frame, "risk").tolist() == [False, True, False, True, True, False]
    with pytest.raises(ValueError, match="nope"):
        detectable_frauds(frame, "nope")

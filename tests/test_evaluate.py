"""The handbook's metrics (chapter 4) and split (chapter 5), on frames worked out by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.scoring.evaluate import (
    card_precision_top_k,
    evaluate_scores,
    handbook_split,
    window_counts,
)


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


def test_split_drops_cards_known_compromised_with_the_label_delay():
    # train 07-01, gap 1 day (07-02), test 07-03..07-04: on test day t the frauds of
    # 07-01..t-2 are known.
    frame = _frame(
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
    train, test = handbook_split(frame, date(2018, 7, 1), date(2018, 7, 1), 1, 2)
    assert frame.index[train].tolist() == [1]
    kept = frame.loc[test, ["TX_DATETIME", "CUSTOMER_ID"]]
    assert [(t.day, c) for t, c in kept.itertuples(index=False)] == [
        (3, "W"), (3, "Y"), (3, "Z"), (4, "Z"),
    ]


def test_split_defaults_are_the_handbooks_7_7_7():
    frame = _frame(
        [("2018-07-04 00:00", "A", 0), ("2018-07-10 23:59", "B", 1),
         ("2018-07-11 00:00", "C", 0), ("2018-07-17 23:59", "D", 1),
         ("2018-07-18 00:00", "B", 0), ("2018-07-18 00:01", "D", 0),
         ("2018-07-24 23:59", "E", 0), ("2018-07-25 00:00", "F", 0)]
    )
    train, test = handbook_split(frame, date(2018, 7, 4), date(2018, 7, 10))
    assert frame.loc[train, "CUSTOMER_ID"].tolist() == ["A", "B"]
    # B (fraud on a train day) is dropped; D (fraud on the last gap day) is not yet known
    assert frame.loc[test, "CUSTOMER_ID"].tolist() == ["D", "E"]


def test_window_counts():
    assert window_counts(TWO_DAYS) == {"transactions": 9, "frauds": 4, "fraud_cards": 3}

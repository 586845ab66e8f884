"""The Fraud Detection Handbook's performance metrics and train/test split.

Source: Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (ULB): chapter 4 ("performance
metrics": ``card_precision_top_k_day``, ``card_precision_top_k``,
``performance_assessment``) and chapter 5 ("validation strategies":
``get_train_test_set``). The functions here follow that code, with every choice it
leaves implicit (ties, empty days, one-class windows) written down.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({
...     "TX_DATETIME": pd.to_datetime(["2018-07-18 10:00"] * 4),
...     "CUSTOMER_ID": [1, 2, 3, 4],
...     "TX_FRAUD": [1, 0, 1, 0]})
>>> m = evaluate_scores(frame, [0.9, 0.1, 0.8, 0.2], k=2)
>>> m["roc_auc"], m["average_precision"], m["card_precision_at_k"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "card_precision_top_k",
    "evaluate_scores",
    "handbook_split",
    "window_counts",
]

_REQUIRED = ("TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD")


def _check_frame(frame: pd.DataFrame, scores: Sequence[float] | np.ndarray) -> np.ndarray:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}; needs {list(_REQUIRED)}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(frame):
        raise ValueError(f"scores: expected {len(frame)} values (one per row), got {len(s)}")
    if not np.isfinite(s).all():
        raise ValueError("scores: every score must be finite")
    return s


def card_precision_top_k(
    frame: pd.DataFrame,
    scores: Sequence[float] | np.ndarray,
    k: int = 100,
    remove_detected: bool = True,
) -> tuple[list[float], float, list[int]]:
    """Daily card precision@k (handbook chapter 4, ``card_precision_top_k``).

    For each day (UTC date of ``TX_DATETIME``) in increasing order: the transactions
    of cards already detected on an earlier day are dropped; each card gets the max of
    its scores and the max of its labels that day; the ``k`` cards with the highest
    score are "alerted"; the day's precision is the number of fraudulent cards among
    them divided by ``k`` (also when fewer than ``k`` cards transacted that day). The
    fraudulent cards among the top ``k`` count as detected from the next day on.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``TX_DATETIME``, ``CUSTOMER_ID``, ``TX_FRAUD`` (0/1).
    scores : array-like of shape (n_rows,)
        Higher means more suspicious.
    k : int, default=100
        Cards an investigator team can check per day; at least 1.
    remove_detected : bool, default=True
        Drop cards found compromised on an earlier day (the handbook's default).

    Returns
    -------
    daily : list of float
        Precision of each day, in [0, 1].
    mean : float
        Mean of ``daily`` (NaN when ``frame`` is empty).
    fraud_cards_daily : list of int
        Compromised cards still to be found each day (the most any ranking can get is
        ``min(k, fraud_cards) / k``).

    Notes
    -----
    Ties in the card score are broken by ``CUSTOMER_ID`` order, so the result is
    deterministic (the handbook's unstable sort leaves ties to chance).

    Raises
    ------
    ValueError
        ``k < 1``, a missing column, or ``scores`` not one finite value per row.
    """
    if k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    s = _check_frame(frame, scores)
    cards = pd.DataFrame(
        {
            "day": frame["TX_DATETIME"].dt.floor("D").to_numpy(),
            "card": frame["CUSTOMER_ID"].to_numpy(),
            "fraud": frame["TX_FRAUD"].to_numpy().astype(np.int64),
            "score": s,
        }
    )
    detected: set[Any] = set()
    daily: list[float] = []
    fraud_cards: list[int] = []
    for _, day in cards.groupby("day", sort=True):
        if detected:
            day = day[~day["card"].isin(detected)]
        per_card = day.groupby("card", sort=True)[["score", "fraud"]].max()
        fraud_cards.append(int(per_card["fraud"].sum()))
        top = per_card.sort_values("score", ascending=False, kind="stable").head(k)
        found = top.index[top["fraud"].to_numpy() == 1]
        daily.append(len(found) / k)
        if remove_detected:
            detected.update(found.tolist())
    mean = float(np.mean(daily)) if daily else float("nan")
    return daily, mean, fraud_cards


def evaluate_scores(
    frame: pd.DataFrame,
    scores: Sequence[float] | np.ndarray,
    k: int = 100,
    known_compromised: Collection[Any] = frozenset(),
) -> dict[str, Any]:
    """ROC AUC, average precision and card precision@k of scores on a test window.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``TX_DATETIME``, ``CUSTOMER_ID``, ``TX_FRAUD`` (0/1), one row per
        transaction of the test window.
    scores : array-like of shape (n_rows,)
        Higher means more likely fraud.
    k : int, default=100
        Cards checked per day for card precision@k.
    known_compromised : collection of customer ids, default=empty
        Cards already known to be compromised before the window: all their rows are
        dropped before every metric (the handbook drops them from the test set).

    Returns
    -------
    dict
        ``roc_auc`` and ``average_precision`` (float in [0, 1], or None when the rows
        left hold a single class), ``card_precision_at_k`` (mean over days, in [0, 1];
        None without rows), ``card_precision_daily`` (list of float), ``fraud_cards_daily``
        (list of int), ``k``, ``n_transactions``, ``n_frauds`` and ``n_removed`` (rows
        dropped as known compromised).

    Raises
    ------
    ValueError
        As :func:`card_precision_top_k`.
    """
    s = _check_frame(frame, scores)
    keep = np.ones(len(frame), dtype=bool)
    if len(known_compromised):
        keep = ~frame["CUSTOMER_ID"].isin(list(known_compromised)).to_numpy()
    sub, s = frame.loc[keep], s[keep]
    y = sub["TX_FRAUD"].to_numpy().astype(np.int64)
    two_classes = len(np.unique(y)) == 2
    daily, mean, fraud_cards = card_precision_top_k(sub, s, k=k)
    return {
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else None,
        "average_precision": float(average_precision_score(y, s)) if two_classes else None,
        "card_precision_at_k": mean if daily else None,
        "card_precision_daily": daily,
        "fraud_cards_daily": fraud_cards,
        "k": k,
        "n_transactions": int(len(sub)),
        "n_frauds": int(y.sum()),
        "n_removed": int((~keep).sum()),
    }


def handbook_split(
    frame: pd.DataFrame,
    train_start: date,
    train_end: date,
    gap_days: int = 7,
    test_days: int = 7,
) -> tuple[np.ndarray, np.ndarray]:
    """Row masks of the train and test windows (handbook chapter 5, ``get_train_test_set``).

    Train: every transaction on days ``train_start..train_end``. Test: the
    ``test_days`` days starting ``gap_days`` days after ``train_end``, without the
    transactions of cards known to be compromised. As in the handbook, labels arrive
    with a delay of ``gap_days`` days: on test day ``t`` a card is known compromised
    when it had a fraud on a day in ``train_start..t - gap_days - 1``. (With the
    default 7/7/7 split this is the handbook's rule: on the first test day the frauds
    of the train window are known, one more gap day becomes known each day after.)

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``TX_DATETIME``, ``CUSTOMER_ID``, ``TX_FRAUD``.
    train_start, train_end : datetime.date
        First and last training day, inclusive.
    gap_days : int, default=7
        Days between the train and test windows (the feedback delay), >= 0.
    test_days : int, default=7
        Days in the test window, >= 1.

    Returns
    -------
    train_mask, test_mask : ndarray of bool of shape (n_rows,)
    """
    if gap_days < 0:
        raise ValueError(f"gap_days: expected >= 0, got {gap_days}")
    if test_days < 1:
        raise ValueError(f"test_days: expected >= 1, got {test_days}")
    if train_end < train_start:
        raise ValueError(f"train_end {train_end} is before train_start {train_start}")
    days = frame["TX_DATETIME"].dt.floor("D")
    ts = pd.Timestamp
    train_mask = ((days >= ts(train_start)) & (days <= ts(train_end))).to_numpy()
    test_start = train_end + timedelta(days=gap_days + 1)
    test_mask = np.zeros(len(frame), dtype=bool)
    fraud = frame["TX_FRAUD"].to_numpy() == 1
    cards = frame["CUSTOMER_ID"]
    for i in range(test_days):
        day = test_start + timedelta(days=i)
        known_until = day - timedelta(days=gap_days + 1)
        known_rows = fraud & ((days >= ts(train_start)) & (days <= ts(known_until))).to_numpy()
        known = pd.unique(cards.to_numpy()[known_rows])
        on_day = (days == ts(day)).to_numpy()
        test_mask |= on_day & ~cards.isin(known).to_numpy()
    return train_mask, test_mask


def window_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Transactions, frauds and distinct compromised cards of a window."""
    fraud = frame["TX_FRAUD"].to_numpy() == 1
    return {
        "transactions": int(len(frame)),
        "frauds": int(fraud.sum()),
        "fraud_cards": int(frame.loc[fraud, "CUSTOMER_ID"].nunique()),
    }

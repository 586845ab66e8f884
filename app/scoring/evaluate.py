"""The Fraud Detection Handbook's performance metrics, train/test split and validation.

Source: Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (ULB): chapter 4 ("performance
metrics": ``card_precision_top_k_day``, ``card_precision_top_k``,
``performance_assessment``) and chapter 5 ("validation strategies":
``get_train_test_set``, ``prequential_grid_search``). The functions here follow that
code, with every choice it leaves implicit (ties, empty days, one-class windows) written
down, and one choice of ours: which cards count as known compromised (see
:class:`KnownCompromised`).

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

from collections.abc import Collection, Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .protocol import DEFAULT_KNOWN_COMPROMISED, KnownCompromised

__all__ = [
    "METRICS",
    "KnownCompromised",
    "DEFAULT_KNOWN_COMPROMISED",
    "card_precision_top_k",
    "evaluate_scores",
    "handbook_split",
    "known_compromised_cards",
    "prequential_folds",
    "summarize_folds",
    "detectable_frauds",
    "scores_by_transaction",
    "window_counts",
]

_REQUIRED = ("TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD")
#: The three figures reported for every evaluation, higher is better for each.
METRICS = ("roc_auc", "average_precision", "card_precision_at_k")


def _rule(rule: KnownCompromised | str) -> KnownCompromised:
    try:
        return KnownCompromised(rule)
    except ValueError:
        allowed = ", ".join(r.value for r in KnownCompromised)
        raise ValueError(f"known_compromised: expected one of {allowed}; got {rule!r}") from None


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
        dropped before every metric (:func:`handbook_split` has usually dropped them
        already).

    Returns
    -------
    dict
        ``roc_auc`` and ``average_precision`` (float in [0, 1], or None when the rows
        left hold a single class), ``card_precision_at_k`` (mean over days, in [0, 1];
        None without rows), ``card_precision_daily`` (list of float), ``fraud_cards_daily``
        (list of int), ``perfect_card_precision_at_k`` (what a perfect ranking gets on
        these rows), ``k``, ``n_transactions``, ``n_frauds`` and ``n_removed`` (rows
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
    _, perfect, _ = card_precision_top_k(sub, y.astype(np.float64), k=k)
    return {
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else None,
        "average_precision": float(average_precision_score(y, s)) if two_classes else None,
        "card_precision_at_k": mean if daily else None,
        "card_precision_daily": daily,
        "fraud_cards_daily": fraud_cards,
        "perfect_card_precision_at_k": perfect if daily else None,
        "k": k,
        "n_transactions": int(len(sub)),
        "n_frauds": int(y.sum()),
        "n_removed": int((~keep).sum()),
    }


def _check_split(train_start: date, train_end: date, gap_days: int, test_days: int) -> date:
    if gap_days < 0:
        raise ValueError(f"gap_days: expected >= 0, got {gap_days}")
    if test_days < 1:
        raise ValueError(f"test_days: expected >= 1, got {test_days}")
    if train_end < train_start:
        raise ValueError(f"train_end {train_end} is before train_start {train_start}")
    return train_end + timedelta(days=gap_days + 1)


def known_compromised_cards(
    frame: pd.DataFrame, first_day: date, last_day: date
) -> np.ndarray:
    """Distinct ``CUSTOMER_ID`` with a fraud on a day in ``first_day..last_day``.

    Returns
    -------
    ndarray of shape (n_cards,)
        Empty when ``last_day < first_day``.
    """
    days = frame["TX_DATETIME"].dt.floor("D")
    rows = (frame["TX_FRAUD"].to_numpy() == 1) & (
        (days >= pd.Timestamp(first_day)) & (days <= pd.Timestamp(last_day))
    ).to_numpy()
    return pd.unique(frame["CUSTOMER_ID"].to_numpy()[rows])


def handbook_split(
    frame: pd.DataFrame,
    train_start: date,
    train_end: date,
    gap_days: int = 7,
    test_days: int = 7,
    known_compromised: KnownCompromised | str = DEFAULT_KNOWN_COMPROMISED,
) -> tuple[np.ndarray, np.ndarray]:
    """Row masks of the train and test windows (handbook chapter 5, ``get_train_test_set``).

    Train: every transaction on days ``train_start..train_end``. Test: the
    ``test_days`` days starting ``gap_days`` days after ``train_end``, without the
    transactions of cards known to be compromised, by the rule ``known_compromised``
    (see :class:`KnownCompromised`).

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``TX_DATETIME``, ``CUSTOMER_ID``, ``TX_FRAUD``; rows from at least
        ``train_start`` on (earlier frauds never make a card "known").
    train_start, train_end : datetime.date
        First and last training day, inclusive.
    gap_days : int, default=7
        Days between the train and test windows (the feedback delay), >= 0.
    test_days : int, default=7
        Days in the test window, >= 1.
    known_compromised : KnownCompromised or str, default="before-test"
        ``"before-test"`` or ``"handbook-daily"``.

    Returns
    -------
    train_mask, test_mask : ndarray of bool of shape (n_rows,)

    Raises
    ------
    ValueError
        Negative ``gap_days``, ``test_days < 1``, ``train_end < train_start`` or an
        unknown rule.
    """
    rule = _rule(known_compromised)
    test_start = _check_split(train_start, train_end, gap_days, test_days)
    days = frame["TX_DATETIME"].dt.floor("D")
    ts = pd.Timestamp
    train_mask = ((days >= ts(train_start)) & (days <= ts(train_end))).to_numpy()
    cards = frame["CUSTOMER_ID"]
    if rule is KnownCompromised.before_test:
        test_end = test_start + timedelta(days=test_days - 1)
        known = known_compromised_cards(frame, train_start, test_start - timedelta(days=1))
        in_test = ((days >= ts(test_start)) & (days <= ts(test_end))).to_numpy()
        return train_mask, in_test & ~cards.isin(known).to_numpy()
    test_mask = np.zeros(len(frame), dtype=bool)
    for i in range(test_days):
        day = test_start + timedelta(days=i)
        known = known_compromised_cards(frame, train_start, day - timedelta(days=gap_days + 1))
        on_day = (days == ts(day)).to_numpy()
        test_mask |= on_day & ~cards.isin(known).to_numpy()
    return train_mask, test_mask


def prequential_folds(
    train_start: date,
    train_end: date,
    test_days: int = 7,
    n_folds: int = 4,
    shift_days: int = 0,
) -> list[tuple[date, date]]:
    """Train windows of prequential validation (handbook chapter 5).

    Fold ``i`` (``0..n_folds - 1``) is the split moved back by ``shift_days + i *
    test_days`` days: same train length, gap and test length. With ``shift_days = gap
    + test_days`` (the handbook's model selection) the first fold's test window ends
    the day before ``train_start + test_days``, i.e. every fold is evaluated on
    labels known before the real split's test window starts, when its train window is
    at least as long as its test window.

    Returns
    -------
    list of (train_start, train_end)
        Most recent fold first.

    Raises
    ------
    ValueError
        ``n_folds < 1``, ``test_days < 1`` or ``shift_days < 0``.

    Examples
    --------
    >>> [(str(a), str(b)) for a, b in prequential_folds(date(2018, 7, 4), date(2018, 7, 10),
    ...                                                    7, 2, shift_days=14)]
    [('2018-06-20', '2018-06-26'), ('2018-06-13', '2018-06-19')]
    """
    if n_folds < 1:
        raise ValueError(f"n_folds: expected >= 1, got {n_folds}")
    if test_days < 1:
        raise ValueError(f"test_days: expected >= 1, got {test_days}")
    if shift_days < 0:
        raise ValueError(f"shift_days: expected >= 0, got {shift_days}")
    out = []
    for i in range(n_folds):
        back = timedelta(days=shift_days + i * test_days)
        out.append((train_start - back, train_end - back))
    return out


def summarize_folds(results: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float] | None]:
    """Mean and standard deviation (population, as the handbook's ``std``) per metric.

    Parameters
    ----------
    results : sequence of dict
        :func:`evaluate_scores` results, one per fold.

    Returns
    -------
    dict
        For each name in :data:`METRICS`: ``(mean, std)`` over the folds where it is
        defined, or None when it is defined in none.
    """
    out: dict[str, tuple[float, float] | None] = {}
    for name in METRICS:
        values = [r[name] for r in results if r.get(name) is not None]
        out[name] = (float(np.mean(values)), float(np.std(values))) if values else None
    return out


def detectable_frauds(frame: pd.DataFrame, terminal_risk_column: str) -> np.ndarray:
    """Frauds that the features can see, by the handbook simulator's scenarios.

    Scenario 1 (amount above 220) and 3 (a compromised card's amounts times 5) show in
    the amount and account features; a scenario-2 fraud (any transaction on a
    compromised terminal) shows only once a fraud of its terminal is labelled and in
    the terminal windows, i.e. when ``terminal_risk_column`` (the widest terminal risk
    window) is above zero. Scoring exactly these frauds 1 and everything else 0 is an
    *oracle*: an upper bound, up to chance among ties, of what a model of these
    features can reach.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``TX_FRAUD``, ``TX_FRAUD_SCENARIO`` and ``terminal_risk_column``.
    terminal_risk_column : str
        E.g. ``terminal_risk_30d_delay_7d``.

    Returns
    -------
    ndarray of bool of shape (n_rows,)

    Raises
    ------
    ValueError
        A column is missing.
    """
    need = ["TX_FRAUD", "TX_FRAUD_SCENARIO", terminal_risk_column]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}")
    fraud = frame["TX_FRAUD"].to_numpy() == 1
    scenario = frame["TX_FRAUD_SCENARIO"].to_numpy()
    seen = frame[terminal_risk_column].to_numpy() > 0
    return fraud & ((scenario == 1) | (scenario == 3) | ((scenario == 2) & seen))


def scores_by_transaction(
    transaction_ids: Sequence[str], scored: Iterable[tuple[str, float]]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of given transactions from ``(transaction_id, score)`` pairs.

    A transaction scored more than once (a redelivery) keeps its first score.

    Parameters
    ----------
    transaction_ids : sequence of str
        The transactions to evaluate, shape (n,).
    scored : iterable of (str, float)
        E.g. read from ``scored-transactions``, in the order read.

    Returns
    -------
    scores : ndarray of shape (n,)
        NaN where a transaction has no score.
    found : ndarray of bool of shape (n,)
    duplicates : int
        Pairs ignored because their transaction was scored already.
    """
    first: dict[str, float] = {}
    duplicates = 0
    for tid, score in scored:
        if tid in first:
            duplicates += 1
        else:
            first[tid] = float(score)
    scores = np.array([first.get(str(t), np.nan) for t in transaction_ids], dtype=np.float64)
    return scores, ~np.isnan(scores), duplicates


def window_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Transactions, frauds and distinct compromised cards of a window."""
    fraud = frame["TX_FRAUD"].to_numpy() == 1
    return {
        "transactions": int(len(frame)),
        "frauds": int(fraud.sum()),
        "fraud_cards": int(frame.loc[fraud, "CUSTOMER_ID"].nunique()),
    }

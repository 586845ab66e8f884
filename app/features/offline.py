"""Training matrices built by running the stream's own feature code over history.

:func:`build_features` replays transactions and labels in event-time order (a label
at its arrival time, ``label_time_ms``) through the same ``update_one`` /
``label_one`` / ``extract_*`` calls as the agents — never a second implementation.
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from ..data.handbook import to_labels, to_transactions
from ..events import Label, Transaction
from .extract import extract_account, feature_names
from .labels import InvestigationPolicy, label_arrivals
from .state import DAY_MS, AccountState
from .terminal import DEFAULT_DELAY_DAYS, TerminalState, extract_terminal, terminal_horizon_ms

__all__ = ["build_features", "features_frame", "event_order", "investigation_arrivals"]

_TX, _LABEL = 0, 1


def event_order(
    transactions: Iterable[Transaction], labels: Iterable[Label]
) -> Iterator[tuple[int, Transaction | Label]]:
    """Transactions (kind 0) and labels (kind 1) merged by time.

    Both inputs must be sorted by their time (``event_time_ms``, ``label_time_ms``). At
    equal times the transaction comes first: a label timed exactly at a transaction is
    not known to it (the replay emits such a label just after the transaction).
    """
    txs = ((t.event_time_ms, _TX, i, t) for i, t in enumerate(transactions))
    lbs = ((lb.label_time_ms, _LABEL, i, lb) for i, lb in enumerate(labels))
    for _, kind, _, item in heapq.merge(txs, lbs, key=lambda e: (e[0], e[1], e[2])):
        yield kind, item


def build_features(
    transactions: Iterable[Transaction],
    labels: Iterable[Label] = (),
    delay_days: int = DEFAULT_DELAY_DAYS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Feature matrix of a transaction sequence, with labels applied as they arrive.

    Parameters
    ----------
    transactions : iterable of Transaction
        In event-time order (as :func:`app.data.handbook.read_handbook` sorts them).
    labels : iterable of Label, default=()
        In ``label_time_ms`` order; each is applied to its terminal's state at
        ``label_time_ms``.
    delay_days : int, default=7
        The terminal windows end this many days before each transaction.
    progress : callable, optional
        Called with the number of transactions done, every 10,000.

    Returns
    -------
    ndarray of shape (n_transactions, len(feature_names(delay_days))), dtype float64
        Row ``i`` belongs to the ``i``-th transaction. A duplicate transaction gets its
        row as the stream would compute it, without changing any state.
    """
    accounts: dict[str, AccountState] = {}
    terminals: dict[str, TerminalState] = {}
    horizon = terminal_horizon_ms(delay_days)
    rows: list[list[float]] = []
    for kind, item in event_order(transactions, labels):
        if kind == _LABEL:
            state = terminals.get(item.terminal_id)
            if state is None:
                state = terminals[item.terminal_id] = TerminalState()
            state.label_one(item, horizon)
            continue
        tx = item
        acc = accounts.get(tx.account_id)
        if acc is None:
            acc = accounts[tx.account_id] = AccountState()
        term = terminals.get(tx.terminal_id)
        if term is None:
            term = terminals[tx.terminal_id] = TerminalState()
        rows.append(extract_account(acc, tx) + extract_terminal(term, tx, delay_days))
        acc.update_one(tx)
        term.update_one(tx, horizon)
        if progress and len(rows) % 10_000 == 0:
            progress(len(rows))
    if not rows:
        return np.empty((0, len(feature_names(delay_days))))
    return np.asarray(rows, dtype=np.float64)


def features_frame(
    df: pd.DataFrame,
    labels_delay_days: float | None = 7,
    delay_days: int = DEFAULT_DELAY_DAYS,
    progress: Callable[[int], None] | None = None,
    arrivals: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Handbook rows with their features appended.

    Parameters
    ----------
    df : pandas.DataFrame
        As returned by :func:`app.data.handbook.read_handbook` (sorted by event time).
        State starts empty at its first row: include enough history (``delay + 30``
        days) before the rows you train or test on.
    labels_delay_days : float or None, default=7
        Each row's label (``TX_FRAUD``) arrives this long after it, as
        ``fraudctl replay --labels-delay-days`` emits it; None: no labels at all.
    delay_days : int, default=7
        Label delay assumed by the terminal features (their windows end this early).
    arrivals : (ndarray of int64, ndarray of bool), optional
        Each row's label time (UTC epoch ms) and whether an investigator gave it, as
        :func:`investigation_arrivals` returns them (``labels_delay_days`` is then
        ignored): labels arrive as ``fraudctl replay --investigators`` emits them.

    Returns
    -------
    pandas.DataFrame of shape (len(df), 9 + len(feature_names(delay_days)))
        ``df``'s columns then one column per feature name.
    """
    labels: Iterable[Label] = ()
    if arrivals is not None:
        labels = to_labels(df, 0, label_times_ms=arrivals[0], investigated=arrivals[1])
    elif labels_delay_days is not None:
        labels = to_labels(df, int(round(labels_delay_days * DAY_MS)))
    X = build_features(to_transactions(df), labels, delay_days, progress=progress)
    out = df.reset_index(drop=True).copy()
    feats = pd.DataFrame(X, columns=list(feature_names(delay_days)))
    return pd.concat([out, feats], axis=1)


def investigation_arrivals(
    df: pd.DataFrame,
    policy: InvestigationPolicy,
    score: Callable[[pd.DataFrame], np.ndarray] | None = None,
    chargeback_frame: pd.DataFrame | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label time and source of every row of ``df`` under ``policy``
    (:func:`app.features.labels.label_arrivals`).

    The policy scores (the investigators' queue) are ``score`` of the rows' features
    computed with chargeback labels only, so they never depend on an investigator's
    verdict.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`app.data.handbook.read_handbook` frame, sorted by event time; the
        simulation starts at its first row (as a replay of it does).
    policy : InvestigationPolicy
    score : callable, optional
        ``score(frame) -> ndarray of shape (len(frame),)``: the policy scores of a
        :func:`features_frame` result (e.g. a model's ``score_many`` of its feature
        columns). Required when ``policy.active``.
    chargeback_frame : pandas.DataFrame, optional
        ``features_frame(df, labels_delay_days=policy.chargeback_delay_ms / DAY_MS)``
        when the caller has it already; default: computed here.
    progress : callable, optional
        As for :func:`build_features`.

    Returns
    -------
    label_time_ms : ndarray of int64 of shape (len(df),)
    investigated : ndarray of bool of shape (len(df),)

    Raises
    ------
    ValueError
        ``score`` missing while ``policy.active``, or it returned a wrong shape.
    """
    times = df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    cards = df["CUSTOMER_ID"].to_numpy()
    if not policy.active:
        return label_arrivals(times, cards, None, policy)
    if score is None:
        raise ValueError("score: required when investigators work (k > 0)")
    if chargeback_frame is None:
        chargeback_frame = features_frame(
            df, labels_delay_days=policy.chargeback_delay_ms / DAY_MS, progress=progress
        )
    return label_arrivals(times, cards, score(chargeback_frame), policy)

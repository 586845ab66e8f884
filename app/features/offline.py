"""Training matrices built by running the stream's own feature code over history.

:func:`build_features` replays transactions in event-time order through
:meth:`AccountState.update_one` and :func:`extract_one`, exactly as the
``score_transactions`` agent does per partition — never a second implementation.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ..data.handbook import to_transactions
from ..events import Transaction
from .extract import FEATURE_NAMES, extract_one
from .state import AccountState

__all__ = ["build_features", "features_frame"]


def build_features(
    transactions: Iterable[Transaction],
    states: dict[str, AccountState] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Feature matrix of a transaction sequence, processed in the order given.

    Parameters
    ----------
    transactions : iterable of Transaction
        In event-time order (as :func:`app.data.handbook.read_handbook` sorts them).
    states : dict of str to AccountState, optional
        Per-account state to start from and update in place; default: empty.
    progress : callable, optional
        Called with the number of transactions done, every 10,000.

    Returns
    -------
    ndarray of shape (n_transactions, len(FEATURE_NAMES)), dtype float64
        A duplicate transaction (already in its account's state) still gets its row,
        computed as the stream would, without updating the state.
    """
    states = {} if states is None else states
    rows: list[list[float]] = []
    for i, tx in enumerate(transactions, 1):
        state = states.get(tx.account_id)
        if state is None:
            state = states[tx.account_id] = AccountState()
        rows.append(extract_one(state, tx))
        state.update_one(tx)
        if progress and i % 10_000 == 0:
            progress(i)
    if not rows:
        return np.empty((0, len(FEATURE_NAMES)))
    return np.asarray(rows, dtype=np.float64)


def features_frame(
    df: pd.DataFrame, progress: Callable[[int], None] | None = None
) -> pd.DataFrame:
    """Handbook rows with their features appended.

    Parameters
    ----------
    df : pandas.DataFrame
        As returned by :func:`app.data.handbook.read_handbook` (sorted by event time).
        State starts empty at its first row: include enough history (30 days) before
        the rows you train or test on.

    Returns
    -------
    pandas.DataFrame of shape (len(df), 9 + len(FEATURE_NAMES))
        ``df``'s columns then one column per name in :data:`FEATURE_NAMES`.
    """
    X = build_features(to_transactions(df), progress=progress)
    out = df.reset_index(drop=True).copy()
    feats = pd.DataFrame(X, columns=list(FEATURE_NAMES))
    return pd.concat([out, feats], axis=1)

"""The drift reference of a model: its training matrix, binned (pure: pandas and the
feature code, no faust/redis/kafka).

Training computes the reference from its own matrix when it saves a model; for a model
whose card lacks one, :func:`reference_for_window` rebuilds that matrix from the handbook
data and the card's data window (``fraudctl drift reference VERSION --data PATH``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from ..features.offline import features_frame
from .drift import FeatureReference, reference_from_matrix

__all__ = ["reference_for_window"]


def reference_for_window(
    df: pd.DataFrame,
    train_start: date,
    train_end: date,
    feature_names: Sequence[str],
    n_bins: int = 10,
) -> tuple[dict[str, FeatureReference], int]:
    """Reference bins of the features of the rows in ``train_start..train_end``.

    Parameters
    ----------
    df : pandas.DataFrame of shape (n_transactions, 9)
        Handbook rows from the card's ``history_start`` to at least ``train_end`` (the
        history before the window fills the account state, as in training).
    train_start, train_end : date
        The training window, both days inclusive.
    feature_names : sequence of str
        The model's features (the card's ``feature_names``).
    n_bins : int, default=10

    Returns
    -------
    reference : dict of str to FeatureReference
    n_rows : int
        Training rows it was computed from.

    Raises
    ------
    ValueError
        If no row falls in the window.
    """
    feats = features_frame(df)
    day = feats["TX_DATETIME"].dt.floor("D")
    in_window = day.between(pd.Timestamp(train_start), pd.Timestamp(train_end))
    X = feats.loc[in_window, list(feature_names)].to_numpy(dtype="float64")
    if X.shape[0] == 0:
        raise ValueError(f"no transaction between {train_start} and {train_end}")
    return reference_from_matrix(X, feature_names, n_bins=n_bins), int(X.shape[0])

"""The cold-start rule: a higher alert threshold for accounts with too little history.

A deployment on empty state, or a card the service has barely seen, has account
features computed from one or two transactions: a second purchase twice the first
looks like a compromised card's spending jump to a model trained on warm state. The
rule reads how much history the account has (the feature ``account_tx_count_30d``,
transactions of the account in the last 30 days of event time, the one being scored
included) and, below ``min_account_tx``, alerts only at a score of at least
``threshold``. Measured on the simulator from empty state and on warm state:
``bench/cold_start.py`` and docs/model.md (cold start).

Examples
--------
>>> rule = ColdStartRule(min_account_tx=10, threshold=0.8)
>>> rule.threshold_for({"account_tx_count_30d": 2.0}, 0.35)
0.8
>>> rule.threshold_for({"account_tx_count_30d": 12.0}, 0.35)
0.35
>>> ColdStartRule(min_account_tx=-1)
Traceback (most recent call last):
...
ValueError: min_account_tx: expected an integer >= 0, got -1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["ColdStartRule", "HISTORY_FEATURE"]

#: The feature that says how much history an account has.
HISTORY_FEATURE = "account_tx_count_30d"


@dataclass(frozen=True)
class ColdStartRule:
    """Alert threshold of accounts with fewer than ``min_account_tx`` transactions.

    Parameters
    ----------
    min_account_tx : int, default=0
        Accounts with fewer transactions in the last 30 days (``account_tx_count_30d``)
        are cold; 0: the rule is off (``COLD_START_MIN_ACCOUNT_TX``).
    threshold : float, default=0.8
        Alert threshold of a cold account, in [0, 1]; the higher of it and the model's
        threshold applies (``COLD_START_THRESHOLD``).

    Raises
    ------
    ValueError
        A parameter out of range (named, with the value received).
    """

    min_account_tx: int = 0
    threshold: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.min_account_tx, int) or self.min_account_tx < 0:
            raise ValueError(f"min_account_tx: expected an integer >= 0, got {self.min_account_tx!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a float in [0, 1], got {self.threshold!r}")

    @property
    def active(self) -> bool:
        """Whether the rule can change a threshold."""
        return self.min_account_tx > 0

    def threshold_for(self, features: Mapping[str, float], threshold: float) -> float:
        """The alert threshold of one transaction (``threshold``: the model's)."""
        history = features.get(HISTORY_FEATURE)
        if self.active and history is not None and history < self.min_account_tx:
            return max(threshold, self.threshold)
        return threshold

    def thresholds_many(self, X: np.ndarray, feature_names: Sequence[str],
                        threshold: float) -> np.ndarray:
        """:meth:`threshold_for` of a batch.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Columns in ``feature_names`` order.
        feature_names : sequence of str
        threshold : float

        Returns
        -------
        thresholds : ndarray of shape (n_samples,)
        """
        out = np.full(len(X), float(threshold))
        names = list(feature_names)
        if self.active and HISTORY_FEATURE in names:
            cold = np.asarray(X)[:, names.index(HISTORY_FEATURE)] < self.min_account_tx
            out[cold] = max(threshold, self.threshold)
        return out

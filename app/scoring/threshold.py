"""Alert thresholds from an alert budget: at most N alerts per day on a window.

Examples
--------
>>> import numpy as np
>>> days = np.array(["d1"] * 4 + ["d2"] * 4)
>>> scores = np.array([0.9, 0.8, 0.3, 0.1, 0.7, 0.6, 0.5, 0.2])
>>> labels = np.array([1, 0, 0, 0, 1, 1, 0, 0])
>>> c = threshold_for_budget(scores, days, labels, budget=2)
>>> c.threshold, c.max_alerts_per_day, c.precision, c.recall
(0.5001, 2, 0.75, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BudgetPeriod", "ThresholdChoice", "threshold_for_budget"]

BudgetPeriod = Literal["day", "mean-day"]


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it gives on the window it was chosen on.

    Attributes
    ----------
    threshold : float
        Alert when ``score >= threshold``; in [0, 1], rounded up to 4 decimals.
    budget : int
        Alerts allowed per day.
    per : {"day", "mean-day"}
        ``day``: every day within the budget; ``mean-day``: the mean over days.
    days : int
        Days in the window.
    max_alerts_per_day, mean_alerts_per_day : float
    alerts, frauds_alerted, frauds : int
    precision : float or None
        Frauds among alerts (None without alerts).
    recall : float or None
        Alerted frauds among frauds (None without frauds).
    within_budget : bool
        False only when more than ``budget`` rows of a day (or of the window, for
        ``mean-day``) score exactly 1.0: no threshold in [0, 1] meets the budget, and
        ``threshold`` is 1.0.
    """

    threshold: float
    budget: int
    per: str
    days: int
    max_alerts_per_day: int
    mean_alerts_per_day: float
    alerts: int
    frauds_alerted: int
    frauds: int
    precision: float | None
    recall: float | None
    within_budget: bool = True


def _round_up_above(bound: float) -> float:
    """The smallest 4-decimal number strictly above ``bound`` (at least 0, at most 1)."""
    if bound < 0:
        return 0.0
    t = math.ceil(bound * 1e4) / 1e4
    if t <= bound:
        t = round(t + 1e-4, 4)
    return min(t, 1.0)


def threshold_for_budget(
    scores: np.ndarray,
    days: np.ndarray,
    labels: np.ndarray,
    budget: int,
    per: BudgetPeriod = "day",
) -> ThresholdChoice:
    """The lowest threshold whose alerts stay within ``budget`` a day.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        In [0, 1], higher is more likely fraud.
    days : ndarray of shape (n_samples,)
        Day of each row (any hashable: dates, strings).
    labels : ndarray of shape (n_samples,)
        1 fraud, 0 genuine.
    budget : int
        Alerts allowed a day, at least 1.
    per : {"day", "mean-day"}, default="day"
        ``day``: no day above the budget; ``mean-day``: at most ``budget * days`` over
        the window.

    Returns
    -------
    ThresholdChoice

    Raises
    ------
    ValueError
        ``budget < 1``, unknown ``per``, lengths differ or no rows.
    """
    if budget < 1:
        raise ValueError(f"budget: expected an integer >= 1, got {budget!r}")
    if per not in ("day", "mean-day"):
        raise ValueError(f"per: expected 'day' or 'mean-day', got {per!r}")
    scores = np.asarray(scores, dtype=np.float64)
    days = np.asarray(days)
    labels = np.asarray(labels).astype(np.int64)
    if not len(scores) == len(days) == len(labels) or len(scores) == 0:
        raise ValueError(
            f"scores, days, labels: expected equal non-zero lengths, got {len(scores)}, "
            f"{len(days)}, {len(labels)}"
        )
    uniq, day_idx = np.unique(days, return_inverse=True)
    n_days = len(uniq)
    bound = -1.0  # threshold must be strictly above this
    if per == "day":
        for d in range(n_days):
            s = np.sort(scores[day_idx == d])[::-1]
            if len(s) > budget:
                bound = max(bound, float(s[budget]))
    else:
        s = np.sort(scores)[::-1]
        allowed = budget * n_days
        if len(s) > allowed:
            bound = float(s[allowed])
    threshold = _round_up_above(bound)
    alerted = scores >= threshold
    per_day = np.bincount(day_idx[alerted], minlength=n_days)
    frauds = int(labels.sum())
    hit = int(labels[alerted].sum())
    return ThresholdChoice(
        threshold=threshold,
        budget=budget,
        per=per,
        days=n_days,
        max_alerts_per_day=int(per_day.max()),
        mean_alerts_per_day=float(per_day.mean()),
        alerts=int(alerted.sum()),
        frauds_alerted=hit,
        frauds=frauds,
        precision=hit / int(alerted.sum()) if alerted.any() else None,
        recall=hit / frauds if frauds else None,
        within_budget=bool(per_day.max() <= budget if per == "day"
                           else per_day.sum() <= budget * n_days),
    )

"""When each label becomes known: the chargeback feed, and a simulated investigator team.

One pure function, :func:`label_arrivals`, gives every transaction's ``label_time_ms``
and ``source``; ``fraudctl replay --investigators K`` (the stream), the offline builder
(:func:`app.features.offline.features_frame`) and ``fraudctl evaluate --investigators
K`` all call it, so the stream and training see the same labels at the same times.

The rule (:class:`InvestigationPolicy`):

* Every label arrives by the chargeback feed ``chargeback_delay_ms`` (7 days) after
  its transaction, source ``chargeback``.
* A team of investigators checks at most ``k`` cards per UTC day. A card is
  investigated at the first transaction of the day whose *policy score* reaches the
  day's threshold, while fewer than ``k`` cards were investigated that day; the
  threshold of day ``d`` is the ``k``-th highest card score (each card's maximum) of
  day ``d - 1``, so the team works the queue of alerts as they come, about ``k`` a
  day, knowing only the past. Nobody is investigated on the first day of the data.
* The verdict comes ``verdict_delay_ms`` (2 hours) after that transaction and labels,
  truthfully, every transaction of the card up to and including it whose label is not
  known yet: those labels arrive at the verdict's time, source ``investigation``.

The policy scores are the team's queue: a model's scores of the transactions computed
from features with chargeback labels only (see
:func:`app.features.offline.investigation_labels`), so the labels never depend on the
features they feed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .state import DAY_MS

if TYPE_CHECKING:  # numpy is imported where used: the CLI reads the policy at start-up
    import numpy as np

__all__ = [
    "CHARGEBACK",
    "INVESTIGATION",
    "LABEL_SOURCES",
    "DEFAULT_CHARGEBACK_DELAY_MS",
    "DEFAULT_VERDICT_DELAY_MS",
    "InvestigationPolicy",
    "label_arrivals",
]

#: ``Label.source`` of the delayed feed.
CHARGEBACK = "chargeback"
#: ``Label.source`` of an investigator's verdict.
INVESTIGATION = "investigation"
#: Every value ``Label.source`` takes.
LABEL_SOURCES = (CHARGEBACK, INVESTIGATION)
#: Delay of the chargeback feed: 7 days, in ms.
DEFAULT_CHARGEBACK_DELAY_MS = 7 * DAY_MS
#: Time from the alert to the investigator's verdict: 2 hours, in ms.
DEFAULT_VERDICT_DELAY_MS = 2 * 3_600_000


@dataclass(frozen=True)
class InvestigationPolicy:
    """How labels arrive (see the module's docstring).

    Parameters
    ----------
    k : int, default=0
        Cards investigated per UTC day, >= 0; 0: no investigators (chargebacks only).
        The handbook's card precision@k uses 100.
    verdict_delay_ms : int, default=2 h
        From the alerting transaction to the verdict, in ms, >= 0.
    chargeback_delay_ms : int, default=7 days
        From a transaction to its chargeback label, in ms, >= 0.

    Raises
    ------
    ValueError
        A negative value, naming the parameter.
    """

    k: int = 0
    verdict_delay_ms: int = DEFAULT_VERDICT_DELAY_MS
    chargeback_delay_ms: int = DEFAULT_CHARGEBACK_DELAY_MS

    def __post_init__(self) -> None:
        for name in ("k", "verdict_delay_ms", "chargeback_delay_ms"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        """True when investigators work (``k > 0``)."""
        return self.k > 0


def _daily_thresholds(day: np.ndarray, cards: np.ndarray, scores: np.ndarray, k: int
                      ) -> dict[int, float]:
    """``{day: k-th highest card score of the day before}`` for each day after the first."""
    import numpy as np

    out: dict[int, float] = {}
    days = np.unique(day)
    for prev, cur in zip(days[:-1], days[1:]):
        if cur != prev + 1:
            continue  # no data the day before: nobody knows a threshold
        sel = day == prev
        order = np.lexsort((scores[sel], cards[sel]))  # by card, then score
        c, s = cards[sel][order], scores[sel][order]
        last = np.r_[c[1:] != c[:-1], True]  # last row of each card: its max score
        top = np.sort(s[last])[::-1]
        out[int(cur)] = float(top[min(k, len(top)) - 1])
    return out


def label_arrivals(
    times_ms: np.ndarray,
    cards: np.ndarray,
    scores: np.ndarray | None,
    policy: InvestigationPolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival time and source of every transaction's label.

    Parameters
    ----------
    times_ms : array-like of int of shape (n,)
        Event times (UTC epoch ms), non-decreasing.
    cards : array-like of shape (n,)
        Card (account) ids.
    scores : array-like of float of shape (n,), or None
        Policy scores, higher means more suspicious; needed when ``policy.active``.
    policy : InvestigationPolicy

    Returns
    -------
    label_time_ms : ndarray of int64 of shape (n,)
        At most ``event_time + chargeback_delay_ms``.
    investigated : ndarray of bool of shape (n,)
        True where the label comes from a verdict (source ``investigation``), i.e.
        strictly before the chargeback.

    Raises
    ------
    ValueError
        Lengths differ, times are not sorted, or scores are missing or not finite
        while investigators work.

    Examples
    --------
    Two days, two cards, one investigator: on day 2 card ``b`` reaches the threshold of
    day 1 (0.8, the best card's score) first, so its transactions are labelled 2 hours
    after its alert at 01:00; card ``a``'s wait for the chargeback.

    >>> import numpy as np
    >>> H = 3_600_000
    >>> t = np.array([0, 1, 24, 25, 26]) * H
    >>> when, inv = label_arrivals(t, np.array(["a", "b", "a", "b", "a"]),
    ...                            np.array([0.8, 0.1, 0.5, 0.9, 0.95]),
    ...                            InvestigationPolicy(k=1))
    >>> (when // H).tolist(), inv.tolist()
    ([168, 27, 192, 27, 194], [False, True, False, True, False])
    """
    import numpy as np

    t = np.asarray(times_ms, dtype=np.int64).reshape(-1)
    c = np.asarray(cards).reshape(-1)
    if len(c) != len(t):
        raise ValueError(f"cards: expected {len(t)} values, got {len(c)}")
    if len(t) and (np.diff(t) < 0).any():
        raise ValueError("times_ms must be non-decreasing")
    when = t + policy.chargeback_delay_ms
    investigated = np.zeros(len(t), dtype=bool)
    if not policy.active or not len(t):
        return when, investigated
    if scores is None:
        raise ValueError("scores: required when investigators work (k > 0)")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(t):
        raise ValueError(f"scores: expected {len(t)} values, got {len(s)}")
    if not np.isfinite(s).all():
        raise ValueError("scores: every score must be finite")
    day = t // DAY_MS
    thresholds = _daily_thresholds(day, c, s, policy.k)
    rows_of: dict[object, list[int]] = {}
    labelled_upto: dict[object, int] = {}  # per card: rows before this index are done
    seen_today: set[object] = set()
    current, count, threshold = None, 0, np.inf
    for i in range(len(t)):
        card = c[i].item() if isinstance(c[i], np.generic) else c[i]
        rows_of.setdefault(card, []).append(i)
        if day[i] != current:
            current, count, seen_today = day[i], 0, set()
            threshold = thresholds.get(int(current), np.inf)
        if count >= policy.k or s[i] < threshold or card in seen_today:
            continue
        seen_today.add(card)
        count += 1
        verdict = t[i] + policy.verdict_delay_ms
        rows = rows_of[card]
        for j in rows[labelled_upto.get(card, 0):]:
            if verdict < when[j]:
                when[j], investigated[j] = verdict, True
        # forget rows whose chargeback is known by now: they never change again
        rows_of[card] = [j for j in rows if when[j] > t[i]]
        labelled_upto[card] = len(rows_of[card])
    return when, investigated

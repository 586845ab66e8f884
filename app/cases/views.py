"""What the console shows, pure: the queue (filter, search, sort, page) and reasons in words.

Examples
--------
>>> q = QueueQuery.parse({"status": "open", "sort": "age", "page": "2"})
>>> q.status, q.sort, q.page
('open', 'age', 2)
>>> QueueQuery.parse({"sort": "nonsense"})
Traceback (most recent call last):
...
ValueError: sort must be one of score, age, alerts, amount, not 'nonsense'
>>> reason_in_words("amount_to_account_mean_30d", 5.63, {})
"amount 5.6x this card's 30-day mean"
>>> reason_in_words("terminal_risk_7d_delay_7d", 0.25, {})
'terminal: 25% of its transactions fraud over 7 days (known 7 days later)'
>>> reason_in_words("account_tx_count_1d", 4.0, {})
'4 transactions on this card in the last 1 day'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from .model import Case

__all__ = ["QueueQuery", "QueuePage", "select", "age_seconds", "reason_in_words", "SORTS"]

#: Sort keys of the queue (each highest/oldest first).
SORTS: tuple[str, ...] = ("score", "age", "alerts", "amount")
_STATUSES = ("open", "closed", "all")
_MAX_SEARCH = 100


@dataclass(frozen=True)
class QueueQuery:
    """A queue request, from the page's query string.

    Attributes
    ----------
    status : {"open", "closed", "all"}
    search : str
        Card, transaction or terminal id (substring, case-insensitive); "" for none.
    assignee : str
        ``""`` any, ``"me"`` my cases, ``"none"`` unassigned, else that assignee.
    min_score : float
        In [0, 1]; cases whose highest score is lower are left out.
    min_age_hours : float
        Cases younger (since their first alert) are left out.
    sort : str
        One of :data:`SORTS`.
    page : int
        From 1.
    """

    status: str = "open"
    search: str = ""
    assignee: str = ""
    min_score: float = 0.0
    min_age_hours: float = 0.0
    sort: str = "score"
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> "QueueQuery":
        """From query parameters.

        Raises
        ------
        ValueError
            Naming the parameter, the allowed values and the value received.
        """
        status = query.get("status", "open") or "open"
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        sort = query.get("sort", "score") or "score"
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        search = (query.get("q", "") or "").strip()[:_MAX_SEARCH]
        try:
            min_score = float(query.get("min_score", "0") or 0)
            min_age = float(query.get("min_age_hours", "0") or 0)
            page = int(query.get("page", "1") or 1)
        except ValueError:
            raise ValueError("min_score, min_age_hours and page must be numbers") from None
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], not {min_score}")
        if min_age < 0 or page < 1:
            raise ValueError("min_age_hours must be >= 0 and page >= 1")
        return cls(status, search, (query.get("assignee", "") or "")[:100], min_score, min_age, sort, page)


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue: its cases, the number that matched, the page count."""

    cases: list[Case]
    total: int
    pages: int


def age_seconds(case: Case, now_ms: int) -> float:
    """Seconds since the case's first alert (0 without alerts)."""
    first = case.first_alert_time_ms
    return max(0.0, (now_ms - first) / 1000) if first is not None else 0.0


def _amount_minor(case: Case) -> int:
    return sum(a.transaction.amount_minor for a in case.alerts)


def _matches(case: Case, q: QueueQuery, now_ms: int, me: str) -> bool:
    if q.status != "all" and (case.status == "open") != (q.status == "open"):
        return False
    if case.max_score < q.min_score:
        return False
    if q.min_age_hours and age_seconds(case, now_ms) < q.min_age_hours * 3600:
        return False
    if q.assignee == "me" and case.assignee != me:
        return False
    if q.assignee == "none" and case.assignee:
        return False
    if q.assignee not in ("", "me", "none") and case.assignee != q.assignee:
        return False
    if q.search:
        needle = q.search.lower()
        ids = [case.case_id] + [x for a in case.alerts
                                for x in (a.transaction.transaction_id, a.transaction.terminal_id)]
        if not any(needle in i.lower() for i in ids):
            return False
    return True


def select(cases: Iterable[Case], q: QueueQuery, now_ms: int, me: str, page_size: int) -> QueuePage:
    """Filter, search, sort and page the cases.

    Parameters
    ----------
    cases : iterable of Case
    q : QueueQuery
    now_ms : int
        Wall clock, UTC epoch ms (for ages).
    me : str
        The asking analyst's actor name (for ``assignee=me``).
    page_size : int
        Cases per page.

    Returns
    -------
    QueuePage
        Ties broken by the oldest first alert, then the case id, so pages are stable.
    """
    keep = [c for c in cases if _matches(c, q, now_ms, me)]
    oldest = lambda c: c.first_alert_time_ms or 0  # noqa: E731
    keys = {
        "score": lambda c: (-c.max_score, oldest(c), c.case_id),
        "age": lambda c: (oldest(c), -c.max_score, c.case_id),
        "alerts": lambda c: (-len(c.alerts), -c.max_score, c.case_id),
        "amount": lambda c: (-_amount_minor(c), -c.max_score, c.case_id),
    }
    keep.sort(key=keys[q.sort])
    pages = max(1, -(-len(keep) // page_size))
    start = (min(q.page, pages) - 1) * page_size
    return QueuePage(keep[start:start + page_size], len(keep), pages)


_WINDOW = re.compile(r"_(\d+)d(?:_delay_(\d+)d)?$")


def reason_in_words(feature: str, value: float, features: Mapping[str, float]) -> str:
    """One reason of an alert as an analyst reads it.

    Parameters
    ----------
    feature : str
        A name of :data:`app.features.extract.FEATURE_NAMES`.
    value : float
        The feature's value for the alerted transaction.
    features : mapping of str to float
        Every feature of the alert (for context such as the card's mean).

    Returns
    -------
    str
        A phrase; a feature it has no words for is shown as ``name = value``.
    """
    m = _WINDOW.search(feature)
    days = m.group(1) if m else ""
    delay = m.group(2) if m and m.group(2) else ""
    if feature == "amount":
        return f"amount {value:,.2f}"
    if feature.startswith("amount_to_account_mean_"):
        return f"amount {value:.1f}x this card's {days}-day mean"
    if feature.startswith("amount_to_account_max_"):
        return f"amount {value:.1f}x this card's {days}-day largest"
    if feature.startswith("account_amount_mean_"):
        return f"this card's {days}-day mean amount {value:,.2f}"
    if feature.startswith("account_amount_max_"):
        return f"this card's {days}-day largest amount {value:,.2f}"
    if feature.startswith("account_tx_count_"):
        return f"{value:g} transactions on this card in the last {days} day{'s' if days != '1' else ''}"
    if feature.startswith("terminal_risk_"):
        return (f"terminal: {value:.0%} of its transactions fraud over {days} day"
                f"{'s' if days != '1' else ''} (known {delay} days later)")
    if feature.startswith("terminal_tx_count_"):
        return f"terminal: {value:g} transactions over {days} day{'s' if days != '1' else ''}"
    if feature.startswith("terminal_known_frauds_"):
        return f"terminal: {value:g} confirmed frauds in the last {days} day{'s' if days != '1' else ''}"
    if feature == "seconds_since_previous_tx":
        return f"{value / 60:,.0f} min since this card's previous transaction"
    if feature == "is_night":
        return "at night (00:00-06:59)" if value else "by day"
    if feature == "is_weekend":
        return "on a weekend" if value else "on a weekday"
    if feature == "hour_of_day":
        return f"at {value:02.0f}h"
    return f"{feature} = {value:g}"

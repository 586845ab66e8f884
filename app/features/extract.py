"""Features of one transaction, from its account's state as of just before it.

Feature names are built from the window parameters (``account_tx_count_7d``), never
typed by hand. Every value is a float; there are no missing values.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timezone

from ..events import Transaction
from .state import DAY_MS, AccountState

__all__ = ["FEATURE_NAMES", "WINDOWS_DAYS", "NO_HISTORY_SECONDS", "extract_one"]

#: Sliding windows, in days, over which account aggregates are computed.
WINDOWS_DAYS = (1, 7, 30)
#: ``seconds_since_previous_tx`` when the account has no earlier transaction (30 days).
NO_HISTORY_SECONDS = 30 * 86_400.0
_NIGHT_LAST_HOUR = 6  # handbook: a transaction is at night when its hour is 0..6


def _names() -> tuple[str, ...]:
    names = ["amount", "is_weekend", "is_night", "hour_of_day", "seconds_since_previous_tx"]
    for w in WINDOWS_DAYS:
        names += [
            f"account_tx_count_{w}d",
            f"account_amount_mean_{w}d",
            f"amount_to_account_mean_{w}d",
        ]
    names += ["account_amount_max_30d", "amount_to_account_max_30d"]
    return tuple(names)


#: Names of the values :func:`extract_one` returns, in order.
FEATURE_NAMES: tuple[str, ...] = _names()


def extract_one(state: AccountState, tx: Transaction) -> list[float]:
    """Feature vector of ``tx`` given its account's state before it.

    Only transactions of the state with event time in ``(t - w, t]`` (``t`` the event
    time of ``tx``) enter a ``w``-day window; ``tx`` itself must not be in the state yet.

    Parameters
    ----------
    state : AccountState
        The account's recent transactions, not including ``tx``.
    tx : Transaction

    Returns
    -------
    list of float of length ``len(FEATURE_NAMES)``
        Amount in major units; ratios are ``amount / mean`` (1.0 without history);
        times in seconds; flags 0.0 or 1.0.
    """
    t = tx.event_time_ms
    amount = tx.amount_minor / 100.0
    dt = datetime.fromtimestamp(t / 1000, tz=timezone.utc)
    times = state.times_ms
    amounts = state.amounts_minor
    end = bisect_right(times, t)  # events at or before t (a late tx ignores later ones)
    prev = (t - times[end - 1]) / 1000.0 if end else NO_HISTORY_SECONDS
    out = [
        amount,
        1.0 if dt.weekday() >= 5 else 0.0,
        1.0 if dt.hour <= _NIGHT_LAST_HOUR else 0.0,
        float(dt.hour),
        prev,
    ]
    largest = 0
    for w in WINDOWS_DAYS:
        start = bisect_right(times, t - w * DAY_MS, 0, end)
        n = end - start
        if n:
            window = amounts[start:end]
            mean = sum(window) / n / 100.0
            if w == WINDOWS_DAYS[-1]:
                largest = max(window)
        else:
            mean = 0.0
        out += [float(n), mean, amount / mean if mean > 0 else 1.0]
    top = largest / 100.0
    out += [top, amount / top if top > 0 else 1.0]
    return out

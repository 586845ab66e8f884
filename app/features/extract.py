"""Features of one transaction, from its account's and its terminal's state as of just
before it.

Feature names are built from the window parameters (``account_tx_count_7d``,
``terminal_risk_7d_delay_7d``), never typed by hand. Every value is a float; there are
no missing values.
"""

from __future__ import annotations

from bisect import bisect_right

from ..events import Transaction
from .state import DAY_MS, AccountState
from .terminal import DEFAULT_DELAY_DAYS, TerminalState, extract_terminal, terminal_feature_names

__all__ = [
    "ACCOUNT_FEATURE_NAMES",
    "FEATURE_NAMES",
    "WINDOWS_DAYS",
    "NO_HISTORY_SECONDS",
    "extract_account",
    "extract_one",
    "feature_names",
]

#: Sliding windows, in days, over which account aggregates are computed.
WINDOWS_DAYS = (1, 7, 30)
#: ``seconds_since_previous_tx`` when the account has no earlier transaction (30 days).
NO_HISTORY_SECONDS = 30 * 86_400.0
_NIGHT_LAST_HOUR = 6  # handbook: a transaction is at night when its hour is 0..6
_HOUR_MS = 3_600_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday is 0)


def _account_names() -> tuple[str, ...]:
    names = ["amount", "is_weekend", "is_night", "hour_of_day", "seconds_since_previous_tx"]
    for w in WINDOWS_DAYS:
        names += [
            f"account_tx_count_{w}d",
            f"account_amount_mean_{w}d",
            f"amount_to_account_mean_{w}d",
        ]
    names += ["account_amount_max_30d", "amount_to_account_max_30d"]
    return tuple(names)


#: Names of the values :func:`extract_account` returns, in order.
ACCOUNT_FEATURE_NAMES: tuple[str, ...] = _account_names()


def feature_names(delay_days: int = DEFAULT_DELAY_DAYS) -> tuple[str, ...]:
    """Names of :func:`extract_one`'s values for a label delay of ``delay_days``."""
    return ACCOUNT_FEATURE_NAMES + terminal_feature_names(delay_days)


#: Names of the values :func:`extract_one` returns with the default label delay.
FEATURE_NAMES: tuple[str, ...] = feature_names()


def extract_account(state: AccountState, tx: Transaction) -> list[float]:
    """Account features of ``tx`` given its account's state before it.

    Only transactions of the state with event time in ``(t - w, t]`` (``t`` the event
    time of ``tx``) enter a ``w``-day window, never ``tx`` itself: a redelivered
    transaction, already in the state, gets the features it had the first time (up to
    other transactions with exactly the same event time).

    Parameters
    ----------
    state : AccountState
        The account's recent transactions.
    tx : Transaction

    Returns
    -------
    list of float of length ``len(ACCOUNT_FEATURE_NAMES)``
        Amount in major units; ratios are ``amount / mean`` (1.0 without history);
        times in seconds; flags 0.0 or 1.0.
    """
    if state.contains(tx):
        keep = [i for i, tid in enumerate(state.ids) if tid != tx.transaction_id]
        state = AccountState(
            times_ms=[state.times_ms[i] for i in keep],
            amounts_minor=[state.amounts_minor[i] for i in keep],
            ids=[state.ids[i] for i in keep],
        )
    t = tx.event_time_ms
    amount = tx.amount_minor / 100.0
    hour = (t // _HOUR_MS) % 24  # UTC, as datetime.fromtimestamp(t / 1000, timezone.utc)
    weekday = (t // DAY_MS + _EPOCH_WEEKDAY) % 7  # Monday is 0
    times = state.times_ms
    amounts = state.amounts_minor
    end = bisect_right(times, t)  # events at or before t (a late tx ignores later ones)
    prev = (t - times[end - 1]) / 1000.0 if end else NO_HISTORY_SECONDS
    out = [
        amount,
        1.0 if weekday >= 5 else 0.0,
        1.0 if hour <= _NIGHT_LAST_HOUR else 0.0,
        float(hour),
        prev,
    ]
    largest = 0
    # windows nest (1 day within 7 within 30): each sum adds the amounts the previous
    # window did not hold (integer sums, so the same values in any order)
    total = 0
    stop = end
    for w in WINDOWS_DAYS:
        start = bisect_right(times, t - w * DAY_MS, 0, stop)
        n = end - start
        if n:
            if start < stop:
                total += sum(amounts[start:stop])
            mean = total / n / 100.0
        else:
            mean = 0.0
        stop = start
        out += (float(n), mean, amount / mean if mean > 0 else 1.0)
    if end > stop:  # the largest window's amounts
        largest = max(amounts[stop:end])
    top = largest / 100.0
    out += [top, amount / top if top > 0 else 1.0]
    return out


def extract_one(
    account: AccountState,
    terminal: TerminalState,
    tx: Transaction,
    delay_days: int = DEFAULT_DELAY_DAYS,
) -> list[float]:
    """All features of ``tx``: :func:`extract_account` then
    :func:`~app.features.terminal.extract_terminal`.

    Returns
    -------
    list of float of length ``len(feature_names(delay_days))``
    """
    return extract_account(account, tx) + extract_terminal(terminal, tx, delay_days)

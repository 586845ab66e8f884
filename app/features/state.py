"""Per-account feature state: the account's transactions of the last 30 days.

The state is what :func:`app.features.extract.extract_one` needs and nothing more:
event time and amount of each recent transaction (sorted by event time), and their ids
so a transaction delivered twice is counted once. Windows expire: transactions older
than :data:`HORIZON_MS` before the newest one seen are dropped on every update.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import orjson

from ..events import Transaction

__all__ = ["AccountState", "HORIZON_MS", "DAY_MS"]

DAY_MS = 86_400_000
#: How far back the state remembers, in ms (the longest window: 30 days).
HORIZON_MS = 30 * DAY_MS


@dataclass(slots=True)
class AccountState:
    """Recent transactions of one account, oldest first.

    Attributes
    ----------
    times_ms : list of int
        Event times (UTC epoch ms), non-decreasing.
    amounts_minor : list of int
        Amounts in minor units, aligned with ``times_ms``.
    ids : list of str
        Transaction ids, aligned with ``times_ms``.

    Examples
    --------
    >>> from app.events import Transaction
    >>> s = AccountState()
    >>> tx = Transaction(transaction_id="t1", account_id="a", terminal_id="m",
    ...                  amount_minor=500, event_time_ms=1_522_540_800_000)
    >>> s.update_one(tx), s.update_one(tx)
    (True, False)
    >>> len(s)
    1
    """

    times_ms: list[int] = field(default_factory=list)
    amounts_minor: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_ms)

    def contains(self, tx: Transaction) -> bool:
        """True when ``tx`` (same id, same event time) is already in the state."""
        t = tx.event_time_ms
        hi = bisect_right(self.times_ms, t)
        i = hi - 1
        while i >= 0 and self.times_ms[i] == t:
            if self.ids[i] == tx.transaction_id:
                return True
            i -= 1
        return False

    def update_one(self, tx: Transaction) -> bool:
        """Add one transaction and expire what falls out of the horizon.

        Parameters
        ----------
        tx : Transaction
            The transaction just scored. Late events are inserted in event-time order.

        Returns
        -------
        bool
            False when ``tx`` was already there (a duplicate delivery): nothing changes.
        """
        if self.contains(tx):
            return False
        t = tx.event_time_ms
        if not self.times_ms or t >= self.times_ms[-1]:
            self.times_ms.append(t)
            self.amounts_minor.append(tx.amount_minor)
            self.ids.append(tx.transaction_id)
        else:
            i = bisect_right(self.times_ms, t)
            self.times_ms.insert(i, t)
            self.amounts_minor.insert(i, tx.amount_minor)
            self.ids.insert(i, tx.transaction_id)
        self._expire(self.times_ms[-1] - HORIZON_MS)
        return True

    def _expire(self, oldest_ms: int) -> None:
        # keep times > newest - horizon: a window (t - 30d, t] never needs older ones
        cut = bisect_right(self.times_ms, oldest_ms)
        if cut:
            del self.times_ms[:cut], self.amounts_minor[:cut], self.ids[:cut]

    # --- serialisation (table values) ---------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact JSON: ``{"t": [...], "a": [...], "i": [...]}``."""
        return orjson.dumps({"t": self.times_ms, "a": self.amounts_minor, "i": self.ids})

    @classmethod
    def from_bytes(cls, raw: bytes | str | None) -> "AccountState":
        """Inverse of :meth:`to_bytes` (also from its ``str``); ``None`` or empty gives
        an empty state."""
        if not raw:
            return cls()
        d = orjson.loads(raw)
        return cls(times_ms=d["t"], amounts_minor=d["a"], ids=d["i"])

"""Per-account feature state: the account's transactions of the last 30 days.

The state is what :func:`app.features.extract.extract_one` needs and nothing more:
event time and amount of each recent transaction (sorted by event time), and their ids
so a transaction delivered twice is counted once. Windows expire: transactions older
than :data:`HORIZON_MS` before the newest one seen are dropped on every update.
"""

from __future__ import annotations

import struct
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
    revised : list of str
        Ids (among ``ids``) of transactions featurized before an earlier transaction
        of the account arrived: their account features missed it. Each is counted
        once (:meth:`revise_after`); usually empty.

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
    revised: list[str] = field(default_factory=list)

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

    def revise_after(self, t_ms: int) -> int:
        """Mark the transactions later than ``t_ms`` (within the horizon) as featurized
        without a transaction at ``t_ms`` that arrives after them.

        Parameters
        ----------
        t_ms : int
            Event time of the transaction arriving out of order, UTC epoch ms.

        Returns
        -------
        int
            How many were not marked before (each transaction is counted once).

        Examples
        --------
        >>> s = AccountState([10, 20, 30], [1, 1, 1], ["a", "b", "c"])
        >>> s.revise_after(15), s.revise_after(5), s.revised
        (2, 1, ['b', 'c', 'a'])
        """
        start = bisect_right(self.times_ms, t_ms)
        stop = bisect_right(self.times_ms, t_ms + HORIZON_MS)
        known = set(self.revised)
        new = [i for i in self.ids[start:stop] if i not in known]
        self.revised += new
        return len(new)

    def _expire(self, oldest_ms: int) -> None:
        # keep times > newest - horizon: a window (t - 30d, t] never needs older ones
        cut = bisect_right(self.times_ms, oldest_ms)
        if cut:
            del self.times_ms[:cut], self.amounts_minor[:cut], self.ids[:cut]
            if self.revised:
                kept = set(self.ids)
                self.revised = [i for i in self.revised if i in kept]

    # --- serialisation (table values) ---------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact binary form, about 9 bytes plus the id's length per transaction.

        Layout (little-endian): version byte ``1``, amount width ``w`` (4 or 8 bytes),
        ``n`` (uint32), the first event time (int64 ms); then ``n`` event times as
        uint32 ms after the first (the state spans less than 30 days, well within
        uint32), ``n`` amounts in minor units as unsigned ints of ``w`` bytes, and the
        ids as ASCII joined by ``,`` (ids never hold one: :data:`app.events.Id`), and,
        only when there are any, ``|`` and the :attr:`revised` ids joined by ``,``. A
        state that does not fit (ids outside that alphabet, a negative amount, a span
        of 49 days or more) is written as JSON ``{"t": [...], "a": [...], "i": [...]}``,
        the form of earlier versions, which :meth:`from_bytes` also reads.

        Returns
        -------
        bytes
        """
        n = len(self.times_ms)
        if n == 0:
            return _HEADER.pack(_VERSION, 4, 0, 0)
        base = self.times_ms[0]
        ids = ",".join(self.ids)
        low, high = min(self.amounts_minor), max(self.amounts_minor)
        if (self.times_ms[-1] - base > _U32 or low < 0 or high >= 2**64
                or not ids.isascii() or ids.count(",") != n - 1):
            d = {"t": self.times_ms, "a": self.amounts_minor, "i": self.ids}
            if self.revised:
                d["r"] = self.revised
            return orjson.dumps(d)
        wide = high > _U32
        if self.revised:
            ids += "|" + ",".join(self.revised)
        # numpy packs the arrays in C: the cost per transaction held is a few ns (imported
        # here: the CLI imports this package and must start without numpy)
        import numpy as np

        return b"".join((
            _HEADER.pack(_VERSION, 8 if wide else 4, n, base),
            (np.array(self.times_ms, dtype=np.int64) - base).astype("<u4").tobytes(),
            np.array(self.amounts_minor, dtype="<u8" if wide else "<u4").tobytes(),
            ids.encode("ascii"),
        ))

    @classmethod
    def from_bytes(cls, raw: bytes | str | None) -> "AccountState":
        """Inverse of :meth:`to_bytes`; also reads the JSON form (and its ``str``).
        ``None`` or empty gives an empty state.

        Raises
        ------
        ValueError
            ``raw`` is neither form (orjson.JSONDecodeError is a ValueError).
        """
        if not raw:
            return cls()
        if isinstance(raw, str) or raw[:1] == b"{":
            d = orjson.loads(raw)
            return cls(times_ms=d["t"], amounts_minor=d["a"], ids=d["i"], revised=d.get("r", []))
        version, width, n, base = _HEADER.unpack_from(raw)
        if version != _VERSION or width not in (4, 8):
            raise ValueError(f"account state: unknown format (version {version}, width {width})")
        if n == 0:
            return cls()
        off = _HEADER.size
        if len(raw) < off + (4 + width) * n:
            raise ValueError(f"account state: {len(raw)} bytes for {n} transactions")
        import numpy as np  # here, not at import: see to_bytes

        times = (np.frombuffer(raw, "<u4", n, off).astype(np.int64) + base).tolist()
        off += 4 * n
        amounts = np.frombuffer(raw, "<u8" if width == 8 else "<u4", n, off).tolist()
        text, _, revised = raw[off + width * n :].decode("ascii").partition("|")
        ids = text.split(",")
        if len(ids) != n:
            raise ValueError(f"account state: {len(ids)} ids for {n} transactions")
        return cls(times_ms=times, amounts_minor=amounts, ids=ids,
                   revised=revised.split(",") if revised else [])


#: version, amount width, number of transactions, first event time
_HEADER = struct.Struct("<BBIq")
_VERSION = 1
_U32 = 2**32 - 1

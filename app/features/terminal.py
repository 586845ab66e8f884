"""Per-terminal feature state and the terminal features of one transaction.

The Fraud Detection Handbook's terminal risk (ch. 3.4): for windows of ``w`` days that
end ``delay`` days before the transaction, the number of the terminal's transactions
and the share of them known to be fraudulent. "Known" means a fraud label whose
``label_time_ms`` is strictly before the transaction's event time: a label that
arrives later is never used, whatever order the stream processes labels in (and a
label timed exactly at the transaction, which the replay emits just after it, is not).

Labels can arrive sooner than ``delay`` (an investigator's verdict, see
:mod:`app.features.labels`), so the terminal's *known frauds* are counted too over
windows ending at the transaction: frauds with event time in ``(t - w, t]`` whose
label arrived before ``t``. They read labels only, never the terminal's recent
transactions, which the stream's event-time alignment does not wait for (it waits for
every transaction up to ``t - delay`` and every label up to ``t``).

A transaction can be labelled twice: by an analyst's verdict (``source="investigation"``)
and later by the delayed feed. :meth:`TerminalState.check_label` tells a label that
repeats the verdict held (a duplicate: it changes nothing) from one that contradicts it;
a fraud stays fraud, so the terminal features never depend on which came first.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Literal

import orjson

from ..events import Label, Transaction
from .state import DAY_MS

__all__ = [
    "TerminalState",
    "TERMINAL_WINDOWS_DAYS",
    "DEFAULT_DELAY_DAYS",
    "KNOWN_FRAUD_WINDOWS_DAYS",
    "terminal_feature_names",
    "extract_terminal",
    "terminal_horizon_ms",
    "LabelCheck",
]

#: How a label relates to the verdict a terminal state holds for its transaction.
LabelCheck = Literal["new", "duplicate", "contradiction"]

#: Windows, in days, of the terminal aggregates.
TERMINAL_WINDOWS_DAYS = (1, 7, 30)
#: Default label delay, in days: windows end this long before the transaction.
DEFAULT_DELAY_DAYS = 7
#: Windows, in days, of the known-fraud counts, which end at the transaction.
KNOWN_FRAUD_WINDOWS_DAYS = (1, 7, 30)


def terminal_horizon_ms(delay_days: int = DEFAULT_DELAY_DAYS) -> int:
    """How far back a terminal's state must remember: ``delay + 30`` days, in ms."""
    return (delay_days + max(TERMINAL_WINDOWS_DAYS)) * DAY_MS


def terminal_feature_names(delay_days: int = DEFAULT_DELAY_DAYS) -> tuple[str, ...]:
    """Names of :func:`extract_terminal`'s values, built from the parameters."""
    names: list[str] = []
    for w in TERMINAL_WINDOWS_DAYS:
        names += [
            f"terminal_tx_count_{w}d_delay_{delay_days}d",
            f"terminal_risk_{w}d_delay_{delay_days}d",
        ]
    names += [f"terminal_known_frauds_{w}d" for w in KNOWN_FRAUD_WINDOWS_DAYS]
    return tuple(names)


@dataclass(slots=True)
class TerminalState:
    """A terminal's transactions and known frauds over ``delay + 30`` days.

    Attributes
    ----------
    times_ms, ids : list
        Event time (UTC epoch ms, non-decreasing) and id of each transaction.
    fraud_times_ms, fraud_label_times_ms, fraud_ids : list
        For each fraud label: the transaction's event time (non-decreasing), when the
        label arrived, and the transaction id.
    genuine_times_ms, genuine_ids : list
        For each genuine verdict of an analyst (investigation label): the transaction's
        event time (non-decreasing) and id; they change no feature, and tell a later
        fraud label that it contradicts them.
    """

    times_ms: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    fraud_times_ms: list[int] = field(default_factory=list)
    fraud_label_times_ms: list[int] = field(default_factory=list)
    fraud_ids: list[str] = field(default_factory=list)
    genuine_times_ms: list[int] = field(default_factory=list)
    genuine_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_ms)

    @staticmethod
    def _has(times: list[int], ids: list[str], t: int, tid: str) -> bool:
        i = bisect_left(times, t)
        while i < len(times) and times[i] == t:
            if ids[i] == tid:
                return True
            i += 1
        return False

    def update_one(self, tx: Transaction, horizon_ms: int, ref_ms: int | None = None) -> bool:
        """Add a transaction; drop what is older than ``horizon_ms`` before ``ref_ms``.

        Parameters
        ----------
        tx : Transaction
        horizon_ms : int
            How much history to keep, in ms (:func:`terminal_horizon_ms`).
        ref_ms : int, optional
            Event time (UTC epoch ms) of the oldest transaction still to be featurized
            with this state; default: the newest one held. A stream that featurizes
            transactions later than it adds them passes its oldest pending one, so
            nothing they need is dropped; dropping later never changes a feature.

        Returns
        -------
        bool
            False for a duplicate (same id and event time already here).
        """
        t = tx.event_time_ms
        if self._has(self.times_ms, self.ids, t, tx.transaction_id):
            return False
        i = bisect_right(self.times_ms, t)
        self.times_ms.insert(i, t)
        self.ids.insert(i, tx.transaction_id)
        ref = self.times_ms[-1] if ref_ms is None else min(ref_ms, self.times_ms[-1])
        cut = ref - horizon_ms
        k = bisect_right(self.times_ms, cut)
        if k:
            del self.times_ms[:k], self.ids[:k]
        k = bisect_right(self.fraud_times_ms, cut)
        if k:
            del self.fraud_times_ms[:k], self.fraud_label_times_ms[:k], self.fraud_ids[:k]
        k = bisect_right(self.genuine_times_ms, cut)
        if k:
            del self.genuine_times_ms[:k], self.genuine_ids[:k]
        return True

    def check_label(self, label: Label) -> LabelCheck:
        """How ``label`` relates to the verdict held for its transaction (pure).

        Returns
        -------
        {"new", "duplicate", "contradiction"}
            duplicate: the same verdict is held (fraud, or an analyst's genuine);
            contradiction: the opposite one is; new: none is.

        Examples
        --------
        >>> from app.events import Label
        >>> s = TerminalState()
        >>> fraud = Label(transaction_id="t", account_id="a", terminal_id="m", is_fraud=True,
        ...     transaction_time_ms=1_522_540_800_000, label_time_ms=1_522_541_000_000,
        ...     source="investigation")
        >>> s.check_label(fraud), s.label_one(fraud, horizon_ms=37 * 86_400_000)
        ('new', True)
        >>> late = fraud.model_copy(update={"label_time_ms": 1_523_145_600_000, "source": "chargeback"})
        >>> s.check_label(late), s.check_label(late.model_copy(update={"is_fraud": False}))
        ('duplicate', 'contradiction')
        """
        t, tid = label.transaction_time_ms, label.transaction_id
        if self._has(self.fraud_times_ms, self.fraud_ids, t, tid):
            return "duplicate" if label.is_fraud else "contradiction"
        if self._has(self.genuine_times_ms, self.genuine_ids, t, tid):
            return "contradiction" if label.is_fraud else "duplicate"
        return "new"

    def label_one(self, label: Label, horizon_ms: int, ref_ms: int | None = None) -> bool:
        """Record a label: fraud labels, and analysts' genuine verdicts (genuine is the
        default, so a genuine label of the delayed feed is not kept).

        ``ref_ms`` as in :meth:`update_one`: a label older than ``horizon_ms`` before it
        cannot enter any window and is not kept. A fraud label after a genuine verdict
        is kept (a fraud stays fraud); a genuine one after a fraud label changes nothing.

        Returns
        -------
        bool
            True when the state changed.
        """
        keep_genuine = label.source == "investigation"
        if not label.is_fraud and not keep_genuine:
            return False
        t = label.transaction_time_ms
        if self.times_ms:
            ref = self.times_ms[-1] if ref_ms is None else min(ref_ms, self.times_ms[-1])
            if t <= ref - horizon_ms:
                return False  # too old to enter any window
        if self._has(self.fraud_times_ms, self.fraud_ids, t, label.transaction_id):
            return False
        if not label.is_fraud:
            if self._has(self.genuine_times_ms, self.genuine_ids, t, label.transaction_id):
                return False
            i = bisect_right(self.genuine_times_ms, t)
            self.genuine_times_ms.insert(i, t)
            self.genuine_ids.insert(i, label.transaction_id)
            return True
        i = bisect_right(self.fraud_times_ms, t)
        self.fraud_times_ms.insert(i, t)
        self.fraud_label_times_ms.insert(i, label.label_time_ms)
        self.fraud_ids.insert(i, label.transaction_id)
        return True

    def to_bytes(self) -> bytes:
        """Compact JSON (the genuine verdicts only when there are any: a state without
        them reads and writes as before they existed)."""
        lists = [self.times_ms, self.ids, self.fraud_times_ms, self.fraud_label_times_ms, self.fraud_ids]
        if self.genuine_ids:
            lists += [self.genuine_times_ms, self.genuine_ids]
        return orjson.dumps(lists)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> "TerminalState":
        """Inverse of :meth:`to_bytes`; ``None`` gives an empty state."""
        if not raw:
            return cls()
        return cls(*orjson.loads(raw))


def extract_terminal(
    state: TerminalState, tx: Transaction, delay_days: int = DEFAULT_DELAY_DAYS
) -> list[float]:
    """Terminal features of ``tx`` (see :func:`terminal_feature_names`).

    For each window ``w`` of :data:`TERMINAL_WINDOWS_DAYS`: transactions of the
    terminal with event time in ``(t - delay - w, t - delay]`` and, among them, frauds
    whose label arrived before ``t``; risk is frauds / transactions (0.0 without
    transactions). Then for each window ``w`` of :data:`KNOWN_FRAUD_WINDOWS_DAYS`: the
    terminal's frauds with event time in ``(t - w, t]`` whose label arrived before ``t``.

    Returns
    -------
    list of float of length ``2 * len(TERMINAL_WINDOWS_DAYS) +
    len(KNOWN_FRAUD_WINDOWS_DAYS)``
    """
    t = tx.event_time_ms
    end_t = t - delay_days * DAY_MS
    times, ftimes, flabels = state.times_ms, state.fraud_times_ms, state.fraud_label_times_ms
    hi = bisect_right(times, end_t)
    out: list[float] = []
    if not ftimes:  # no fraud known (most terminals): every risk and count is 0
        for w in TERMINAL_WINDOWS_DAYS:
            out += (float(hi - bisect_right(times, end_t - w * DAY_MS, 0, hi)), 0.0)
        out += _NO_KNOWN_FRAUDS
        return out
    fhi = bisect_right(ftimes, end_t)
    for w in TERMINAL_WINDOWS_DAYS:
        start_t = end_t - w * DAY_MS
        n = hi - bisect_right(times, start_t, 0, hi)
        flo = bisect_right(ftimes, start_t, 0, fhi)
        frauds = sum(1 for j in range(flo, fhi) if flabels[j] < t)
        out += [float(n), frauds / n if n else 0.0]
    fhi = bisect_right(ftimes, t)
    for w in KNOWN_FRAUD_WINDOWS_DAYS:
        flo = bisect_right(ftimes, t - w * DAY_MS, 0, fhi)
        out.append(float(sum(1 for j in range(flo, fhi) if flabels[j] < t)))
    return out


_NO_KNOWN_FRAUDS = (0.0,) * len(KNOWN_FRAUD_WINDOWS_DAYS)

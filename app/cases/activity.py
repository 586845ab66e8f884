"""The recent transactions of every card, pure: what the case page shows of a card's
normal spending, those that did not alert included.

Fed by the records of ``SCORED_TOPIC`` (one per scored transaction, alerted or not);
bounded: the last ``max_per_card`` transactions of each card, and the ``max_cards``
cards seen most recently.

Examples
--------
>>> acts = CardActivity(max_per_card=2, max_cards=10)
>>> for i, amount in enumerate((1_000, 1_200, 56_000)):
...     acts.learn_one(CardTransaction(f"t{i}", "a1", "m1", amount, "EUR", 1_000 * i, 0.1, "pass"))
>>> [t.transaction_id for t in acts.recent("a1")]
['t1', 't2']
>>> acts.recent("nobody")
[]
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import orjson

__all__ = ["CardTransaction", "CardActivity", "from_scored_json"]


@dataclass(frozen=True, slots=True)
class CardTransaction:
    """One scored transaction of a card (amounts in minor units, time UTC epoch ms)."""

    transaction_id: str
    account_id: str
    terminal_id: str
    amount_minor: int
    currency: str
    event_time_ms: int
    score: float
    decision: str

    @property
    def amount(self) -> float:
        """Amount in major units."""
        return self.amount_minor / 100


def from_scored_json(value: bytes) -> CardTransaction | None:
    """A :class:`CardTransaction` from a ``SCORED_TOPIC`` record's value (JSON); None
    for a record that is not one (it is skipped: the topic is only a view here)."""
    try:
        doc = orjson.loads(value)
        tx = doc["transaction"]
        return CardTransaction(
            str(tx["transaction_id"]), str(tx["account_id"]), str(tx["terminal_id"]),
            int(tx["amount_minor"]), str(tx.get("currency", "EUR")), int(tx["event_time_ms"]),
            float(doc["score"]), str(doc["decision"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class CardActivity:
    """The last transactions of recently seen cards.

    Parameters
    ----------
    max_per_card : int, default=30
        Transactions kept per card (the newest by arrival).
    max_cards : int, default=200_000
        Cards kept (the least recently seen one is dropped first).

    Raises
    ------
    ValueError
        A bound below 1.
    """

    def __init__(self, max_per_card: int = 30, max_cards: int = 200_000) -> None:
        if max_per_card < 1 or max_cards < 1:
            raise ValueError(f"max_per_card and max_cards must be >= 1, not {max_per_card}, {max_cards}")
        self.max_per_card = max_per_card
        self.max_cards = max_cards
        self._cards: OrderedDict[str, deque[CardTransaction]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cards)

    def learn_one(self, tx: CardTransaction) -> None:
        """Keep one transaction of its card."""
        kept = self._cards.get(tx.account_id)
        if kept is None:
            kept = self._cards[tx.account_id] = deque(maxlen=self.max_per_card)
            if len(self._cards) > self.max_cards:
                self._cards.popitem(last=False)
        else:
            self._cards.move_to_end(tx.account_id)
        kept.append(tx)

    def recent(self, account_id: str) -> list[CardTransaction]:
        """The card's kept transactions, oldest first (by event time)."""
        return sorted(self._cards.get(account_id, ()), key=lambda t: t.event_time_ms)

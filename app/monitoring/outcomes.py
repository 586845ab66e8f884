"""Decision outcomes and label verdicts, as counted by the metrics. Pure.

Outcome of a scored transaction, from its decision (rules and blocking come with the
decision engine; until then nothing is blocked):

- ``approve``: below the alert threshold (decision ``pass``);
- ``review``: an alert for an analyst (decision ``alert``);
- ``block``: reserved for decisions that stop the payment.

The rule that raised an alert is ``score_threshold`` (the model's score at or above the
threshold) until the decision engine adds others.

Examples
--------
>>> outcome_of("alert"), outcome_of("pass")
('review', 'approve')
>>> sorted(verdict_counts([True, False, True], [True, True, False]).items())
[(('fraud', 'false'), 1), (('fraud', 'true'), 1), (('genuine', 'true'), 1)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "OUTCOMES",
    "RULES",
    "VERDICTS",
    "SCORE_THRESHOLD_RULE",
    "outcome_of",
    "outcome_counts",
    "verdict_counts",
]

#: Every outcome label value, in order of severity.
OUTCOMES = ("approve", "review", "block")
#: The rule of alerts raised by the model's threshold.
SCORE_THRESHOLD_RULE = "score_threshold"
#: Every rule label value known today.
RULES = (SCORE_THRESHOLD_RULE,)
#: Label verdicts.
VERDICTS = ("fraud", "genuine")

_BY_DECISION = {"pass": "approve", "alert": "review", "block": "block"}


def outcome_of(decision: str) -> str:
    """The outcome of a decision (``pass``/``alert``/``block``).

    Raises
    ------
    ValueError
        For an unknown decision.
    """
    try:
        return _BY_DECISION[decision]
    except KeyError:
        raise ValueError(
            f"unknown decision {decision!r}; expected one of {sorted(_BY_DECISION)}"
        ) from None


def outcome_counts(decisions: Iterable[str]) -> Counter[str]:
    """How many decisions had each outcome."""
    return Counter(outcome_of(d) for d in decisions)


def verdict_counts(
    is_fraud: Sequence[bool], alerted: Sequence[bool]
) -> Counter[tuple[str, str]]:
    """Labels counted by ``(verdict, alerted)``: ``verdict`` is ``fraud``/``genuine``,
    ``alerted`` is ``"true"`` when an alert was raised for the transaction.

    Live precision is then ``fraud & alerted / alerted`` and live recall
    ``fraud & alerted / fraud``, over any time window (PromQL ``increase``).

    Raises
    ------
    ValueError
        If the sequences differ in length.
    """
    if len(is_fraud) != len(alerted):
        raise ValueError(f"is_fraud and alerted differ in length: {len(is_fraud)} vs {len(alerted)}")
    return Counter(
        ("fraud" if f else "genuine", "true" if a else "false") for f, a in zip(is_fraud, alerted)
    )

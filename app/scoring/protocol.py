"""The evaluation protocol's names and defaults, without the libraries that compute it.

The default split, the cards investigators check per day and the rules of which cards
count as known compromised. :mod:`app.scoring.evaluate` and :mod:`app.scoring.train`
use them; the command line reads them for its options' defaults and choices without
loading pandas or scikit-learn.
"""

from __future__ import annotations

import enum
from datetime import date

__all__ = [
    "DEFAULT_KNOWN_COMPROMISED",
    "DEFAULT_TRAIN_END",
    "DEFAULT_TRAIN_START",
    "KnownCompromised",
    "TOP_K",
    "VALIDATION_FOLDS",
]

#: The handbook's default split: train 2018-07-04..10, gap 7 days, test 2018-07-18..24.
DEFAULT_TRAIN_START = date(2018, 7, 4)
DEFAULT_TRAIN_END = date(2018, 7, 10)
#: Cards investigators check per day (card precision@k and the alert budget).
TOP_K = 100
#: Prequential folds of model selection.
VALIDATION_FOLDS = 4


class KnownCompromised(str, enum.Enum):
    """Which cards are "known compromised" and so left out of a test window.

    ``before-test`` (the default): every card with a fraud on a day from the train start
    to the day before the test window, dropped from the whole test window. On the
    handbook's 7/7/7 split of the shared file a perfect ranking then reaches card
    precision@100 0.299, and the handbook's features with a random forest
    0.849 / 0.659 / 0.204 (AUC / AP / CP@100).

    ``handbook-daily``: the handbook code's rule (``get_train_test_set``): on test day
    ``t`` the cards with a fraud on ``train_start..t - gap - 1`` (labels arrive
    ``gap`` days late, so the frauds of the gap become known one day at a time). It
    keeps more compromised cards in the window (those first defrauded in the gap): a
    perfect ranking reaches 0.367 on the same split.
    """

    before_test = "before-test"
    handbook_daily = "handbook-daily"


DEFAULT_KNOWN_COMPROMISED = KnownCompromised.before_test

"""The models ``fraudctl train`` can fit: family, hyper-parameters and fit window.

:func:`app.scoring.train.train` fits one of them (``model=``) or picks the best by
prequential validation (``compare=True``). Selection results are in each model card
(``validation``) and in docs/model.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..exceptions import DataError

if TYPE_CHECKING:  # imported where a model is made: the CLI reads the names cheaply
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

__all__ = ["CANDIDATES", "Candidate", "DEFAULT_MODEL", "candidate", "make_estimator"]


def _random_forest(random_state: int) -> RandomForestClassifier:
    """A forest like the handbook's (chapter 5): 100 trees, depth 20."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=100, max_depth=20, min_samples_leaf=5, n_jobs=-1,
        random_state=random_state,
    )


def _random_forest_mf03(random_state: int) -> RandomForestClassifier:
    """30 % of the features per split (instead of the square root: 4 of 22)."""
    return _random_forest(random_state).set_params(max_features=0.3)


def _random_forest_balanced(random_state: int) -> RandomForestClassifier:
    return _random_forest(random_state).set_params(class_weight="balanced_subsample")


def _extra_trees(random_state: int) -> ExtraTreesClassifier:
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(
        n_estimators=300, max_depth=20, min_samples_leaf=5, n_jobs=-1,
        random_state=random_state,
    )


def _hist_gradient_boosting(random_state: int) -> HistGradientBoostingClassifier:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=300, max_leaf_nodes=15, min_samples_leaf=50,
        l2_regularization=1.0, max_features=0.5, early_stopping=True,
        validation_fraction=0.1, n_iter_no_change=20, scoring="loss",
        random_state=random_state,
    )


def _logistic_regression(random_state: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


@dataclass(frozen=True)
class Candidate:
    """A model family with its hyper-parameters, and the days of data it is fitted on.

    Attributes
    ----------
    make : callable
        ``make(random_state)`` returns an unfitted scikit-learn classifier.
    fit_days : int or None
        Fit on the ``fit_days`` days ending on the last train day (the issue allows any
        training window that ends before the gap); None: the split's train window.
    """

    make: Callable[[int], Any]
    fit_days: int | None = None


#: Model families, hyper-parameters and fit windows compared by ``train(compare=True)``.
CANDIDATES: dict[str, Candidate] = {
    "random_forest": Candidate(_random_forest),
    "random_forest_21d": Candidate(_random_forest, fit_days=21),
    "random_forest_mf03_21d": Candidate(_random_forest_mf03, fit_days=21),
    "random_forest_balanced": Candidate(_random_forest_balanced),
    "extra_trees": Candidate(_extra_trees),
    "hist_gradient_boosting": Candidate(_hist_gradient_boosting),
    "hist_gradient_boosting_21d": Candidate(_hist_gradient_boosting, fit_days=21),
    "logistic_regression": Candidate(_logistic_regression),
}
#: The candidate trained when none is named and there is no comparison: the one chosen
#: by ``fraudctl train --compare`` on the handbook's default split (best mean average
#: precision over 4 prequential folds, see the shipped model's card).
DEFAULT_MODEL = "random_forest_mf03_21d"


def candidate(name: str) -> Candidate:
    """The candidate called ``name``.

    Raises
    ------
    DataError
        Unknown ``name`` (the message lists the known ones).
    """
    try:
        return CANDIDATES[name]
    except KeyError:
        raise DataError(
            f"unknown model {name!r}; expected one of {', '.join(CANDIDATES)}"
        ) from None


def make_estimator(name: str = DEFAULT_MODEL, random_state: int = 0) -> Any:
    """A fresh, unfitted estimator of the candidate ``name`` (see :func:`candidate`)."""
    return candidate(name).make(random_state)



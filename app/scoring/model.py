"""Scoring with a verified model: fraud scores and their reasons, a batch at a time.

Scores are the estimator's ``predict_proba[:, 1]``: floats in [0, 1], higher means more
likely fraud. The shipped model is fitted without class re-weighting, so a score is an
estimate of the probability that the transaction is fraudulent (at the fraud rate of its
training data, about 0.9 %).

Reasons are occlusion contributions: for feature ``j`` of row ``x``,
``contribution_j = score(x) - score(x with x_j set to its training median)``. Positive
values push towards fraud. They are computed for few rows (those that alert), with one
``predict_proba`` call for the whole batch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from ..events import Reason
from ..exceptions import ModelIntegrityError
from .registry import LoadedModel, load_model

__all__ = ["Scorer"]


class Scorer:
    """Fraud scores and reasons from one model version.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`app.scoring.registry.load_model` (already verified).
    n_threads : int or None, default=1
        OpenMP threads per ``predict_proba`` call; None leaves the library's default
        (all cores). One thread is the default: on small batches thread start-up costs
        more than it saves, and on a busy host (several workers on few cores) OpenMP
        over-subscription made predicts 3-25x slower in our measurements (1-500 rows).

    Attributes
    ----------
    version : str
        The model version, for ``model_version`` fields on the wire.
    feature_names : tuple of str
        Column order of ``X``.
    alert_threshold : float
        The card's recommended threshold, in [0, 1].
    baseline : ndarray of shape (n_features,)
        Training medians, the reference values of :meth:`explain_many`.

    Raises
    ------
    ModelIntegrityError
        The estimator's classes are not ``{0, 1}``.
    """

    def __init__(self, loaded: LoadedModel, n_threads: int | None = 1) -> None:
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads: expected None or an integer >= 1, got {n_threads!r}")
        card = loaded.card
        self.version: str = loaded.version
        self.card = card
        self.feature_names: tuple[str, ...] = tuple(card.feature_names)
        self.alert_threshold: float = card.alert_threshold
        self.baseline = np.array([card.baseline[n] for n in self.feature_names], dtype=np.float64)
        self._estimator = loaded.estimator
        classes = list(getattr(self._estimator, "classes_", []))
        if sorted(int(c) for c in classes) != [0, 1]:
            raise ModelIntegrityError(
                f"model {self.version}: expected classes [0, 1], got {classes}"
            )
        self._fraud_column = classes.index(1)
        self._controller = ThreadpoolController() if n_threads is not None else None
        self._n_threads = n_threads

    def _limit(self) -> AbstractContextManager:
        if self._controller is None:
            return nullcontext()
        return self._controller.limit(limits=self._n_threads, user_api="openmp")

    @classmethod
    def from_registry(
        cls, models_dir: str | Path, version: str | None = None, n_threads: int | None = 1
    ) -> "Scorer":
        """Load, verify and wrap ``version`` (default: the registry's default version)."""
        return cls(load_model(version, models_dir), n_threads=n_threads)

    @property
    def n_features(self) -> int:
        """Number of columns ``X`` must have."""
        return len(self.feature_names)

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X: expected shape (n_samples, {self.n_features}), got {X.shape}"
            )
        return X

    def _predict(self, X: np.ndarray) -> np.ndarray:
        with self._limit():
            proba = self._estimator.predict_proba(X)
        return proba[:, self._fraud_column].astype(np.float64)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Fraud scores of a batch, with one ``predict_proba`` call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows from :func:`app.features.extract_one`, columns in ``feature_names`` order.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            In [0, 1]; higher means more likely fraud.

        Raises
        ------
        ValueError
            ``X`` is not 2-D with ``n_features`` columns.
        """
        X = self._check(X)
        if len(X) == 0:
            return np.empty(0, dtype=np.float64)
        return np.clip(self._predict(X), 0.0, 1.0)

    def explain_many(
        self, X: np.ndarray, top_k: int = 3, scores: np.ndarray | None = None
    ) -> list[list[Reason]]:
        """The ``top_k`` features that raise each row's score most.

        ``contribution_j = score(x) - score(x with x_j := baseline_j)``: how much the score
        would fall if feature ``j`` took its usual (training-median) value. Computed with
        one ``predict_proba`` call on the ``(n * n_features, n_features)`` matrix of
        occluded rows (plus the ``n`` rows themselves when ``scores`` is not given).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Keep ``n_samples`` small (the alerting rows of a batch).
        top_k : int, default=3
            Reasons per row, at most ``n_features``; 0 gives empty lists.
        scores : ndarray of shape (n_samples,), optional
            ``score_many(X)`` if already known.

        Returns
        -------
        list of n_samples lists of Reason
            Sorted by contribution, largest first; a contribution may be negative or
            zero when no feature raises the score.

        Raises
        ------
        ValueError
            Bad ``X`` shape, ``top_k`` outside ``[0, n_features]`` or ``scores`` length.
        """
        X = self._check(X)
        f = self.n_features
        if not 0 <= top_k <= f:
            raise ValueError(f"top_k: expected an integer in [0, {f}], got {top_k!r}")
        n = len(X)
        if n == 0 or top_k == 0:
            return [[] for _ in range(n)]
        occluded = np.repeat(X, f, axis=0)  # row i*f + j is x_i ...
        cols = np.tile(np.arange(f), n)
        occluded[np.arange(n * f), cols] = self.baseline[cols]  # ... with x_ij := median_j
        if scores is None:
            out = np.clip(self._predict(np.vstack([X, occluded])), 0.0, 1.0)
            base, occ = out[:n], out[n:]
        else:
            base = np.asarray(scores, dtype=np.float64).reshape(-1)
            if len(base) != n:
                raise ValueError(f"scores: expected {n} values, got {len(base)}")
            occ = np.clip(self._predict(occluded), 0.0, 1.0)
        contrib = base[:, None] - occ.reshape(n, f)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :top_k]
        names = self.feature_names
        return [
            [
                Reason(
                    feature=names[j],
                    value=float(X[i, j]),
                    contribution=float(contrib[i, j]),
                )
                for j in order[i]
            ]
            for i in range(n)
        ]

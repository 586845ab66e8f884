"""Scoring with a verified model: fraud scores and their reasons, a batch at a time.

Scores are the estimator's ``predict_proba[:, 1]``: floats in [0, 1], higher means more
likely fraud. The shipped model is fitted without class re-weighting, so a score is an
estimate of the probability that the transaction is fraudulent (at the fraud rate of its
training data, about 0.9 %).

Reasons are occlusion contributions: for feature ``j`` of row ``x``,
``contribution_j = score(x) - score(x with x_j set to its training median)``. Positive
values push towards fraud. They are computed for few rows (those that alert).

The runtime is the one the model card names (``runtime``): the compiled form in ONNX
Runtime (:mod:`app.scoring.compiled`), checked against scikit-learn when loaded, or the
estimator's own ``predict_proba``. With the compiled form, :meth:`Scorer.score_and_explain`
gives a batch's scores and the reasons of its rows at or above a threshold from one call.
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
    runtime : str
        What scores: ``"onnxruntime <version>"`` (the compiled form) or
        ``"scikit-learn <version>"``.

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
        self._compiled = loaded.compiled
        if self._compiled is not None:
            self.runtime: str = self._compiled.engine
        else:
            import sklearn

            self.runtime = f"scikit-learn {sklearn.__version__}"

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
        if self._compiled is not None:
            return self._compiled.score_many(X)
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
        return self._reasons(X, base, occ.reshape(n, f), top_k)

    def _reasons(self, X: np.ndarray, base: np.ndarray, occ: np.ndarray,
                 top_k: int) -> list[list[Reason]]:
        n = len(X)
        contrib = base[:, None] - occ
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

    def score_and_explain(
        self, X: np.ndarray, explain_at: float, top_k: int = 3
    ) -> tuple[np.ndarray, dict[int, list[Reason]]]:
        """Scores of a batch and the reasons of its rows scoring at or above ``explain_at``.

        With the compiled form this is one runtime call: the occluded rows of the rows
        that reach ``explain_at`` are appended to the batch inside the compiled graph.
        With scikit-learn it is :meth:`score_many` then :meth:`explain_many` of those rows.
        The reasons equal :meth:`explain_many`'s of the same rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        explain_at : float
            Score from which a row is explained, in [0, 1] (the alert threshold);
            ``inf``: no row.
        top_k : int, default=3
            Reasons per row, in ``[0, n_features]``; 0: no row is explained.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            In [0, 1]; higher means more likely fraud.
        reasons : dict of int to list of Reason
            Row index -> its ``top_k`` reasons, largest contribution first, for every row
            with ``scores[i] >= explain_at``.

        Raises
        ------
        ValueError
            Bad ``X`` shape or ``top_k``.
        """
        X = self._check(X)
        f = self.n_features
        if not 0 <= top_k <= f:
            raise ValueError(f"top_k: expected an integer in [0, {f}], got {top_k!r}")
        if len(X) == 0:
            return np.empty(0, dtype=np.float64), {}
        at = explain_at if top_k else float("inf")
        if self._compiled is None:
            scores = self.score_many(X)
            rows = np.flatnonzero(scores >= at)
            found = self.explain_many(X[rows], top_k, scores=scores[rows]) if len(rows) else []
            return scores, dict(zip(rows.tolist(), found))
        scores, rows, occ = self._compiled.score_and_occlude(X, at)
        scores = np.clip(scores, 0.0, 1.0)
        keep = scores[rows] >= at  # the graph compares in float32: keep what decides here
        rows, occ = rows[keep], occ[keep]
        if len(rows) == 0:
            return scores, {}
        found = self._reasons(X[rows], scores[rows], np.clip(occ, 0.0, 1.0), top_k)
        return scores, dict(zip(rows.tolist(), found))

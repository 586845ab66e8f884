"""Feature drift: the population stability index (PSI) of served features against the
training distribution.

The reference of one feature is a set of bin edges (training quantiles) and the share of
training rows in each bin, plus a last bin for missing values (NaN). A worker counts the
features it serves into the same bins, with exponential forgetting so the counts follow
the recent stream, and reports

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

per feature. Rule of thumb: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a
significant shift. Pure: numpy and pydantic only.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(5000, 1))
>>> ref = reference_from_matrix(X, ["x"], n_bins=10)
>>> len(ref["x"].edges), len(ref["x"].expected)
(9, 11)
>>> monitor = DriftMonitor(ref, ["x"], half_life_events=1e9, min_events=100)
>>> monitor.observe(rng.normal(size=(5000, 1)))
>>> monitor.psi()["x"] < 0.02
True
>>> monitor.observe(rng.normal(loc=2.0, size=(50000, 1)))
>>> monitor.psi()["x"] > 0.25
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FeatureReference",
    "DriftMonitor",
    "reference_from_matrix",
    "bin_indices",
    "psi",
    "PSI_EPSILON",
]

#: Smallest share used in the PSI's logarithm (empty bins would make it infinite).
PSI_EPSILON = 1e-4


class FeatureReference(BaseModel):
    """Training distribution of one feature, as stored in a model card.

    ``edges`` (ascending, ``k`` values) cut the real line into ``k + 1`` bins:
    ``(-inf, e0], (e0, e1], ..., (e[k-1], +inf)``; ``expected`` holds ``k + 2`` shares
    summing to 1: one per bin, then the share of missing values (NaN).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float] = Field(description="Ascending inner bin edges (training quantiles).")
    expected: list[float] = Field(description="Training share of each bin, then of NaN.")

    @model_validator(mode="after")
    def _check(self) -> "FeatureReference":
        if len(self.expected) != len(self.edges) + 2:
            raise ValueError(
                f"expected needs len(edges) + 2 = {len(self.edges) + 2} shares, "
                f"got {len(self.expected)}"
            )
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"edges must be strictly ascending, got {self.edges}")
        if any(s < 0 for s in self.expected) or abs(sum(self.expected) - 1.0) > 1e-6:
            raise ValueError(f"expected shares must be >= 0 and sum to 1, got {self.expected}")
        return self


def bin_indices(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value under :class:`FeatureReference`'s convention.

    Parameters
    ----------
    values : ndarray of shape (n_samples,)
    edges : sequence of float of length k, ascending

    Returns
    -------
    ndarray of int of shape (n_samples,)
        In ``0..k`` for numbers (value ``v`` goes to the first bin whose upper edge is
        ``>= v``), ``k + 1`` for NaN.

    Examples
    --------
    >>> bin_indices(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]), [0.0, 1.0]).tolist()
    [0, 0, 1, 1, 2, 3]
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    out[np.isnan(values)] = len(edges) + 1
    return out


def reference_from_matrix(
    X: np.ndarray, feature_names: Sequence[str], n_bins: int = 10
) -> dict[str, FeatureReference]:
    """Reference bins of every feature from a training matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The training matrix (NaN allowed: counted in the missing bin).
    feature_names : sequence of str of length n_features
    n_bins : int, default=10
        Quantile bins per feature, in ``2..100``; a feature with few distinct values
        (a flag, the hour) gets fewer, since equal quantiles merge.

    Returns
    -------
    dict of str to FeatureReference

    Raises
    ------
    ValueError
        If ``X`` is not 2-D with one column per name, has no rows, or ``n_bins`` is out
        of range.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(
            f"X must have shape (n_samples, {len(feature_names)}), got {X.shape}"
        )
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    if not 2 <= n_bins <= 100:
        raise ValueError(f"n_bins must be in 2..100, got {n_bins!r}")
    out: dict[str, FeatureReference] = {}
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    for j, name in enumerate(feature_names):
        col = X[:, j]
        finite = col[~np.isnan(col)]
        edges = np.unique(np.quantile(finite, qs)) if finite.size else np.array([])
        counts = np.bincount(bin_indices(col, edges), minlength=len(edges) + 2)
        shares = counts / counts.sum()
        out[name] = FeatureReference(
            edges=[float(e) for e in edges], expected=[float(s) for s in shares]
        )
    return out


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares.

    Parameters
    ----------
    expected, actual : ndarray of shape (n_bins,)
        Shares (or counts: each is normalised to sum 1).
    epsilon : float, default=1e-4
        Floor of each share before the logarithm.

    Returns
    -------
    float
        >= 0; 0 when the distributions are equal.

    Raises
    ------
    ValueError
        If the shapes differ or either sums to 0.

    Examples
    --------
    >>> psi(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    0.0
    >>> round(psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 3)
    0.879
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"expected and actual differ in shape: {e.shape} vs {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("expected and actual must each have a positive sum")
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(max(0.0, np.sum((a - e) * np.log(a / e))))


class DriftMonitor:
    """Decayed bin counts of served features and their PSI against a reference.

    Parameters
    ----------
    reference : mapping of str to FeatureReference
        From the model card (``drift_reference``); features absent from it are skipped.
    feature_names : sequence of str
        Column order of the matrices given to :meth:`observe`.
    half_life_events : float, default=20000
        Events after which an observation weighs half: the PSI follows about the last
        ``2 * half_life_events`` transactions. Must be > 0.
    min_events : float, default=1000
        Decayed count below which :meth:`psi` reports nothing (too few to compare).

    Raises
    ------
    ValueError
        If ``half_life_events <= 0`` or ``min_events < 1``.
    """

    def __init__(
        self,
        reference: Mapping[str, FeatureReference],
        feature_names: Sequence[str],
        half_life_events: float = 20_000,
        min_events: float = 1_000,
    ) -> None:
        if not half_life_events > 0:
            raise ValueError(f"half_life_events must be > 0, got {half_life_events!r}")
        if not min_events >= 1:
            raise ValueError(f"min_events must be >= 1, got {min_events!r}")
        self.half_life_events = float(half_life_events)
        self.min_events = float(min_events)
        self._columns = [
            (j, name, reference[name]) for j, name in enumerate(feature_names) if name in reference
        ]
        self._counts = {name: np.zeros(len(ref.expected)) for _, name, ref in self._columns}
        self._total = 0.0

    @property
    def features(self) -> list[str]:
        """Names of the monitored features."""
        return [name for _, name, _ in self._columns]

    def observe(self, X: np.ndarray) -> None:
        """Count a batch of served features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            In the column order of ``feature_names``.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            return
        decay = 0.5 ** (X.shape[0] / self.half_life_events)
        self._total = self._total * decay + X.shape[0]
        for j, name, ref in self._columns:
            counts = np.bincount(bin_indices(X[:, j], ref.edges), minlength=len(ref.expected))
            self._counts[name] = self._counts[name] * decay + counts

    def psi(self) -> dict[str, float]:
        """PSI of each monitored feature; empty until ``min_events`` have been seen."""
        if self._total < self.min_events:
            return {}
        return {
            name: psi(np.asarray(ref.expected), self._counts[name]) for _, name, ref in self._columns
        }

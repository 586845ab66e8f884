"""The simulated investigators' label arrivals, with a model of the registry as their queue.

``fraudctl replay``, ``fraudctl evaluate`` and ``fraudctl train`` with
``--investigators K`` call :func:`investigation_arrivals_of`: the same frame, policy
and policy model give the same label times everywhere (the rule itself is
:func:`app.features.labels.label_arrivals`, the features it needs
:func:`app.features.offline.investigation_arrivals`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..exceptions import DataError
from ..features.labels import InvestigationPolicy
from ..features.offline import investigation_arrivals
from .model import Scorer
from .registry import default_version, load_model, read_card

__all__ = ["policy_scorer", "investigation_arrivals_of"]


def policy_scorer(models_dir: str | Path, version: str | None = None) -> Scorer:
    """The model whose scores order the investigators' queue.

    Any version of the registry whose feature names the running code still computes
    (a model of fewer features than :data:`app.features.FEATURE_NAMES` is accepted:
    its columns are picked by name).

    Parameters
    ----------
    models_dir : str or Path
    version : str, optional
        Default: the registry's default version (``models/ACTIVE``).

    Raises
    ------
    ModelError, ModelIntegrityError
        Unknown version, or an artifact that does not match its card.
    """
    version = version or default_version(models_dir)
    card = read_card(version, models_dir)
    return Scorer(load_model(version, models_dir, feature_names=card.feature_names),
                  n_threads=None)


def investigation_arrivals_of(
    df: pd.DataFrame,
    policy: InvestigationPolicy,
    scorer: Scorer | None,
    chargeback_frame: pd.DataFrame | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label times and sources of ``df``'s rows with ``scorer`` as the policy model.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`app.data.handbook.read_handbook` frame; the simulation starts at its
        first row.
    policy : InvestigationPolicy
    scorer : Scorer or None
        The policy model (:func:`policy_scorer`); unused when ``policy.k == 0``.
    chargeback_frame : pandas.DataFrame, optional
        ``df``'s features with chargeback labels, when already computed.

    Returns
    -------
    label_time_ms : ndarray of int64 of shape (len(df),)
    investigated : ndarray of bool of shape (len(df),)

    Raises
    ------
    DataError
        Investigators work and no policy model is given.
    """
    if policy.active and scorer is None:
        raise DataError("investigators need a policy model to order their queue")

    def score(frame: pd.DataFrame) -> np.ndarray:
        assert scorer is not None
        return scorer.score_many(frame[list(scorer.feature_names)].to_numpy(dtype=np.float64))

    return investigation_arrivals(df, policy, score if policy.active else None,
                                  chargeback_frame=chargeback_frame, progress=progress)

"""Stream against offline: the features and scores every scored record must have.

Shared by the parity test and the operations tests (a catch-up on a busy machine):
the offline side runs the same feature code over the same transactions and labels
(``features_frame``) and the same model; a stream record matches when each feature and
the score are within 1e-9.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.config import Settings
from app.events import ScoredTransaction
from app.features import FEATURE_NAMES
from app.features.offline import features_frame
from app.scoring.model import Scorer
from app.scoring.registry import default_version, load_model

TOLERANCE = 1e-9


@dataclass
class Offline:
    """Offline features and scores of a slice, by transaction id."""

    X: np.ndarray
    scores: np.ndarray
    row_of: dict[str, int]


def offline(df: pd.DataFrame, labels_delay_days: int = 7) -> Offline:
    """Features (``features_frame``) and the default model's scores of ``df``."""
    settings = Settings()
    scorer = Scorer(load_model(default_version(settings.models_dir), settings.models_dir))
    X = features_frame(df, labels_delay_days=labels_delay_days)[list(FEATURE_NAMES)].to_numpy()
    return Offline(X, scorer.score_many(X), {str(t): i for i, t in enumerate(df["TRANSACTION_ID"])})


@dataclass
class Comparison:
    """Result of :func:`compare`."""

    scored: list[ScoredTransaction]
    mismatched: list[str] = field(default_factory=list)
    worst_feature: float = 0.0
    worst_score: float = 0.0


def compare(records, expected: Offline, show: int = 5) -> Comparison:
    """Compare every ``scored-transactions`` record with the offline row of its id
    (prints the first ``show`` mismatches with the features that differ)."""
    out = Comparison([ScoredTransaction.model_validate_json(r.value) for r in records])
    for s in out.scored:
        i = expected.row_of[s.transaction.transaction_id]
        got = np.array([s.features[name] for name in FEATURE_NAMES])
        d_feat = float(np.max(np.abs(got - expected.X[i])))
        d_score = abs(s.score - float(expected.scores[i]))
        out.worst_feature = max(out.worst_feature, d_feat)
        out.worst_score = max(out.worst_score, d_score)
        if d_feat > TOLERANCE or d_score > TOLERANCE:
            out.mismatched.append(s.transaction.transaction_id)
            if len(out.mismatched) <= show:
                diff = {
                    k: (got[j], expected.X[i, j])
                    for j, k in enumerate(FEATURE_NAMES)
                    if abs(got[j] - expected.X[i, j]) > TOLERANCE
                }
                print("MISMATCH", s.transaction, diff)
    return out

"""Train, evaluate and register a model on a handbook-style train/gap/test split.

The features are computed by the stream's own code (:func:`app.features.offline.
features_frame`), once over the whole span read, so the account state of the first
training day already holds ``HISTORY_DAYS`` days of history. The split and the metrics
are the Fraud Detection Handbook's (chapters 4 and 5), see :mod:`app.scoring.evaluate`.

Model: scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier` (see
:func:`make_estimator` for how it was chosen; ``compare=True`` also fits a random forest
and a logistic regression on the same split and stores their figures in the card).
"""

from __future__ import annotations

import io
import time
from contextlib import nullcontext
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..data.handbook import parse_date, read_handbook
from ..exceptions import DataError
from ..features import FEATURE_NAMES
from ..features.offline import features_frame
from .evaluate import evaluate_scores, handbook_split, window_counts
from .registry import (
    CandidateResult,
    DataInfo,
    ModelCard,
    ModelMetrics,
    WindowInfo,
    save_model,
)

__all__ = [
    "DEFAULT_TRAIN_START",
    "DEFAULT_TRAIN_END",
    "HISTORY_DAYS",
    "TOP_K",
    "STAGES",
    "make_estimator",
    "choose_threshold",
    "train",
]

#: The handbook's default split: train 2018-07-04..10, gap 7 days, test 2018-07-18..24.
DEFAULT_TRAIN_START = date(2018, 7, 4)
DEFAULT_TRAIN_END = date(2018, 7, 10)
#: Days read before the train window so feature windows (up to 30 days) are full.
HISTORY_DAYS = 30
#: Cards investigators check per day (card precision@k and the alert budget).
TOP_K = 100
#: Stages reported to ``progress``, in order.
STAGES = ("read", "features", "fit", "evaluate", "save")

Progress = Callable[[str, int, int], None]


def make_estimator(random_state: int = 0) -> HistGradientBoostingClassifier:
    """The model family and hyper-parameters of shipped models.

    Chosen on three prequential validation folds of the handbook dataset (training
    windows starting 7, 14 and 21 days before 2018-07-04, handbook chapter 5), never on
    the test window: among learning rates 0.05/0.1, 15/31 leaves, 20/50/200 samples per
    leaf, feature subsampling 1.0/0.5 and class weights none/balanced, every setting
    was within noise (ROC AUC 0.666-0.681, card precision@100 0.099-0.106); this one was
    at or near the top on all three metrics (AUC 0.675, AP 0.327, CP@100 0.106).

    No class re-weighting: ``balanced`` weights did not improve the ranking metrics (with
    ``min_samples_leaf=200`` they cut average precision to 0.24-0.29) and distort the scores,
    while unweighted scores estimate the fraud probability and keep the alert threshold
    interpretable. Early stopping on the log-loss of a stratified 10 % of the training
    rows bounds the number of trees.
    """
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=15,
        min_samples_leaf=50,
        l2_regularization=1.0,
        max_features=0.5,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        scoring="loss",
        random_state=random_state,
    )


def _candidates(random_state: int) -> dict[str, Callable[[], Any]]:
    return {
        "random_forest": lambda: RandomForestClassifier(
            n_estimators=100, max_depth=20, min_samples_leaf=5, n_jobs=-1,
            random_state=random_state,
        ),
        "logistic_regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000)
        ),
    }


_FALLBACK_RATIONALE = "too few frauds to choose a threshold: 0.5 (more likely fraud than not)"


def choose_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    n_days: int,
    max_alerts_per_day: float = TOP_K,
    folds: int = 3,
) -> tuple[float, str]:
    """Alert threshold maximising F1 with at most ``max_alerts_per_day`` alerts a day.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Out-of-fold scores of the training window (not the test window: no leakage).
    labels : ndarray of shape (n,)
        0/1.
    n_days : int
        Days the rows span (for the alert budget).
    max_alerts_per_day : float, default=100
        Investigators' capacity, as in card precision@100.
    folds : int, default=3
        Folds that produced ``scores`` (for the rationale text).

    Returns
    -------
    threshold : float
        In (0, 1]; 0.5 when there are too few frauds to choose.
    rationale : str
    """
    if labels.sum() == 0 or len(scores) == 0:
        return 0.5, _FALLBACK_RATIONALE
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    sorted_scores = np.sort(scores)
    alerts = len(scores) - np.searchsorted(sorted_scores, thresholds, side="left")
    per_day = alerts / max(n_days, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(per_day <= max_alerts_per_day, f1, -1.0)
    best = int(np.argmax(f1))
    threshold = float(np.round(thresholds[best], 4))
    return max(threshold, 1e-4), (
        f"maximises F1 on out-of-fold scores of the training window ({folds}-fold, "
        f"stratified) "
        f"subject to at most {max_alerts_per_day:g} alerts a day: there precision "
        f"{precision[best]:.3f}, recall {recall[best]:.3f}, {per_day[best]:.1f} alerts a day"
    )


def _window(frame: pd.DataFrame, start: date, end: date) -> WindowInfo:
    return WindowInfo(start=start, end=end, **window_counts(frame))


def _artifact_bytes(estimator: Any) -> int:
    buf = io.BytesIO()
    joblib.dump(estimator, buf, compress=3)
    return len(buf.getvalue())


def _justification(comparison: list[CandidateResult]) -> str:
    text = (
        "HistGradientBoostingClassifier. Selection (prequential validation, 3 folds "
        "before the handbook's default split, mean): gradient boosting AUC 0.675, AP "
        "0.327, CP@100 0.106, fit 0.6 s, 0.08 MB; random forest (100 trees, depth 20) "
        "AUC 0.669, AP 0.347, CP@100 0.099, fit 14 s, 1.2 MB; logistic regression AUC "
        "0.673, AP 0.303, CP@100 0.101. Boosting had the best card precision@100 (the "
        "handbook's operational metric) and AUC, 0.02 less AP than the forest at a "
        "fifteenth of its size and a twentieth of its fit time, one fast predict_proba "
        "per batch, and needs no feature scaling. Class imbalance (about 0.9 % fraud): "
        "evaluated with ranking metrics rather than accuracy; early stopping on log-loss, "
        "min_samples_leaf=50 and L2 regularisation against overfitting the few frauds; "
        "no re-weighting (class_weight='balanced' did not improve ranking and distorts "
        "probabilities); the alert threshold is chosen on precision/recall under an "
        "alert budget. Limitation: the features are account-only (amount, time, account "
        "history); the handbook's terminal-compromise frauds (scenario 2, most of the "
        "frauds) are invisible to them, so all metrics are well below the handbook's "
        "results with terminal-risk features."
    )
    if comparison:
        rows = "; ".join(
            f"{c.name}: AUC {_fmt(c.roc_auc)}, AP {_fmt(c.average_precision)}, "
            f"CP@100 {_fmt(c.card_precision_at_100)}, fit {c.fit_seconds:.1f} s, "
            f"{c.artifact_bytes / 1e6:.2f} MB"
            for c in comparison
        )
        text += f" This split's test window: {rows}."
    return text


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fit_eval(
    make: Callable[[], Any], X_train: np.ndarray, y_train: np.ndarray,
    X_test: np.ndarray, test: pd.DataFrame,
) -> tuple[Any, np.ndarray, dict[str, Any], float]:
    model = make()
    t0 = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - t0
    scores = model.predict_proba(X_test)[:, 1] if len(X_test) else np.empty(0)
    return model, scores, evaluate_scores(test, scores, k=TOP_K), fit_seconds


def train(
    path: str | Path,
    train_start: date | str = DEFAULT_TRAIN_START,
    train_end: date | str = DEFAULT_TRAIN_END,
    gap_days: int = 7,
    test_days: int = 7,
    *,
    models_dir: str | Path = "models",
    compare: bool = False,
    random_state: int = 0,
    n_threads: int | None = 1,
    progress: Progress | None = None,
) -> ModelCard:
    """Train on a window, evaluate on a later one, save the model as a new version.

    Parameters
    ----------
    path : str or Path
        Handbook data (see :func:`app.data.handbook.read_handbook`).
    train_start, train_end : date or str ``YYYY-MM-DD``
        First and last training day, inclusive.
    gap_days : int, default=7
        Days between train and test: the delay before labels are known.
    test_days : int, default=7
        Days of the test window.
    models_dir : str or Path, default="models"
    compare : bool, default=False
        Also fit a random forest and a logistic regression on the same split and store
        their metrics in the card (slower: about half a minute on the default split).
    random_state : int, default=0
    n_threads : int or None, default=1
        OpenMP threads of gradient boosting (None: all cores). One thread fits the
        default split in about a second and, unlike two, stays fast on a busy host.
    progress : callable, optional
        ``progress(stage, done, total)`` with ``stage`` in :data:`STAGES`.

    Returns
    -------
    ModelCard
        The saved model's card (metrics on the test window included).

    Raises
    ------
    DataError
        Bad dates, windows not covered by the data, an empty train window or one
        without fraud.
    """
    t_start = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    start, end, test_start, test_end = _windows(train_start, train_end, gap_days, test_days)
    history_start = start - timedelta(days=HISTORY_DAYS)

    report("read", 0, 1)
    df = _read_span(path, history_start, start, test_start, test_end)
    report("read", 1, 1)
    n = len(df)
    report("features", 0, n)
    frame = features_frame(df, progress=lambda done: report("features", done, n))
    report("features", n, n)

    train_mask, test_mask = handbook_split(frame, start, end, gap_days, test_days)
    train_df, test_df = frame.loc[train_mask], frame.loc[test_mask]
    if train_df.empty:
        raise DataError(f"the train window {start}..{end} holds no transactions")
    y_train = train_df["TX_FRAUD"].to_numpy().astype(np.int64)
    if y_train.sum() == 0:
        raise DataError(f"the train window {start}..{end} holds no fraud: nothing to learn")
    if test_df.empty:
        raise DataError(f"the test window {test_start}..{test_end} holds no transactions")
    names = list(FEATURE_NAMES)
    X_train = train_df[names].to_numpy(dtype=np.float64)
    X_test = test_df[names].to_numpy(dtype=np.float64)

    limit = threadpool_limits(n_threads, user_api="openmp") if n_threads else nullcontext()
    with limit:
        report("fit", 0, 1)
        model, scores, metrics, fit_seconds = _fit_eval(
            lambda: make_estimator(random_state), X_train, y_train, X_test, test_df
        )
        report("fit", 1, 1)
        steps = 2 + (len(_candidates(random_state)) if compare else 0)
        report("evaluate", 0, steps)
        threshold, rationale = _threshold(X_train, y_train, (end - start).days + 1, random_state)
        report("evaluate", 1, steps)
        comparison: list[CandidateResult] = []
        if compare:
            comparison.append(_candidate("hist_gradient_boosting", model, metrics, fit_seconds))
            for i, (name, make) in enumerate(_candidates(random_state).items(), 2):
                other, _, m, secs = _fit_eval(make, X_train, y_train, X_test, test_df)
                comparison.append(_candidate(name, other, m, secs))
                report("evaluate", i, steps)
        report("evaluate", steps, steps)

    report("save", 0, 1)
    y_test = test_df["TX_FRAUD"].to_numpy() == 1
    alerted = scores >= threshold
    in_test = frame["TX_DATETIME"].dt.floor("D").between(
        pd.Timestamp(test_start), pd.Timestamp(test_end)
    )
    card = save_model(
        model,
        models_dir,
        data=DataInfo(
            source=Path(path).name,
            history_start=max(df["TX_DATETIME"].iloc[0].date(), history_start),
            train=_window(train_df, start, end),
            gap_days=gap_days,
            test=_window(test_df, test_start, test_end),
            test_removed_known_compromised=int(in_test.sum()) - len(test_df),
        ),
        metrics=ModelMetrics(
            roc_auc=metrics["roc_auc"],
            average_precision=metrics["average_precision"],
            card_precision_at_100=metrics["card_precision_at_k"],
            card_precision_daily=metrics["card_precision_daily"],
            fraud_cards_daily=metrics["fraud_cards_daily"],
            threshold_precision=float(y_test[alerted].mean()) if alerted.any() else None,
            threshold_recall=float(alerted[y_test].mean()) if y_test.any() else None,
            threshold_alerts_per_day=float(alerted.sum() / test_days),
        ),
        baseline=dict(zip(names, np.median(X_train, axis=0).tolist())),
        alert_threshold=threshold,
        threshold_rationale=rationale,
        justification=_justification(comparison),
        train_seconds=round(time.perf_counter() - t_start, 2),
        comparison=comparison,
    )
    report("save", 1, 1)
    return card


def _windows(
    train_start: date | str, train_end: date | str, gap_days: int, test_days: int
) -> tuple[date, date, date, date]:
    """Checked ``(train_start, train_end, test_start, test_end)``."""
    start = parse_date(train_start, "train_start")
    end = parse_date(train_end, "train_end")
    if start is None or end is None:
        raise DataError("train_start and train_end are required")
    if end < start:
        raise DataError(f"train_end {end} is before train_start {start}")
    if gap_days < 0:
        raise DataError(f"gap_days: expected >= 0, got {gap_days}")
    if test_days < 1:
        raise DataError(f"test_days: expected >= 1, got {test_days}")
    test_start = end + timedelta(days=gap_days + 1)
    return start, end, test_start, test_start + timedelta(days=test_days - 1)


def _read_span(
    path: str | Path, history_start: date, start: date, test_start: date, test_end: date
) -> pd.DataFrame:
    """Handbook rows of ``history_start..test_end``, checked to cover train and test."""
    df = read_handbook(path, history_start, test_end)
    if df.empty:
        raise DataError(f"{path}: no transactions between {history_start} and {test_end}")
    first = df["TX_DATETIME"].iloc[0].date()
    last = df["TX_DATETIME"].iloc[-1].date()
    if first > start:
        raise DataError(f"{path}: the data starts on {first}, after the train start {start}")
    if last < test_end:
        raise DataError(
            f"{path}: the data ends on {last}, before the end of the test window "
            f"{test_start}..{test_end}"
        )
    return df


def _threshold(
    X_train: np.ndarray, y_train: np.ndarray, n_days: int, random_state: int
) -> tuple[float, str]:
    """Alert threshold from out-of-fold scores of the training window."""
    folds = int(min(3, y_train.sum()))
    if folds < 2:
        return 0.5, _FALLBACK_RATIONALE
    oof = cross_val_predict(
        make_estimator(random_state), X_train, y_train, method="predict_proba",
        cv=StratifiedKFold(folds, shuffle=True, random_state=random_state),
    )[:, 1]
    return choose_threshold(oof, y_train, n_days, folds=folds)


def _candidate(name: str, model: Any, m: dict[str, Any], secs: float) -> CandidateResult:
    return CandidateResult(
        name=name,
        roc_auc=m["roc_auc"],
        average_precision=m["average_precision"],
        card_precision_at_100=m["card_precision_at_k"],
        fit_seconds=round(secs, 2),
        artifact_bytes=_artifact_bytes(model),
    )

"""Train, validate, evaluate and register a model on a handbook-style train/gap/test split.

The features are computed by the stream's own code (:func:`app.features.offline.
features_frame`), once over the whole span read, so the state of the first training
day already holds :data:`HISTORY_DAYS` days of history. The split, the metrics and the
prequential validation are the Fraud Detection Handbook's (chapters 4 and 5), see
:mod:`app.scoring.evaluate`.

Model selection (``compare=True``): every estimator of :data:`CANDIDATES` is fitted
and evaluated on :data:`VALIDATION_FOLDS` prequential folds that lie wholly before the
split's test window (the handbook's "validation" windows: the split moved back by
gap + test days, then by the test length per fold); the one with the best mean
:data:`SELECTION_METRIC` is fitted on the train window and saved. The test window is
only used to report the chosen model's figures, never to choose.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from ..data.contract import DataMapping
from ..data.handbook import parse_date, read_handbook
from ..exceptions import DataError
from ..monitoring.drift import reference_from_matrix
from ..features import DEFAULT_DELAY_DAYS, FEATURE_NAMES, TERMINAL_WINDOWS_DAYS, WINDOWS_DAYS
from ..features.labels import InvestigationPolicy
from ..features.offline import features_frame
from ..features.state import DAY_MS
from .candidates import CANDIDATES, DEFAULT_MODEL, candidate
from .investigators import investigation_arrivals_of, policy_scorer
from .compiled import choose_check_rows
from .model import Scorer
from .evaluate import (
    DEFAULT_KNOWN_COMPROMISED,
    KnownCompromised,
    evaluate_scores,
    handbook_split,
    prequential_folds,
    summarize_folds,
    window_counts,
)
from .protocol import DEFAULT_TRAIN_END, DEFAULT_TRAIN_START, TOP_K, VALIDATION_FOLDS
from .registry import DataInfo, ModelCard, ValidationResult, WindowInfo, save_model
from .report import justification, test_metrics

__all__ = [
    "DEFAULT_TRAIN_START",
    "DEFAULT_TRAIN_END",
    "HISTORY_DAYS",
    "SELECTION_METRIC",
    "STAGES",
    "TOP_K",
    "VALIDATION_FOLDS",
    "choose_threshold",
    "fit_mask",
    "prequential",
    "read_features",
    "split_windows",
    "train",
]

#: Days read before the first day used, so every feature window is full: the account
#: windows reach ``max(WINDOWS_DAYS)`` days back, the terminal windows ``delay +
#: max(TERMINAL_WINDOWS_DAYS)`` days (37 with the defaults).
HISTORY_DAYS = max(max(WINDOWS_DAYS), DEFAULT_DELAY_DAYS + max(TERMINAL_WINDOWS_DAYS))
#: The mean validation metric that picks the model (see ``train(compare=True)``).
SELECTION_METRIC = "average_precision"
#: Stages reported to ``progress``, in order.
STAGES = ("read", "features", "validate", "fit", "evaluate", "save")

Progress = Callable[[str, int, int], None]


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
        Out-of-fold scores of the rows fitted (not the test window: no leakage).
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
        f"maximises F1 on out-of-fold scores of the rows fitted ({folds}-fold, "
        f"stratified) "
        f"subject to at most {max_alerts_per_day:g} alerts a day: there precision "
        f"{precision[best]:.3f}, recall {recall[best]:.3f}, {per_day[best]:.1f} alerts a day"
    )


# --- data --------------------------------------------------------------------------------


def split_windows(
    train_start: date | str, train_end: date | str, gap_days: int, test_days: int
) -> tuple[date, date, date, date]:
    """Checked ``(train_start, train_end, test_start, test_end)`` of a split.

    Raises
    ------
    DataError
        Unparseable dates, ``train_end < train_start``, ``gap_days < 0`` or
        ``test_days < 1``.
    """
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


def read_features(
    path: str | Path,
    first_day: date,
    last_day: date,
    progress: Progress | None = None,
    history_days: int = HISTORY_DAYS,
    investigators: InvestigationPolicy | None = None,
    policy_model: Scorer | None = None,
    mapping: str | Path | DataMapping | None = None,
) -> tuple[pd.DataFrame, date]:
    """Handbook rows of ``first_day - history_days .. last_day`` with their features.

    Labels arrive :data:`~app.features.DEFAULT_DELAY_DAYS` after each transaction, as
    ``fraudctl replay`` emits them, so the terminal features are those the stream
    computes. With ``investigators``, the labels arrive as ``fraudctl replay
    --investigators`` of the same rows emits them
    (:func:`app.scoring.investigators.investigation_arrivals_of`, the simulation
    starting at the first row read), and the frame has two more columns:
    ``LABEL_TIME_MS`` and ``LABEL_INVESTIGATED``.

    Parameters
    ----------
    path : str or Path
        Handbook data (see :func:`app.data.handbook.read_handbook`).
    first_day, last_day : date
        The data must hold ``first_day`` (history before it may be partly missing) and
        ``last_day``.
    progress : callable, optional
        ``progress(stage, done, total)`` for the stages ``read`` and ``features``.
    history_days : int, default=HISTORY_DAYS
        Days read before ``first_day`` (rows before ``first_day`` only warm up state).
    investigators : InvestigationPolicy, optional
        Simulated investigators (``k > 0``); default: chargebacks only.
    policy_model : Scorer, optional
        The investigators' queue (:func:`app.scoring.investigators.policy_scorer`);
        required with ``investigators``.
    mapping : str, Path or DataMapping, optional
        The data's mapping file (:mod:`app.data.contract`); default: the contract's names.

    Returns
    -------
    frame : pandas.DataFrame
        The handbook columns, then one column per name of ``FEATURE_NAMES``.
    history_start : date
        First day actually read.

    Raises
    ------
    DataError
        Unreadable data, or data that does not cover ``first_day..last_day``.
    """
    report = progress or (lambda stage, done, total: None)
    history_start = first_day - timedelta(days=max(history_days, 0))
    report("read", 0, 1)
    df = read_handbook(path, history_start, last_day, mapping=mapping)
    if df.empty:
        raise DataError(f"{path}: no transactions between {history_start} and {last_day}")
    first = df["TX_DATETIME"].iloc[0].date()
    last = df["TX_DATETIME"].iloc[-1].date()
    if first > first_day:
        raise DataError(f"{path}: the data starts on {first}, after {first_day}, the first "
                        "day needed")
    if last < last_day:
        raise DataError(f"{path}: the data ends on {last}, before {last_day}, the last day "
                        "needed")
    report("read", 1, 1)
    n = len(df)
    report("features", 0, n)
    frame = features_frame(df, labels_delay_days=DEFAULT_DELAY_DAYS,
                           progress=lambda done: report("features", done, n))
    if investigators is not None and investigators.active:
        if investigators.chargeback_delay_ms != DEFAULT_DELAY_DAYS * DAY_MS:
            raise DataError("investigators: the chargeback delay must be the features' "
                            f"label delay, {DEFAULT_DELAY_DAYS} days")
        when, investigated = investigation_arrivals_of(df, investigators, policy_model,
                                                       chargeback_frame=frame)
        report("features", 0, n)
        frame = features_frame(df, arrivals=(when, investigated),
                               progress=lambda done: report("features", done, n))
        frame["LABEL_TIME_MS"], frame["LABEL_INVESTIGATED"] = when, investigated
    report("features", n, n)
    return frame, max(first, history_start)


def _xy(frame: pd.DataFrame, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = frame.loc[mask]
    return (sub[list(FEATURE_NAMES)].to_numpy(dtype=np.float64),
            sub["TX_FRAUD"].to_numpy().astype(np.int64))


def fit_mask(frame: pd.DataFrame, train_start: date, train_end: date,
             fit_days: int | None = None) -> np.ndarray:
    """Rows of the days a model is fitted on: ``train_start..train_end``, or the
    ``fit_days`` days ending on ``train_end``.

    Returns
    -------
    ndarray of bool of shape (n_rows,)
    """
    if fit_days is not None:
        if fit_days < 1:
            raise ValueError(f"fit_days: expected None or >= 1, got {fit_days}")
        train_start = train_end - timedelta(days=fit_days - 1)
    days = frame["TX_DATETIME"].dt.floor("D")
    return days.between(pd.Timestamp(train_start), pd.Timestamp(train_end)).to_numpy()


def _fraud_scores(model: Any, X: np.ndarray) -> np.ndarray:
    if len(X) == 0:
        return np.empty(0)
    classes = list(model.classes_)
    return model.predict_proba(X)[:, classes.index(1)]


# --- validation ---------------------------------------------------------------------------


def prequential(
    frame: pd.DataFrame,
    make: Callable[[], Any],
    train_start: date,
    train_end: date,
    gap_days: int = 7,
    test_days: int = 7,
    n_folds: int = VALIDATION_FOLDS,
    shift_days: int = 0,
    known_compromised: KnownCompromised | str = DEFAULT_KNOWN_COMPROMISED,
    on_fold: Callable[[int], None] | None = None,
    fit_days: int | None = None,
) -> list[dict[str, Any]]:
    """Prequential validation (handbook chapter 5): fit and evaluate on shifted splits.

    Fold ``i`` trains a fresh ``make()`` on the train window of
    :func:`~app.scoring.evaluate.prequential_folds` (the split moved back by
    ``shift_days + i * test_days``) and evaluates it on that fold's test window.

    Parameters
    ----------
    frame : pandas.DataFrame
        From :func:`read_features`, covering every fold.
    make : callable
        Returns an unfitted estimator.
    train_start, train_end : date
        The split the folds are moved back from.
    gap_days, test_days : int
    n_folds : int, default=VALIDATION_FOLDS
    shift_days : int, default=0
        0: fold 0 is the split itself (``fraudctl evaluate --prequential``);
        ``gap_days + test_days``: every fold before the split's test window (model
        selection).
    known_compromised : KnownCompromised or str, default="before-test"
    on_fold : callable, optional
        Called with the number of folds done.
    fit_days : int, optional
        Fit on the ``fit_days`` days ending on each fold's last train day (see
        :func:`fit_mask`); the fold's train window still decides the known-compromised
        cards.

    Returns
    -------
    list of dict
        Per fold: :func:`~app.scoring.evaluate.evaluate_scores` result plus
        ``train_start``, ``train_end``, ``test_start``, ``test_end`` (dates) and
        ``fit_seconds``. A fold whose fitted rows hold no fraud has None metrics.
    """
    out = []
    folds = prequential_folds(train_start, train_end, test_days, n_folds, shift_days)
    for i, (start, end) in enumerate(folds):
        _, test_mask = handbook_split(frame, start, end, gap_days, test_days,
                                      known_compromised)
        X, y = _xy(frame, fit_mask(frame, start, end, fit_days))
        test_start = end + timedelta(days=gap_days + 1)
        row: dict[str, Any] = {
            "train_start": start, "train_end": end, "test_start": test_start,
            "test_end": test_start + timedelta(days=test_days - 1), "fit_seconds": 0.0,
        }
        if y.sum() == 0 or not test_mask.any():
            row.update({m: None for m in ("roc_auc", "average_precision",
                                          "card_precision_at_k")})
        else:
            model = make()
            t0 = time.perf_counter()
            model.fit(X, y)
            row["fit_seconds"] = time.perf_counter() - t0
            X_test, _ = _xy(frame, test_mask)
            row.update(evaluate_scores(frame.loc[test_mask], _fraud_scores(model, X_test),
                                       k=TOP_K))
        out.append(row)
        if on_fold:
            on_fold(i + 1)
    return out


def _validation_result(
    name: str, folds: list[dict[str, Any]], rule: str, fit_days: int | None
) -> ValidationResult:
    summary = summarize_folds(folds)

    def part(metric: str, j: int) -> float | None:
        value = summary[metric]
        return None if value is None else round(value[j], 4)

    return ValidationResult(
        name=name,
        folds=[(f["train_start"], f["train_end"]) for f in folds],
        fit_days=fit_days,
        known_compromised_rule=rule,
        roc_auc_mean=part("roc_auc", 0), roc_auc_std=part("roc_auc", 1),
        average_precision_mean=part("average_precision", 0),
        average_precision_std=part("average_precision", 1),
        card_precision_at_100_mean=part("card_precision_at_k", 0),
        card_precision_at_100_std=part("card_precision_at_k", 1),
        fit_seconds=round(float(np.mean([f["fit_seconds"] for f in folds])), 2),
    )


def _select(results: list[ValidationResult]) -> str:
    """Name of the result with the best mean :data:`SELECTION_METRIC` (ties: first)."""
    key = f"{SELECTION_METRIC}_mean"
    scored = [(getattr(r, key), i) for i, r in enumerate(results) if getattr(r, key) is not None]
    if not scored:
        raise DataError("no validation fold holds both classes: cannot compare models")
    best = max(scored, key=lambda s: (s[0], -s[1]))[1]
    return results[best].name


# --- the card -----------------------------------------------------------------------------


def _window(frame: pd.DataFrame, start: date, end: date) -> WindowInfo:
    return WindowInfo(start=start, end=end, **window_counts(frame))


# --- training ------------------------------------------------------------------------------


def train(
    path: str | Path,
    train_start: date | str = DEFAULT_TRAIN_START,
    train_end: date | str = DEFAULT_TRAIN_END,
    gap_days: int = 7,
    test_days: int = 7,
    *,
    models_dir: str | Path = "models",
    model: str | Sequence[str] | None = None,
    compare: bool = False,
    validation_folds: int = VALIDATION_FOLDS,
    known_compromised: KnownCompromised | str = DEFAULT_KNOWN_COMPROMISED,
    random_state: int = 0,
    n_threads: int | None = 1,
    progress: Progress | None = None,
    features: tuple[pd.DataFrame, date] | None = None,
    investigators: InvestigationPolicy | None = None,
    policy_model: str | None = None,
    mapping: str | Path | DataMapping | None = None,
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
    model : str or sequence of str, optional
        Name(s) of :data:`~app.scoring.candidates.CANDIDATES`. Without ``compare``: the
        one model to fit (default :data:`~app.scoring.candidates.DEFAULT_MODEL`); with
        it: the candidates to compare (default: all).
    compare : bool, default=False
        Choose the model among the candidates by prequential validation (slower:
        ``len(candidates) * validation_folds`` more fits, and the data must reach back
        ``gap + test + (folds - 1) * test`` days, plus the longest fit window, before
        ``train_end``).
    validation_folds : int, default=VALIDATION_FOLDS
    known_compromised : KnownCompromised or str, default="before-test"
        Rule of validation and of the card's main metrics; the card also reports the
        test window under the other rules.
    random_state : int, default=0
    n_threads : int or None, default=1
        Threads of the fit (OpenMP for boosting, joblib for forests); None: all cores.
        The saved estimator predicts on one thread (``n_jobs=1``): workers score small
        batches, where threads cost more than they save.
    progress : callable, optional
        ``progress(stage, done, total)`` with ``stage`` in :data:`STAGES`.
    features : (pandas.DataFrame, date), optional
        What :func:`read_features` returned for ``path`` over at least the days this
        split needs (a notebook computes them once for training and its plots); default:
        computed here.
    investigators : InvestigationPolicy, optional
        Train on features with labels as simulated investigators give them (see
        :func:`read_features`); default: chargebacks only.
    policy_model : str, optional
        Version of the investigators' queue model; default: the registry's default.
    mapping : str, Path or DataMapping, optional
        The data's mapping file (:mod:`app.data.contract`); default: the contract's names.

    Returns
    -------
    ModelCard
        The saved model's card (metrics on the test window included).

    Raises
    ------
    DataError
        Bad dates or model name, windows not covered by the data, an empty train or
        test window, or fitted rows without fraud.
    """
    t_start = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    rule = KnownCompromised(known_compromised)
    if validation_folds < 1:
        raise DataError(f"validation_folds: expected >= 1, got {validation_folds}")
    named = [model] if isinstance(model, str) else list(model or [])
    if len(named) > 1 and not compare:
        raise DataError(f"{len(named)} models named: fit one, or compare them (--compare)")
    names = (named or list(CANDIDATES)) if compare else (named or [DEFAULT_MODEL])
    for n in names:
        candidate(n)  # unknown name: fail before reading data
    start, end, test_start, test_end = split_windows(train_start, train_end, gap_days,
                                                     test_days)
    folds = prequential_folds(start, end, test_days, validation_folds,
                              shift_days=gap_days + test_days) if compare else []
    longest = max([(end - start).days + 1] + [CANDIDATES[n].fit_days or 0 for n in names])
    first_day = min(f[1] for f in [(start, end), *folds]) - timedelta(days=longest - 1)
    if features is None:
        policy = (policy_scorer(models_dir, policy_model)
                  if investigators is not None and investigators.active else None)
        frame, history_start = read_features(path, first_day, test_end, progress=report,
                                             investigators=investigators,
                                             policy_model=policy, mapping=mapping)
    else:
        frame, history_start = features
        days = frame["TX_DATETIME"].dt.floor("D")
        if len(frame) == 0 or days.iloc[0] > pd.Timestamp(first_day) or days.iloc[-1] < pd.Timestamp(test_end):
            raise DataError(f"features: the frame given must cover {first_day}..{test_end}")

    train_mask, test_mask = handbook_split(frame, start, end, gap_days, test_days, rule)
    train_df = frame.loc[train_mask]
    if train_df.empty:
        raise DataError(f"the train window {start}..{end} holds no transactions")
    if not test_mask.any():
        raise DataError(f"the test window {test_start}..{test_end} holds no transactions")

    def sized(make: Callable[[int], Any]) -> Callable[[], Any]:
        def build() -> Any:
            est = make(random_state)
            if "n_jobs" in est.get_params():
                est.set_params(n_jobs=n_threads or -1)
            return est
        return build

    limit = threadpool_limits(n_threads, user_api="openmp") if n_threads else nullcontext()
    validation: list[ValidationResult] = []
    name = names[0]
    with limit:
        if compare:
            steps = len(names) * validation_folds
            report("validate", 0, steps)
            for c, cand in enumerate(names):
                spec = CANDIDATES[cand]
                results = prequential(
                    frame, sized(spec.make), start, end, gap_days, test_days,
                    validation_folds, shift_days=gap_days + test_days, known_compromised=rule,
                    on_fold=lambda done, c=c: report("validate", c * validation_folds + done,
                                                     steps),
                    fit_days=spec.fit_days,
                )
                validation.append(_validation_result(cand, results, rule.value, spec.fit_days))
            name = _select(validation)
            validation = [v.model_copy(update={"selected": v.name == name}) for v in validation]
        spec = CANDIDATES[name]
        fit = fit_mask(frame, start, end, spec.fit_days)
        X_fit, y_fit = _xy(frame, fit)
        if y_fit.sum() == 0:
            first = end - timedelta(days=spec.fit_days - 1) if spec.fit_days else start
            raise DataError(f"the days fitted, {first}..{end}, hold no fraud: nothing to learn")
        report("fit", 0, 1)
        estimator = sized(spec.make)()
        estimator.fit(X_fit, y_fit)
        report("fit", 1, 1)
        report("evaluate", 0, 2)
        fit_days = int(frame.loc[fit, "TX_DATETIME"].dt.floor("D").nunique())
        threshold, rationale = _threshold(sized(spec.make), X_fit, y_fit, fit_days,
                                          random_state)
        report("evaluate", 1, 2)
        days = frame["TX_DATETIME"].dt.floor("D")
        in_test = days.between(pd.Timestamp(test_start), pd.Timestamp(test_end)).to_numpy()
        X_window, _ = _xy(frame, in_test)
        scores_all = _fraud_scores(estimator, X_window)
        metrics = test_metrics(frame, in_test, test_mask, scores_all, threshold, test_days,
                               rule, k=TOP_K)
        others = []
        for other in KnownCompromised:
            if other is not rule:
                _, mask = handbook_split(frame, start, end, gap_days, test_days, other)
                others.append(test_metrics(frame, in_test, mask, scores_all, threshold,
                                           test_days, other, k=TOP_K))
        report("evaluate", 2, 2)

    if "n_jobs" in estimator.get_params():
        estimator.set_params(n_jobs=1)
    report("save", 0, 1)
    default_split = (start, end, gap_days, test_days) == (
        DEFAULT_TRAIN_START, DEFAULT_TRAIN_END, 7, 7
    )
    fit_start = end - timedelta(days=spec.fit_days - 1) if spec.fit_days else start
    card = save_model(
        estimator,
        models_dir,
        data=DataInfo(
            source=Path(path).name,
            history_start=history_start,
            train=_window(train_df, start, end),
            fit=_window(frame.loc[fit], fit_start, end) if spec.fit_days else None,
            gap_days=gap_days,
            test=_window(frame.loc[test_mask], test_start, test_end),
            test_removed_known_compromised=int(in_test.sum() - test_mask.sum()),
        ),
        metrics=metrics,
        metrics_other_rules=others,
        validation=validation,
        baseline=dict(zip(FEATURE_NAMES, np.median(X_fit, axis=0).tolist())),
        drift_reference=reference_from_matrix(X_fit, FEATURE_NAMES),
        check_rows=choose_check_rows(X_window, scores_all, threshold),
        alert_threshold=threshold,
        threshold_rationale=rationale,
        justification=justification(name, validation, metrics, others, default_split,
                                    SELECTION_METRIC),
        train_seconds=round(time.perf_counter() - t_start, 2),
    )
    report("save", 1, 1)
    return card


def _threshold(
    make: Callable[[], Any], X_train: np.ndarray, y_train: np.ndarray, n_days: int,
    random_state: int,
) -> tuple[float, str]:
    """Alert threshold from out-of-fold scores of the rows fitted."""
    folds = int(min(3, y_train.sum()))
    if folds < 2:
        return 0.5, _FALLBACK_RATIONALE
    oof = cross_val_predict(
        make(), X_train, y_train, method="predict_proba",
        cv=StratifiedKFold(folds, shuffle=True, random_state=random_state),
    )[:, 1]
    return choose_threshold(oof, y_train, n_days, folds=folds)


def validation_rows(path: str | Path, card: ModelCard, estimator: Any) -> np.ndarray:
    """The validation rows of a registered model, recomputed from its data.

    The feature rows of the card's test window (``card.data.test``), computed as for
    training, then :func:`app.scoring.compiled.choose_check_rows` of them: what
    :func:`train` stores beside a new model, for a model registered without them.

    Parameters
    ----------
    path : str or Path
        The handbook data the model was trained on (``card.data.source``).
    card : ModelCard
    estimator : object
        The model's fitted estimator (its scores choose the rows near the threshold).

    Returns
    -------
    ndarray of shape (n_rows, n_features), float64

    Raises
    ------
    DataError
        The data does not cover the test window.
    """
    test = card.data.test
    frame, _ = read_features(path, test.start, test.end)
    days = frame["TX_DATETIME"].dt.floor("D")
    in_test = days.between(pd.Timestamp(test.start), pd.Timestamp(test.end)).to_numpy()
    X, _ = _xy(frame, in_test)
    if len(X) == 0:
        raise DataError(f"{path}: no transactions in the test window {test.start}..{test.end}")
    with threadpool_limits(1, user_api="openmp"):
        scores = _fraud_scores(estimator, X)
    return choose_check_rows(X, scores, card.alert_threshold)

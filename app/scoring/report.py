"""What a model card says about its test window: figures per known-compromised rule,
the ceiling, the issue's quality target, and the justification of the model choice."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..features import DEFAULT_DELAY_DAYS, TERMINAL_WINDOWS_DAYS
from .candidates import CANDIDATES
from .evaluate import KnownCompromised, detectable_frauds, evaluate_scores
from .registry import ModelMetrics, ValidationResult

__all__ = ["QUALITY_TARGET", "justification", "target_met", "test_metrics"]

#: The issue's quality target on the default split (minimum of each metric).
QUALITY_TARGET = {"roc_auc": 0.87, "average_precision": 0.70, "card_precision_at_k": 0.24}


def test_metrics(
    frame: pd.DataFrame,
    in_test: np.ndarray,
    test_mask: np.ndarray,
    scores_all: np.ndarray,
    threshold: float,
    test_days: int,
    rule: KnownCompromised,
    k: int = 100,
) -> ModelMetrics:
    """The card's figures for one known-compromised rule.

    Parameters
    ----------
    frame : pandas.DataFrame
        Handbook rows with features (``TX_FRAUD_SCENARIO`` and the widest terminal risk
        give the oracle ceiling; without them it is None).
    in_test : ndarray of bool of shape (n_rows,)
        Every row of the test window's days.
    test_mask : ndarray of bool of shape (n_rows,)
        The rows the rule keeps (a subset of ``in_test``).
    scores_all : ndarray of shape (in_test.sum(),)
        The model's scores of the ``in_test`` rows, in order.
    threshold : float
        The alert threshold, for transaction precision/recall and alerts per day.
    test_days : int
    rule : KnownCompromised
    k : int, default=100

    Returns
    -------
    ModelMetrics
    """
    keep = test_mask[in_test]
    test = frame.loc[test_mask]
    scores = scores_all[keep]
    m = evaluate_scores(test, scores, k=k)
    oracle: dict = {}
    risk = f"terminal_risk_{max(TERMINAL_WINDOWS_DAYS)}d_delay_{DEFAULT_DELAY_DAYS}d"
    if "TX_FRAUD_SCENARIO" in test.columns and risk in test.columns and len(test):
        oracle = evaluate_scores(test, detectable_frauds(test, risk).astype(np.float64), k=k)
    y = test["TX_FRAUD"].to_numpy() == 1
    alerted = scores >= threshold
    return ModelMetrics(
        roc_auc=m["roc_auc"],
        average_precision=m["average_precision"],
        card_precision_at_100=m["card_precision_at_k"],
        card_precision_daily=m["card_precision_daily"],
        fraud_cards_daily=m["fraud_cards_daily"],
        threshold_precision=float(y[alerted].mean()) if alerted.any() else None,
        threshold_recall=float(alerted[y].mean()) if y.any() else None,
        threshold_alerts_per_day=float(alerted.sum() / test_days),
        known_compromised_rule=rule.value,
        test_transactions=m["n_transactions"],
        test_frauds=m["n_frauds"],
        test_removed_known_compromised=int(in_test.sum() - test_mask.sum()),
        perfect_card_precision_at_100=m["perfect_card_precision_at_k"],
        oracle_card_precision_at_100=oracle.get("card_precision_at_k"),
        oracle_roc_auc=oracle.get("roc_auc"),
        oracle_average_precision=oracle.get("average_precision"),
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _figures(metrics: ModelMetrics) -> dict[str, float | None]:
    return {
        "roc_auc": metrics.roc_auc,
        "average_precision": metrics.average_precision,
        "card_precision_at_k": metrics.card_precision_at_100,
    }


def target_met(metrics: ModelMetrics) -> dict[str, bool]:
    """For each metric of :data:`QUALITY_TARGET`: whether ``metrics`` reaches it."""
    got = _figures(metrics)
    return {n: got[n] is not None and got[n] >= floor for n, floor in QUALITY_TARGET.items()}


def _target_text(metrics: ModelMetrics) -> str:
    got, met = _figures(metrics), target_met(metrics)
    parts = [
        f"{n} {_fmt(got[n])} {'>=' if met[n] else '<'} {floor:g}"
        for n, floor in QUALITY_TARGET.items()
    ]
    return f"{'met' if all(met.values()) else 'NOT met'} ({', '.join(parts)})"


def _figures_text(m: ModelMetrics) -> str:
    return (
        f"rule {m.known_compromised_rule}: AUC {_fmt(m.roc_auc)}, AP "
        f"{_fmt(m.average_precision)}, CP@100 {_fmt(m.card_precision_at_100)} (perfect "
        f"ranking CP@100 {_fmt(m.perfect_card_precision_at_100)}; oracle AUC "
        f"{_fmt(m.oracle_roc_auc)}, AP {_fmt(m.oracle_average_precision)}, CP@100 "
        f"{_fmt(m.oracle_card_precision_at_100)})"
    )


def justification(
    name: str, validation: list[ValidationResult], metrics: ModelMetrics,
    others: list[ModelMetrics], default_split: bool, selection_metric: str,
) -> str:
    """The card's ``justification``: the model, how it was chosen, its figures under
    every rule with the ceilings, and (on the issue's split) whether the target is met."""
    fit_days = CANDIDATES[name].fit_days
    text = (
        f"{name}: {type(CANDIDATES[name].make(0)).__name__} fitted on "
        + (f"the {fit_days} days ending on the last train day" if fit_days
           else "the train window")
        + ". Classes are not re-weighted: the scores estimate the fraud probability at "
        "the training fraud rate (about 0.9 %) and keep the alert threshold "
        "interpretable; imbalance is handled by ranking metrics and an alert budget. "
    )
    if validation:
        rows = "; ".join(
            f"{r.name}{' (chosen)' if r.selected else ''}: AUC {_fmt(r.roc_auc_mean)}"
            f"+-{_fmt(r.roc_auc_std)}, AP {_fmt(r.average_precision_mean)}"
            f"+-{_fmt(r.average_precision_std)}, CP@100 "
            f"{_fmt(r.card_precision_at_100_mean)}+-{_fmt(r.card_precision_at_100_std)}, "
            f"fit {r.fit_seconds:.1f} s"
            for r in validation
        )
        first, last = validation[0].folds[-1][0], validation[0].folds[0][1]
        text += (
            f"Chosen by prequential validation ({len(validation[0].folds)} folds, train "
            f"windows {first}..{last}, each evaluated on its own later test week before "
            f"this split's test window, rule {validation[0].known_compromised_rule}) on "
            f"the best mean {selection_metric}: {rows}. "
        )
    text += "Test window: " + "; ".join(_figures_text(m) for m in (metrics, *others))
    text += (
        " (oracle: the frauds the features can see, scored 1, every other row 0; a "
        "ceiling up to chance). "
    )
    if default_split:
        text += f"Quality target under rule {metrics.known_compromised_rule}: "
        text += _target_text(metrics)
        for m in others:
            text += f"; under rule {m.known_compromised_rule}: {_target_text(m)}"
        text += (
            ". With labels delayed 7 days, the frauds of a terminal compromised less than "
            "7 days earlier (or not yet used by a labelled transaction) carry no signal in "
            "any feature: they rank among genuine transactions, which bounds every metric "
            "by the oracle's figures above (bench/ceiling.py)."
        )
    return text

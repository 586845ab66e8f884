"""Champion and challenger on the same labelled window, and the gate of a promotion.

Figures of two model cards are comparable only when they come from the same test
window of the same data: a model tested on April of simulated data and one tested on
July of the handbook's file cannot be ranked by their cards. This module

- evaluates several versions on one window (:func:`compare_on_window`, the features
  computed once, every model scored on the same rows, under each known-compromised
  rule), the result a :class:`Comparison` kept in the registry's
  ``COMPARISONS.json`` (:func:`record_comparison`);
- compares an active version with a shadow on the same live traffic
  (:func:`compare_shadow`): the overlap of their alerts, the alerts only one raises,
  and the precision of each from the labels that arrived;
- decides whether a version may replace the active one (:func:`promotion_gate`): its
  card must be validated on a test window that ends no earlier than the active one's,
  and it must be no worse on the primary metric (:data:`PRIMARY_METRIC` under
  :data:`PRIMARY_RULE`) on one same window: the two cards' own window when it is the
  same, else the latest comparison of both on a window at least as recent.

Examples
--------
>>> gate_text(GateVerdict(allowed=False, reasons=["worse"], evidence="x"))
'refused: worse'
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..exceptions import DataError, ModelError
from .protocol import TOP_K, KnownCompromised
from .registry import ModelCard, ModelMetrics

__all__ = [
    "COMPARISONS_NAME",
    "PRIMARY_METRIC",
    "PRIMARY_RULE",
    "VersionResult",
    "Comparison",
    "GateVerdict",
    "ShadowComparison",
    "compare_shadow",
    "card_metrics",
    "compare_on_window",
    "read_comparisons",
    "record_comparison",
    "promotion_gate",
    "gate_text",
]

COMPARISONS_NAME = "COMPARISONS.json"
#: The card's primary metric: mean daily card precision@100 (higher is better).
PRIMARY_METRIC = "card_precision_at_100"
#: The evaluation protocol's rule of known-compromised cards for the primary metric.
PRIMARY_RULE = KnownCompromised.handbook_daily.value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class VersionResult(_Strict):
    """One version's figures on the comparison window under one rule."""

    version: str
    known_compromised_rule: str
    roc_auc: float | None
    average_precision: float | None
    card_precision_at_100: float | None
    card_precision_daily: list[float]
    alerts: int = Field(description="Test rows at or above the version's alert threshold.")
    alerts_fraud: int = Field(description="Frauds among them.")
    alert_precision: float | None = Field(description="alerts_fraud / alerts; None: no alert.")


class Comparison(_Strict):
    """Versions evaluated on one labelled window of one data set."""

    created_at: str = Field(description="UTC ISO 8601.")
    data_source: str = Field(description="Name of the data file or folder.")
    train_start: date = Field(description="Start of the known-compromised history.")
    test_start: date
    test_end: date
    gap_days: int
    test_transactions: int
    test_frauds: int
    results: list[VersionResult]

    def result(self, version: str, rule: str = PRIMARY_RULE) -> VersionResult | None:
        """``version``'s figures under ``rule``, or None."""
        for r in self.results:
            if r.version == version and r.known_compromised_rule == rule:
                return r
        return None


class GateVerdict(_Strict):
    """Whether a promotion passes the gate, why not, and on what evidence."""

    allowed: bool
    reasons: list[str] = Field(default_factory=list)
    evidence: str = ""


def card_metrics(card: ModelCard, rule: str = PRIMARY_RULE) -> ModelMetrics | None:
    """The card's test-window metrics under ``rule``, or None when it reports none."""
    for m in (card.metrics, *card.metrics_other_rules):
        if m.known_compromised_rule == rule:
            return m
    return None


def _window(card: ModelCard) -> str:
    return f"{card.data.test.start}..{card.data.test.end} of {card.data.source}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def promotion_gate(champion: ModelCard | None, challenger: ModelCard,
                   comparisons: Sequence[Comparison] = ()) -> GateVerdict:
    """May ``challenger`` replace ``champion`` (the active version)?

    Parameters
    ----------
    champion : ModelCard or None
        The active version's card; None: nothing is served, any version may be.
    challenger : ModelCard
    comparisons : sequence of Comparison
        The registry's comparisons (:func:`read_comparisons`), oldest first.

    Returns
    -------
    GateVerdict
        Refused when the challenger's test window ends before the champion's, or when
        on one same window (see the module doc; a comparison on days either version was
        fitted on, in the same data, does not count) its :data:`PRIMARY_METRIC` under
        :data:`PRIMARY_RULE` is lower or unknown, or when no same window exists. Two
        cards of one window without figures under :data:`PRIMARY_RULE` are compared
        under the champion's own rule.
    """
    if champion is None:
        return GateVerdict(allowed=True, evidence="no active version")
    reasons: list[str] = []
    old, new = champion.data.test.end, challenger.data.test.end
    if new < old:
        reasons.append(
            f"{challenger.version} is validated on {_window(challenger)}, older than the "
            f"active {champion.version}'s {_window(champion)}"
        )
    same_card_window = (
        (challenger.data.test.start, challenger.data.test.end, challenger.data.source)
        == (champion.data.test.start, champion.data.test.end, champion.data.source)
    )
    pair: tuple[float | None, float | None] | None = None
    evidence = ""
    for c in reversed(list(comparisons)):
        a, b = c.result(champion.version), c.result(challenger.version)
        if a is not None and b is not None and c.test_end >= old and not (
            _fitted_on(champion, c) or _fitted_on(challenger, c)
        ):
            pair = (a.card_precision_at_100, b.card_precision_at_100)
            evidence = (f"comparison of {c.created_at[:19]}Z on {c.test_start}..{c.test_end} "
                        f"of {c.data_source}")
            break
    rule = PRIMARY_RULE
    if pair is None and same_card_window:
        # the protocol's rule when both cards report it, else the rule both were tested on
        for rule in dict.fromkeys((PRIMARY_RULE, champion.metrics.known_compromised_rule)):
            a_m, b_m = card_metrics(champion, rule), card_metrics(challenger, rule)
            if a_m is not None and b_m is not None:
                pair = (a_m.card_precision_at_100, b_m.card_precision_at_100)
                evidence = f"both cards' test window {_window(champion)}"
                break
    metric = f"card precision@{TOP_K} (rule {rule})"
    if pair is None:
        reasons.append(
            f"{challenger.version} and {champion.version} have no evaluation on one same "
            f"window ending on or after {old}: run `fraudctl models compare "
            f"{champion.version} {challenger.version} DATA`"
        )
    elif pair[0] is not None and (pair[1] is None or pair[1] < pair[0]):
        reasons.append(
            f"{challenger.version} is worse on {metric}: {_fmt(pair[1])} against "
            f"{_fmt(pair[0])} for the active {champion.version} ({evidence})"
        )
    return GateVerdict(allowed=not reasons, reasons=reasons, evidence=evidence)


def _fitted_on(card: ModelCard, c: Comparison) -> bool:
    """True when ``c``'s window overlaps the days of ``c``'s data ``card`` was fitted on:
    its figures there score its own training rows and count for nothing."""
    fit = card.data.fit or card.data.train
    return (card.data.source == c.data_source and c.test_start <= fit.end
            and c.test_end >= fit.start)


def gate_text(verdict: GateVerdict) -> str:
    """One line: ``passed (<evidence>)`` or ``refused: <reasons>``."""
    if verdict.allowed:
        return f"passed ({verdict.evidence})"
    return "refused: " + "; ".join(verdict.reasons)


def read_comparisons(models_dir: str | Path) -> list[Comparison]:
    """The registry's comparisons, oldest first (none without the file).

    Raises
    ------
    ModelError
        The file exists but is not a list of comparisons.
    """
    import orjson

    path = Path(models_dir) / COMPARISONS_NAME
    try:
        raw = orjson.loads(path.read_bytes())
        return [Comparison.model_validate(c) for c in raw]
    except FileNotFoundError:
        return []
    except (orjson.JSONDecodeError, ValidationError, TypeError, OSError) as exc:
        raise ModelError(f"{path} is not a valid comparisons file "
                         f"({str(exc).splitlines()[0]})") from None


def record_comparison(models_dir: str | Path, comparison: Comparison) -> Path:
    """Append ``comparison`` to ``COMPARISONS.json`` (written atomically); its path."""
    import orjson

    path = Path(models_dir) / COMPARISONS_NAME
    items = [c.model_dump(mode="json") for c in read_comparisons(models_dir)]
    items.append(comparison.model_dump(mode="json"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(items, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def compare_on_window(
    path: str | Path,
    versions: Sequence[str],
    models_dir: str | Path,
    test_start: date | None = None,
    test_days: int = 7,
    gap_days: int = 7,
    train_days: int = 7,
    mapping: Any = None,
) -> Comparison:
    """Evaluate ``versions`` on one labelled window, features computed once.

    Parameters
    ----------
    path : str or Path
        Labelled data (:func:`app.data.handbook.read_handbook`).
    versions : sequence of str
        Registry versions; each is scored with its own feature columns.
    models_dir : str or Path
    test_start : date, optional
        First test day; default: the last ``test_days`` days the data holds.
    test_days, gap_days, train_days : int, default=7
        The window; cards with a fraud in the ``train_days`` before the gap (and, by
        the handbook's daily rule, in the gap as labels arrive) are known compromised
        and left out, as in ``fraudctl evaluate``.
    mapping : str, Path or DataMapping, optional
        The data's mapping file (:mod:`app.data.contract`).

    Returns
    -------
    Comparison
        One :class:`VersionResult` per version and known-compromised rule.

    Raises
    ------
    DataError
        The data does not cover the window, or the window has no rows.
    ModelError, ModelIntegrityError
        A version is unknown or fails verification.
    """
    from datetime import timedelta

    import numpy as np

    from ..data.handbook import read_handbook
    from .evaluate import evaluate_scores, handbook_split
    from .model import Scorer
    from .train import HISTORY_DAYS, read_features

    if test_days < 1 or gap_days < 0 or train_days < 1:
        raise DataError(f"window: expected test_days >= 1, gap_days >= 0, train_days >= 1, "
                        f"got {test_days}, {gap_days}, {train_days}")
    scorers = [Scorer.from_registry(models_dir, v, n_threads=None) for v in versions]
    if test_start is None:
        df = read_handbook(path, mapping=mapping)
        if df.empty:
            raise DataError(f"{path}: no transactions")
        test_start = df["TX_DATETIME"].iloc[-1].date() - timedelta(days=test_days - 1)
    test_end = test_start + timedelta(days=test_days - 1)
    train_end = test_start - timedelta(days=gap_days + 1)
    train_start = train_end - timedelta(days=train_days - 1)
    history = max(0, HISTORY_DAYS - (test_start - train_start).days)
    frame, _ = read_features(path, train_start, test_end, history_days=history,
                             mapping=mapping)
    results: list[VersionResult] = []
    n_tx = n_fraud = 0
    for rule in (PRIMARY_RULE, *(r.value for r in KnownCompromised if r.value != PRIMARY_RULE)):
        _, mask = handbook_split(frame, train_start, train_end, gap_days, test_days, rule)
        test = frame.loc[mask]
        if test.empty:
            raise DataError(f"the window {test_start}..{test_end} holds no transactions")
        if rule == PRIMARY_RULE:
            n_tx, n_fraud = int(len(test)), int(test["TX_FRAUD"].sum())
        y = test["TX_FRAUD"].to_numpy()
        for s in scorers:
            scores = s.score_many(test[list(s.feature_names)].to_numpy(dtype=np.float64))
            r = evaluate_scores(test, scores, k=TOP_K)
            alerted = scores >= s.alert_threshold
            results.append(VersionResult(
                version=s.version, known_compromised_rule=rule,
                roc_auc=r["roc_auc"], average_precision=r["average_precision"],
                card_precision_at_100=r["card_precision_at_k"],
                card_precision_daily=r["card_precision_daily"],
                alerts=int(alerted.sum()), alerts_fraud=int(y[alerted].sum()),
                alert_precision=float(y[alerted].mean()) if alerted.any() else None,
            ))
    return Comparison(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        data_source=Path(path).name, train_start=train_start, test_start=test_start,
        test_end=test_end, gap_days=gap_days, test_transactions=n_tx, test_frauds=n_fraud,
        results=results,
    )


class ShadowComparison(_Strict):
    """The active version and a shadow on the same scored transactions."""

    champion: str
    challenger: str
    champion_threshold: float
    challenger_threshold: float
    transactions: int = Field(description="Scored by the champion with the challenger's shadow score.")
    alerts_both: int
    alerts_only_champion: int
    alerts_only_challenger: int
    labelled: int = Field(description="Of those transactions, with a label that arrived.")
    champion_alerts_labelled: int
    champion_alert_precision: float | None
    challenger_alerts_labelled: int
    challenger_alert_precision: float | None


def compare_shadow(
    records: Iterable[tuple[str, str, float, Mapping[str, float]]],
    labels: Mapping[str, bool],
    champion: str,
    challenger: str,
    thresholds: tuple[float, float],
) -> ShadowComparison:
    """Alerts of two versions on the transactions the stream scored with both.

    Parameters
    ----------
    records : iterable of (transaction_id, model_version, score, shadow_scores)
        The ``scored-transactions`` records; those scored by ``champion`` with a shadow
        score of ``challenger`` count (a transaction scored twice: its first record).
    labels : mapping of str to bool
        Transaction id -> is fraud, from the labels that arrived.
    champion, challenger : str
    thresholds : (float, float)
        Each version's alert threshold (its card's); an alert is a score at or above it.

    Returns
    -------
    ShadowComparison

    Examples
    --------
    >>> recs = [("t1", "v1", 0.9, {"v2": 0.2}), ("t2", "v1", 0.1, {"v2": 0.7}),
    ...         ("t3", "v1", 0.8, {"v2": 0.9})]
    >>> c = compare_shadow(recs, {"t1": False, "t3": True}, "v1", "v2", (0.5, 0.5))
    >>> (c.alerts_both, c.alerts_only_champion, c.alerts_only_challenger)
    (1, 1, 1)
    >>> (c.champion_alert_precision, c.challenger_alert_precision)
    (0.5, 1.0)
    """
    seen: set[str] = set()
    both = only_a = only_b = n = labelled = 0
    hits = {"a": [0, 0], "b": [0, 0]}  # labelled alerts, frauds among them
    for tid, version, score, shadows in records:
        if version != champion or challenger not in shadows or tid in seen:
            continue
        seen.add(tid)
        n += 1
        a, b = score >= thresholds[0], shadows[challenger] >= thresholds[1]
        both += a and b
        only_a += a and not b
        only_b += b and not a
        if tid in labels:
            labelled += 1
            for key, alerted in (("a", a), ("b", b)):
                if alerted:
                    hits[key][0] += 1
                    hits[key][1] += bool(labels[tid])
    return ShadowComparison(
        champion=champion, challenger=challenger, champion_threshold=thresholds[0],
        challenger_threshold=thresholds[1], transactions=n, alerts_both=both,
        alerts_only_champion=only_a, alerts_only_challenger=only_b, labelled=labelled,
        champion_alerts_labelled=hits["a"][0],
        champion_alert_precision=hits["a"][1] / hits["a"][0] if hits["a"][0] else None,
        challenger_alerts_labelled=hits["b"][0],
        challenger_alert_precision=hits["b"][1] / hits["b"][0] if hits["b"][0] else None,
    )

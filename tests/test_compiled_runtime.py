"""The compiled model runtime: compiled when registered, checked against scikit-learn on
the model's validation rows, refused when it disagrees, scores and reasons in one call."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from typer.testing import CliRunner

from app.cli import cli
from app.decisions import Controller
from app.decisions.controller import Snapshot
from app.decisions.rules import CompiledRuleSet
from app.events import AccessList, ModelControl, RuleSet, Transaction
from app.exceptions import CompiledRuntimeError, ModelIntegrityError
from app.features import FEATURE_NAMES
from app.scoring import Scorer, load_model, save_model
from app.scoring.compiled import MAX_SCORE_DIFFERENCE, choose_check_rows, compile_estimator
from app.scoring.registry import (
    ARTIFACT_NAME,
    CARD_NAME,
    CHECK_ROWS_NAME,
    COMPILED_NAME,
    DataInfo,
    ModelMetrics,
    WindowInfo,
    compile_version,
    ensure_compiled,
)

F = len(FEATURE_NAMES)


def _fields(baseline: dict[str, float], threshold: float) -> dict:
    window = WindowInfo(start=date(2018, 7, 4), end=date(2018, 7, 10), transactions=10,
                        frauds=1, fraud_cards=1)
    return {
        "data": DataInfo(source="unit-test", history_start=date(2018, 6, 4), train=window,
                         gap_days=7, test=window, test_removed_known_compromised=0),
        "metrics": ModelMetrics(
            roc_auc=0.5, average_precision=0.1, card_precision_at_100=0.01,
            card_precision_daily=[0.01], fraud_cards_daily=[1], threshold_precision=None,
            threshold_recall=None, threshold_alerts_per_day=0.0,
        ),
        "baseline": baseline, "alert_threshold": threshold,
        "threshold_rationale": "unit test", "justification": "unit test",
    }


def _forest(seed: int, rows: int = 600):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, F))
    y = ((X[:, 0] + 0.5 * X[:, 3] + rng.normal(scale=0.5, size=rows)) > 1.2).astype(int)
    model = RandomForestClassifier(n_estimators=8, max_depth=6, random_state=seed,
                                   n_jobs=1).fit(X, y)
    return model, X


@pytest.fixture(scope="module")
def forests():
    """Two small forests of the same features, fitted on different data."""
    return _forest(0), _forest(1)


def _save(models: Path, forest, version: str, rows: bool = True):
    model, X = forest
    baseline = dict(zip(FEATURE_NAMES, np.median(X, axis=0).tolist()))
    scores = model.predict_proba(X)[:, 1]
    check = choose_check_rows(X, scores, 0.5, n_random=200, n_top=100) if rows else None
    return save_model(model, models, **_fields(baseline, 0.5), version=version,
                      check_rows=check)


def test_a_registered_forest_is_compiled_checked_and_served_by_onnxruntime(tmp_path, forests):
    card = _save(tmp_path, forests[0], "v1")
    rt = card.runtime
    assert rt.engine == "onnxruntime" and rt.artifact == COMPILED_NAME
    assert rt.max_score_difference <= MAX_SCORE_DIFFERENCE and rt.decisions_identical
    assert rt.rows_checked >= 300
    files = {p.name for p in (tmp_path / "v1").iterdir()}
    assert files == {ARTIFACT_NAME, CARD_NAME, COMPILED_NAME, CHECK_ROWS_NAME}
    scorer = Scorer.from_registry(tmp_path, "v1")
    assert scorer.runtime.startswith("onnxruntime ")
    model, X = forests[0]
    np.testing.assert_allclose(scorer.score_many(X), model.predict_proba(X)[:, 1],
                               atol=MAX_SCORE_DIFFERENCE, rtol=0)


def test_one_call_gives_the_reasons_of_explain_many(tmp_path, forests):
    _save(tmp_path, forests[0], "v1")
    scorer = Scorer.from_registry(tmp_path, "v1")
    X = forests[0][1][:100]
    scores, reasons = scorer.score_and_explain(X, 0.5, top_k=3)
    rows = np.flatnonzero(scores >= 0.5)
    assert len(rows) > 0 and sorted(reasons) == rows.tolist()
    assert [reasons[i] for i in rows] == scorer.explain_many(X[rows], 3, scores=scores[rows])
    none_scores, none = scorer.score_and_explain(X, float("inf"))
    assert none == {} and np.array_equal(none_scores, scores)


def test_a_rule_alert_below_the_threshold_still_gets_reasons(tmp_path, forests):
    _save(tmp_path, forests[0], "v1")
    scorer = Scorer.from_registry(tmp_path, "v1")
    X = forests[0][1][:40]
    txs = [Transaction(transaction_id=f"t{i}", account_id=f"a{i}", terminal_id="t1",
                       amount_minor=100, currency="EUR", event_time_ms=1_600_000_000_000)
           for i in range(len(X))]
    rules = CompiledRuleSet(RuleSet(id="r", version=1, block=AccessList(accounts=["a0", "a1"])))
    d = Snapshot(scorer, (), rules, 0.5).decide(txs, X)
    assert {0, 1} <= set(d.alert_rows)
    assert all(len(r) == 3 for r in d.reasons)
    expected = scorer.explain_many(X[d.alert_rows], 3, scores=d.scores[d.alert_rows])
    assert d.reasons == expected


def test_a_compiled_form_that_disagrees_is_refused(tmp_path, forests):
    """Another forest's compiled form, its sha256 written into the card: every file
    matches the card, but the check against scikit-learn refuses the version."""
    _save(tmp_path, forests[0], "v1")
    _save(tmp_path, forests[1], "v2")
    other = compile_estimator(forests[1][0], np.median(forests[1][1], axis=0))
    (tmp_path / "v2" / COMPILED_NAME).write_bytes(other)  # v2 compiled form: another model
    card_path = tmp_path / "v1" / CARD_NAME
    (tmp_path / "v1" / COMPILED_NAME).write_bytes(other)
    card = json.loads(card_path.read_text())
    import hashlib

    card["runtime"]["artifact_sha256"] = hashlib.sha256(other).hexdigest()
    card["runtime"]["artifact_bytes"] = len(other)
    card_path.write_text(json.dumps(card))
    with pytest.raises(CompiledRuntimeError, match="disagrees with scikit-learn .* refused"):
        load_model("v1", tmp_path)
    with pytest.raises(CompiledRuntimeError, match="disagrees"):
        ensure_compiled("v1", tmp_path)
    # a worker serving v2 refuses a switch to v1 and keeps serving v2
    ctl = Controller(Scorer.from_registry(tmp_path, "v2"),
                     loader=lambda v: Scorer.from_registry(tmp_path, v))
    r = ctl.apply(ModelControl(action="promote", active_version="v1", issued_time_ms=0))
    assert not r.applied and "disagrees" in r.detail
    assert ctl.snapshot().active.version == "v2"
    # the CLI refuses it in one line, exit 2, and recompiling repairs it
    res = CliRunner().invoke(cli, ["models", "activate", "v1", "--no-redis",
                                   "--models-dir", str(tmp_path)])
    assert res.exit_code == 2 and "disagrees with scikit-learn" in res.output
    repaired = compile_version("v1", tmp_path)
    assert repaired.runtime.artifact_sha256 != card["runtime"]["artifact_sha256"]
    assert load_model("v1", tmp_path).compiled is not None


def test_a_changed_compiled_form_fails_its_checksum(tmp_path, forests):
    _save(tmp_path, forests[0], "v1")
    path = tmp_path / "v1" / COMPILED_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 of model.onnx"):
        load_model("v1", tmp_path)


class _Opaque(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx knows nothing about."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-np.asarray(X)[:, 0]))
        return np.column_stack([1 - p, p])


def test_without_rows_or_a_converter_scikit_learn_serves_and_the_card_says_why(
    tmp_path, forests
):
    X = forests[0][1]
    baseline = dict(zip(FEATURE_NAMES, np.median(X, axis=0).tolist()))
    card = save_model(_Opaque().fit(X, np.zeros(len(X))), tmp_path,
                      **_fields(baseline, 0.5), version="v1", check_rows=X[:50])
    assert card.runtime.engine == "scikit-learn" and "cannot compile" in card.runtime.note
    assert Scorer.from_registry(tmp_path, "v1").runtime.startswith("scikit-learn ")
    plain = _save(tmp_path, forests[0], "v2", rows=False)
    assert plain.runtime.engine == "scikit-learn" and "no validation rows" in plain.runtime.note
    res = CliRunner().invoke(cli, ["models", "show", "v2", "--models-dir", str(tmp_path)])
    assert res.exit_code == 0 and "runtime: scikit-learn" in res.output


def test_the_shipped_model_serves_compiled_and_its_card_names_the_checksum():
    from app.config import PROJECT_ROOT
    from app.scoring.registry import default_version, read_card

    models = PROJECT_ROOT / "models"
    card = read_card(default_version(models), models)
    rt = card.runtime
    assert rt.engine == "onnxruntime" and rt.decisions_identical
    import hashlib

    assert hashlib.sha256((models / card.version / rt.artifact).read_bytes()).hexdigest() \
        == rt.artifact_sha256
    assert rt.artifact_sha256 in (PROJECT_ROOT / "docs" / "model.md").read_text()
    assert Scorer.from_registry(models).runtime == f"onnxruntime {rt.engine_version}"

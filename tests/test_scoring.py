"""Model registry (versions, integrity checks) and the Scorer (scores and reasons)."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from app.config import PROJECT_ROOT
from app.data.simulate import simulate
from app.events import Reason
from app.exceptions import ModelError, ModelIntegrityError
from app.features import FEATURE_NAMES
from app.features.offline import features_frame
from app.scoring import Scorer, default_version, list_models, load_model, save_model
from app.scoring.candidates import CANDIDATES
from app.scoring.registry import (
    ACTIVE_NAME,
    ARTIFACT_NAME,
    CARD_NAME,
    DataInfo,
    ModelMetrics,
    WindowInfo,
    activate,
    read_card,
)

SHIPPED = PROJECT_ROOT / "models"
F = len(FEATURE_NAMES)


def _card_fields(baseline: dict[str, float]) -> dict:
    window = WindowInfo(
        start=date(2018, 7, 4), end=date(2018, 7, 10), transactions=10, frauds=1, fraud_cards=1
    )
    return {
        "data": DataInfo(
            source="unit-test", history_start=date(2018, 6, 4), train=window, gap_days=7,
            test=window, test_removed_known_compromised=0,
        ),
        "metrics": ModelMetrics(
            roc_auc=0.5, average_precision=0.1, card_precision_at_100=0.01,
            card_precision_daily=[0.01], fraud_cards_daily=[1], threshold_precision=None,
            threshold_recall=None, threshold_alerts_per_day=0.0,
        ),
        "baseline": baseline,
        "alert_threshold": 0.5,
        "threshold_rationale": "unit test",
        "justification": "unit test",
    }


@pytest.fixture(scope="module")
def fitted():
    """A logistic regression whose score rises with feature 0 ('amount') only."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, F))
    y = (X[:, 0] > 1.0).astype(int)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    baseline = dict(zip(FEATURE_NAMES, np.median(X, axis=0).tolist()))
    return model, X, baseline


def _save(models_dir: Path, fitted, **kwargs):
    model, _, baseline = fitted
    return save_model(model, models_dir, **_card_fields(baseline), **kwargs)


def test_round_trip_keeps_predictions_and_card(tmp_path, fitted):
    model, X, _ = fitted
    when = datetime(2018, 7, 25, 10, 30, 0, tzinfo=timezone.utc)
    card = _save(tmp_path, fitted, created_at=when)
    assert card.version.startswith("v20180725-103000-")
    assert card.version.endswith(card.artifact_sha256[:8])
    assert card.created_at == "2018-07-25T10:30:00Z"
    assert card.feature_names == list(FEATURE_NAMES)
    assert card.model_family == "sklearn.linear_model._logistic.LogisticRegression"
    assert card.hyperparameters["max_iter"] == 1000
    assert {p.name for p in (tmp_path / card.version).iterdir()} == {ARTIFACT_NAME, CARD_NAME}
    loaded = load_model(card.version, tmp_path)
    assert loaded.card == card
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), model.predict_proba(X))
    assert read_card(card.version, tmp_path) == card
    assert json.loads((tmp_path / card.version / CARD_NAME).read_text())["version"] == card.version


def test_versions_are_listed_oldest_first_and_active_is_the_default(tmp_path, fitted):
    old = _save(tmp_path, fitted, created_at=datetime(2018, 1, 1, tzinfo=timezone.utc))
    new = _save(tmp_path, fitted, created_at=datetime(2019, 1, 1, tzinfo=timezone.utc))
    assert [c.version for c in list_models(tmp_path)] == [old.version, new.version]
    assert default_version(tmp_path) == new.version  # no ACTIVE file: the newest
    activate(old.version, tmp_path)
    assert (tmp_path / ACTIVE_NAME).read_text() == old.version + "\n"
    assert default_version(tmp_path) == old.version
    assert load_model(None, tmp_path).version == old.version


def test_saving_an_existing_version_is_refused(tmp_path, fitted):
    _save(tmp_path, fitted, version="v1")
    with pytest.raises(ModelError, match="v1 already exists"):
        _save(tmp_path, fitted, version="v1")


def test_unknown_version_lists_the_known_ones(tmp_path, fitted):
    _save(tmp_path, fitted, version="v1")
    _save(tmp_path, fitted, version="v2")
    with pytest.raises(ModelError, match=r"no model version v3 .*known versions: v1, v2"):
        load_model("v3", tmp_path)
    (tmp_path / ACTIVE_NAME).write_text("v9\n")
    with pytest.raises(ModelError, match="known versions: v1, v2"):
        default_version(tmp_path)


@pytest.mark.parametrize("bad", ["../v1", "v1/..", "x1", "", "v 1"])
def test_invalid_version_names_are_refused(tmp_path, bad):
    with pytest.raises(ModelError, match="invalid model version"):
        load_model(bad or "-", tmp_path)


def test_empty_registry_says_how_to_train(tmp_path):
    with pytest.raises(ModelError, match="fraudctl train"):
        default_version(tmp_path)


def test_tampered_artifact_is_refused_before_unpickling(tmp_path):
    version = default_version(SHIPPED)
    shutil.copytree(SHIPPED / version, tmp_path / version)
    artifact = tmp_path / version / ARTIFACT_NAME
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit
    artifact.write_bytes(bytes(data))
    expected = read_card(version, tmp_path).artifact_sha256
    with pytest.raises(ModelIntegrityError) as err:
        load_model(version, tmp_path)
    message = str(err.value)
    assert version in message and f"expected {expected}" in message and "sha256" in message


def test_feature_names_mismatch_is_refused(tmp_path):
    version = default_version(SHIPPED)
    shutil.copytree(SHIPPED / version, tmp_path / version)
    path = tmp_path / version / CARD_NAME
    card = json.loads(path.read_text())
    card["feature_names"][0] = "amount_in_dollars"
    card["baseline"]["amount_in_dollars"] = card["baseline"].pop("amount")
    path.write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match=r"not in code: \['amount_in_dollars'\]"):
        load_model(version, tmp_path)
    card["feature_names"] = list(reversed(FEATURE_NAMES))
    path.write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="other order"):
        load_model(version, tmp_path)


def test_a_broken_card_is_a_model_error(tmp_path, fitted):
    card = _save(tmp_path, fitted, version="v1")
    (tmp_path / card.version / CARD_NAME).write_text("{not json")
    with pytest.raises(ModelError, match="not a valid card"):
        load_model("v1", tmp_path)


def test_reasons_are_occlusion_contributions(tmp_path, fitted):
    model, X, baseline = fitted
    scorer = Scorer(load_model(_save(tmp_path, fitted).version, tmp_path))
    rows = X[np.argsort(-X[:, 0])[:5]]  # the most suspicious rows
    scores = scorer.score_many(rows)
    reasons = scorer.explain_many(rows, top_k=3)
    assert reasons == scorer.explain_many(rows, top_k=3, scores=scores)
    for row, score, top in zip(rows, scores, reasons):
        assert [type(r) for r in top] == [Reason] * 3
        assert top[0].feature == "amount"  # the only feature the label depends on
        occluded = row.copy()
        occluded[0] = baseline["amount"]
        expected = score - scorer.score_many(occluded[None, :])[0]
        assert top[0].contribution == pytest.approx(expected, abs=1e-12)
        assert top[0].contribution > 0 and top[0].value == row[0]
        assert [r.contribution for r in top] == sorted((r.contribution for r in top),
                                                       reverse=True)


def test_scorer_checks_shapes_and_top_k(tmp_path, fitted):
    scorer = Scorer(load_model(_save(tmp_path, fitted).version, tmp_path))
    with pytest.raises(ValueError, match=rf"expected shape \(n_samples, {F}\)"):
        scorer.score_many(np.zeros((2, F - 1)))
    with pytest.raises(ValueError, match="top_k"):
        scorer.explain_many(np.zeros((1, F)), top_k=F + 1)
    assert scorer.score_many(np.zeros((0, F))).shape == (0,)
    assert scorer.explain_many(np.zeros((2, F)), top_k=0) == [[], []]


# --- the shipped model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Scorer:
    return Scorer.from_registry(SHIPPED)


@pytest.fixture(scope="module")
def simulated_features() -> np.ndarray:
    df = simulate(n_customers=60, n_terminals=200, start_date="2018-04-01", n_days=40, seed=5)
    frame = features_frame(df)
    return frame.loc[frame["TX_DATETIME"] >= "2018-05-01", list(FEATURE_NAMES)].to_numpy()


def test_shipped_model_is_active_small_and_documented(shipped):
    assert (SHIPPED / ACTIVE_NAME).read_text().strip() == shipped.version
    card = shipped.card
    assert (SHIPPED / shipped.version / ARTIFACT_NAME).stat().st_size < 5_000_000
    assert card.data.train.start == date(2018, 7, 4) and card.data.train.end == date(2018, 7, 10)
    assert card.data.test.start == date(2018, 7, 18) and card.data.test.end == date(2018, 7, 24)
    for m in (card.metrics, *card.metrics_other_rules):
        for metric in (m.roc_auc, m.average_precision, m.card_precision_at_100):
            assert metric is not None and 0.0 <= metric <= 1.0
        assert m.card_precision_at_100 <= m.perfect_card_precision_at_100
    assert card.metrics.roc_auc > 0.8
    assert 0.0 < shipped.alert_threshold < 1.0
    # the rule first, the handbook code's daily rule too
    assert card.metrics.known_compromised_rule == "before-test"
    assert [m.known_compromised_rule for m in card.metrics_other_rules] == ["handbook-daily"]
    # chosen by prequential validation (`fraudctl train --compare`), justified in the card
    [chosen] = [v for v in card.validation if v.selected]
    assert card.model_family.endswith(type(CANDIDATES[chosen.name].make(0)).__name__)
    assert chosen.name in card.justification and "Quality target" in card.justification


def test_shipped_model_scores_are_probabilities(shipped, simulated_features):
    scores = shipped.score_many(simulated_features)
    assert scores.shape == (len(simulated_features),)
    assert scores.dtype == np.float64
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    assert scores.std() > 0  # not a constant


def test_shipped_model_flags_a_huge_amount_and_says_why(shipped):
    # An account that spends about 50 a time, then 900 (handbook scenario 1: > 220).
    values = dict(zip(FEATURE_NAMES, shipped.baseline.tolist()))
    values.update(
        amount=900.0, account_amount_mean_1d=50.0, amount_to_account_mean_1d=18.0,
        account_amount_mean_7d=50.0, amount_to_account_mean_7d=18.0,
        account_amount_mean_30d=50.0, amount_to_account_mean_30d=18.0,
        account_amount_max_30d=90.0, amount_to_account_max_30d=10.0,
    )
    x = np.array([[values[n] for n in FEATURE_NAMES]])
    score = shipped.score_many(x)[0]
    assert score > shipped.alert_threshold
    top = shipped.explain_many(x, top_k=3)[0]
    assert top[0].feature.startswith("amount")  # amount or an amount ratio
    assert top[0].contribution > 0
    assert top[0].contribution <= score  # removing one cause cannot lower it below 0


def test_shipped_model_reasons_of_alerting_rows(shipped, simulated_features):
    scores = shipped.score_many(simulated_features)
    rows = simulated_features[np.argsort(-scores)[:10]]
    top_scores = np.sort(scores)[::-1][:10]
    for score, row, reasons in zip(top_scores, rows, shipped.explain_many(rows, top_k=3)):
        assert len(reasons) == 3
        c = [r.contribution for r in reasons]
        assert c == sorted(c, reverse=True)
        assert all(-1.0 <= v <= 1.0 for v in c)
        # every contribution is a score difference: score - c lies in [0, 1]
        assert all(0.0 <= score - v <= 1.0 for v in c)
        j = FEATURE_NAMES.index(reasons[0].feature)
        occluded = row.copy()
        occluded[j] = shipped.baseline[j]
        assert reasons[0].contribution == pytest.approx(
            score - shipped.score_many(occluded[None, :])[0], abs=1e-9
        )

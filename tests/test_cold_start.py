"""The cold-start rule in the stream's decision code: accounts with little history alert
only at the cold threshold; warm accounts keep the model's threshold; off by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.decisions.cold_start import HISTORY_FEATURE, ColdStartRule
from app.decisions.controller import Controller, Snapshot
from app.events import Transaction
from app.features import FEATURE_NAMES
from app.scoring.model import Scorer

MODELS = Path(__file__).resolve().parent.parent / "models"


def _rows(scorer: Scorer, history: list[float]) -> np.ndarray:
    base = np.array([scorer.card.baseline[n] for n in FEATURE_NAMES])
    X = np.tile(base, (len(history), 1))
    X[:, FEATURE_NAMES.index(HISTORY_FEATURE)] = history
    return X


def _tx(i: int) -> Transaction:
    return Transaction(transaction_id=f"t{i}", account_id=f"a{i}", terminal_id="m1",
                       amount_minor=1000, event_time_ms=1_525_737_600_000 + i)


@pytest.mark.parametrize(("rule", "alerted"), [
    pytest.param(ColdStartRule(), [0, 1, 2], id="off-by-default"),
    pytest.param(ColdStartRule(min_account_tx=10, threshold=1.0), [2], id="cold-accounts-held"),
    pytest.param(ColdStartRule(min_account_tx=10, threshold=0.0), [0, 1, 2],
                 id="never-below-the-model-threshold"),
])
def test_snapshot_decides_with_the_cold_start_threshold(rule, alerted):
    scorer = Scorer.from_registry(MODELS)
    X = _rows(scorer, [1.0, 9.0, 10.0])  # 1 and 9 transactions: cold; 10: warm
    scores = scorer.score_many(X)
    assert (scores < 1.0).all()
    # threshold 0: every row alerts by score unless the rule holds it
    decided = Snapshot(scorer, (), Snapshot.of(scorer, 0.0).rules, 0.0, rule).decide(
        [_tx(i) for i in range(3)], X, top_reasons=0)
    assert decided.alert_rows == alerted


def test_the_controller_serves_the_rule_from_the_settings(monkeypatch):
    monkeypatch.setenv("COLD_START_MIN_ACCOUNT_TX", "10")
    monkeypatch.setenv("COLD_START_THRESHOLD", "0.9")
    s = Settings()
    scorer = Scorer.from_registry(MODELS)
    rule = ColdStartRule(s.cold_start_min_account_tx, s.cold_start_threshold)
    snap = Controller(scorer, loader=lambda v: scorer, cold_start=rule).snapshot()
    assert snap.cold_start == ColdStartRule(10, 0.9)
    assert snap.cold_start.threshold_for({HISTORY_FEATURE: 3.0}, snap.threshold) == 0.9
    monkeypatch.setenv("COLD_START_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="COLD_START_THRESHOLD|cold_start_threshold"):
        Settings()

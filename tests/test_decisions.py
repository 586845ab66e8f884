"""Rule sets (validation, evaluation, precedence) and the controller of models and rules."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.decisions import (
    OUTCOMES,
    Controller,
    load_rule_set,
    parse_rule_set,
    strongest,
)
from app.decisions.controller import decode_control
from app.events import ModelControl, Reason, RuleSet, Transaction, encode
from app.exceptions import ModelIntegrityError, RuleSetError
from app.features import FEATURE_NAMES

T0_MS = 1_522_540_800_000
FEATURE = FEATURE_NAMES[0]


def tx(account="a1", terminal="m1", amount_minor=10_000, currency="EUR") -> Transaction:
    return Transaction(transaction_id="t1", account_id=account, terminal_id=terminal,
                       amount_minor=amount_minor, currency=currency, event_time_ms=T0_MS)


def rule(rule_id="r1", attribute="transaction.amount", op=">", value=500, outcome="review",
         **extra):
    return {"id": rule_id, "attribute": attribute, "op": op, "value": value,
            "outcome": outcome, **extra}


def rules(*rs, version=1, **extra):
    return parse_rule_set({"id": "default", "version": version, "rules": list(rs), **extra})


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        pytest.param(rule(attribute="transaction.colour"), "unknown attribute 'transaction.colour'",
                     id="unknown-transaction-field"),
        pytest.param(rule(attribute="features.nope"), "unknown attribute 'features.nope'",
                     id="unknown-feature"),
        pytest.param(rule(attribute="transaction.currency", op=">", value="EUR"),
                     "compares numbers", id="ordering-on-string"),
        pytest.param(rule(op="in", value=5), "needs a list value", id="in-needs-list"),
        pytest.param(rule(op="==", value=[1, 2]), "needs a single value", id="eq-needs-scalar"),
        pytest.param(rule(value="big"), "is not one", id="string-for-number"),
        pytest.param(rule(attribute="transaction.account_id", op="in", value=["a", 3]),
                     "list has 3", id="mixed-list"),
        pytest.param(rule(outcome="deny"), "outcome", id="unknown-outcome"),
        pytest.param(rule(op="~="), "op", id="unknown-comparison"),
        pytest.param(rule(rule_id="allow:x"), "reserved prefix", id="reserved-id"),
    ],
)
def test_invalid_rules_are_refused_with_the_rule_and_the_reason(bad, message):
    with pytest.raises(RuleSetError, match="rule set default") as exc:
        rules(bad)
    assert message in str(exc.value)


def test_duplicate_ids_and_crossed_thresholds_are_refused():
    with pytest.raises(RuleSetError, match=r"duplicate rule ids \['r1'\]"):
        rules(rule(), rule(value=700))
    with pytest.raises(RuleSetError, match="block_threshold 0.2 is below review_threshold 0.5"):
        rules(review_threshold=0.5, block_threshold=0.2)
    with pytest.raises(RuleSetError, match="unexpected|Extra inputs"):
        parse_rule_set({"id": "d", "version": 1, "rulez": []})


def test_rule_set_files_json_and_yaml(tmp_path):
    data = {"id": "file", "version": 2, "rules": [rule()], "block": {"accounts": ["a9"]}}
    (tmp_path / "r.json").write_text(json.dumps(data))
    (tmp_path / "r.yaml").write_text(
        "id: file\nversion: 2\nrules:\n  - {id: r1, attribute: transaction.amount, op: '>', "
        "value: 500, outcome: review}\nblock: {accounts: [a9]}\n")
    assert load_rule_set(tmp_path / "r.json").rule_set == load_rule_set(tmp_path / "r.yaml").rule_set
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RuleSetError, match="not valid json"):
        load_rule_set(tmp_path / "bad.json")
    with pytest.raises(RuleSetError, match="cannot read"):
        load_rule_set(tmp_path / "missing.json")


# --- evaluation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "the_rule, transaction, features, fires",
    [
        pytest.param(rule(op=">", value=500), tx(amount_minor=50_001), {}, True, id="amount-gt"),
        pytest.param(rule(op=">", value=500), tx(amount_minor=50_000), {}, False, id="amount-eq-not-gt"),
        pytest.param(rule(op=">=", value=500), tx(amount_minor=50_000), {}, True, id="amount-ge"),
        pytest.param(rule(attribute="transaction.amount_minor", op="<", value=100),
                     tx(amount_minor=99), {}, True, id="minor-lt"),
        pytest.param(rule(attribute="transaction.currency", op="!=", value="EUR"),
                     tx(currency="USD"), {}, True, id="currency-ne"),
        pytest.param(rule(attribute="transaction.terminal_id", op="in", value=["m1", "m2"]),
                     tx(terminal="m2"), {}, True, id="terminal-in"),
        pytest.param(rule(attribute="transaction.terminal_id", op="not_in", value=["m1"]),
                     tx(terminal="m1"), {}, False, id="terminal-not-in"),
        pytest.param(rule(attribute=f"features.{FEATURE}", op="<=", value=2),
                     tx(), {FEATURE: 2.0}, True, id="feature-le"),
        pytest.param(rule(attribute=f"features.{FEATURE}", op="==", value=2),
                     tx(), {}, False, id="feature-absent-is-silent"),
        pytest.param(rule(attribute="score", op=">", value=0.3), tx(), {}, True, id="score-gt"),
    ],
)
def test_each_comparison(the_rule, transaction, features, fires):
    d = rules(the_rule).evaluate(transaction, features, score=0.31, threshold=0.9)
    assert d.rules_fired == (("r1",) if fires else ())
    assert d.outcome == ("review" if fires else "approve")


def test_score_threshold_lists_and_precedence():
    rs = rules(rule("small-review", op="<", value=1000, outcome="review"),
               block={"terminals": ["m666"]}, allow={"accounts": ["vip"]})
    d = rs.evaluate(tx(terminal="m666"), {}, score=0.1, threshold=0.5)
    assert (d.outcome, d.rules_fired) == ("block", ("small-review", "block:terminal"))
    d = rs.evaluate(tx(account="vip", terminal="m666"), {}, score=0.99, threshold=0.5)
    assert (d.outcome, d.rules_fired, d.by_score) == ("approve", ("allow:account",), True)
    d = rules().evaluate(tx(), {}, score=0.5, threshold=0.5)
    assert (d.outcome, d.rules_fired, d.by_score) == ("review", (), True)


def test_rule_set_thresholds_replace_the_models_and_score_outcome_is_configurable():
    rs = rules(review_threshold=0.2, block_threshold=0.8)
    assert rs.evaluate(tx(), {}, 0.25, threshold=0.5).outcome == "review"
    assert rs.evaluate(tx(), {}, 0.85, threshold=0.5).outcome == "block"
    assert rs.evaluate(tx(), {}, 0.1, threshold=0.5).outcome == "approve"
    strict = parse_rule_set({"id": "s", "version": 1}, score_outcome="block")
    assert strict.evaluate(tx(), {}, 0.6, threshold=0.5).outcome == "block"


def test_disabled_rules_never_fire():
    assert rules(rule(enabled=False)).evaluate(tx(amount_minor=10**7), {}, 0.0, 0.5).rules_fired == ()


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(OUTCOMES), max_size=6),
    score=st.floats(0, 1),
    allowed=st.booleans(),
    blocked=st.booleans(),
)
def test_outcome_is_the_strongest_proposal_unless_allowed(outcomes, score, allowed, blocked):
    rs = rules(
        *[rule(f"r{i}", attribute="score", op=">=", value=0.0, outcome=o)
          for i, o in enumerate(outcomes)],
        allow={"accounts": ["a1"] if allowed else []},
        block={"accounts": ["a1"] if blocked else []},
    )
    d = rs.evaluate(tx(), {}, score, threshold=0.5)
    if allowed:
        assert d.outcome == "approve" and d.rules_fired == ("allow:account",)
        return
    proposals = list(outcomes) + (["review"] if score >= 0.5 else []) + (["block"] if blocked else [])
    assert d.outcome == strongest(proposals)
    assert OUTCOMES.index(d.outcome) >= max((OUTCOMES.index(o) for o in proposals), default=0)
    assert len(d.rules_fired) == len(outcomes) + blocked


# --- controller -----------------------------------------------------------------------


class FakeScorer:
    """A model whose score is a constant; enough for the controller."""

    def __init__(self, version: str, score: float = 0.1, threshold: float = 0.5) -> None:
        self.version, self.alert_threshold, self.score = version, threshold, score
        self.explained = 0

    def score_many(self, X):
        return np.full(len(X), self.score)

    def explain_many(self, X, top_k=3, scores=None):
        self.explained += len(X)
        return [[Reason(feature=FEATURE, value=1.0, contribution=0.1)] for _ in range(len(X))]


def make_controller(registry: dict[str, FakeScorer] | None = None, **kw) -> Controller:
    registry = registry if registry is not None else {}

    def loader(version: str) -> FakeScorer:
        if version.startswith("vbad"):
            raise ModelIntegrityError(f"model {version}: sha256 of model.joblib is 00, expected 11")
        return registry.setdefault(version, FakeScorer(version, score=0.9))

    return Controller(FakeScorer("v1"), loader=loader, **kw)


def control(active, shadows=(), action="promote") -> ModelControl:
    return ModelControl(action=action, active_version=active, shadow_versions=list(shadows),
                        issued_time_ms=T0_MS)


def test_a_batch_keeps_its_snapshot_and_the_next_one_sees_the_switch():
    ctl = make_controller()
    before = ctl.snapshot()
    assert ctl.apply(control("v2", ["v3"])).applied
    after = ctl.snapshot()
    assert (before.model_version, [s.version for s in before.shadows]) == ("v1", [])
    assert (after.model_version, [s.version for s in after.shadows]) == ("v2", ["v3"])
    assert ctl.versions == ("v2", ("v3",), "none@0")


def test_tampered_model_is_refused_and_the_old_one_keeps_serving():
    ctl = make_controller()
    result = ctl.apply(control("vbad1"))
    assert not result.applied
    assert "refused, still serving v1" in result.detail and "sha256" in result.detail
    assert ctl.snapshot().model_version == "v1" and ctl.last_error == result.detail
    # a bad shadow refuses the whole message too: nothing half-applied
    assert not ctl.apply(control("v2", ["vbad2"])).applied
    assert ctl.versions[:2] == ("v1", ())


def test_applying_the_same_state_twice_loads_nothing_again():
    loads: list[str] = []
    reg: dict[str, FakeScorer] = {}

    def loader(v):
        loads.append(v)
        return reg.setdefault(v, FakeScorer(v))

    ctl = Controller(FakeScorer("v1"), loader=loader)
    ctl.apply(control("v2"))
    ctl.apply(control("v2"))
    ctl.apply(control("v1", action="rollback"))
    assert loads == ["v2"]
    assert ctl.versions[0] == "v1"


def test_rule_sets_apply_only_when_newer_and_valid():
    ctl = make_controller()
    rs2 = RuleSet(id="default", version=2, rules=[])
    assert ctl.apply(rs2).applied
    assert not ctl.apply(RuleSet(id="default", version=2)).applied  # replayed
    assert not ctl.apply(RuleSet(id="default", version=1)).applied  # older
    bad = RuleSet.model_validate({"id": "default", "version": 3, "rules": [rule(attribute="x")]})
    result = ctl.apply(bad)
    assert not result.applied and "unknown attribute 'x'" in result.detail
    assert ctl.snapshot().rules.label == "default@2"


def test_raw_messages_from_the_topics():
    ctl = make_controller()
    assert ctl.apply_raw("model", encode(control("v5"))).applied
    assert ctl.apply_raw("rules", json.dumps({"id": "d", "version": 1}).encode()).applied
    for kind, raw in (("model", b"{}"), ("model", b"nope"), ("rules", b"[1]"), ("rules", b"{")):
        r = ctl.apply_raw(kind, raw)
        assert not r.applied and r.detail
    assert ctl.versions == ("v5", (), "d@1")
    assert decode_control(encode(control("v5", ["v6"]))).shadow_versions == ["v6"]


def test_snapshot_decides_a_batch_with_shadows_that_never_alert():
    reg = {"v2": FakeScorer("v2", score=0.95)}
    ctl = make_controller(reg)
    ctl.apply(control("v1", ["v2"], action="shadow"))
    ctl.apply(RuleSet.model_validate(
        {"id": "d", "version": 1, "rules": [rule("big", op=">", value=1000, outcome="block")]}))
    snap = ctl.snapshot()
    X = np.zeros((3, len(FEATURE_NAMES)))
    batch = snap.decide([tx(amount_minor=200_000), tx(), tx()], X)
    assert batch.model_version == "v1" and batch.rule_set_version == "d@1"
    assert batch.alert_rows == [0]  # the rule; the shadow's 0.95 alerts nothing
    assert [d.outcome for d in batch.decisions] == ["block", "approve", "approve"]
    assert batch.shadow_scores["v2"].tolist() == [0.95] * 3
    assert len(batch.reasons) == 1 and reg["v2"].explained == 0
    with pytest.raises(ValueError, match="3 rows for 2"):
        snap.decide([tx(), tx()], X)


def test_threshold_setting_overrides_the_card():
    assert make_controller(threshold=0.05).snapshot().threshold == 0.05
    assert make_controller().snapshot().threshold == 0.5
    with pytest.raises(ValueError, match="threshold"):
        make_controller(threshold=1.5)


def test_apply_from_another_thread_is_seen_whole():
    ctl = make_controller()
    seen: set[tuple] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            snap = ctl.snapshot()
            seen.add((snap.model_version, tuple(s.version for s in snap.shadows)))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(2, 50):
        ctl.apply(control(f"v{i}", [f"v{i}s"]))
    stop.set()
    t.join()
    assert all(shadows in ((), (f"{v}s",)) for v, shadows in seen)
    assert ctl.versions[:2] == ("v49", ("v49s",))


def test_the_shipped_example_rule_set_is_valid():
    from pathlib import Path

    rs = load_rule_set(Path(__file__).resolve().parent.parent / "ops" / "rules" / "example.json")
    assert rs.label == "default@1" and len(rs.rule_set.rules) == 3
    d = rs.evaluate(tx(terminal="9999"), {"amount_to_account_mean_30d": 1.0}, 0.1, 0.5)
    assert (d.outcome, d.rules_fired) == ("block", ("block:terminal",))

"""The hot path's record shortcuts give what pydantic gives."""

import orjson

from app.decisions.rules import EMPTY_RULE_SET, CompiledRuleSet
from app.events import ScoredTransaction, Transaction, construct, encode
from app.events import RuleSet


def _tx() -> Transaction:
    return Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
                       amount_minor=1250, currency="EUR", event_time_ms=1_530_000_000_000)


def _values() -> dict:
    return {
        "transaction": _tx(), "score": 0.25, "decision": "pass", "model_version": "v1",
        "features": {"amount": 12.5, "x": float("nan")}, "scored_time_ms": 5,
        "outcome": "approve", "rules_fired": ["r1"], "rule_set_version": "none@0",
        "shadow_scores": {"v0": 0.5},
    }


def test_construct_equals_model_construct():
    fast = construct(ScoredTransaction, _values())
    slow = ScoredTransaction.model_construct(**_values())
    assert fast.__dict__.keys() == slow.__dict__.keys()
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    tx = construct(Transaction, _tx().model_dump())
    assert tx == _tx() and tx.model_fields_set == _tx().model_fields_set


def test_construct_falls_back_on_other_keys():
    partial = construct(Transaction, {"event_time_ms": 1, "transaction_id": "t"})
    assert partial.model_fields_set == {"event_time_ms", "transaction_id"}
    assert partial.currency == "EUR"


def test_encode_of_scored_is_pydantics():
    st = construct(ScoredTransaction, _values())
    assert encode(st) == orjson.dumps(st.model_dump(mode="json"))
    assert orjson.loads(encode(st))["features"]["x"] is None


def test_score_only_rule_set_decides_as_the_rules_do():
    rules = CompiledRuleSet(EMPTY_RULE_SET)
    assert not rules.uses_features
    listed = CompiledRuleSet(RuleSet(id="r", version=1, block={"accounts": ["zz"]}))
    for score in (0.1, 0.5, 0.9):
        a, b = rules.evaluate(_tx(), {}, score, 0.5), listed.evaluate(_tx(), {}, score, 0.5)
        assert (a.outcome, a.rules_fired, a.by_score) == (b.outcome, b.rules_fired, b.by_score)

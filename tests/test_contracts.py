"""Contracts that evolve: versions, compatibility rules and unknown fields.

Each committed schema in ``schemas/`` is what the code generates (tests/test_schemas.py)
and keeps its topic's rule (app/events.py ``CONTRACTS``) against every released version
in ``schemas/released/``; records of the earlier versions are still read; unknown fields
are accepted, kept out of the record and counted with bounded labels.
"""

from __future__ import annotations

import json
from typing import Literal

import orjson
import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry
from pydantic import Field

from app.cli.schemas import DEFAULT_RELEASED_DIR, contract_problems, load_released, schema_of
from app.contracts import FieldLabels, breaking_changes, check_compatibility, release_problems
from app.events import (
    CONTRACTS,
    Alert,
    DeadLetter,
    Label,
    Transaction,
    decode_label,
    decode_transaction,
)
from app.exceptions import InvalidEventError
from app.metrics import UNKNOWN_FIELD_LABELS_MAX, Metrics

T0 = 1_522_540_800_000
V1_TRANSACTION = {
    "transaction_id": "t1", "account_id": "a1", "terminal_id": "m1",
    "amount_minor": 1250, "currency": "EUR", "event_time_ms": T0,
}
V1_LABEL = {
    "transaction_id": "t1", "account_id": "a1", "terminal_id": "m1", "is_fraud": True,
    "transaction_time_ms": T0, "label_time_ms": T0 + 7 * 86_400_000,
}


# --- the committed contracts keep their rules ---------------------------------------


def test_every_contract_keeps_its_rule_against_its_released_versions():
    assert contract_problems() == {}


def test_the_rule_per_topic_is_backward_for_inputs_forward_for_outputs():
    rules = {name: c.compatibility for name, c in CONTRACTS.items()}
    assert rules == {
        "transactions": "backward",
        "transaction-labels": "backward",
        "fraud-alerts": "forward",
        "scored-transactions": "forward",
        "dead-letter": "forward",
        "fraud-control": "full",
        "fraud-rules": "full",
        "fraud-cases": "full",
    }
    released = load_released(DEFAULT_RELEASED_DIR)
    for name, contract in CONTRACTS.items():
        assert max(released[name]) == contract.version, name
        assert schema_of(name, contract.model)["x-contract-version"] == contract.version


def test_released_v1_is_the_closed_baseline_and_v2_opens_the_inputs():
    released = load_released(DEFAULT_RELEASED_DIR)
    assert released["transactions"][1]["additionalProperties"] is False
    assert released["transactions"][2]["additionalProperties"] is True
    assert released["transaction-labels"][2]["additionalProperties"] is True
    # outputs stay closed: a reader of v1 accepts what v2 writes
    assert released["fraud-alerts"][1]["additionalProperties"] is False
    assert breaking_changes(reader=released["fraud-alerts"][1], writer=schema_of("fraud-alerts", Alert)) == []


# --- what the check catches, with real model changes ---------------------------------


class _TxRequiredField(Transaction):
    merchant_category: str


class _TxOptionalField(Transaction):
    merchant_category: str | None = None


class _TxTighterAmount(Transaction):
    amount_minor: int = Field(ge=0, le=1_000_000)


class _AlertNewField(Alert):
    channel: str = "card-present"


class _AlertNarrowerOutcome(Alert):
    outcome: Literal["review"] = "review"


class _LabelOptionalTime(Label):
    label_time_ms: int | None = None  # readers accept a label without it


class _LabelFraudAsNumber(Label):
    is_fraud: int  # readers want 0/1; writers of v2 send true/false


def _released(name: str) -> dict[int, dict]:
    return load_released(DEFAULT_RELEASED_DIR)[name]


def _next_version(name: str, model) -> list[str]:
    c = CONTRACTS[name]
    return release_problems(schema_of(name, model), c.version + 1, c.compatibility, _released(name))


CHANGES = [
    pytest.param("transactions", _TxRequiredField, "merchant_category: required by the reader",
                 id="input-new-required-field-breaks-backward"),
    pytest.param("transactions", _TxTighterAmount, "upper bound",
                 id="input-tighter-bound-breaks-backward"),
    pytest.param("transactions", _TxOptionalField, None, id="input-new-optional-field-is-backward"),
    pytest.param("fraud-alerts", _AlertNewField, "channel: the writer may send it",
                 id="output-new-field-breaks-forward-for-closed-readers"),
    pytest.param("fraud-alerts", _AlertNarrowerOutcome, None,
                 id="output-fewer-values-is-forward"),
    pytest.param("transaction-labels", _LabelOptionalTime, None,
                 id="input-field-made-optional-is-backward"),
    pytest.param("transaction-labels", _LabelFraudAsNumber, "is_fraud: the writer may send type ['boolean']",
                 id="input-type-changed-breaks-backward"),
]


@pytest.mark.parametrize(("name", "model", "expected"), CHANGES)
def test_a_new_version_is_checked_against_the_previous_released_one(name, model, expected):
    problems = _next_version(name, model)
    if expected is None:
        assert problems == []
    else:
        assert problems and any(expected in p for p in problems), problems


def test_a_released_version_cannot_change_without_a_new_version():
    c = CONTRACTS["transactions"]
    problems = release_problems(
        schema_of("transactions", _TxOptionalField), c.version, c.compatibility, _released("transactions")
    )
    assert problems == [
        "v2 is released and its schema changed: raise the contract's version to 3 for a new one"
    ]


def test_dead_letter_reasons_are_an_extensible_enum_for_readers():
    new = schema_of("dead-letter", DeadLetter)
    new["properties"]["reason"]["enum"].append("future_timestamp")
    assert check_compatibility(new, _released("dead-letter")[2], "forward") == []
    # a new reason needs no new version: the released v2 names its reasons open
    assert release_problems(new, 2, "forward", _released("dead-letter")) == []
    new["properties"]["reason"]["x-extensible-enum"] = False
    assert release_problems(new, 2, "forward", _released("dead-letter"))
    # against v1 (a closed enum) the same addition breaks forward: why v2 marks it open
    assert check_compatibility(new, _released("dead-letter")[1], "forward")


def test_full_rule_checks_both_directions():
    old = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    new = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
           "required": ["b"], "additionalProperties": False}
    problems = check_compatibility(new, old, "full")
    assert any(p.startswith("backward: $.b: required") for p in problems)
    assert any(p.startswith("forward: $.b: the writer may send it") for p in problems)
    with pytest.raises(ValueError, match="rule"):
        check_compatibility(new, old, "sideways")


# --- readers: earlier versions and unknown fields ------------------------------------


def test_records_of_every_released_version_are_read():
    for version, schema in _released("transactions").items():
        assert list(Draft202012Validator(schema).iter_errors(V1_TRANSACTION)) == [], version
    for version, schema in _released("transaction-labels").items():
        assert list(Draft202012Validator(schema).iter_errors(V1_LABEL)) == [], version
    assert decode_transaction(orjson.dumps(V1_TRANSACTION)) == Transaction(**V1_TRANSACTION)
    assert decode_label(orjson.dumps(V1_LABEL)) == Label(**V1_LABEL)


def test_unknown_fields_are_accepted_and_kept_out_of_the_record():
    seen: list[str] = []
    raw = orjson.dumps({**V1_TRANSACTION, "mcc": "5411", "device": {"id": 3}})
    tx = decode_transaction(raw, unknown_fields=seen)
    assert tx == Transaction(**V1_TRANSACTION)
    assert "mcc" not in tx.model_dump()
    assert seen == ["mcc", "device"]
    labels: list[str] = []
    decode_label(orjson.dumps({**V1_LABEL, "analyst": "x"}), unknown_fields=labels)
    assert labels == ["analyst"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param({**V1_TRANSACTION, "amount_minor": -1, "mcc": "1"}, "bad_amount", id="bad-known-field"),
        pytest.param({k: v for k, v in V1_TRANSACTION.items() if k != "terminal_id"} | {"x": 1},
                     "missing_field", id="missing-field-with-unknown"),
    ],
)
def test_known_fields_are_still_validated_and_unknown_ones_not_counted_then(payload, reason):
    seen: list[str] = []
    with pytest.raises(InvalidEventError) as info:
        decode_transaction(orjson.dumps(payload), unknown_fields=seen)
    assert info.value.reason == reason
    assert seen == []


def test_outputs_carry_only_the_known_fields():
    tx = decode_transaction(orjson.dumps({**V1_TRANSACTION, "mcc": "5411"}))
    schema = json.loads(json.dumps(schema_of("fraud-alerts", Alert)))
    alert = Alert(alert_id="t1", transaction=tx, score=0.9, threshold=0.5, model_version="v1",
                  features={}, reasons=[], event_time_ms=T0, alert_time_ms=T0)
    assert list(Draft202012Validator(_released("fraud-alerts")[1]).iter_errors(
        orjson.loads(alert.model_dump_json()))) == []
    assert schema["$defs"]["Transaction"]["additionalProperties"] is False


def test_unknown_field_labels_are_bounded():
    registry = CollectorRegistry()
    m = Metrics(registry)
    names = ["mcc", "mcc", "bad name", "ümlaut", "x" * 65, ""] + [f"f{i}" for i in range(UNKNOWN_FIELD_LABELS_MAX + 5)]
    m.count_unknown_fields("transactions", names)
    value = lambda field: registry.get_sample_value(  # noqa: E731
        "fraud_unknown_fields_total", {"topic": "transactions", "field": field}
    )
    assert value("mcc") == 2
    kept = {f"f{i}" for i in range(UNKNOWN_FIELD_LABELS_MAX - 1)}  # "mcc" took one place
    assert all(value(f) == 1 for f in kept)
    assert value(f"f{UNKNOWN_FIELD_LABELS_MAX}") is None
    assert value("other") == 4 + 6  # four unsafe names, six beyond the cap
    labels = {s.labels["field"] for fam in registry.collect() for s in fam.samples
              if s.name == "fraud_unknown_fields_total"}
    assert len(labels) == UNKNOWN_FIELD_LABELS_MAX + 1


def test_field_labels_are_per_topic_and_reject_negative_caps():
    labels = FieldLabels(max_names=1)
    assert labels.label("a", "x") == "x"
    assert labels.label("b", "y") == "y"
    assert labels.label("a", "y") == "other"
    with pytest.raises(ValueError, match="max_names"):
        FieldLabels(-1)


# --- fraudctl schemas check / release -------------------------------------------------


def test_cli_release_writes_only_versions_not_released_yet(tmp_path):
    import shutil

    from typer.testing import CliRunner

    from app.cli.base import cli

    released = tmp_path / "released"
    shutil.copytree(DEFAULT_RELEASED_DIR, released)
    runner = CliRunner()
    result = runner.invoke(cli, ["schemas", "release", "--released", str(released)])
    assert result.exit_code == 0, result.output
    assert "0 new released schemas" in result.output

    (released / "transactions.v2.schema.json").unlink()  # v2 not released yet
    result = runner.invoke(cli, ["schemas", "release", "--released", str(released)])
    assert result.exit_code == 0 and "transactions.v2.schema.json" in result.output
    assert json.loads((released / "transactions.v2.schema.json").read_text()) == schema_of(
        "transactions", Transaction
    )

    # a released version whose schema is then changed in place: check and release refuse
    doc = json.loads((released / "fraud-alerts.v1.schema.json").read_text())
    doc["properties"]["score"]["maximum"] = 0.5
    (released / "fraud-alerts.v1.schema.json").write_text(json.dumps(doc))
    result = runner.invoke(cli, ["schemas", "check", "--released", str(released)])
    assert result.exit_code == 1
    assert "incompatible: fraud-alerts: v1 is released and its schema changed" in result.output
    result = runner.invoke(cli, ["schemas", "release", "--released", str(released)])
    assert result.exit_code == 2 and "fraud-alerts" in result.output

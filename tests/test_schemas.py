"""The JSON Schema files in schemas/ are the wire contracts of app/events.py.

A change to a contract without ``fraudctl schemas export`` fails here; each schema
accepts a record the service really produces and rejects what the code rejects.
"""

from __future__ import annotations

import base64
import hashlib
import copy
import json
from collections.abc import Callable

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli.base import cli
from app.cli.schemas import (
    DEFAULT_SCHEMAS_DIR,
    SCHEMA_DIALECT,
    compare_schemas,
    render_schemas,
    schema_id,
)
from app.cases.model import events_for_alert
from app.events import (
    WIRE_MODELS,
    Alert,
    DeadLetter,
    Label,
    ModelControl,
    Reason,
    RuleSet,
    ScoredTransaction,
    Transaction,
    encode,
)

T0_MS = 1_522_540_800_000  # 2018-04-01T00:00:00Z


def _transaction() -> Transaction:
    return Transaction(
        transaction_id="tx-1",
        account_id="acct-42",
        terminal_id="term-7",
        amount_minor=12_550,
        currency="EUR",
        event_time_ms=T0_MS,
    )


def _example(name: str):
    """A real record of each wire model, built through the model (so it is valid)."""
    tx = _transaction()
    examples = {
        "transactions": lambda: tx,
        "transaction-labels": lambda: Label(
            transaction_id="tx-1",
            account_id="acct-42",
            terminal_id="term-7",
            is_fraud=True,
            transaction_time_ms=T0_MS,
            label_time_ms=T0_MS + 7 * 86_400_000,
        ),
        "scored-transactions": lambda: ScoredTransaction(
            transaction=tx,
            score=0.91,
            decision="alert",
            model_version="2018-07-10-rf",
            features={"amount": 125.5, "account_tx_count_1d": 3.0},
            scored_time_ms=T0_MS + 40,
            outcome="block",
            rules_fired=["big-amount", "block:terminal"],
            rule_set_version="default@3",
            shadow_scores={"v20180724-challenger": 0.42},
        ),
        "fraud-alerts": lambda: Alert(
            alert_id="tx-1",
            transaction=tx,
            score=0.91,
            threshold=0.5,
            model_version="2018-07-10-rf",
            features={"amount": 125.5, "account_tx_count_1d": 3.0},
            reasons=[Reason(feature="amount", value=125.5, contribution=0.31)],
            event_time_ms=T0_MS,
            alert_time_ms=T0_MS + 40,
            outcome="review",
            rules_fired=["big-amount"],
            rule_set_version="default@3",
        ),
        "fraud-control": lambda: ModelControl(
            action="promote",
            active_version="v20180724-101500-1a2b3c4d",
            shadow_versions=["v20180801-090000-deadbeef"],
            issued_time_ms=T0_MS,
            issued_by="fraudctl",
        ),
        "fraud-rules": lambda: RuleSet.model_validate({
            "id": "default",
            "version": 3,
            "rules": [{"id": "big-amount", "attribute": "transaction.amount", "op": ">",
                       "value": 500, "outcome": "review"},
                      {"id": "risky-terminals", "attribute": "transaction.terminal_id",
                       "op": "in", "value": ["m1", "m2"], "outcome": "block"}],
            "allow": {"accounts": ["vip-1"]},
            "block": {"terminals": ["m666"]},
            "review_threshold": 0.4,
        }),
        "dead-letter": lambda: DeadLetter(
            source_topic="transactions",
            partition=2,
            offset=1041,
            reason="not_json",
            detail="payload is not valid JSON",
            raw_value_b64=base64.b64encode(b"not json").decode(),
            raw_key_b64=None,
            raw_size_bytes=8,
            raw_sha256=hashlib.sha256(b"not json").hexdigest(),
            rejected_time_ms=T0_MS + 5,
        ),
    }
    # a case event as the review process writes it: the alert that opened the case
    examples["fraud-cases"] = lambda: events_for_alert(None, examples["fraud-alerts"](), T0_MS + 90)[0]
    return examples[name]()


def _validator(name: str) -> Draft202012Validator:
    path = DEFAULT_SCHEMAS_DIR / f"{name}.schema.json"
    return Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


# --- the committed files are what the code generates -------------------------------


def test_committed_schema_files_equal_what_the_code_generates():
    diff = compare_schemas(render_schemas(), DEFAULT_SCHEMAS_DIR)
    detail = "\n".join(line for lines in diff.changed.values() for line in lines[:30])
    assert diff.clean, (
        f"schemas/ is out of date (run `fraudctl schemas export`): missing={diff.missing} "
        f"extra={diff.extra} changed={sorted(diff.changed)}\n{detail}"
    )


def test_one_file_per_wire_model_with_id_title_and_dialect():
    files = sorted(p.name for p in DEFAULT_SCHEMAS_DIR.glob("*.schema.json"))
    assert files == sorted(f"{name}.schema.json" for name in WIRE_MODELS)
    for name, model in WIRE_MODELS.items():
        doc = json.loads((DEFAULT_SCHEMAS_DIR / f"{name}.schema.json").read_text())
        assert doc["$id"] == schema_id(name)
        assert doc["$schema"] == SCHEMA_DIALECT
        assert doc["title"] == model.__name__
        Draft202012Validator.check_schema(doc)  # a valid 2020-12 schema


def test_files_are_sorted_two_space_json_with_trailing_newline():
    for name in WIRE_MODELS:
        text = (DEFAULT_SCHEMAS_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


# --- the schemas accept real records and reject invalid ones -------------------------


@pytest.mark.parametrize("name", sorted(WIRE_MODELS))
def test_schema_accepts_the_bytes_the_service_writes(name):
    record = _example(name)
    assert isinstance(record, WIRE_MODELS[name])
    on_the_wire = orjson.loads(encode(record))
    errors = [e.message for e in _validator(name).iter_errors(on_the_wire)]
    assert errors == []


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def _set(*path_and_value) -> Callable[[dict], None]:
    *path, value = path_and_value

    def mutate(d: dict) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return mutate


INVALID = [
    pytest.param("transactions", _drop("amount_minor"), id="tx-missing-amount"),
    pytest.param("transactions", _set("amount_minor", -1), id="tx-negative-amount"),
    pytest.param("transactions", _set("amount_minor", "12.50"), id="tx-amount-as-string"),
    pytest.param("transactions", _set("currency", "eur"), id="tx-lowercase-currency"),
    pytest.param("transactions", _set("event_time_ms", 1_522_540_800), id="tx-time-in-seconds"),
    pytest.param("transactions", _set("account_id", "acct 42"), id="tx-id-with-space"),
    pytest.param("transactions", _set("account_id", ""), id="tx-empty-id"),
    pytest.param("transactions", _set("merchant", "x"), id="tx-unknown-field"),
    pytest.param("transaction-labels", _set("is_fraud", "yes"), id="label-fraud-not-bool"),
    pytest.param("transaction-labels", _drop("label_time_ms"), id="label-missing-time"),
    pytest.param("scored-transactions", _set("score", 1.5), id="scored-score-above-1"),
    pytest.param("scored-transactions", _set("decision", "maybe"), id="scored-bad-decision"),
    pytest.param(
        "scored-transactions", _set("features", "amount", "high"), id="scored-feature-not-number"
    ),
    pytest.param("fraud-alerts", _set("decision", "pass"), id="alert-decision-pass"),
    pytest.param(
        "fraud-alerts", _set("transaction", "currency", "EURO"), id="alert-nested-bad-currency"
    ),
    pytest.param("fraud-alerts", _set("reasons", [{"feature": "amount"}]), id="alert-bad-reason"),
    pytest.param("fraud-alerts", _set("threshold", -0.1), id="alert-negative-threshold"),
    pytest.param("dead-letter", _set("reason", "bogus"), id="dead-letter-unknown-reason"),
    pytest.param("fraud-alerts", _set("outcome", "approve"), id="alert-outcome-approve"),
    pytest.param("scored-transactions", _set("shadow_scores", "v2", "x"), id="scored-shadow-nan"),
    pytest.param("fraud-control", _set("active_version", "latest"), id="control-bad-version"),
    pytest.param("fraud-control", _set("action", "delete"), id="control-bad-action"),
    pytest.param("fraud-rules", _set("rules", 0, "op", "~="), id="rules-bad-op"),
    pytest.param("fraud-rules", _set("rules", 0, "outcome", "deny"), id="rules-bad-outcome"),
    pytest.param("fraud-rules", _set("version", -1), id="rules-negative-version"),
    pytest.param("dead-letter", _set("partition", "2"), id="dead-letter-partition-string"),
]


@pytest.mark.parametrize(("name", "mutate"), INVALID)
def test_schema_rejects_what_the_model_rejects(name, mutate):
    bad = copy.deepcopy(orjson.loads(encode(_example(name))))
    mutate(bad)
    assert list(_validator(name).iter_errors(bad)), f"schema accepted {bad}"
    with pytest.raises(ValidationError):
        WIRE_MODELS[name].model_validate(bad)


def test_schema_default_currency_matches_the_model():
    record = orjson.loads(encode(_transaction()))
    del record["currency"]
    assert list(_validator("transactions").iter_errors(record)) == []
    assert Transaction.model_validate(record).currency == "EUR"


# --- fraudctl schemas export / check ------------------------------------------------


def test_cli_export_then_check_passes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "schemas"
    result = runner.invoke(cli, ["schemas", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}
    assert written == render_schemas()

    result = runner.invoke(cli, ["schemas", "check", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "match the code" in result.output


def test_cli_check_fails_with_a_diff_summary_when_files_drift(tmp_path):
    runner = CliRunner()
    out = tmp_path / "schemas"
    assert runner.invoke(cli, ["schemas", "export", "--out", str(out)]).exit_code == 0

    tx_file = out / "transactions.schema.json"
    tx_file.write_text(tx_file.read_text().replace('"minimum": 0,', '"minimum": 1,'))
    (out / "dead-letter.schema.json").unlink()
    (out / "old-topic.schema.json").write_text("{}\n")

    result = runner.invoke(cli, ["schemas", "check", "--dir", str(out)])
    assert result.exit_code == 1
    output = result.output
    assert "changed:" in output and "transactions.schema.json (2 lines)" in output
    assert '-      "minimum": 1,' in output and '+      "minimum": 0,' in output
    assert "missing:" in output and "dead-letter.schema.json" in output
    assert "extra:" in output and "old-topic.schema.json" in output

    # export repairs the drift; the stray file is reported, not deleted
    result = runner.invoke(cli, ["schemas", "export", "--out", str(out)])
    assert result.exit_code == 0
    assert "2 written" in result.output
    assert compare_schemas(render_schemas(), out).extra == ["old-topic.schema.json"]

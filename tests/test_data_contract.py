"""A team's own data in: the input contract, ``fraudctl data check`` and mapping files.

From a clean state (no shared handbook file): a bank-style export with its own column
names, local times, amounts in cents, text ids and Y/N labels passes ``data check``
with a mapping file, trains, evaluates and is compared with the shipped active model;
a malformed file gets one precise line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.data.contract import DataMapping, apply_mapping, check_frame
from app.data.handbook import read_handbook
from app.data.simulate import simulate, write_handbook_csv
from app.exceptions import DataError
from app.scoring.compare import read_comparisons
from app.scoring.registry import active_file_version, list_models

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ["--train-start", "2018-07-10", "--train-end", "2018-07-14", "--gap-days", "3",
         "--test-days", "3"]
MAPPING = """\
columns:
  TRANSACTION_ID: ref
  TX_DATETIME: booked_at
  CUSTOMER_ID: card
  TERMINAL_ID: merchant
  TX_AMOUNT: amount_cents
  TX_FRAUD: chargeback
time: {format: "%d/%m/%Y %H:%M:%S", timezone: Europe/Brussels}
amount: {scale: 0.01}
ids: digits
labels: {fraud: ["Y"], genuine: ["N"]}
"""


@pytest.fixture(scope="module")
def contract_frame() -> pd.DataFrame:
    """2018-06-14..2018-07-20 on the simulator: the split and its history."""
    df = simulate(n_customers=150, n_terminals=1500, start_date="2018-06-14", n_days=37, seed=5)
    return df.assign(TX_DATETIME=pd.to_datetime(df["TX_DATETIME"]))


@pytest.fixture(scope="module")
def bank_export(contract_frame, tmp_path_factory) -> tuple[Path, Path]:
    """The same rows as a bank would export them, and the mapping file that reads them."""
    where = tmp_path_factory.mktemp("bank")
    local = (contract_frame["TX_DATETIME"].dt.tz_localize("UTC")
             .dt.tz_convert("Europe/Brussels"))
    export = pd.DataFrame({
        "ref": contract_frame["TRANSACTION_ID"],
        "booked_at": local.dt.strftime("%d/%m/%Y %H:%M:%S"),
        "card": "C" + contract_frame["CUSTOMER_ID"].astype(str),
        "merchant": "M" + contract_frame["TERMINAL_ID"].astype(str),
        "amount_cents": (contract_frame["TX_AMOUNT"] * 100).round().astype("int64"),
        "chargeback": contract_frame["TX_FRAUD"].map({1: "Y", 0: "N"}),
        "channel": "pos",  # a column the contract does not know: ignored
    }).sample(frac=1.0, random_state=1)  # a bank export is not sorted by event time
    data = where / "bank-export.csv"
    export.to_csv(data, index=False)
    mapping = where / "bank.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_a_mapped_export_reads_as_the_contract_frame(contract_frame, bank_export):
    data, mapping = bank_export
    got = read_handbook(data, mapping=mapping)
    want = contract_frame.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    assert len(got) == len(want)
    assert (got["TRANSACTION_ID"].to_numpy() == want["TRANSACTION_ID"].to_numpy()).all()
    # local Brussels time back to UTC, cents to euros, digits of text ids, Y/N labels
    assert (got["TX_DATETIME"].to_numpy() == want["TX_DATETIME"].to_numpy()).all()
    assert (got["CUSTOMER_ID"].to_numpy() == want["CUSTOMER_ID"].to_numpy()).all()
    assert got["TX_AMOUNT"].round(2).tolist() == want["TX_AMOUNT"].round(2).tolist()
    assert (got["TX_FRAUD"].to_numpy() == want["TX_FRAUD"].to_numpy()).all()


def test_paysim_style_step_hours_and_generated_ids():
    paysim = pd.DataFrame({"step": [1, 1, 2], "amount": ["9839.64", "1864.28", "181.0"],
                           "nameOrig": ["C1231006815", "C1666544295", "C1305486145"],
                           "nameDest": ["M1979787155", "M2044282225", "C553264065"],
                           "isFraud": [0, 0, 1]})
    mapping = DataMapping.model_validate({
        "columns": {"TX_DATETIME": "step", "TX_AMOUNT": "amount", "CUSTOMER_ID": "nameOrig",
                    "TERMINAL_ID": "nameDest", "TX_FRAUD": "isFraud"},
        "time": {"unit": "hours", "origin": "2018-04-01"}, "ids": "digits",
        "generate_transaction_id": True,
    })
    df = check_frame(apply_mapping(paysim, mapping, "paysim.csv"), "paysim.csv")
    assert df["TRANSACTION_ID"].tolist() == [0, 1, 2]
    assert str(df["TX_DATETIME"].iloc[2]) == "2018-04-01 02:00:00"
    assert df["CUSTOMER_ID"].iloc[0] == 1231006815 and df["TX_FRAUD"].tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        pytest.param(lambda t: t.replace(",1250,N,", ",-1250,N,", 1),
                     "row 3, column amount_cents (TX_AMOUNT): -1250 is not a finite amount >= 0",
                     id="negative-amount"),
        pytest.param(lambda t: t.replace("02/07/2018 10:00:00", "2018-07-02 10:00", 1),
                     "row 2, column booked_at (TX_DATETIME): '2018-07-02 10:00' is not a date-time as "
                     "%d/%m/%Y %H:%M:%S", id="time-in-another-format"),
        pytest.param(lambda t: t.replace(",N,pos\n", ",maybe,pos\n", 1),
                     "row 1, column chargeback (TX_FRAUD): 'maybe' is not a label value", id="bad-label"),
        pytest.param(lambda t: t.replace("\n12,", "\n11,", 1),
                     "row 3, column ref (TRANSACTION_ID): 11 appears twice (first at row 2)",
                     id="duplicate-id"),
        pytest.param(lambda t: t.replace(",1250,N,", ",99999999999999999999999999,N,", 1),
                     "row 3, column amount_cents (TX_AMOUNT): 99999999999999999999999999 is not "
                     "an amount <= 10,000,000,000", id="amount-beyond-the-stream"),
        pytest.param(lambda t: t.replace(",M8,", ",M99999999999999999999999,", 1),
                     "row 3, column merchant (TERMINAL_ID): '99999999999999999999999' is not an "
                     "integer >= 0 and < 2**63", id="id-beyond-int64"),
        pytest.param(lambda t: t.replace(",C2,", ",Cxyz,", 1),
                     "row 2, column card (CUSTOMER_ID): 'Cxyz' is not an id with digits",
                     id="id-without-digits"),
        pytest.param(lambda t: t.replace("merchant", "shop", 1),
                     "the mapping names column 'merchant' for TERMINAL_ID", id="missing-column"),
    ],
)
def test_a_malformed_file_gets_one_precise_error_and_exit_2(tmp_path, bank_export, edit, needle):
    _, mapping = bank_export
    good = ("ref,booked_at,card,merchant,amount_cents,chargeback,channel\n"
            "10,01/07/2018 09:00:00,C1,M7,500,N,pos\n"
            "11,02/07/2018 10:00:00,C2,M7,700,Y,pos\n"
            "12,03/07/2018 11:00:00,C1,M8,1250,N,pos\n")
    path = tmp_path / "export.csv"
    path.write_text(good)
    ok = CliRunner().invoke(cli, ["data", "check", str(path), "--mapping", str(mapping)])
    assert ok.exit_code == 0 and "valid" in ok.stdout and "3 transactions" in ok.stdout, ok.output
    path.write_text(edit(good))
    bad = CliRunner().invoke(cli, ["data", "check", str(path), "--mapping", str(mapping)])
    assert bad.exit_code == 2, bad.output
    line = _one_line(bad.stderr)
    assert line.startswith(f"error: {path}: ") and needle in line, line


def test_without_mapping_the_contract_names_are_required(bank_export, tmp_path):
    data, _ = bank_export
    r = CliRunner().invoke(cli, ["data", "check", str(data)])
    assert r.exit_code == 2
    assert "missing columns ['TRANSACTION_ID', 'TX_DATETIME'" in _one_line(r.stderr)
    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("columns: {CARD: card}\n")
    r = CliRunner().invoke(cli, ["data", "check", str(data), "--mapping", str(bad_mapping)])
    assert r.exit_code == 2
    assert "columns: Value error, ['CARD'] are no contract columns" in _one_line(r.stderr)
    bad_mapping.write_text("columns: {CUSTOMER_ID: card, TERMINAL_ID: card}\n")
    r = CliRunner().invoke(cli, ["data", "check", str(data), "--mapping", str(bad_mapping)])
    assert r.exit_code == 2
    assert "CUSTOMER_ID and TERMINAL_ID both read column 'card'" in _one_line(r.stderr)


@pytest.mark.slow
def test_own_data_checks_trains_evaluates_and_is_compared_with_the_active_model(
    bank_export, tmp_path
):
    data, mapping = bank_export
    runner = CliRunner()
    checked = runner.invoke(cli, ["data", "check", str(data), "--mapping", str(mapping),
                                  "--format", "json"])
    assert checked.exit_code == 0, checked.output
    summary = json.loads(checked.stdout)
    assert summary["first_time_utc"].startswith("2018-06-14") and summary["frauds"] > 0

    # a registry holding the shipped active model, as a clean clone has it
    models = tmp_path / "models"
    active = active_file_version(ROOT / "models")
    shutil.copytree(ROOT / "models" / active, models / active)
    (models / "ACTIVE").write_text(active + "\n")

    trained = runner.invoke(cli, ["train", str(data), *SPLIT, "--mapping", str(mapping),
                                  "--models-dir", str(models)])
    assert trained.exit_code == 0, trained.output
    [card] = [c for c in list_models(models) if c.version != active]
    assert card.data.source == data.name and card.data.test.end.isoformat() == "2018-07-20"

    evaluated = runner.invoke(cli, ["evaluate", str(data), *SPLIT, "--mapping", str(mapping),
                                    "--models-dir", str(models), "--model", card.version,
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert result["n_transactions"] == card.data.test.transactions
    assert result["average_precision"] == pytest.approx(card.metrics.average_precision)

    compared = runner.invoke(cli, ["models", "compare", "active", card.version, str(data),
                                   "--mapping", str(mapping), "--window",
                                   "2018-07-18..2018-07-20", "--gap-days", "3",
                                   "--models-dir", str(models), "--format", "json"])
    assert compared.exit_code == 0, compared.output
    comparison = json.loads(compared.stdout)
    assert {r["version"] for r in comparison["results"]} == {active, card.version}
    assert {r["known_compromised_rule"] for r in comparison["results"]} == {
        "handbook-daily", "before-test"}
    assert comparison["test_start"] == "2018-07-18" and comparison["test_frauds"] > 0
    [recorded] = read_comparisons(models)
    assert recorded.result(card.version).card_precision_at_100 is not None


def test_a_parquet_export_passes_data_check_with_its_mapping(bank_export, tmp_path):
    data, mapping = bank_export
    parquet = tmp_path / "bank-export.parquet"
    pd.read_csv(data).to_parquet(parquet, index=False)
    r = CliRunner().invoke(cli, ["data", "check", str(parquet), "--mapping", str(mapping),
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    from_csv = CliRunner().invoke(cli, ["data", "check", str(data), "--mapping", str(mapping),
                                        "--format", "json"])
    import yaml

    as_json = tmp_path / "bank.json"  # the same mapping as JSON
    as_json.write_text(json.dumps(yaml.safe_load(mapping.read_text())))
    again = CliRunner().invoke(cli, ["data", "check", str(parquet), "--mapping", str(as_json),
                                     "--format", "json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["transactions"] == len(
        pd.read_csv(data)), again.output
    got, want = json.loads(r.stdout), json.loads(from_csv.stdout)
    assert {k: v for k, v in got.items() if k != "path"} == {
        k: v for k, v in want.items() if k != "path"}


@pytest.mark.parametrize(("ambiguous", "utc"), [("summer", "2018-10-28 00:30:00"),
                                                ("winter", "2018-10-28 01:30:00")])
def test_the_hour_the_autumn_dst_change_repeats_reads_as_the_mapping_says(ambiguous, utc):
    local = pd.DataFrame({"TRANSACTION_ID": [1, 2], "TX_DATETIME": ["28/10/2018 02:30:00",
                                                                    "28/10/2018 12:00:00"],
                          "CUSTOMER_ID": [1, 1], "TERMINAL_ID": [2, 2], "TX_AMOUNT": [5, 6],
                          "TX_FRAUD": [0, 0]})
    time = {"format": "%d/%m/%Y %H:%M:%S", "timezone": "Europe/Brussels"}
    with pytest.raises(DataError, match="row 1, column TX_DATETIME: '28/10/2018 02:30:00' is "
                       "not a time that exists once in Europe/Brussels"):
        apply_mapping(local, DataMapping.model_validate({"time": time}), "x.csv")
    mapping = DataMapping.model_validate({"time": {**time, "ambiguous": ambiguous}})
    got = apply_mapping(local, mapping, "x.csv")["TX_DATETIME"].astype(str).tolist()
    assert got == [utc, "2018-10-28 11:00:00"]


def test_times_with_their_own_offsets_across_a_dst_change_read_as_utc(tmp_path, bank_export):
    """ISO times whose offset changes with DST (+01:00 then +02:00), in a CSV or as a
    tz-aware Parquet column: converted to UTC, the mapping's zone not applied again."""
    _, mapping = bank_export
    export = pd.DataFrame({"ref": [1, 2], "booked_at": ["2018-03-20T10:00:00+01:00",
                                                        "2018-04-20T10:00:00+02:00"],
                           "card": ["C1", "C1"], "merchant": ["M2", "M2"],
                           "amount_cents": [500, 600], "chargeback": ["N", "Y"]})
    csv = tmp_path / "iso.csv"
    export.to_csv(csv, index=False)
    iso = tmp_path / "iso.yaml"
    iso.write_text("\n".join(line for line in MAPPING.splitlines()
                             if not line.startswith("time:")))
    parquet = tmp_path / "aware.parquet"
    export.assign(booked_at=pd.to_datetime(export["booked_at"], utc=True)
                  .dt.tz_convert("Europe/Brussels")).to_parquet(parquet)
    for data, m in ((csv, iso), (parquet, iso), (parquet, mapping)):
        got = read_handbook(data, mapping=m)["TX_DATETIME"].astype(str).tolist()
        assert got == ["2018-03-20 09:00:00", "2018-04-20 08:00:00"], (data, m)
        r = CliRunner().invoke(cli, ["data", "check", str(data), "--mapping", str(m)])
        assert r.exit_code == 0 and "2 transactions" in r.stdout, r.output

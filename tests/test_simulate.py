"""The handbook transaction generator (app.data.simulate) and ``fraudctl simulate``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import app.cli.simulate  # noqa: F401  (registers the command on cli)
import app.data.simulate
from app.cli.base import cli
from app.data.handbook import HANDBOOK_COLUMNS, read_handbook
from app.data.simulate import (
    SIMULATION_STEPS,
    run_simulation,
    simulate,
    summarize,
    write_handbook_csv,
    write_handbook_daily,
)

TINY = dict(n_customers=200, n_terminals=400, n_days=12)
# The handbook's figures, written out so a change in the module cannot move them.
SCENARIO_1_MIN_AMOUNT = 220
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_COMPROMISE_DAYS = 14


@pytest.fixture(scope="module")
def handbook_run():
    """The handbook's population (5,000 customers, 10,000 terminals) over 70 days.

    The populations set the fraud rates (2 of 10,000 terminals and 3 of 5,000
    customers compromised a day), so they keep the handbook's sizes; fewer days
    keep the test fast (about 680,000 transactions).
    """
    return run_simulation(n_days=70, seed=11)


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True).copy()
    out["TX_DATETIME"] = out["TX_DATETIME"].astype("datetime64[ns]")
    return out


# --- determinism and schema -------------------------------------------------------


def test_same_seed_gives_identical_frames_and_files(tmp_path):
    first, second = simulate(**TINY, seed=5), simulate(**TINY, seed=5)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    a = write_handbook_csv(first, tmp_path / "a.csv.gz")
    b = write_handbook_csv(second, tmp_path / "other" / "b.csv.gz")
    assert a.read_bytes() == b.read_bytes()
    header = a.read_bytes()[:10]
    assert header[3] & 0x08 == 0  # no file name stored
    assert header[4:8] == b"\0\0\0\0"  # no time stamp stored


def test_different_seed_gives_different_transactions():
    first, second = simulate(**TINY, seed=5), simulate(**TINY, seed=6)
    assert not first.equals(second)
    assert not np.array_equal(first["TX_AMOUNT"].to_numpy()[:50],
                              second["TX_AMOUNT"].to_numpy()[:50])


def test_frame_has_handbook_columns_types_and_order():
    df = simulate(**TINY, start_date="2019-02-27", seed=1)
    assert tuple(df.columns) == HANDBOOK_COLUMNS
    assert len(df) > 1000
    assert (df["TRANSACTION_ID"].to_numpy() == np.arange(len(df))).all()
    assert df["TX_TIME_SECONDS"].is_monotonic_increasing
    assert df["TX_DATETIME"].iloc[0] >= pd.Timestamp("2019-02-27")
    assert df["TX_DATETIME"].iloc[-1] < pd.Timestamp("2019-03-11")  # 12 days, leap-free
    seconds = (df["TX_DATETIME"] - pd.Timestamp("2019-02-27")).dt.total_seconds()
    assert (seconds.to_numpy() == df["TX_TIME_SECONDS"].to_numpy()).all()
    assert (df["TX_TIME_DAYS"] == df["TX_TIME_SECONDS"] // 86400).all()
    time_of_day = df["TX_TIME_SECONDS"] % 86400
    assert time_of_day.min() > 0
    assert (df["TX_AMOUNT"] >= 0).all()
    assert np.allclose(df["TX_AMOUNT"], df["TX_AMOUNT"].round(2), rtol=0, atol=1e-9)
    assert set(df["TX_FRAUD_SCENARIO"].unique()) <= {0, 1, 2, 3}
    assert ((df["TX_FRAUD"] == 1) == (df["TX_FRAUD_SCENARIO"] > 0)).all()
    assert df["CUSTOMER_ID"].between(0, 199).all()
    assert df["TERMINAL_ID"].between(0, 399).all()


def test_file_round_trips_through_read_handbook(tmp_path, monkeypatch):
    monkeypatch.setattr(app.data.simulate, "_CHUNK_ROWS", 700)  # several chunks
    df = simulate(**TINY, seed=2)
    plain = write_handbook_csv(df, tmp_path / "tx.csv")
    assert plain.read_text() == df.to_csv(index=False, lineterminator="\n")
    path = write_handbook_csv(df, tmp_path / "tx.csv.gz")
    back = read_handbook(path)
    pd.testing.assert_frame_equal(_normalised(back), _normalised(df), check_exact=False,
                                  rtol=1e-12)


def test_daily_folder_round_trips_through_read_handbook(tmp_path):
    df = simulate(**TINY, start_date="2018-04-01", seed=3)
    files = write_handbook_daily(df, tmp_path / "daily")
    assert [p.name for p in files] == [
        f"2018-04-{day:02d}.csv.gz" for day in range(1, 13)
    ]
    back = read_handbook(tmp_path / "daily")
    pd.testing.assert_frame_equal(_normalised(back), _normalised(df), check_exact=False,
                                  rtol=1e-12)
    one_day = read_handbook(tmp_path / "daily", start="2018-04-05", end="2018-04-05")
    assert len(one_day) == (df["TX_TIME_DAYS"] == 4).sum()


def test_progress_reports_every_step_in_order():
    seen = []
    simulate(**TINY, seed=0, progress=lambda step, done, total: seen.append((step, done, total)))
    assert [s for s, _, _ in seen] == list(SIMULATION_STEPS)
    assert [d for _, d, _ in seen] == list(range(1, len(SIMULATION_STEPS) + 1))
    assert {t for _, _, t in seen} == {len(SIMULATION_STEPS)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"n_customers": 0}, "n_customers must be >= 1, got 0", id="no-customers"),
        pytest.param({"n_terminals": -5}, "n_terminals must be >= 1, got -5", id="neg-terminals"),
        pytest.param({"n_days": 0}, "n_days must be >= 1, got 0", id="no-days"),
        pytest.param({"n_days": 2.5}, "n_days must be an integer, got 2.5", id="float-days"),
        pytest.param({"radius": 0.0}, "radius must be a finite number > 0, got 0.0",
                     id="zero-radius"),
        pytest.param({"seed": -1}, "seed must be an integer >= 0, got -1", id="negative-seed"),
        pytest.param({"start_date": "2018-02-30"}, "start_date must be a date as YYYY-MM-DD",
                     id="impossible-date"),
        pytest.param({"start_date": "1999-12-31"}, "start_date must be >= 2000-01-01",
                     id="before-event-time-range"),
        pytest.param({"start_date": "2099-12-01", "n_days": 40}, "n_days must be <= 31",
                     id="past-event-time-range"),
        pytest.param({"n_customers": 10**9}, "n_customers must be <= 136,612 with n_days=183",
                     id="too-large"),
    ],
)
def test_parameters_out_of_range_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace(".", r"\.")):
        simulate(**kwargs)


# --- the handbook's process, statistically ------------------------------------------


def test_volumes_and_amounts_match_the_handbook(handbook_run):
    df = handbook_run.transactions
    s = summarize(df)
    # 5,000 customers x 2 attempts a day x P(time of day kept) ~ 0.969: about 9,690.
    # (Handbook public file: 9,588 a day.)
    assert 9300 < s["tx_per_day"] < 10100
    # Mean of U(5, 100) is 52.5, a little more from redrawn negative amounts
    # (handbook public file: 52.98 on genuine transactions).
    assert 51.0 < s["mean_genuine_amount"] < 56.0
    tod = df["TX_TIME_SECONDS"] % 86400
    assert abs(tod.mean() - 43200) < 300
    assert 17000 < tod.std() < 19500  # 20,000 truncated to (0, 86400): handbook 18,181


def test_fraud_rate_matches_the_handbook(handbook_run):
    df = handbook_run.transactions
    # After the first 28 days, the terminal scenario is at its steady state: the
    # handbook's public file has 0.88 % fraud from day 30 on, 0.81 % overall.
    steady = df[df["TX_TIME_DAYS"] >= TERMINAL_COMPROMISE_DAYS]
    assert 0.0070 < steady["TX_FRAUD"].mean() < 0.0110
    shares = steady["TX_FRAUD_SCENARIO"].value_counts(normalize=True)
    # handbook public file, day 30 on: 0.05 %, 0.54 %, 0.27 % of transactions
    assert 0.0002 < shares[1] < 0.0010
    assert 0.0035 < shares[2] < 0.0075
    assert 0.0015 < shares[3] < 0.0040


def test_scenario_1_is_exactly_the_amounts_above_220(handbook_run):
    df = handbook_run.transactions
    s1 = df[df["TX_FRAUD_SCENARIO"] == 1]
    assert len(s1) > 50
    assert (s1["TX_AMOUNT"] > SCENARIO_1_MIN_AMOUNT).all()
    genuine = df[df["TX_FRAUD"] == 0]
    assert (genuine["TX_AMOUNT"] <= SCENARIO_1_MIN_AMOUNT).all()


def test_scenario_2_is_on_terminals_compromised_at_most_28_days_before(handbook_run):
    df, log = handbook_run.transactions, handbook_run.compromised_terminals
    assert log.shape == (69, 2)  # every day but the last, 2 distinct terminals a day
    assert (log[:, 0] != log[:, 1]).all()
    starts = np.repeat(np.arange(len(log)), 2)
    terminals = log.ravel()

    def compromised(tx: pd.DataFrame) -> np.ndarray:
        t = tx["TERMINAL_ID"].to_numpy()[:, None]
        d = tx["TX_TIME_DAYS"].to_numpy()[:, None]
        return ((t == terminals) & (starts <= d)
                & (d < starts + TERMINAL_COMPROMISE_DAYS)).any(axis=1)

    s2 = df[df["TX_FRAUD_SCENARIO"] == 2]
    assert len(s2) > 1000
    assert compromised(s2).all()
    on_log_terminals = df[df["TERMINAL_ID"].isin(terminals)]
    in_window = on_log_terminals[compromised(on_log_terminals)]
    # every such transaction is fraud; scenario 3 may relabel some of them
    assert (in_window["TX_FRAUD"] == 1).all()
    assert (in_window["TX_FRAUD_SCENARIO"] >= 2).all()
    assert (in_window["TX_FRAUD_SCENARIO"] == 2).mean() > 0.95


def test_scenario_3_multiplies_a_third_of_compromised_customers_amounts_by_5(handbook_run):
    df, log = handbook_run.transactions, handbook_run.compromised_customers
    mean_amount = handbook_run.customers.mean_amount
    assert log.shape == (69, 3)
    starts = np.repeat(np.arange(len(log)), 3)
    customers = log.ravel()
    s3 = df["TX_FRAUD_SCENARIO"].to_numpy() == 3
    assert s3.sum() > 500
    assert df.loc[s3, "CUSTOMER_ID"].isin(customers).all()
    theirs = df[df["CUSTOMER_ID"].isin(customers)]
    c = theirs["CUSTOMER_ID"].to_numpy()[:, None]
    d = theirs["TX_TIME_DAYS"].to_numpy()[:, None]
    in_window = ((c == customers) & (starts <= d)
                 & (d < starts + CUSTOMER_COMPROMISE_DAYS)).any(axis=1)
    their_s3 = theirs["TX_FRAUD_SCENARIO"].to_numpy() == 3
    assert not (their_s3 & ~in_window).any()
    # int(n / 3) picked per compromise; overlapping windows add a few
    assert 0.28 < their_s3[in_window].mean() < 0.42
    # amounts are 5x the customer's scale; genuine ones are 1x
    ratio = df["TX_AMOUNT"].to_numpy() / mean_amount[df["CUSTOMER_ID"].to_numpy()]
    genuine = df["TX_FRAUD"].to_numpy() == 0
    assert 0.9 < np.median(ratio[genuine]) < 1.1
    assert 4.5 < np.median(ratio[s3]) < 5.5


def test_customers_use_only_terminals_within_the_radius(handbook_run):
    run = handbook_run
    df = run.transactions.sample(5000, random_state=0)
    cx = run.customers.x[df["CUSTOMER_ID"]]
    cy = run.customers.y[df["CUSTOMER_ID"]]
    tx = run.terminals.x[df["TERMINAL_ID"]]
    ty = run.terminals.y[df["TERMINAL_ID"]]
    assert (np.hypot(cx - tx, cy - ty) < 5.0).all()
    # pi * 5^2 / 100^2 * 10,000 terminals: about 78 in reach (fewer near the edges)
    assert 60 < run.available_terminals.counts().mean() < 80


# --- fraudctl simulate -------------------------------------------------------------

SMALL_ARGS = ["--customers", "300", "--terminals", "600", "--days", "8", "--seed", "4"]


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_cli_writes_a_file_and_prints_a_summary(tmp_path):
    out = tmp_path / "sim.csv.gz"
    result = CliRunner().invoke(cli, ["simulate", "--out", str(out), *SMALL_ARGS])
    assert result.exit_code == 0, result.output
    line = _one_line(result.stdout)
    df = read_handbook(out)
    expected = simulate(n_customers=300, n_terminals=600, n_days=8, seed=4)
    assert len(df) == len(expected)
    s = summarize(expected)
    assert f"wrote {len(df):,} transactions" in line
    assert f"fraud {s['n_frauds']:,} = {s['fraud_rate']:.2%}" in line
    assert f"scenario 2: {s['scenario_2']:,}" in line


def test_cli_daily_writes_a_folder_of_daily_files(tmp_path):
    out = tmp_path / "daily"
    result = CliRunner().invoke(
        cli, ["simulate", "--out", str(out), "--daily", "--start-date", "2020-02-27",
              *SMALL_ARGS]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["2020-02-27.csv.gz", "2020-02-28.csv.gz", "2020-02-29.csv.gz"] + [
        f"2020-03-{day:02d}.csv.gz" for day in range(1, 6)
    ]
    assert len(read_handbook(out)) > 1000


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "sim.csv.gz"
    runner = CliRunner()
    assert runner.invoke(cli, ["simulate", "--out", str(out), *SMALL_ARGS]).exit_code == 0
    again = runner.invoke(cli, ["simulate", "--out", str(out), *SMALL_ARGS])
    assert again.exit_code == 2
    assert "--force" in _one_line(again.stderr)
    forced = runner.invoke(cli, ["simulate", "--out", str(out), "--force", *SMALL_ARGS])
    assert forced.exit_code == 0, forced.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--start-date", "2018-13-01"], "--start-date", id="bad-date"),
        pytest.param(["--start-date", "yesterday"], "--start-date", id="not-a-date"),
        pytest.param(["--days", "-3"], "--days must be >= 1, got -3", id="negative-days"),
        pytest.param(["--days", "0"], "--days must be >= 1, got 0", id="zero-days"),
        pytest.param(["--customers", "0"], "--customers must be >= 1", id="no-customers"),
        pytest.param(["--radius", "-1"], "--radius must be a finite number > 0",
                     id="negative-radius"),
        pytest.param(["--seed", "-2"], "--seed must be an integer >= 0", id="negative-seed"),
    ],
)
def test_cli_bad_arguments_give_one_line_and_exit_2(tmp_path, args, needle):
    out = tmp_path / "sim.csv.gz"
    result = CliRunner().invoke(cli, ["simulate", "--out", str(out), *args])
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: ")
    assert needle in line
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_bad_out_paths_give_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    wrong_suffix = runner.invoke(cli, ["simulate", "--out", str(tmp_path / "sim.parquet")])
    assert wrong_suffix.exit_code == 2
    assert ".csv.gz" in _one_line(wrong_suffix.stderr)
    a_file = tmp_path / "taken.csv"
    a_file.write_text("x\n")
    daily_on_file = runner.invoke(cli, ["simulate", "--out", str(a_file), "--daily"])
    assert daily_on_file.exit_code == 2
    assert "needs a folder" in _one_line(daily_on_file.stderr)

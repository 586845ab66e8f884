"""``fraudctl train`` and ``fraudctl models`` on simulated data, with the real Redis (db 15)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
import redis
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.data.simulate import simulate, write_handbook_csv
from app.scoring import list_models, load_model
from app.scoring.registry import ACTIVE_NAME

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
SHORT_SPLIT = ["--train-start", "2018-07-10", "--train-end", "2018-07-14",
               "--gap-days", "3", "--test-days", "3"]


@pytest.fixture(scope="module")
def sim_frame() -> pd.DataFrame:
    """2018-06-01..2018-07-24: enough for the default split and its 30 days of history."""
    return simulate(n_customers=150, n_terminals=1500, start_date="2018-06-01", n_days=54,
                    seed=11)


@pytest.fixture(scope="module")
def sim_csv(sim_frame, tmp_path_factory) -> Path:
    return write_handbook_csv(sim_frame, tmp_path_factory.mktemp("data") / "sim.csv.gz")


@pytest.fixture()
def key_prefix(monkeypatch):
    """A Redis key prefix of this test alone (Settings are rebuilt from the environment)."""
    prefix = f"test-models-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield prefix, client
    client.delete(f"{prefix}model:active")
    client.close()
    get_settings.cache_clear()


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_train_on_the_default_split(sim_csv, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(sim_csv), "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [card] = list_models(tmp_path)
    assert card.version in result.stdout
    for label in ("ROC AUC", "average precision", "card precision@100", "alert threshold"):
        assert label in result.stdout
    assert f"{card.metrics.card_precision_at_100:.3f}" in result.stdout
    assert (str(card.data.train.start), str(card.data.test.end)) == ("2018-07-04", "2018-07-24")
    assert card.data.source == "sim.csv.gz"
    assert card.data.history_start == pd.Timestamp("2018-06-04").date()
    assert card.data.train.frauds > 0 and card.data.test.transactions > 0
    assert card.metrics.roc_auc is not None and 0.5 < card.metrics.roc_auc <= 1.0
    assert len(card.metrics.card_precision_daily) == 7
    assert not (tmp_path / ACTIVE_NAME).exists()  # not activated
    loaded = load_model(card.version, tmp_path)
    assert loaded.estimator.n_features_in_ == len(card.feature_names)


def test_train_activate_then_list_show_and_activate(sim_csv, tmp_path, key_prefix):
    prefix, client = key_prefix
    runner = CliRunner()
    result = runner.invoke(
        cli, ["train", str(sim_csv), *SHORT_SPLIT, "--compare", "--activate",
              "--redis-url", REDIS_TEST_URL, "--models-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    [card] = list_models(tmp_path)
    assert client.get(f"{prefix}model:active") == card.version.encode()
    assert (tmp_path / ACTIVE_NAME).read_text().strip() == card.version
    assert [c.name for c in card.comparison] == [
        "hist_gradient_boosting", "random_forest", "logistic_regression"
    ]
    assert (str(card.data.test.start), str(card.data.test.end)) == ("2018-07-18", "2018-07-20")

    listed = runner.invoke(
        cli, ["models", "list", "--models-dir", str(tmp_path), "--redis-url", REDIS_TEST_URL]
    )
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if card.version in line)
    assert row.split()[-1] == "file+redis"  # named by models/ACTIVE and by Redis

    shown = runner.invoke(cli, ["models", "show", card.version, "--models-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["artifact_sha256"] == card.artifact_sha256

    client.set(f"{prefix}model:active", b"v-someone-else")
    again = runner.invoke(cli, ["models", "activate", card.version, "--models-dir",
                                str(tmp_path), "--redis-url", REDIS_TEST_URL])
    assert again.exit_code == 0, again.output
    assert client.get(f"{prefix}model:active") == card.version.encode()


def test_activate_with_redis_down_saves_but_does_not_activate(sim_csv, tmp_path):
    result = CliRunner().invoke(
        cli, ["train", str(sim_csv), *SHORT_SPLIT, "--activate", "--redis-url",
              CLOSED_PORT_URL, "--models-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    [card] = list_models(tmp_path)
    line = _one_line(result.stderr)
    assert line.startswith("error: ") and f"{card.version} saved but not activated" in line
    assert not (tmp_path / ACTIVE_NAME).exists()


def test_models_activate_no_redis_and_unknown_versions(sim_csv, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["train", str(sim_csv), *SHORT_SPLIT,
                               "--models-dir", str(tmp_path)]).exit_code == 0
    [card] = list_models(tmp_path)
    ok = runner.invoke(cli, ["models", "activate", card.version, "--no-redis",
                             "--models-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / ACTIVE_NAME).read_text().strip() == card.version
    for args in (["show", "v404"], ["activate", "v404", "--no-redis"]):
        bad = runner.invoke(cli, ["models", *args, "--models-dir", str(tmp_path)])
        assert bad.exit_code == 2
        assert f"known versions: {card.version}" in _one_line(bad.stderr)
    listed = runner.invoke(cli, ["models", "list", "--no-redis", "--models-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(card.version))
    assert row.split()[-1] == "file"
    assert "model:active: not asked" in listed.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--train-start", "2018-13-01"], "train_start: expected a date",
                     id="bad-date"),
        pytest.param(["--train-start", "2018-07-10", "--train-end", "2018-07-04"],
                     "is before train_start", id="end-before-start"),
        pytest.param(["--gap-days", "-1"], "gap_days: expected >= 0", id="negative-gap"),
        pytest.param(["--test-days", "0"], "test_days: expected >= 1", id="no-test-days"),
        pytest.param(["--train-start", "2019-01-01", "--train-end", "2019-01-07"],
                     "no transactions between 2018-12-02 and 2019-01-21", id="outside-data"),
        pytest.param(["--train-start", "2018-07-14", "--train-end", "2018-07-20"],
                     "the data ends on 2018-07-24, before the end of the test window",
                     id="test-after-data"),
        pytest.param(["--train-start", "2018-05-20", "--train-end", "2018-05-26"],
                     "the data starts on 2018-06-01, after the train start", id="before-data"),
    ],
)
def test_bad_windows_give_one_line_and_exit_2(sim_csv, tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["train", str(sim_csv), *args,
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: ") and needle in line
    assert "Traceback" not in result.output
    assert list_models(tmp_path) == []


def test_missing_file_gives_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "nope.csv.gz"),
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no such file" in _one_line(result.stderr)


def _variant(sim_frame, tmp_path, name, change) -> Path:
    df = sim_frame.copy()
    days = pd.to_datetime(df["TX_DATETIME"]).dt.floor("D")
    in_train = days.between(pd.Timestamp("2018-07-04"), pd.Timestamp("2018-07-10"))
    return write_handbook_csv(change(df, in_train), tmp_path / name)


def test_train_window_without_fraud_is_refused(sim_frame, tmp_path):
    def no_fraud(df, in_train):
        df.loc[in_train, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = 0
        return df

    path = _variant(sim_frame, tmp_path, "nofraud.csv.gz", no_fraud)
    result = CliRunner().invoke(cli, ["train", str(path), "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds no fraud" in _one_line(result.stderr)


def test_empty_train_window_is_refused(sim_frame, tmp_path):
    path = _variant(sim_frame, tmp_path, "hole.csv.gz", lambda df, in_train: df[~in_train])
    result = CliRunner().invoke(cli, ["train", str(path), "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "train window 2018-07-04..2018-07-10 holds no transactions" in _one_line(
        result.stderr
    )

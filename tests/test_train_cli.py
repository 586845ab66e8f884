"""``fraudctl train`` and ``fraudctl models`` on simulated data, with the real Redis (db 15)."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
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
from app.scoring.candidates import CANDIDATES
from app.scoring.train import HISTORY_DAYS

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
COMPARED = ["--model", "random_forest", "--model", "random_forest_21d", "--model",
            "logistic_regression"]
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
    # DEFAULT_MODEL is fitted on the 21 days ending on the train end
    assert (card.data.fit.start, card.data.fit.end) == (date(2018, 6, 20), date(2018, 7, 10))
    # HISTORY_DAYS (37) before the first day fitted, or the first day of the data
    assert HISTORY_DAYS == 37
    assert card.data.history_start == max(date(2018, 6, 1), card.data.fit.start - timedelta(37))
    assert card.data.train.frauds > 0 and card.data.test.transactions > 0
    assert card.metrics.roc_auc is not None and 0.5 < card.metrics.roc_auc <= 1.0
    assert len(card.metrics.card_precision_daily) == 7
    # the default rule, and the same window under the handbook's daily rule
    assert card.metrics.known_compromised_rule == "before-test"
    [other] = card.metrics_other_rules
    assert other.known_compromised_rule == "handbook-daily"
    assert other.test_transactions >= card.metrics.test_transactions  # drops fewer cards
    assert card.metrics.test_transactions == card.data.test.transactions
    for m in (card.metrics, other):
        assert 0 <= m.card_precision_at_100 <= m.perfect_card_precision_at_100 <= 1
        # the oracle ranks only the frauds the features can see first
        assert m.oracle_card_precision_at_100 <= m.perfect_card_precision_at_100
        assert m.oracle_average_precision <= 1 and m.oracle_roc_auc <= 1
        assert f"rule {m.known_compromised_rule}" in result.stdout
    assert card.model_family.endswith("RandomForestClassifier")  # DEFAULT_MODEL
    assert loaded_n_jobs(card, tmp_path) == 1  # predicts on one thread in the workers
    assert not (tmp_path / ACTIVE_NAME).exists()  # not activated
    loaded = load_model(card.version, tmp_path)
    assert loaded.estimator.n_features_in_ == len(card.feature_names)


def loaded_n_jobs(card, models_dir) -> int | None:
    return load_model(card.version, models_dir).estimator.get_params().get("n_jobs")


def test_train_activate_then_list_show_and_activate(sim_csv, tmp_path, key_prefix):
    prefix, client = key_prefix
    runner = CliRunner()
    result = runner.invoke(
        cli, ["train", str(sim_csv), *SHORT_SPLIT, "--compare", "--validation-folds", "2",
              *COMPARED, "--activate",
              "--redis-url", REDIS_TEST_URL, "--models-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    [card] = list_models(tmp_path)
    assert client.get(f"{prefix}model:active") == card.version.encode()
    assert (tmp_path / ACTIVE_NAME).read_text().strip() == card.version
    # --compare: each candidate named on 2 prequential folds before the test window; the
    # best mean average precision is the model saved
    assert [v.name for v in card.validation] == COMPARED[1::2]
    assert [v.fit_days for v in card.validation] == [None, 21, None]
    [chosen] = [v for v in card.validation if v.selected]
    assert chosen.average_precision_mean == max(
        v.average_precision_mean for v in card.validation if v.average_precision_mean is not None
    )
    assert card.model_family.endswith(type(CANDIDATES[chosen.name].make(0)).__name__)
    for v in card.validation:
        assert v.folds == [(date(2018, 7, 4), date(2018, 7, 8)),  # back by gap 3 + test 3
                           (date(2018, 7, 1), date(2018, 7, 5))]  # and by 3 more days
    if chosen.fit_days:
        assert (card.data.fit.start, card.data.fit.end) == (date(2018, 6, 24), date(2018, 7, 14))
    else:
        assert card.data.fit is None
        assert v.name in result.stdout
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
                     "no transactions between 2018-11-11 and 2019-01-21", id="outside-data"),
        pytest.param(["--train-start", "2018-07-14", "--train-end", "2018-07-20"],
                     "the data ends on 2018-07-24, before 2018-08-03, the last day needed",
                     id="test-after-data"),
        pytest.param(["--train-start", "2018-05-20", "--train-end", "2018-05-26"],
                     "the data starts on 2018-06-01, after 2018-05-06", id="before-data"),
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


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--model", "svm"], "unknown model 'svm'; expected one of random_forest",
                     id="unknown-model"),
        pytest.param(["--model", "extra_trees", "--model", "random_forest"],
                     "2 models named: fit one, or compare them", id="two-models"),
        pytest.param(["--compare", "--validation-folds", "9"],
                     "the data starts on 2018-06-01, after 2018-04-11", id="folds-before-data"),
    ],
)
def test_bad_model_choices_give_one_line_and_exit_2(sim_csv, tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["train", str(sim_csv), *args,
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert needle in _one_line(result.stderr)
    assert list_models(tmp_path) == []


def test_a_named_model_is_trained(sim_csv, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(sim_csv), *SHORT_SPLIT, "--model",
                                      "hist_gradient_boosting", "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [card] = list_models(tmp_path)
    assert card.model_family.endswith("HistGradientBoostingClassifier")
    assert card.validation == []


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
    result = CliRunner().invoke(cli, ["train", str(path), "--model", "random_forest",
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert ("the days fitted, 2018-07-04..2018-07-10, hold no fraud"
            in _one_line(result.stderr))


def test_empty_train_window_is_refused(sim_frame, tmp_path):
    path = _variant(sim_frame, tmp_path, "hole.csv.gz", lambda df, in_train: df[~in_train])
    result = CliRunner().invoke(cli, ["train", str(path), "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "train window 2018-07-04..2018-07-10 holds no transactions" in _one_line(
        result.stderr
    )

"""``app.replay`` and ``fraudctl replay``: planning (pure) and producing to the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.config import Settings
from app.data.handbook import HANDBOOK_COLUMNS, read_handbook, to_labels, to_transactions
from app.events import Label, Transaction, encode
from app.exceptions import DataError
from app.replay import DAY_MS, Pacer, plan_records, replay_frame, select_days

ROOT = Path(__file__).resolve().parent.parent
FRAUDCTL = [sys.executable, "-c", "from app.cli import main; main()"]
HOUR_MS = 3_600_000


def handbook_frame(days: int = 3, per_day: int = 25, seed: int = 7) -> pd.DataFrame:
    """A small frame in the handbook's columns, from 2018-04-01, ids as in the file."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    seconds = np.sort(
        np.concatenate([d * 86_400 + rng.integers(0, 86_400, per_day) for d in range(days)])
    )
    seconds[5] = seconds[4]  # two transactions at the same second
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": pd.Timestamp("2018-04-01") + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": rng.integers(0, 12, n),
            "TERMINAL_ID": rng.integers(0, 30, n),
            "TX_AMOUNT": np.round(rng.gamma(2.0, 30.0, n), 2),
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86_400,
            "TX_FRAUD": (rng.random(n) < 0.2).astype(int),
            "TX_FRAUD_SCENARIO": 0,
        }
    )[list(HANDBOOK_COLUMNS)]


def _event_ms(df: pd.DataFrame) -> list[int]:
    return df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64).tolist()


@pytest.fixture
def handbook_csv(tmp_path: Path) -> Path:
    path = tmp_path / "handbook.csv.gz"
    handbook_frame().to_csv(path, index=False)
    return path


# --- planning (pure) ---------------------------------------------------------------


def test_plan_values_are_the_wire_encoding_of_each_row():
    df = handbook_frame()
    records = list(plan_records(df, labels_delay_ms=DAY_MS))
    txs = [r for r in records if not r.is_label]
    labels = [r for r in records if r.is_label]
    # validated models (to_* only construct them), encoded by app.events.encode
    want_txs = [encode(Transaction.model_validate(t.model_dump())) for t in to_transactions(df)]
    want_labels = [encode(Label.model_validate(x.model_dump())) for x in to_labels(df, DAY_MS)]
    assert [r.value for r in txs] == want_txs
    assert sorted(r.value for r in labels) == sorted(want_labels)
    assert [r.key for r in txs] == [str(c).encode() for c in df["CUSTOMER_ID"]]
    assert [r.timestamp_ms for r in txs] == [orjson.loads(v)["event_time_ms"] for v in want_txs]
    assert all(orjson.loads(r.value)["label_time_ms"] == r.timestamp_ms for r in labels)


@pytest.mark.parametrize(
    "delay_ms",
    [
        pytest.param(0, id="no-delay"),
        pytest.param(HOUR_MS, id="one-hour"),
        pytest.param(DAY_MS, id="one-day"),
        pytest.param(10 * DAY_MS, id="delay-longer-than-the-data"),
    ],
)
def test_plan_merges_each_label_once_event_time_passes_it(delay_ms):
    df = handbook_frame()
    records = list(plan_records(df, labels_delay_ms=delay_ms))
    label_time_ms = {
        str(t): ms + delay_ms for t, ms in zip(df["TRANSACTION_ID"], _event_ms(df))
    }
    last_tx_ms = max(r.timestamp_ms for r in records if not r.is_label)
    seen_tx: set[str] = set()
    labelled: set[str] = set()
    for i, record in enumerate(records):
        body = orjson.loads(record.value)
        if record.is_label:
            assert body["transaction_id"] in seen_tx  # after its transaction
            assert record.timestamp_ms == label_time_ms[body["transaction_id"]]
            labelled.add(body["transaction_id"])
            if record.timestamp_ms > last_tx_ms:  # a tail label: after the last transaction
                assert all(r.is_label for r in records[i:])
        else:
            seen_tx.add(body["transaction_id"])
            # every label whose time the replay has passed came before this transaction
            # (and no other): those timed before it
            due = {t for t, ms in label_time_ms.items() if ms < record.timestamp_ms}
            assert labelled == due
    assert labelled == set(label_time_ms)
    keys = [(r.timestamp_ms, r.is_label) for r in records]
    assert keys == sorted(keys)


def test_plan_without_tail_labels_drops_exactly_the_labels_after_the_last_transaction():
    df = handbook_frame()
    full = list(plan_records(df, labels_delay_ms=DAY_MS))
    no_tail = list(plan_records(df, labels_delay_ms=DAY_MS, tail_labels=False))
    last_tx_ms = max(r.timestamp_ms for r in full if not r.is_label)
    tail = [r for r in full if r.is_label and r.timestamp_ms > last_tx_ms]
    event_ms = _event_ms(df)
    assert len(tail) == sum(ms + DAY_MS > event_ms[-1] for ms in event_ms) > 0
    assert no_tail == full[: len(full) - len(tail)]
    assert [r for r in plan_records(df, labels=False)] == [r for r in full if not r.is_label]


def test_plan_with_zero_delay_puts_each_label_after_every_transaction_of_its_time():
    df = handbook_frame()
    records = list(plan_records(df, labels_delay_ms=0, tail_labels=False))
    assert len(records) == 2 * len(df)  # no tail: every label is due by the last transaction
    kinds = [(r.timestamp_ms, r.is_label) for r in records]
    assert kinds == sorted(kinds)


@pytest.mark.parametrize(
    "column, value, message",
    [
        pytest.param("TX_AMOUNT", -1.0, "amount out of range", id="negative-amount"),
        pytest.param("CUSTOMER_ID", "bad id", "CUSTOMER_ID is not an id", id="space-in-id"),
        pytest.param("TERMINAL_ID", "x" * 65, "TERMINAL_ID is not an id", id="id-too-long"),
    ],
)
def test_plan_rejects_a_row_that_is_no_valid_event(column, value, message):
    df = handbook_frame()
    df[column] = df[column].astype(object)
    df.loc[7, column] = value
    with pytest.raises(DataError, match=rf"row 7 \(TRANSACTION_ID=7\): {message}"):
        next(plan_records(df))


def test_plan_rejects_negative_delay_and_unsorted_frames():
    df = handbook_frame()
    with pytest.raises(ValueError, match="labels_delay_ms must be >= 0, got -1"):
        next(plan_records(df, labels_delay_ms=-1))
    with pytest.raises(ValueError, match="sorted by TX_DATETIME"):
        next(plan_records(df.iloc[::-1]))
    assert list(plan_records(df.iloc[:0])) == []


def test_select_days_keeps_whole_days_from_the_first_day():
    df = handbook_frame(days=3)
    days = lambda frame: sorted(set(frame["TX_DATETIME"].dt.strftime("%Y-%m-%d")))  # noqa: E731
    assert days(select_days(df, 2)) == ["2018-04-01", "2018-04-02"]
    assert days(select_days(df, 1, pd.Timestamp("2018-04-03").date())) == ["2018-04-03"]
    assert len(select_days(df, 5)) == len(df)
    with pytest.raises(ValueError, match="days must be >= 1, got 0"):
        select_days(df, 0)


def test_pacer_spaces_events_evenly_and_restarts_rather_than_bursting():
    now = [100.0]
    pacer = Pacer(10, max_lag_seconds=0.5, clock=lambda: now[0])
    assert [pacer.wait_seconds() for _ in range(3)] == [0.0, 0.1, 0.2]
    now[0] = 102.0  # the sink stalled for 2 s: no burst of 20 events at once
    assert pacer.wait_seconds() == 0.0
    assert pacer.wait_seconds() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="rate_per_second must be > 0, got 0"):
        Pacer(0)


# --- producing to the real broker -------------------------------------------------


async def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0):
    """Every record of ``topic``: read until ``expected`` arrived and 1 s without more."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = []
        deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            fresh = [r for rs in batch.values() for r in rs]
            if fresh:
                records.extend(fresh)
                quiet_since = time.monotonic()
            elif len(records) >= expected and time.monotonic() - quiet_since > 1.0:
                break
        return records, partitions
    finally:
        await consumer.stop()


def _settings(broker, new_topic_name, partitions: int = 3) -> Settings:
    return Settings(
        kafka_broker_url=f"kafka://{broker.bootstrap}",
        transactions_topic=new_topic_name("replay-tx"),
        labels_topic=new_topic_name("replay-labels"),
        topic_partitions=partitions,
    )


@pytest.mark.broker
def test_replay_frame_produces_every_row_and_label_keyed_and_stamped(
    broker, new_topic_name, handbook_csv
):
    df = read_handbook(handbook_csv)
    settings = _settings(broker, new_topic_name)
    progress: list[tuple[int, int]] = []
    stats = asyncio.run(
        replay_frame(
            df, settings, labels_delay_ms=DAY_MS, on_progress=lambda *a: progress.append(a)
        )
    )
    n = len(df)
    assert (stats.transactions, stats.labels) == (n, n)
    assert progress[-1] == (n, n)

    txs, tx_partitions = asyncio.run(_read_topic(broker.bootstrap, settings.transactions_topic, n))
    labels, label_partitions = asyncio.run(_read_topic(broker.bootstrap, settings.labels_topic, n))
    assert tx_partitions == label_partitions == {0, 1, 2}  # created with topic_partitions
    assert len(txs) == n and len(labels) == n

    want = {t.transaction_id: t for t in to_transactions(df)}
    for record in txs:
        tx = Transaction.model_validate_json(record.value)
        assert tx == want[tx.transaction_id]
        assert record.value == encode(tx)
        assert record.key == tx.account_id.encode()
        assert record.timestamp == tx.event_time_ms
    assert sorted(Transaction.model_validate_json(r.value).transaction_id for r in txs) == sorted(
        want
    )

    tx_partition = {r.key: r.partition for r in txs}  # the partitioner is the same
    fraud = dict(zip(df["TRANSACTION_ID"].astype(str), df["TX_FRAUD"].astype(bool)))
    by_partition: dict[int, list[int]] = {}
    for record in labels:
        label = Label.model_validate_json(record.value)
        assert label.label_time_ms == want[label.transaction_id].event_time_ms + DAY_MS
        assert record.timestamp == label.label_time_ms
        assert label.is_fraud == fraud[label.transaction_id]
        assert record.key == label.terminal_id.encode()  # the terminal's state partition
        if record.key in tx_partition:  # a terminal id that is also an account id
            assert record.partition == tx_partition[record.key]
        by_partition.setdefault(record.partition, []).append(record.timestamp)
    assert all(times == sorted(times) for times in by_partition.values())


@pytest.mark.broker
def test_replay_frame_at_a_fixed_rate_without_tail_labels(broker, new_topic_name):
    df = handbook_frame(days=2, per_day=10)
    settings = _settings(broker, new_topic_name, partitions=1)
    stats = asyncio.run(
        replay_frame(df, settings, rate=400.0, labels_delay_ms=HOUR_MS, tail_labels=False)
    )
    event_ms = _event_ms(df)
    last_ms = event_ms[-1]
    due = sum(ms + HOUR_MS <= last_ms for ms in event_ms)
    assert (stats.transactions, stats.labels) == (20, due)
    labels, _ = asyncio.run(_read_topic(broker.bootstrap, settings.labels_topic, due))
    times = [r.timestamp for r in labels]  # one partition: the produced order
    assert len(times) == due and times == sorted(times) and max(times) <= last_ms


@pytest.mark.broker
def test_replay_split_in_two_windows_produces_each_record_once_with_a_traceparent(
    broker, new_topic_name
):
    """The demo's split: history up to a time as fast as it goes, then the rest with
    Kafka timestamp = send time; every transaction and label once, each with a W3C
    traceparent of its own."""
    from app import tracing

    df = handbook_frame(days=3, per_day=20)
    settings = _settings(broker, new_topic_name, partitions=2)
    split_ms = _event_ms(df)[0] + 2 * DAY_MS
    first = asyncio.run(replay_frame(df, settings, labels_delay_ms=DAY_MS, until_ms=split_ms))
    sent_after = int(time.time() * 1000)
    second = asyncio.run(
        replay_frame(df, settings, labels_delay_ms=DAY_MS, from_ms=split_ms, send_time_stamps=True)
    )
    n = len(df)
    assert first.transactions + second.transactions == n
    assert first.labels + second.labels == n
    assert first.transactions == sum(ms < split_ms for ms in _event_ms(df))
    txs, _ = asyncio.run(_read_topic(broker.bootstrap, settings.transactions_topic, n))
    labels, _ = asyncio.run(_read_topic(broker.bootstrap, settings.labels_topic, n))
    ids = [Transaction.model_validate_json(r.value).transaction_id for r in txs]
    assert sorted(ids) == sorted(df["TRANSACTION_ID"].astype(str))
    assert len({Label.model_validate_json(r.value).transaction_id for r in labels}) == len(labels) == n
    for r in txs:
        event_ms = Transaction.model_validate_json(r.value).event_time_ms
        if event_ms < split_ms:
            assert r.timestamp == event_ms
        else:  # live: the send time
            assert r.timestamp >= sent_after
    traces = [tracing.from_headers(r.headers) for r in txs + labels]
    assert all(t is not None for t in traces)
    assert len({tracing.parse(t).trace_id for t in traces}) == 2 * n  # one trace each


# --- the CLI --------------------------------------------------------------------------


def _fraudctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FRAUDCTL, *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.broker
@pytest.mark.parametrize(
    "args, days",
    [
        pytest.param(
            ["--start", "2018-04-02", "--end", "2018-04-02"], ["2018-04-02"], id="one-day"
        ),
        pytest.param(["--days", "2"], ["2018-04-01", "2018-04-02"], id="first-two-days"),
    ],
)
def test_cli_replays_the_chosen_days(broker, new_topic_name, handbook_csv, args, days):
    topics = {
        "TRANSACTIONS_TOPIC": new_topic_name("cli-tx"),
        "LABELS_TOPIC": new_topic_name("cli-labels"),
    }
    result = _fraudctl(
        "replay", str(handbook_csv), *args, "--no-labels", "--broker", broker.bootstrap, env=topics
    )
    assert result.returncode == 0, result.stderr
    expected = 25 * len(days)
    assert f"transactions produced: {expected}" in result.stdout
    assert "labels produced:       0" in result.stdout
    records, _ = asyncio.run(_read_topic(broker.bootstrap, topics["TRANSACTIONS_TOPIC"], expected))
    assert len(records) == expected
    seen_days = {
        pd.Timestamp(r.timestamp, unit="ms").strftime("%Y-%m-%d") for r in records
    }
    assert seen_days == set(days)


def _run_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``fraudctl ARGS`` through the console-script entry point, in this process."""
    from app.cli import run

    monkeypatch.setattr(sys, "argv", ["fraudctl", *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(
    "make_args, message",
    [
        pytest.param(lambda p: [str(p.parent / "nope.csv.gz")], "no such file", id="missing-file"),
        pytest.param(lambda p: [str(p), "--start", "2018-13-01"], "expected a date", id="bad-date"),
        pytest.param(
            lambda p: [str(p), "--start", "2019-01-01", "--end", "2019-01-31"],
            "no transactions in the range",
            id="empty-range",
        ),
        pytest.param(
            lambda p: [str(p), "--start", "2018-04-03", "--end", "2018-04-01"],
            "is after",
            id="start-after-end",
        ),
        pytest.param(
            lambda p: [str(p), "--end", "2018-04-02", "--days", "2"], "not both", id="end-and-days"
        ),
        pytest.param(
            lambda p: [str(p.parent / "other.csv")], "missing columns", id="wrong-columns"
        ),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(monkeypatch, capsys, handbook_csv, make_args, message):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(handbook_csv.parent / "other.csv", index=False)
    code, out, err = _run_in_process(monkeypatch, capsys, "replay", *make_args(handbook_csv))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert out == ""


def test_cli_unreachable_broker_is_one_line_and_exit_2(handbook_csv):
    # a real process: nothing else (aiokafka's log, warnings at exit) may reach stderr
    result = _fraudctl("replay", str(handbook_csv), "--broker", "127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: Kafka broker kafka://127.0.0.1:1 is unavailable" in lines[0]

"""``fraudctl alerts`` against the real broker: alerts printed, garbage reported and skipped."""

from __future__ import annotations

import asyncio
import sys

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

import app.cli.alerts  # noqa: F401  (registers the command)
from app.cli.alerts import alert_row, decode_alert
from app.cli.base import cli
from app.events import Alert, Reason, Transaction, encode

GARBAGE = b"{not an alert"


def make_alert(i: int) -> Alert:
    tx = Transaction(
        transaction_id=f"tx-{i}",
        account_id=f"acct-{i % 3}",
        terminal_id=f"term-{i % 2}",
        amount_minor=10_000 + 17 * i,
        currency="EUR",
        event_time_ms=1_522_540_800_000 + 60_000 * i,
    )
    return Alert(
        alert_id=tx.transaction_id,
        transaction=tx,
        score=0.5 + i / 100,
        threshold=0.5,
        model_version="test-model-1",
        features={"amount": tx.amount, "tx_count_by_account_1d": 3.0},
        reasons=[
            Reason(feature="amount", value=tx.amount, contribution=0.25),
            Reason(feature="tx_count_by_account_1d", value=3.0, contribution=-0.01),
        ],
        event_time_ms=tx.event_time_ms,
        alert_time_ms=1_700_000_000_000 + i,
    )


ALERTS = [make_alert(i) for i in range(8)]


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    # default batching: several records per batch, as a worker without the workaround
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=b"k%d" % (i % 4))
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.fixture
def alerts_topic(broker, make_topic) -> str:
    """A topic holding :data:`ALERTS` with one garbage record among them."""
    topic = make_topic("alerts-cli", partitions=2)
    values = [encode(a) for a in ALERTS]
    values.insert(3, GARBAGE)
    asyncio.run(_produce(broker.bootstrap, topic, values))
    return topic


def _alerts(broker, topic: str, *args: str):
    result = CliRunner().invoke(
        cli, ["alerts", "--topic", topic, "--broker", broker.bootstrap, *args]
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_decode_alert_reports_what_is_wrong_in_one_line():
    assert decode_alert(encode(ALERTS[0])) == ALERTS[0]
    with pytest.raises(ValueError, match="Invalid JSON"):
        decode_alert(GARBAGE)
    with pytest.raises(ValueError, match="score: Input should be less than or equal to 1"):
        decode_alert(encode(ALERTS[0]).replace(b'"score":0.5', b'"score":1.5'))
    with pytest.raises(ValueError, match="tombstone"):
        decode_alert(None)


def test_alert_row_shows_time_ids_amount_score_model_and_reasons():
    row = alert_row(ALERTS[2])
    assert row == (
        "2023-11-14 22:13:20",
        "tx-2",
        "acct-2",
        "term-0",
        "100.34 EUR",
        "0.520",
        "test-model-1",
        "+0.25 amount\n-0.01 tx_count_by_account_1d",
    )


@pytest.mark.broker
@pytest.mark.both_brokers
def test_jsonl_prints_each_alert_as_on_the_topic_and_skips_garbage(broker, alerts_topic):
    result = _alerts(broker, alerts_topic, "--from-beginning", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted(encode(a).decode() for a in ALERTS)
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: skipped {alerts_topic}[")
    assert "not an Alert" in warnings[0] and "Invalid JSON" in warnings[0]


@pytest.mark.broker
@pytest.mark.both_brokers
def test_table_shows_every_alert(broker, alerts_topic):
    result = _alerts(broker, alerts_topic, "--from-beginning", "--format", "table")
    assert result.exit_code == 0, result.output
    for alert in ALERTS:
        assert f" {alert.transaction.transaction_id} " in result.stdout
    assert result.stdout.count("test-model-1") == len(ALERTS)
    assert "100.34 EUR" in result.stdout
    assert "alert time (UTC)" in result.stdout


@pytest.mark.broker
@pytest.mark.both_brokers
def test_follow_with_limit_stops_after_n_alerts(broker, alerts_topic):
    result = _alerts(
        broker, alerts_topic, "--from-beginning", "--follow", "--limit", "3", "--format", "jsonl"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert set(lines) <= {encode(a).decode() for a in ALERTS}


@pytest.mark.broker
@pytest.mark.both_brokers
def test_latest_shows_no_old_alert_even_when_the_last_batch_holds_several(
    broker, alerts_topic
):
    # Tansu reports the last batch's base offset + 1 as the end: starting "latest" from
    # that answer would print the rest of the last batch again.
    result = _alerts(broker, alerts_topic, "--idle-seconds", "0.5", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


@pytest.mark.broker
@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--topic", "no-such-topic-xyz"], "does not exist", id="missing-topic"),
        pytest.param(["--broker", "127.0.0.1:1"], "is unavailable", id="broker-unreachable"),
    ],
)
def test_errors_are_one_line_and_exit_2(broker, monkeypatch, capsys, args, message):
    from app.cli import run

    monkeypatch.setattr(sys, "argv", ["fraudctl", "alerts", "--broker", broker.bootstrap, *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert out == ""

"""``python -m app worker`` refuses to start, in one line, before joining the group."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .conftest import BROKER_KINDS
from .worker_utils import ROOT


def _worker(**env: str) -> subprocess.CompletedProcess:
    # a free web port unless the test names one: a worker of another run may hold 6066
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    return subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**os.environ, "WEB_PORT": port, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "env, code, words",
    [
        pytest.param({"WEB_PORT": "abc"}, 2, "setting WEB_PORT", id="bad-setting"),
        pytest.param({"ALERT_THRESHOLD": "1.5"}, 2, "setting ALERT_THRESHOLD", id="out-of-range"),
        # APP_ID names a folder under DATA_DIR: no path of its own
        pytest.param({"APP_ID": "../escape"}, 2, "setting APP_ID", id="app-id-path"),
        pytest.param({"APP_ID": ".."}, 2, "setting APP_ID", id="app-id-dots"),
        pytest.param({"APP_ID": ""}, 2, "setting APP_ID", id="app-id-empty"),
        pytest.param(
            {"MODEL_VERSION": "v-missing", "REDIS_KEY_PREFIX": "worker-cli-test:"},
            78,
            "v-missing",
            id="unknown-model",
        ),
    ],
)
def test_worker_refuses_to_start(env, code, words, redis_url):
    result = _worker(REDIS_URL=redis_url, **env)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]


def test_worker_refuses_a_busy_web_port(redis_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _worker(REDIS_URL=redis_url, WEB_PORT=str(port))
    assert result.returncode == 2
    assert f"WEB_PORT {port}" in result.stderr and "Traceback" not in result.stderr


def test_worker_refuses_an_unreachable_broker(redis_url):
    """Nothing listens on the broker port: one line naming the broker, exit 78, no
    traceback, within BROKER_CONNECT_TIMEOUT_SECONDS (not Faust's retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"kafka://127.0.0.1:{port}"
    result = _worker(REDIS_URL=redis_url, KAFKA_BROKER_URL=url, BROKER_CONNECT_TIMEOUT_SECONDS="3")
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and f"Kafka broker {url}" in lines[0]
    assert "BROKER_CONNECT_TIMEOUT_SECONDS" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.broker
@pytest.mark.slow
def test_sigterm_during_a_catch_up_stops_the_worker(broker, redis_url, tmp_path):
    """SIGTERM while thousands of records are fetched but not processed yet (a backlog,
    labels included): the worker leaves cleanly (exit 0) instead of waiting forever for
    the events its streams skipped (a fresh-clone review found it hanging; skipped
    events are neither acknowledged nor waited for, see ``app/stream/streaming.py``)."""
    import asyncio
    import signal

    from app.config import Settings
    from app.replay import replay_frame

    from .datasets import handbook_days
    from .worker_utils import Worker, worker_env

    df = handbook_days("2018-04-01", 3)
    env = worker_env(broker.url, redis_url, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        run = Settings(kafka_broker_url=broker.url, transactions_topic=env["TRANSACTIONS_TOPIC"],
                       labels_topic=env["LABELS_TOPIC"])
        asyncio.run(replay_frame(df, run, create_topics=False))
        worker.wait_metric("fraud_transactions_scored_total", 500)
        scored = worker.metric("fraud_transactions_scored_total")
        assert scored < len(df), "the worker must still have a backlog when stopped"
        # SIGTERM; Worker.stop falls back to SIGKILL (exit -9) after the timeout
        code = worker.stop(signal.SIGTERM, timeout=120)
    finally:
        worker.stop(signal.SIGKILL)
    assert code == 0, worker.tail()


@pytest.mark.broker
@pytest.mark.both_brokers
def test_worker_refuses_a_transactions_topic_of_another_partition_count(
    broker, redis_url, make_topic, tmp_path
):
    """The tables are co-partitioned with the transactions topic: a topic of 8
    partitions with TOPIC_PARTITIONS=4 is one line naming both, exit 78, before the
    worker joins the group (else Faust fails at the assignment with a traceback)."""
    from .worker_utils import worker_env

    topic = make_topic("tx-eight", partitions=8)
    env = worker_env(broker.url, redis_url, tmp_path, TRANSACTIONS_TOPIC=topic, TOPIC_PARTITIONS="4")
    result = _worker(**{k: v for k, v in env.items() if k != "WEB_PORT"})
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"topic {topic!r} has 8 partitions but TOPIC_PARTITIONS=4" in lines[0]


@pytest.mark.broker
@pytest.mark.both_brokers
def test_worker_creates_its_missing_topics(broker, redis_url, tmp_path):
    """On a cluster that creates no topic on first use (the test Kafka, as production
    clusters run), the start check creates every topic of the worker before it joins
    its group: none is missing when the first alert is sent, and none is missing from
    the group leader's metadata when it assigns partitions (a by-terminal topic created
    only by Faust during the join was left unassigned for minutes on Kafka)."""
    import asyncio

    from app.config import Settings
    from app.stream.offsets import ensure_worker_topics

    from .worker_utils import worker_env

    env = worker_env(broker.url, redis_url, tmp_path)
    settings = Settings(
        kafka_broker_url=broker.url,
        **{k.lower(): env[k] for k in (
            "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "SCORED_TOPIC", "ALERTS_TOPIC", "DEAD_LETTER_TOPIC"
        )},
    )
    settings = settings.model_copy(update={"app_id": env["APP_ID"]})
    created = asyncio.run(ensure_worker_topics(settings))
    assert sorted(created) == sorted([
        *(env[k] for k in (
            "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "SCORED_TOPIC", "ALERTS_TOPIC", "DEAD_LETTER_TOPIC"
        )),
        f"{env['APP_ID']}-transactions-by-terminal",
        f"{env['APP_ID']}-account_states-changelog",
        f"{env['APP_ID']}-terminal_states-changelog",
    ])
    assert asyncio.run(ensure_worker_topics(settings)) == []  # idempotent


def test_worker_tables_are_the_ones_whose_changelogs_the_start_check_creates():
    """The start check creates the changelog of every table of the app."""
    from app.stream.main import app  # the app first: app.stream.tables registers on it
    from app.stream.offsets import WORKER_TABLES
    from app.stream.tables import account_states, terminal_states

    assert {account_states.name, terminal_states.name} == set(WORKER_TABLES)
    assert set(app.tables) == set(WORKER_TABLES)


@pytest.mark.broker
@pytest.mark.parametrize(
    "broker_kind", [k for k in BROKER_KINDS if k == "kafka"], indirect=True, scope="session"
)
def test_worker_refuses_a_session_timeout_the_broker_would_refuse(broker, redis_url, tmp_path):
    """Kafka refuses a group member whose session timeout is below its
    group.min.session.timeout.ms (6 s by default); aiokafka logs it and the worker would
    never consume. The start check reads the bounds (DescribeConfigs) and refuses in one
    line, exit 78. Kafka only: Tansu accepts any timeout and has no bounds to read."""
    from .worker_utils import worker_env

    env = worker_env(broker.url, redis_url, tmp_path, BROKER_SESSION_TIMEOUT_SECONDS="3")
    env = {k: v for k, v in env.items() if k != "WEB_PORT"}
    result = _worker(**env)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "BROKER_SESSION_TIMEOUT_SECONDS=3 is outside the broker's" in lines[0]
    assert "6 s" in lines[0]


def test_producers_are_idempotent_where_the_broker_grants_a_producer_id(
    broker, redis_url, tmp_path, monkeypatch
):
    """A send the broker wrote but whose answer was lost (a broker killed, a leader
    moved) is sent again: without an idempotent producer the same alert is written
    twice. The worker's producer is idempotent where the broker grants a producer id
    (Apache Kafka) and says so at start; where it does not (Tansu answers
    InitProducerId with an error) it says that sends can be written twice, and
    ``PRODUCER_IDEMPOTENCE=true`` refuses the start (exit 78)."""
    import asyncio
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import Producer

    from app.config import Settings
    from app.stream.offsets import use_idempotent_producer
    from app.stream.streaming import idempotent_producer

    from .worker_utils import Worker, worker_env

    granted = asyncio.run(use_idempotent_producer(Settings(kafka_broker_url=broker.url), 10.0))
    assert granted is (broker.kind == "kafka")
    monkeypatch.setattr(Producer, "_settings_extra", Producer._settings_extra)  # restored after
    idempotent_producer()  # what the worker does when granted: Faust's producer asks for it
    extra = Producer._settings_extra(SimpleNamespace(app=SimpleNamespace(in_transaction=False)))
    assert extra["enable_idempotence"] is True and extra["acks"] == "all"

    env = worker_env(broker.url, redis_url, tmp_path)
    w = Worker({**env, "DATA_DIR": str(tmp_path / "data")}, tmp_path / "worker.log").start()
    try:
        w.wait_ready()
        w.assert_alive()  # its producer started (on Kafka: with a producer id)
    finally:
        w.stop()
    log = w.tail(1_000_000)
    if broker.kind == "kafka":
        assert "producer: idempotent (PRODUCER_IDEMPOTENCE=auto)" in log, log[-2000:]
    else:
        assert "producer: not idempotent (PRODUCER_IDEMPOTENCE=auto, the broker grants no producer id)" in log
        refused = _worker(**{**env, "PRODUCER_IDEMPOTENCE": "true"})
        assert refused.returncode == 78, refused.stderr
        assert "PRODUCER_IDEMPOTENCE=true but the broker" in refused.stderr

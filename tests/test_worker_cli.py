"""``python -m app worker`` refuses to start, in one line, before joining the group."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .worker_utils import ROOT


def _worker(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**os.environ, **env},
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
    events are neither acknowledged nor waited for, see ``app/streaming.py``)."""
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

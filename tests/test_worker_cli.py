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

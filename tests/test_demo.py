"""``fraudctl demo`` end to end on the real broker and real Redis (a small run: one day
of history, ten seconds live), and the figures of its live phase."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from app.demo_report import LiveRun, write_picture

from .worker_utils import free_port

FRAUDCTL = str(Path(sys.executable).parent / "fraudctl")


def _run_of(n: int) -> LiveRun:
    """n transactions, one an hour, every third a fraud; sent at 1 s intervals, scored
    after 40 + i ms, alerts on the even ones after 60 + i ms."""
    ids = [f"t{i}" for i in range(n)]
    run = LiveRun(truth={t: i % 3 == 0 for i, t in enumerate(ids)},
                  event_hour={t: i for i, t in enumerate(ids)})
    for i, t in enumerate(ids):
        run.sent(t, 1_000_000 + 1000 * i)
        run.scored(t, 1_000_000 + 1000 * i + 40 + i)
        if i % 2 == 0:
            run.alerted(t, 1_000_000 + 1000 * i + 60 + i)
    run.scored("unknown", 5)  # a transaction of another run: ignored
    return run


def test_live_figures_and_hourly_series():
    run = _run_of(12)
    f = run.figures()
    assert (f.sent, f.scored, f.alerts, f.frauds) == (12, 12, 6, 4)
    assert f.true_alerts == 2  # t0, t6
    assert (f.precision, f.recall) == (2 / 6, 2 / 4)
    assert f.scored_ms_p50 == pytest.approx(45.5) and f.alert_ms_p50 == pytest.approx(65.0)
    h = run.hourly()
    assert h["alerts"].tolist() == [1, 0] * 6
    assert h["frauds"].sum() == 4 and h["true_alerts"].sum() == 2
    assert math.isclose(h["precision"][-1], f.precision) and math.isclose(h["recall"][-1], f.recall)
    assert math.isnan(LiveRun({}, {}).figures().scored_ms_p50)


def test_picture_is_a_png(tmp_path):
    path = write_picture(_run_of(48), tmp_path / "sub" / "demo.png", "test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.broker
def test_demo_runs_end_to_end_and_leaves_nothing(broker, redis_url, tmp_path):
    env = dict(os.environ)
    env.update(
        KAFKA_BROKER_URL=broker.url, REDIS_URL=redis_url, RUN_DIR=str(tmp_path / "run"),
        COLUMNS="200",
    )
    picture = tmp_path / "demo.png"
    run = subprocess.run(
        [FRAUDCTL, "demo", "--warm-days", "1", "--days", "1", "--rate", "100",
         "--live-seconds", "10", "--show", "2", "--picture", str(picture),
         "--web-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "history: scored" in out and "demo summary" in out
    assert re.search(r"latency send → scored record\s*│\s*p50 [\d,]+ ms, p99 [\d,]+ ms", out), out
    assert re.search(r"alerts\s*│\s*\d+ \(\d+ on frauds\)", out), out
    assert "nothing left running" in out
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pid = int(re.search(r"worker pid (\d+)", out).group(1))
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match="demo-*")) == []  # its alert ids are deleted
    finally:
        client.close()

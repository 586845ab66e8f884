"""Dead letters that can be worked: a real worker, the real broker, real Redis and the
``fraudctl dead-letters`` commands run as processes, the way an operator runs them.

The story: a worker runs with a payload limit (``MAX_EVENT_BYTES=400``) that a card
processor's new, larger records exceed (they carry a new field, which the contract
accepts, but they no longer fit). They are dead-lettered as ``too_large``. The fix:
the worker restarts with ``MAX_EVENT_BYTES=2000``. ``redrive --reason too_large`` sends
them back: every transaction is scored exactly once, no alert is raised twice
(``ALERT_THRESHOLD=0``: every scored transaction alerts), and the records that are
still too large come back to the dead-letter topic with their re-drive header, so a
second re-drive refuses them (and the re-driven ones).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import orjson
import pytest

from app.deadletters import header_value, plan_redrive, read_entry, select, Selection
from app.events import REDRIVE_HEADER, Alert, DeadLetter, ScoredTransaction

from .worker_utils import ROOT, Worker, produce, read_topic, worker_env

pytestmark = [pytest.mark.broker]

T0 = 1_530_662_400_000
N_SMALL, N_LARGE, N_HUGE = 30, 10, 2


def _tx(i: int, pad: int = 0) -> dict:
    d = {
        "transaction_id": f"tx-{i}",
        "account_id": f"acc-{i % 3}",
        "terminal_id": f"m-{i % 4}",
        "amount_minor": 1000 + 37 * i,
        "currency": "EUR",
        "event_time_ms": T0 + i * 60_000,
        "mcc": "5411",  # a field the contract does not list: accepted, counted
    }
    if pad:
        d["note"] = "x" * pad
    return d


N = N_SMALL + N_LARGE + N_HUGE
HUGE = {3, 23}
LARGE = {i for i in range(N) if i % 4 == 1 and i < 40}
assert len(LARGE) == N_LARGE and not HUGE & LARGE


def _records() -> list[tuple[bytes, bytes]]:
    """In event-time order; the large and huge records among the small ones."""
    out = []
    for i in range(N):
        pad = 5000 if i in HUGE else (600 if i in LARGE else 0)
        d = _tx(i, pad)
        out.append((d["account_id"].encode(), orjson.dumps(d)))
    return out


def _fraudctl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        cwd=ROOT, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.both_brokers
def test_dead_letters_fixed_and_redriven_are_scored_exactly_once(broker, redis_url, tmp_path):
    env = worker_env(broker.url, redis_url, tmp_path, MAX_EVENT_BYTES="400", ALERT_THRESHOLD="0")
    worker = Worker(env, tmp_path / "worker-1.log").start()
    n_rejected = N_LARGE + N_HUGE
    try:
        worker.wait_ready()
        produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], _records())
        worker.wait_metric("fraud_transactions_scored_total", N_SMALL, timeout=180)
        worker.wait_metric("fraud_events_rejected_total", n_rejected, timeout=60, reason="too_large")
        topic = env["TRANSACTIONS_TOPIC"]
        assert worker.metric("fraud_unknown_fields_total", topic=topic, field="mcc") == N_SMALL
    finally:
        worker.stop()

    # the operator looks at the dead letters
    listed = _fraudctl(env, "dead-letters", "list", "--reason", "too_large", "--format", "jsonl")
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == n_rejected
    assert all(r["reason"] == "too_large" and not r["redriven"] for r in rows)
    table = _fraudctl(env, "dead-letters", "list")
    assert table.returncode == 0 and f"{n_rejected} dead letters: too_large {n_rejected}" in table.stdout
    shown = _fraudctl(env, "dead-letters", "show", rows[0]["id"])
    assert shown.returncode == 0 and "reason:         too_large" in shown.stdout
    raw = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "dead-letters", "show", "--raw", rows[0]["id"]],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )
    assert orjson.loads(raw.stdout)["note"].startswith("xxx")
    unselective = _fraudctl(env, "dead-letters", "redrive")
    assert unselective.returncode == 2 and "--all" in unselective.stderr
    bad_id = _fraudctl(env, "dead-letters", "show", "first")
    assert bad_id.returncode == 2 and "expected <partition>/<offset>" in bad_id.stderr

    # the fix, then the re-drive
    env2 = {**env, "MAX_EVENT_BYTES": "2000"}
    worker = Worker(env2, tmp_path / "worker-2.log").start()
    try:
        worker.wait_ready()
        dry = _fraudctl(env2, "dead-letters", "redrive", "--reason", "too_large", "--dry-run")
        assert dry.returncode == 0 and f"{n_rejected} to re-drive, 0 refused" in dry.stdout
        done = _fraudctl(env2, "dead-letters", "redrive", "--reason", "too_large")
        assert done.returncode == 0, done.stderr
        assert f"{n_rejected} re-driven, 0 refused" in done.stdout
        worker.wait_metric("fraud_transactions_scored_total", N_LARGE, timeout=180)
        worker.wait_metric("fraud_events_rejected_total", N_HUGE, timeout=60, reason="too_large")

        # again: nothing is sent twice
        again = _fraudctl(env2, "dead-letters", "redrive", "--reason", "too_large")
        assert again.returncode == 0, again.stderr
        assert f"0 re-driven, {n_rejected + N_HUGE} refused" in again.stdout
        assert again.stdout.count("already re-driven") == n_rejected
        assert again.stdout.count("rejected again after a re-drive") == N_HUGE
    finally:
        worker.stop()

    dead = read_topic(broker.bootstrap, env["DEAD_LETTER_TOPIC"])
    assert len(dead) == n_rejected + N_HUGE
    again_dead = [r for r in dead if any(k == REDRIVE_HEADER for k, _ in r.headers)]
    assert len(again_dead) == N_HUGE
    originals = {header_value(env["DEAD_LETTER_TOPIC"], r.partition, r.offset) for r in dead}
    for r in again_dead:
        dl = DeadLetter.model_validate_json(r.value)
        assert dl.reason == "too_large" and orjson.loads(dl.raw_value)["transaction_id"] in {
            f"tx-{i}" for i in HUGE
        }
        origin = dict(r.headers)[REDRIVE_HEADER].decode()
        assert origin in originals

    scored = [ScoredTransaction.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["SCORED_TOPIC"])]
    once = Counter({f"tx-{i}": 1 for i in range(N) if i not in HUGE})
    assert Counter(s.transaction.transaction_id for s in scored) == once
    alerts = [Alert.model_validate_json(r.value) for r in read_topic(broker.bootstrap, env["ALERTS_TOPIC"])]
    assert Counter(a.alert_id for a in alerts) == once


def test_selection_by_reason_time_partition_offset_and_id():
    def entry(p, o, reason, src_p, src_o, t, redriven=None):
        value = orjson.dumps({
            "source_topic": "tx", "partition": src_p, "offset": src_o, "reason": reason,
            "detail": "", "raw_value_b64": "e30=", "raw_size_bytes": 2, "raw_sha256": "",
            "rejected_time_ms": t,
        })
        headers = [(REDRIVE_HEADER, redriven.encode())] if redriven else []
        return read_entry(p, o, t, value, headers)

    entries = [
        entry(0, 0, "too_large", 1, 10, 1000),
        entry(0, 1, "not_json", 1, 11, 2000),
        entry(1, 0, "too_large", 2, 5, 3000),
        entry(1, 1, "too_large", 2, 6, 4000, redriven="dlq/0/0"),
    ]
    ids = lambda sel: [e.id for e in select(entries, sel)]  # noqa: E731
    assert ids(Selection(reasons=("too_large",))) == ["0/0", "1/0", "1/1"]
    assert ids(Selection(since_ms=2000, until_ms=4000)) == ["0/1", "1/0"]
    assert ids(Selection(source_partition=2, offset_from=6)) == ["1/1"]
    assert ids(Selection(offset_from=5, offset_to=10)) == ["0/0", "1/0", "1/1"]
    assert ids(Selection(ids=((1, 0), (0, 1)))) == ["0/1", "1/0"]
    assert Selection().empty and not Selection(reasons=("x",)).empty
    plan = plan_redrive(select(entries, Selection()), {("tx", 1, 11)}, ["tx"])
    assert [e.id for e in plan.send] == ["0/0", "1/0"]
    assert [(e.id, why.split(" ")[0]) for e, why in plan.refused] == [("0/1", "already"), ("1/1", "rejected")]
    assert plan_redrive(entries[:1], set(), ["labels"]).refused[0][1] == "source topic tx is not an input topic"

"""Operations nobody scripted, through real worker processes, the real broker and Redis.

* A rolling restart while the scoring stage holds transactions: a worker joins, and as
  soon as it is ready another gets SIGTERM; then its replacement joins and the second
  old worker gets SIGTERM. Every stopped worker must exit (status 0) instead of waiting
  on held work, and the run must equal an uninterrupted one (nothing lost, each alert
  once, same table state). ``ROLLING_RESTART_RUNS`` repeats it (``make test-full``: 10).
* Membership changes while records flow (a replay at a steady rate runs through them),
  in four shapes: a worker SIGTERMed the moment a joining one logs ``Ready`` (then the
  other, at its replacement's ``Ready``); two workers joining at once; a worker stopped
  while it restores its tables; a worker SIGKILLed during a rebalance. Each: every
  transaction scored, each alert once (equal to an uninterrupted run), and every
  partition of the transactions topic read to its end (the group's committed offset
  equals its end offset), and no partition of it idle for more than 30 s while it has
  records (sampled from outside every second: the group's committed offset standing
  still below the end offset). ``FLOW_RESTART_RUNS`` repeats each shape,
  ``FLOW_RESTART_SHAPES`` picks them (``all`` in ``make test-full``).
* A partition the worker stops fetching (``DEBUG_PAUSE_PARTITION``) is found by the
  stall watch, told once, counted and read again without a restart; so is a changelog
  partition a table recovery stops receiving (the recovery ends, every account restored).
* A catch-up of about 48,000 transactions (200,000 in ``make test-full``,
  ``CATCHUP_DAYS=21``) with their labels while two busy-loop
  processes load both cores: every transaction's features and score equal offline
  (<= 1e-9) and no transaction is released by the stall rule.
* Bad clocks and reordering: one far-future transaction per account is dead-lettered
  and changes nothing; a slice delivered in reverse order inside 30-minute blocks gives
  exactly the offline features except for the transactions counted as revised.

Counts are printed (``pytest -s``) as ``FAULT-REPORT`` lines and appended to
``FAULT_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from app.config import Settings
from app.data.handbook import to_transactions
from app.events import Transaction, encode
from app.replay import DAY_MS, replay_frame

from . import fault_utils as fu
from .datasets import handbook_days
from .parity_utils import compare, offline
from .test_faults import (  # noqa: F401 - fixtures, shared with the fault tests
    _produce_early_labels,
    _wait_both_assigned,
    baseline,
    replayed_ids,
    slice_df,
)
from .worker_utils import Worker, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.both_brokers]

ROLLING_RESTART_RUNS = int(os.environ.get("ROLLING_RESTART_RUNS", "1"))
#: days of the catch-up (5 days from 2018-04-01: about 48,000 transactions; 21 days,
#: about 200,000, in `make test-full`)
CATCHUP_DAYS = int(os.environ.get("CATCHUP_DAYS", "5"))
#: a stop that takes longer than this is a stall (the target is seconds; this only
#: tells a hang from a slow machine, it is no performance figure)
STOP_LIMIT_SECONDS = 90.0
#: after the slice (2018-04-01 + 2 days): a label timed here completes every transaction
LATE_LABEL_MS = 1_525_132_800_000  # 2018-05-01


def _start(env: dict[str, str], tmp: Path, name: str) -> Worker:
    return Worker({**env, "DATA_DIR": str(tmp / f"data-{name}")}, tmp / f"worker-{name}.log").start()


def _wait_log(w: Worker, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.assert_alive()
        if text in w.tail(1_000_000):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not logged after {timeout}s: {w.tail()}")


def _wait_sum(workers: list[Worker], name: str, value: float, timeout: float = 180.0) -> float:
    deadline = time.monotonic() + timeout
    got = 0.0
    while time.monotonic() < deadline:
        got = sum(w.metric(name) for w in workers if w.proc and w.proc.poll() is None)
        if got >= value:
            return got
        time.sleep(0.3)
    raise TimeoutError(f"{name} = {got} < {value} after {timeout}s")


def _stop_timed(w: Worker) -> tuple[int | None, float, float]:
    """SIGTERM; (exit status, seconds to exit, transactions it held just before)."""
    held = w.metric("fraud_alignment_pending")
    start = time.monotonic()
    code = w.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
    return code, time.monotonic() - start, held


def _rolling_restart_once(broker, redis_url, tmp: Path, df, ids, baseline) -> dict:
    env = worker_env(broker.url, redis_url, tmp)
    # every transaction is held: a genuine label on each labels partition, timed before
    # the slice, keeps the labels from being idle, and no source stalls within 300 s
    hold = {**env, "LABEL_IDLE_SECONDS": "60", "ALIGNMENT_STALL_SECONDS": "300"}
    n = len(df)
    workers: dict[str, Worker] = {}
    stops: dict[str, tuple] = {}
    try:
        a = workers["a"] = _start(hold, tmp, "a")
        b = workers["b"] = _start(hold, tmp, "b")
        a.wait_ready()
        b.wait_ready()
        _wait_both_assigned(a, b, env)
        _produce_early_labels(broker.bootstrap, env["LABELS_TOPIC"], partitions=4)
        fu.replay(df, broker.url, env)
        _wait_sum([a, b], "fraud_transactions_consumed_total", n)
        held = _wait_sum([a, b], "fraud_alignment_pending", n // 2)
        c = workers["c"] = _start(hold, tmp, "c")
        _wait_log(c, "Ready")  # a rebalance is under way or just over
        stops["a"] = _stop_timed(a)
        a2 = workers["a2"] = _start(hold, tmp, "a2")
        _wait_log(a2, "Ready")
        stops["b"] = _stop_timed(b)
        # complete every transaction: a label timed after the slice on each partition
        _produce_early_labels(broker.bootstrap, env["LABELS_TOPIC"], 4, LATE_LABEL_MS)
        run = fu.collect(broker.bootstrap, env, ids, timeout=300)
        c.assert_alive()
        a2.assert_alive()
        stops["c"] = _stop_timed(c)
        stops["a2"] = _stop_timed(a2)
    finally:
        for w in workers.values():
            w.stop(signal.SIGKILL)
    summary = run.summary(ids, baseline)
    summary.update(
        held_before_join=held,
        stops={k: {"status": v[0], "seconds": round(v[1], 2), "held": v[2]} for k, v in stops.items()},
    )
    fu.report("rolling-restart", summary)
    for name, (code, seconds, _) in stops.items():
        assert code == 0, f"worker {name} did not stop within {STOP_LIMIT_SECONDS} s (status {code})"
    fu.assert_same_as(run, baseline, ids)
    return summary


def test_rolling_restart_with_held_transactions(
    broker, redis_url, tmp_path, slice_df, replayed_ids, baseline
):
    """Workers asked to stop during or right after a rebalance hand their held
    transactions over (unacknowledged) instead of waiting for them: each exits, the
    group keeps scoring, and the outputs equal an uninterrupted run."""
    seconds = []
    for i in range(ROLLING_RESTART_RUNS):
        tmp = tmp_path / f"run-{i}"
        tmp.mkdir()
        summary = _rolling_restart_once(broker, redis_url, tmp, slice_df, replayed_ids, baseline)
        seconds += [s["seconds"] for s in summary["stops"].values()]
    print(
        f"\nrolling restarts: {ROLLING_RESTART_RUNS} runs, {len(seconds)} stops, all exited 0; "
        f"seconds to exit: max {max(seconds):.2f}, "
        f"within 10 s: {sum(s <= 10 for s in seconds)} of {len(seconds)}"
    )


FLOW_RESTART_RUNS = int(os.environ.get("FLOW_RESTART_RUNS", "1"))
#: shapes run by default in `make test`; FLOW_RESTART_SHAPES=all runs every one
_DEFAULT_SHAPES = ("sigterm-at-joiner-ready",)
_SHAPES = ("sigterm-at-joiner-ready", "two-join-at-once", "stop-while-restoring", "sigkill-during-rebalance")
FLOW_SHAPES = (
    _SHAPES if os.environ.get("FLOW_RESTART_SHAPES") == "all"
    else tuple(os.environ.get("FLOW_RESTART_SHAPES", ",".join(_DEFAULT_SHAPES)).split(","))
)
#: transactions/s of the replay that runs through the membership changes
FLOW_RATE = float(os.environ.get("FLOW_RATE", "120"))


async def _group_progress(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (committed offset, true end offset)} of ``group`` on ``topic``."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    from app.stream.offsets import true_end_offsets

    # the topic's partitions from the broker (a consumer subscribed to nothing has no
    # metadata of it), the group's committed offsets without joining it (an OffsetFetch
    # of assigned partitions), then the true end offsets with a consumer of no group
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described.get("partitions") or ()]
    tps.sort()
    assert tps, f"no partitions of {topic!r} in the broker's metadata: {described}"
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await member.start()
    await reader.start()
    try:
        member.assign(tps)
        committed = {tp: await member.committed(tp) for tp in tps}
        ends = await true_end_offsets(reader, tps)
        return {
            tp.partition: (committed[tp] if committed[tp] is not None else -1, ends[tp])
            for tp in tps
        }
    finally:
        for client in (reader, member):
            try:
                await client.stop()
            except asyncio.CancelledError:  # aiokafka cancels its own offset-reset task
                pass


#: a partition whose committed offset stands still this long while records are beyond
#: it is left behind (the membership tests fail on it)
IDLE_LIMIT_SECONDS = 30.0


class _IdleWatch(threading.Thread):
    """Samples, every ``interval`` seconds from outside the workers, the consumer group's
    committed offset and the true end offset of every partition of ``topics``; keeps,
    per topic, the longest time a partition's committed offset stood still while
    records were beyond it (idle while it has records), in seconds."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], interval: float = 1.0):
        super().__init__(name="idle-watch", daemon=True)
        self.bootstrap, self.group, self.topics, self.interval = bootstrap, group, topics, interval
        self.longest: dict[str, float] = {t: 0.0 for t in topics}
        self.samples = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> dict[str, float]:
        """Stop sampling; the longest idle time per topic (seconds)."""
        self._done.set()
        self.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the idle watch failed: {self.error!r}")
        assert self.samples > 0, "the idle watch took no sample"
        return {t: round(v, 1) for t, v in self.longest.items()}

    async def _watch(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition

        from app.stream.offsets import true_end_offsets

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(self.topics)
        finally:
            await admin.close()
        tps = sorted(
            TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
        )
        member = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
        )
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await member.start()
        await reader.start()
        try:
            member.assign(tps)  # for OffsetFetch only: it joins no group, commits nothing
            last: dict = {}
            since: dict = {}
            while not self._done.is_set():
                now = time.monotonic()
                committed = {tp: await member.committed(tp) for tp in tps}
                ends = await true_end_offsets(reader, tps)
                for tp in tps:
                    c = committed[tp] or 0  # nothing committed: read from the beginning
                    if c != last.get(tp) or c >= ends[tp]:
                        last[tp], since[tp] = c, now
                    else:
                        self.longest[tp.topic] = max(self.longest[tp.topic], now - since[tp])
                self.samples += 1
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - now)))
        finally:
            for client in (reader, member):
                try:
                    await client.stop()
                except asyncio.CancelledError:
                    pass


def _wait_read_to_end(
    bootstrap: str, env: dict[str, str], timeout: float = 60.0, topic: str | None = None
) -> dict:
    """Wait until the group's committed offset of every partition of ``topic`` (default:
    the transactions topic) equals its end offset; the last progress seen."""
    topic = topic or env["TRANSACTIONS_TOPIC"]
    deadline = time.monotonic() + timeout
    while True:
        progress = asyncio.run(_group_progress(bootstrap, env["APP_ID"], topic))
        if all(c == e for c, e in progress.values()):
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic}: partitions not read to their end (committed, end): {progress}")
        time.sleep(1.0)


def _flow_restart_once(shape: str, broker, redis_url, tmp: Path, df, ids, baseline) -> dict:
    env = worker_env(broker.url, redis_url, tmp)
    workers: dict[str, Worker] = {}
    codes: dict[str, int | None] = {}
    watch = _IdleWatch(broker.bootstrap, env["APP_ID"], [env["TRANSACTIONS_TOPIC"]])
    try:
        a = workers["a"] = _start(env, tmp, "a")
        b = workers["b"] = _start(env, tmp, "b")
        a.wait_ready()
        b.wait_ready()
        _wait_both_assigned(a, b, env)
        watch.start()
        flow = fu.BackgroundReplay(df, broker.url, env, rate=FLOW_RATE)
        _wait_sum([a, b], "fraud_transactions_consumed_total", len(df) // 5)
        if shape == "sigterm-at-joiner-ready":
            c = workers["c"] = _start(env, tmp, "c")
            _wait_log(c, "Ready")
            codes["a"] = a.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
            d = workers["d"] = _start(env, tmp, "d")
            _wait_log(d, "Ready")
            codes["b"] = b.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
        elif shape == "two-join-at-once":
            workers["c"] = _start(env, tmp, "c")
            d = workers["d"] = _start(env, tmp, "d")
            _wait_log(d, "Ready")
            codes["a"] = a.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
        elif shape == "stop-while-restoring":
            c = workers["c"] = _start(env, tmp, "c")
            _wait_log(c, "Restoring state from changelog topics")
            codes["c"] = c.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
            d = workers["d"] = _start(env, tmp, "d")
            _wait_log(d, "Ready")
            codes["a"] = a.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
        elif shape == "sigkill-during-rebalance":
            c = workers["c"] = _start(env, tmp, "c")
            _wait_log(c, "Setting newly assigned partitions")
            b.stop(signal.SIGKILL)
            _wait_log(c, "Ready")
        else:
            raise ValueError(f"unknown shape {shape!r} (FLOW_RESTART_SHAPES): {_SHAPES}")
        flow.join()
        run = fu.collect(broker.bootstrap, env, ids, timeout=300)
        progress = _wait_read_to_end(broker.bootstrap, env)
        idle = watch.stop()[env["TRANSACTIONS_TOPIC"]]
        survivors = [w for w in workers.values() if w.proc and w.proc.poll() is None]
        stalls = sum(w.metric("fraud_partition_stalls_total") for w in survivors)
    finally:
        watch._done.set()
        for w in workers.values():
            w.stop(signal.SIGKILL)
    summary = run.summary(ids, baseline)
    summary.update(shape=shape, broker=broker.kind, stop_codes=codes, stalls_resumed=stalls,
                   committed_vs_end=progress, longest_idle_seconds=idle)
    fu.report("flow-restart", summary)
    for name, code in codes.items():
        assert code == 0, f"worker {name} did not stop within {STOP_LIMIT_SECONDS} s (status {code})"
    assert idle <= IDLE_LIMIT_SECONDS, (
        f"a transactions partition was idle {idle} s while it had records "
        f"(its committed offset stood still below the end offset)"
    )
    fu.assert_same_as(run, baseline, ids)
    return summary


@pytest.mark.parametrize("shape", [pytest.param(s, id=s) for s in FLOW_SHAPES])
def test_membership_changes_while_records_flow(
    shape, broker, redis_url, tmp_path, slice_df, replayed_ids, baseline
):
    """Workers join, stop and die while transactions arrive: nothing is left unread,
    nothing lost, each alert once."""
    for i in range(FLOW_RESTART_RUNS):
        tmp = tmp_path / f"{shape}-{i}"  # names the run's topics and consumer group
        tmp.mkdir()
        _flow_restart_once(shape, broker, redis_url, tmp, slice_df, replayed_ids, baseline)


#: the stalled-partition test's PARTITION_STALL_SECONDS
STALL_SECONDS = 10


def test_a_stalled_partition_is_found_and_read_again(
    broker, redis_url, tmp_path, slice_df, replayed_ids, baseline
):
    """A worker that stops fetching a partition it owns, while records arrive on it:
    the stall watch tells it once, counts it, and the worker reads it again (no
    restart); every transaction is scored, each alert once."""
    env = worker_env(broker.url, redis_url, tmp_path)
    stalled_env = {
        **env,
        "DEBUG_PAUSE_PARTITION": f"{env['TRANSACTIONS_TOPIC']}:1",
        "PARTITION_STALL_SECONDS": str(STALL_SECONDS),
        "METRICS_INTERVAL_SECONDS": "1",
    }
    w = _start(stalled_env, tmp_path, "a")
    # the membership tests' idle watch sees this stall too (it is no blind instrument)
    watch = _IdleWatch(broker.bootstrap, env["APP_ID"], [env["TRANSACTIONS_TOPIC"]])
    try:
        w.wait_ready()
        watch.start()
        flow = fu.BackgroundReplay(slice_df, broker.url, env, rate=FLOW_RATE * 2)
        _wait_log(w, "DEBUG_PAUSE_PARTITION")
        flow.join()
        run = fu.collect(broker.bootstrap, env, replayed_ids, timeout=300)
        _wait_read_to_end(broker.bootstrap, env)
        idle = watch.stop()[env["TRANSACTIONS_TOPIC"]]
        stalls = w.metric("fraud_partition_stalls_total", topic=env["TRANSACTIONS_TOPIC"])
        log = w.tail(10_000_000)
    finally:
        watch._done.set()
        w.stop(signal.SIGKILL)
    told = [line for line in log.splitlines() if "not read for" in line]
    fu.report("stalled-partition", {"broker": broker.kind, "stalls_resumed": stalls,
                                    "told": len(told), "longest_idle_seconds": idle})
    assert stalls >= 1
    # the partition's records begin to arrive within a second or two of the worker's
    # assignment, from which the worker's own watch counts
    assert idle >= STALL_SECONDS / 2, f"the idle watch saw the stalled partition idle only {idle} s"
    assert len(told) == 1, told
    assert f"{env['TRANSACTIONS_TOPIC']}[1]" in told[0]
    fu.assert_same_as(run, baseline, replayed_ids)


#: tombstones added to one changelog partition so that a table recovery lasts seconds
RECOVERY_PADDING = 50_000


async def _tombstones(bootstrap: str, topic: str, partition: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, None, key=f'"padding-{i}"'.encode(), partition=partition)
            for i in range(n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_a_stalled_table_recovery_is_found_and_resumed(broker, redis_url, tmp_path, slice_df):
    """A worker whose table recovery receives nothing from a changelog partition (the
    partition stops being fetched while records of it remain to be restored): the
    recovery watch tells it once, counts it and fetches it again; the recovery ends
    with every account restored, without a restart. A worker whose partition stays
    stopped through three such tries exits with status 75 (to be restarted)."""
    env = worker_env(broker.url, redis_url, tmp_path)
    a = _start(env, tmp_path, "a")
    try:
        a.wait_ready()
        part = slice_df.head(1500)
        fu.replay(part, broker.url, env)
        _wait_sum([a], "fraud_transactions_consumed_total", len(part))
        deadline = time.monotonic() + 60
        while (accounts := a.metric("fraud_table_accounts")) < part["CUSTOMER_ID"].nunique():
            assert time.monotonic() < deadline, f"{accounts} accounts in the table"
            time.sleep(0.5)
    finally:
        a_code = a.stop(signal.SIGTERM)
    assert a_code == 0
    changelog = f"{env['APP_ID']}-account_states-changelog"
    asyncio.run(_tombstones(broker.bootstrap, changelog, 1, RECOVERY_PADDING))
    b = _start(
        {**env, "DEBUG_PAUSE_PARTITION": f"{changelog}:1", "PARTITION_STALL_SECONDS": "3",
         "METRICS_INTERVAL_SECONDS": "0.2"},
        tmp_path, "b",
    )
    try:
        _wait_log(b, "DEBUG_PAUSE_PARTITION")
        _wait_log(b, "Worker ready", timeout=120)
        stalls = b.metric("fraud_partition_stalls_total", topic=changelog)
        deadline = time.monotonic() + 30
        while (restored := b.metric("fraud_table_accounts")) != accounts:
            assert time.monotonic() < deadline, f"{restored} accounts restored of {accounts}"
            time.sleep(0.5)
        log = b.tail(10_000_000)
    finally:
        b.stop(signal.SIGKILL)
    told = [line for line in log.splitlines() if "table recovery has received nothing" in line]
    # a recovery that fetching again does not help: the worker gives up and exits 75
    c = _start(
        {**env, "DEBUG_PAUSE_PARTITION": f"{changelog}:1", "DEBUG_PAUSE_REPEATEDLY": "true",
         "PARTITION_STALL_SECONDS": "2", "METRICS_INTERVAL_SECONDS": "0.2"},
        tmp_path, "c",
    )
    try:
        code = c.proc.wait(timeout=180)
    finally:
        c.stop(signal.SIGKILL)
    given_up = [line for line in c.tail(10_000_000).splitlines() if "after 3 seeks" in line]
    fu.report("stalled-recovery", {"broker": broker.kind, "stalls_resumed": stalls,
                                   "told": len(told), "accounts": accounts, "exit_given_up": code})
    assert stalls >= 1
    assert len(told) == 1 and f"{changelog}[1]" in told[0], told
    assert code == 75, code
    assert len(given_up) == 1 and "exiting so that the worker is restarted" in given_up[0], given_up


def test_a_worker_stopped_while_its_broker_is_gone_exits(fresh_broker, redis_url, tmp_path, slice_df):
    """Operators stop workers while the broker is down: Faust's stop waits for the
    broker (events in progress, the last commit) for ever. The worker ends after
    WORKER_STOP_TIMEOUT_SECONDS with status 75 and says why; what it did not commit is
    processed again by its successor."""
    broker = fresh_broker()  # of the test's own: it is killed
    env = worker_env(broker.url, redis_url, tmp_path, WORKER_STOP_TIMEOUT_SECONDS="5")
    w = _start(env, tmp_path, "a")
    try:
        w.wait_ready()
        part = slice_df.head(1500)
        fu.replay(part, broker.url, env)
        _wait_sum([w], "fraud_transactions_consumed_total", 100)
        os.killpg(broker.pid, signal.SIGKILL)  # mid-stream, no goodbye
        time.sleep(1.0)
        start = time.monotonic()
        code = w.stop(signal.SIGTERM, timeout=STOP_LIMIT_SECONDS)
        took = time.monotonic() - start
    finally:
        w.stop(signal.SIGKILL)
    told = [line for line in w.tail(1_000_000).splitlines() if "stop not finished after 5 s" in line]
    fu.report("stop-without-broker", {"broker": broker.kind, "exit": code, "seconds": round(took, 1)})
    assert code == 75, (code, w.tail())
    assert len(told) == 1 and "WORKER_STOP_TIMEOUT_SECONDS" in told[0], told


def test_consumer_lag_metric_is_end_minus_committed(broker, redis_url, tmp_path, slice_df):
    """``fraud_consumer_lag`` of every transactions partition equals the partition's end
    offset minus the group's committed offset, as the broker tells them, also for a
    partition with a backlog (one the worker stopped fetching: DEBUG_PAUSE_PARTITION,
    with the stall watch's recovery out of reach)."""
    env = worker_env(broker.url, redis_url, tmp_path)
    topic = env["TRANSACTIONS_TOPIC"]
    w = _start(
        {**env, "DEBUG_PAUSE_PARTITION": f"{topic}:2", "PARTITION_STALL_SECONDS": "3600",
         "METRICS_INTERVAL_SECONDS": "1"},
        tmp_path, "a",
    )
    try:
        w.wait_ready()
        flow = fu.BackgroundReplay(slice_df, broker.url, env, rate=FLOW_RATE * 4)
        _wait_log(w, "DEBUG_PAUSE_PARTITION")
        flow.join()
        deadline = time.monotonic() + 120
        while True:
            progress = asyncio.run(_group_progress(broker.bootstrap, env["APP_ID"], topic))
            exported = {p: w.metric("fraud_consumer_lag", topic=topic, partition=str(p)) for p in progress}
            expected = {p: end - max(committed, 0) for p, (committed, end) in progress.items()}
            if exported == expected and expected[2] > 0 and sum(expected.values()) == expected[2]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"exported lag {exported} != end - committed {expected}")
            time.sleep(1.0)
    finally:
        w.stop(signal.SIGKILL)
    fu.report("consumer-lag", {"broker": broker.kind, "lag": exported})


@pytest.mark.timeout(3600)
def test_catch_up_on_a_busy_machine_scores_with_complete_features(broker, redis_url, tmp_path):
    """A backlog of about 48,000 transactions (or 200,000) with their labels, one worker, both
    cores loaded by busy loops: the watermarks move slowly but move, so nothing is
    released by the stall rule and every feature and score equals offline."""
    df = handbook_days("2018-04-01", CATCHUP_DAYS)
    n = len(df)
    if "CATCHUP_DAYS" not in os.environ:
        assert n >= 40_000, n
    expected = offline(df)
    env = worker_env(broker.url, redis_url, tmp_path, PUBLISH_SCORED="true")
    settings = Settings(
        kafka_broker_url=broker.url,
        app_id=env["APP_ID"],
        transactions_topic=env["TRANSACTIONS_TOPIC"],
        labels_topic=env["LABELS_TOPIC"],
    )
    stats = asyncio.run(replay_frame(df, settings, labels_delay_ms=7 * DAY_MS))
    assert stats.transactions == n and stats.labels > 0
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    worker = Worker(env, tmp_path / "worker.log")
    started = time.monotonic()
    try:
        worker.start()
        worker.wait_ready(timeout=300)
        worker.wait_metric("fraud_transactions_scored_total", n, timeout=3000)
        # the count includes records scored again (a partition sought back re-reads
        # what it had not committed): done once the scoring stage committed its input
        # to the end, which it does only past scored records
        for topic in (settings.transactions_topic, settings.by_terminal_topic):
            _wait_read_to_end(broker.bootstrap, env, timeout=600, topic=topic)
        seconds = time.monotonic() - started
        timeouts = worker.metric("fraud_alignment_timeouts_total")
        waited_max = worker.metric("fraud_alignment_wait_seconds_sum")
        stalls = worker.metric("fraud_partition_stalls_total")
    finally:
        for h in hogs:
            h.kill()
            h.wait(10)
        worker.stop()
    records = read_topic(broker.bootstrap, env["SCORED_TOPIC"], idle_seconds=3, timeout=600)
    result = compare(records, expected)
    scored_ids = [s.transaction.transaction_id for s in result.scored]
    fu.report(
        "catch-up-busy-machine",
        {
            "transactions": n,
            "labels": stats.labels,
            "scored_records": len(scored_ids),
            "mismatched": len(result.mismatched),
            "max_feature_diff": result.worst_feature,
            "alignment_timeouts": timeouts,
            "alignment_wait_seconds_sum": waited_max,
            "seconds": round(seconds, 1),
            "busy_loops": len(hogs),
            "partitions_sought_back": stalls,
        },
    )
    assert set(scored_ids) == set(expected.row_of)
    assert timeouts == 0
    assert not result.mismatched, f"{len(result.mismatched)} of {n} differ"


async def _produce(
    bootstrap: str, topic: str, txs: list[Transaction], timestamps: dict[str, int | None]
):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futs = [
            await producer.send(
                topic, encode(tx), key=tx.account_id.encode(),
                timestamp_ms=timestamps.get(tx.transaction_id, tx.event_time_ms),
            )
            for tx in txs
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def test_bad_clocks_and_reordering_through_a_worker(broker, redis_url, tmp_path, slice_df):
    """One transaction dated 2099 for each of 50 accounts (its Kafka timestamp forged
    too on Tansu; Apache Kafka refuses a record timed more than
    ``log.message.timestamp.after.max.ms``, 1 h, ahead of it, so there the record is
    stamped when sent and only its payload is from 2099), then the slice with the order reversed inside 30-minute blocks (within the
    allowed lateness): the 50 are dead-lettered as ``future_timestamp``; every other
    transaction is scored; the transactions whose features differ from offline are
    exactly the ones counted in ``fraud_account_features_revised_total``; none is late."""
    txs = list(to_transactions(slice_df))
    block = 30 * 60_000
    blocks: dict[int, list[Transaction]] = {}
    for tx in txs:
        blocks.setdefault(tx.event_time_ms // block, []).append(tx)
    reordered = [tx for k in sorted(blocks) for tx in reversed(blocks[k])]
    accounts = sorted({tx.account_id for tx in txs})[:50]
    future = [
        Transaction(transaction_id=f"future-{a}", account_id=a, terminal_id="T-future",
                    amount_minor=100, event_time_ms=4_070_908_800_000)
        for a in accounts
    ]
    expected = offline(slice_df)
    env = worker_env(broker.url, redis_url, tmp_path, PUBLISH_SCORED="true")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        stamps = {  # None: stamped when sent
            tx.transaction_id: None if broker.kind == "kafka" else tx.event_time_ms for tx in future
        }
        asyncio.run(_produce(broker.bootstrap, env["TRANSACTIONS_TOPIC"], future + reordered, stamps))
        worker.wait_metric("fraud_transactions_scored_total", len(txs))
        worker.wait_metric("fraud_events_rejected_total", len(future))
        revised = worker.metric("fraud_account_features_revised_total")
        out_of_order = worker.metric("fraud_out_of_order_transactions_total")
        late = worker.metric("fraud_late_transactions_total")
        rejected_future = worker.metric("fraud_events_rejected_total", reason="future_timestamp")
        records = read_topic(broker.bootstrap, env["SCORED_TOPIC"], idle_seconds=3)
        dead = read_topic(broker.bootstrap, env["DEAD_LETTER_TOPIC"], idle_seconds=3)
    finally:
        worker.stop()
    result = compare(records, expected, show=0)
    scored_ids = {s.transaction.transaction_id for s in result.scored}
    fu.report(
        "bad-clocks-and-reordering",
        {"transactions": len(txs), "future": len(future), "rejected_future": rejected_future,
         "out_of_order": out_of_order, "revised": revised, "late": late,
         "features_differing": len(set(result.mismatched))},
    )
    assert scored_ids == {tx.transaction_id for tx in txs}
    assert rejected_future == len(future) == len(dead)
    assert late == 0 and out_of_order > 0
    assert len(set(result.mismatched)) == revised > 0
    # the far-future records wiped no history: nothing of those accounts counted late
    # (without the bound, every later transaction of theirs was late)

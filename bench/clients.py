"""The measuring clients that run inside the harness process.

* :func:`bare_aiokafka`: (a) of the throughput phase, an aiokafka ``getmany`` loop that
  decodes every value with orjson;
* :func:`paced_latency`: the latency phase's producer at a fixed rate (Kafka timestamp
  = send time; a warm-up, then the measured window) and the consumer of the worker's
  output that matches each output record to its transaction, with the CPU left idle
  and the worker's CPU time over the measured window.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.config import Settings
from app.replay import Pacer, client_options, plan_records

from .procs import BenchError, WorkerProcess, cpu_seconds, idle_share, system_cpu_ticks

__all__ = ["bare_aiokafka", "paced_latency", "output_transaction_id", "latency_summary",
           "topic_records"]


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


async def topic_records(settings: Settings, topic: str) -> int:
    """Records in ``topic`` now: the sum over its partitions of the true end offset
    minus the beginning offset (what a consumer reading it whole reads); 0 if it does
    not exist."""
    from app.stream.offsets import topic_partitions, true_end_offsets

    parts = (await topic_partitions(settings, [topic])).get(topic, [])
    if not parts:
        return 0
    tps = [TopicPartition(topic, p) for p in parts]
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    try:
        ends = await true_end_offsets(consumer, tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return int(sum(ends[tp] - starts[tp] for tp in tps))


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


def latency_summary(lat_ms: np.ndarray, missing: int = 0) -> dict:
    """p50/p95/p99/max (nearest rank) of latencies in ms, ``missing`` counted infinite.

    A percentile that falls on a missing record is ``None``.

    >>> latency_summary(np.array([1.0, 2.0, 3.0, 10.0]))
    {'p50_ms': 3.0, 'p95_ms': 10.0, 'p99_ms': 10.0, 'max_ms': 10.0}
    >>> latency_summary(np.array([1.0]), missing=1)["max_ms"] is None
    True
    """
    every = np.concatenate([np.asarray(lat_ms, dtype=float), np.full(missing, np.inf)])
    out: dict = {}
    if not every.size:
        return out
    # nearest rank ("higher"): no interpolation with the infinite ones
    for q in (50, 95, 99):
        v = float(np.percentile(every, q, method="higher"))
        out[f"p{q}_ms"] = round(v, 1) if np.isfinite(v) else None
    top = float(every.max())
    out["max_ms"] = round(top, 1) if np.isfinite(top) else None
    return out


def _histogram_means(before: dict, after: dict, names: tuple[str, ...]) -> dict:
    """Mean of each histogram ``name`` between two ``/metrics`` readings, seconds."""
    out = {}
    for name in names:
        count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        out[name] = {"count": int(count), "mean": round(total / count, 6) if count else None}
    return out


async def paced_latency(
    settings: Settings, sink_topic: str, df: pd.DataFrame, rate: float, duration_s: float,
    worker: WorkerProcess, drain_timeout_s: float = 300.0, warmup_s: float = 0.0,
    drain_stall_s: float = 60.0,
    alerts_topic: str | None = None, histograms: tuple[str, ...] = (),
) -> dict:
    """Send ``df`` at ``rate`` (timestamps = send time) for ``warmup_s`` (not measured)
    then ``duration_s`` (measured) while reading ``sink_topic`` (alerts or scored
    transactions) and, if given, ``alerts_topic``; the latency of a measured transaction
    = the timestamp of its first record on the topic - its own.

    Over the measured window it also reads the share of all cores' time left idle
    (``/proc/stat``), the worker's CPU seconds (``/proc/<pid>/stat``) and, when
    ``histograms`` names some, the mean of each of the worker's histograms
    (``/metrics`` ``_sum`` / ``_count`` deltas). Draining ends when every measured
    transaction has its output, after ``drain_timeout_s``, or when no output came for
    ``drain_stall_s`` (the worker stopped).
    """
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    sent_ms: dict[str, int] = {}
    topics = [sink_topic] + ([alerts_topic] if alerts_topic and alerts_topic != sink_topic else [])
    seen: dict[str, dict[str, int]] = {t: {} for t in topics}
    stop_reading = asyncio.Event()

    async def read_outputs() -> None:
        tps = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop_reading.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                first = seen[tp.topic]
                for r in records:
                    tid = output_transaction_id(r.value)
                    if tid is not None and tid not in first:
                        first[tid] = r.timestamp

    reader = asyncio.create_task(read_outputs())
    sink = seen[sink_topic]
    window: dict = {}
    try:
        records = plan_records(df, labels=False)
        ids = [str(v) for v in df["TRANSACTION_ID"].to_numpy()]
        pacer = Pacer(rate)
        futures = []
        started = time.perf_counter()
        measure_from = started + warmup_s
        end = measure_from + duration_s
        warmup_sent = 0
        for tid, rec in zip(ids, records):
            now = time.perf_counter()
            if now >= end:
                break
            if now >= measure_from and not window:
                window.update(t0=now, ticks0=system_cpu_ticks(), cpu0=cpu_seconds(worker.pid),
                              metrics0=worker.metrics() if histograms else {})
            wait = pacer.wait_seconds()
            if wait > 0.001:
                await asyncio.sleep(wait)
            now_ms = int(time.time() * 1000)
            futures.append(await producer.send(
                settings.transactions_topic, rec.value, key=rec.key, timestamp_ms=now_ms
            ))
            if window:
                sent_ms[tid] = now_ms
            else:
                warmup_sent += 1
        if window:
            window.update(t1=time.perf_counter(), ticks1=system_cpu_ticks(),
                          cpu1=cpu_seconds(worker.pid))
        offered_s = time.perf_counter() - started
        await producer.flush()
        for f in futures:
            await f
        drain_deadline = time.perf_counter() + drain_timeout_s
        progress, progress_at = len(sink), time.perf_counter()
        while len(sink.keys() & sent_ms.keys()) < len(sent_ms):
            worker.check_alive()
            now = time.perf_counter()
            if len(sink) > progress:
                progress, progress_at = len(sink), now
            # a worker that stopped producing output for drain_stall_s will not finish
            if now > drain_deadline or now - progress_at > drain_stall_s:
                break
            await asyncio.sleep(0.25)
        if len(topics) > 1:
            await asyncio.sleep(1.0)  # alerts are sent with their batch's scored records
        drained_s = time.perf_counter() - started - offered_s
        if window and histograms:
            window["metrics1"] = worker.metrics()
    finally:
        stop_reading.set()
        await reader
        await producer.stop()
        await consumer.stop()
    lat = np.array([sink[t] - sent_ms[t] for t in sent_ms if t in sink], dtype=float)
    measured_s = window["t1"] - window["t0"] if window else 0.0
    out = {
        "offered_rate": rate,
        "warmup_seconds": warmup_s,
        "warmup_sent": warmup_sent,
        "sent": len(sent_ms),
        "achieved_rate": round(len(sent_ms) / measured_s, 1) if measured_s else None,
        "offered_seconds": round(measured_s, 2),
        "drain_seconds": round(drained_s, 2),
        "alerts_matched": int(lat.size),
        "missing": len(sent_ms) - int(lat.size),
    }
    # a transaction without output after the drain counts as infinitely late
    out.update(latency_summary(lat, len(sent_ms) - lat.size))
    if lat.size:
        out["mean_matched_ms"] = round(float(lat.mean()), 1)
    if window:
        worker_cpu = window["cpu1"] - window["cpu0"]
        out["cpu"] = {
            "idle_share": idle_share(window["ticks0"], window["ticks1"]),
            "cores": os.cpu_count(),
            "worker_cpu_seconds": round(worker_cpu, 2),
            "worker_cores_busy": round(worker_cpu / measured_s, 3) if measured_s else None,
        }
        if histograms:
            out["worker_histograms"] = _histogram_means(
                window["metrics0"], window["metrics1"], histograms
            )
    if alerts_topic and alerts_topic != sink_topic:
        alerts = seen[alerts_topic]
        ids_alerted = [t for t in sent_ms if t in alerts]
        alert_lat = np.array([alerts[t] - sent_ms[t] for t in ids_alerted], dtype=float)
        after = np.array([alerts[t] - sink[t] for t in ids_alerted if t in sink], dtype=float)
        out["alert"] = {"topic": alerts_topic, "alerts": len(ids_alerted),
                        **latency_summary(alert_lat)}
        if after.size:
            out["alert"]["after_sink"] = latency_summary(after)
    return out

"""One consumer hop on the broker against the consumer's fetch wait.

A producer in this process sends ``--rate`` records/s (200 bytes, spread over 4
partitions, no linger, acks=all) for ``--seconds`` per setting to a fresh topic of a
Tansu broker of its own; a consumer (no group) at the end of the topic reads them. For
each ``fetch_max_wait_ms`` in ``--waits`` it reports the receive delay (time the record
was read - its Kafka timestamp) at p50/p95/p99/max, the first fifth of each run left out
(connection and assignment). It shows what one hop costs at a given wait: Tansu holds a
fetch that finds nothing for its whole wait and does not answer early when a record
arrives, so a record written just after such a fetch waits up to the wait.

Usage::

    .venv/bin/python bench/fetch_wait.py --rate 1000 --waits 5,20,50,100,200 \\
        --out bench/results/fetch-wait.json

Not a test: nothing asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from app.config import Settings  # noqa: E402
from app.stream.stack import resolve_tansu_bin  # noqa: E402
from tests.conftest import _create_topics, start_tansu  # noqa: E402

PARTITIONS = 4


def _quantiles(delays: list[float]) -> dict:
    delays = sorted(delays)
    at = lambda q: round(delays[min(len(delays) - 1, int(q * len(delays)))], 1)  # noqa: E731
    return {"records": len(delays), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(delays[-1], 1)}


async def one_hop(bootstrap: str, topic: str, wait_ms: int, rate: float, seconds: float) -> dict:
    """Receive delays of ``rate * seconds`` records through one consumer whose fetch
    wait is ``wait_ms``."""
    await _create_topics(bootstrap, [topic], PARTITIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    delays: list[float] = []
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for records in batch.values():
                delays.extend(now_ms - r.timestamp for r in records)

    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        reader = asyncio.create_task(read())
        n = int(rate * seconds)
        t0 = time.monotonic()
        for i in range(n):
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await producer.send(topic, b"x" * 200, partition=i % PARTITIONS)
        await producer.flush()
        await asyncio.sleep(1.0)
        stop.set()
        await reader
    finally:
        await consumer.stop()
        await producer.stop()
    return {"fetch_max_wait_ms": wait_ms, **_quantiles(delays[len(delays) // 5:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s")
    ap.add_argument("--seconds", type=float, default=8.0, help="per fetch wait")
    ap.add_argument("--waits", default="5,20,50,100,200", help="fetch_max_wait_ms values")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-wait-"))
    broker = start_tansu(resolve_tansu_bin(Settings()), work)
    results: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "load_average_at_start": list(os.getloadavg()), "cpus": os.cpu_count(),
                     "rate": args.rate, "seconds": args.seconds, "runs": []}
    try:
        for k, wait in enumerate(int(w) for w in args.waits.split(",")):
            run = asyncio.run(one_hop(broker.bootstrap, f"fetch-wait-{k}", wait, args.rate,
                                      args.seconds))
            print(run, flush=True)
            results["runs"].append(run)
    finally:
        broker.stop()
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

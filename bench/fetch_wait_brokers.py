"""The caught-up fetch wait on each broker: latency of one hop and cost of idling.

For each broker kind in ``--brokers`` (``tansu``, ``kafka``: a broker of the run's own
on free ports, as the tests start them) and each fetch wait in ``--waits`` (ms):

* ``hop`` (phase ``hop``): :func:`bench.fetch_wait.one_hop`: a producer sends ``--rate`` records/s for
  ``--seconds``, a consumer at the end of the topic reads them; receive delay (read
  time - the record's timestamp) at p50/p95/p99/max, in ms.
* ``end_offset_probe`` (phase ``probe``): what table recovery's end-offset probe
  (:func:`app.stream.offsets.probe_true_end_offsets`, ``FIX_END_OFFSETS``) adds to each
  recovery round on 8 changelog-like partitions written in batches of 100 records:
  seconds of a probe (its consumer started, the probe, the consumer stopped), median
  and max of ``--probe-runs``, and how many partitions' reported end it moved; the same
  with aiokafka's default fetch wait, and the floor (end offsets only).
* ``idle``: a consumer at the end of a 4-partition topic that receives nothing, for
  ``--idle-seconds``: fetch requests sent per second and the process CPU time per
  second it costs (ms/s).

A broker that answers a waiting fetch as soon as data arrives (Apache Kafka) shows the
same hop delay at every wait, so a long caught-up wait costs no latency and saves the
idle fetches; a broker that holds a fetch that found nothing for its whole wait (Tansu)
adds up to the wait to every record written just after such a fetch.

Usage::

    .venv/bin/python bench/fetch_wait_brokers.py --rate 500 --waits 20,200,500 \\
        --out bench/results/fetch-wait-brokers.json

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

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.consumer.fetcher import Fetcher  # noqa: E402

from app.config import Settings  # noqa: E402
from app.stream.stack import resolve_tansu_bin  # noqa: E402
from bench.fetch_wait import PARTITIONS, one_hop  # noqa: E402
from tests.conftest import _create_topics, start_kafka, start_tansu  # noqa: E402


async def idle_fetches(bootstrap: str, topic: str, wait_ms: int, seconds: float) -> dict:
    """Fetch requests per second and CPU ms per second of a consumer with nothing to read."""
    await _create_topics(bootstrap, [topic], PARTITIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=wait_ms)
    built = Fetcher._get_actions_per_node
    requests = 0

    def count(self, assignment):  # noqa: ANN001
        nonlocal requests
        result = built(self, assignment)
        requests += len(result[0])  # (node id, request) pairs
        return result

    Fetcher._get_actions_per_node = count
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_end()
        await consumer.getmany(timeout_ms=500)  # positions known, first fetches out
        requests = 0
        cpu0, t0 = time.process_time(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            await consumer.getmany(timeout_ms=1000)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    finally:
        Fetcher._get_actions_per_node = built
        await consumer.stop()
    return {"fetch_max_wait_ms": wait_ms, "fetch_requests_per_second": round(requests / wall, 1),
            "cpu_ms_per_second": round(1000 * cpu / wall, 2)}


async def end_offset_probe(bootstrap: str, topic: str, runs: int) -> dict:
    """Seconds of one recovery round's end-offset probe on 8 partitions: as the worker
    makes it (:func:`app.stream.offsets.probe_true_end_offsets`), with aiokafka's default fetch
    wait, and the floor of any probe (a consumer started, asked the end offsets, stopped)."""
    from aiokafka import AIOKafkaProducer

    from app.stream.offsets import probe_true_end_offsets, true_end_offsets

    partitions = 8
    await _create_topics(bootstrap, [topic], partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(partitions):
            batch = producer.create_batch()
            for i in range(100):
                batch.append(key=b"k%d" % i, value=b"v" * 100, timestamp=None)
            await (await producer.send_batch(batch, topic, partition=p))
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    options = {"bootstrap_servers": bootstrap}

    async def default_wait() -> dict:
        probe = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
        await probe.start()
        try:
            return await true_end_offsets(probe, tps)
        finally:
            await probe.stop()

    async def floor() -> dict:
        probe = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
        await probe.start()
        try:
            return await probe.end_offsets(tps)
        finally:
            await probe.stop()

    reported = await floor()
    out: dict = {"partitions": partitions, "runs": runs}
    variants = {"worker_probe": lambda: probe_true_end_offsets(options, tps),
                "probe_default_fetch_wait": default_wait, "end_offsets_only": floor}
    for name, make in variants.items():
        seconds = []
        for _ in range(runs):
            t0 = time.monotonic()
            ends = await make()
            seconds.append(time.monotonic() - t0)
        seconds.sort()
        out[name] = {"median_seconds": round(seconds[len(seconds) // 2], 3),
                     "max_seconds": round(seconds[-1], 3),
                     "partitions_moved": sum(ends[tp] != reported[tp] for tp in tps)}
    return out


def _start(kind: str, work: Path):
    if kind == "tansu":
        return start_tansu(resolve_tansu_bin(Settings()), work)
    if kind == "kafka":
        return start_kafka(work)
    raise SystemExit(f"unknown broker kind {kind!r} (tansu, kafka)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", default="kafka,tansu", help="broker kinds")
    ap.add_argument("--rate", type=float, default=500.0, help="records/s of the hop runs")
    ap.add_argument("--seconds", type=float, default=10.0, help="per hop run")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="per idle run")
    ap.add_argument("--waits", default="20,200,500", help="fetch_max_wait_ms values")
    ap.add_argument("--probe-runs", type=int, default=5, help="end-offset probes per broker")
    ap.add_argument("--phases", default="probe,hop", help="probe, hop (hop includes idle)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    waits = [int(w) for w in args.waits.split(",")]
    results: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "load_average_at_start": list(os.getloadavg()), "cpus": os.cpu_count(),
                     "rate": args.rate, "seconds": args.seconds,
                     "idle_seconds": args.idle_seconds, "brokers": {}}
    for kind in args.brokers.split(","):
        broker = _start(kind, Path(tempfile.mkdtemp(prefix=f"bench-fetch-wait-{kind}-")))
        runs: dict = {"hop": [], "idle": [], "load_average_at_start": list(os.getloadavg())}
        try:
            phases = args.phases.split(",")
            if "probe" in phases:
                runs["end_offset_probe"] = asyncio.run(
                    end_offset_probe(broker.bootstrap, "fw-probe", args.probe_runs))
                print(kind, runs["end_offset_probe"], flush=True)
            for k, wait in enumerate(waits if "hop" in phases else []):
                hop = asyncio.run(one_hop(broker.bootstrap, f"fw-hop-{k}", wait, args.rate,
                                          args.seconds))
                idle = asyncio.run(idle_fetches(broker.bootstrap, f"fw-idle-{k}", wait,
                                                args.idle_seconds))
                print(kind, hop, idle, flush=True)
                runs["hop"].append(hop)
                runs["idle"].append(idle)
        finally:
            broker.stop()
        results["brokers"][kind] = runs
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

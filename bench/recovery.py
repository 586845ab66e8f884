"""Table recovery time of a restarted worker, memory:// against rocksdb://.

Writes ``--accounts`` account states (``--history`` transactions each, as the 30-day
history of a handbook account) straight to the ``account_states`` changelog of a fresh
Tansu broker (each partition's last record alone in its batch: Tansu's high-watermark
defect, docs/operations.md), in the ``--format`` a worker writes: ``batch`` (this version: batch
records of ``--keys-per-record`` states, :mod:`app.changelog`; a worker under load
writes about BATCH_MAX_EVENTS / partitions = 125 per record) or ``single`` (the version
before: one record per state), then times worker starts against it:

1. ``memory://``: every start reads the whole changelog.
2. ``rocksdb://``, first start: reads the whole changelog into RocksDB under DATA_DIR.
3. ``rocksdb://``, restart after ``--tail`` more changelog records: reads local state
   plus the tail only.

Time = from the worker's "Restoring state from changelog topics" log line to its
"Restore complete" line (Faust's own recovery), and process start to "Worker ready".

Usage (needs Redis on 127.0.0.1:6379; starts and stops its own Tansu)::

    .venv/bin/python bench/recovery.py --accounts 1000000 --out bench/results/recovery-1m.json

``--ceiling`` also times a bare aiokafka consumer reading the whole changelog (fetch
only, no decoding): the floor of any restore from this broker in the same run; and a
bare Faust app with one (empty) table from process start to ready: the floor of any
Faust worker's start.

Not a test: nothing asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from app.changelog import BATCH_KEY_PREFIX, pack_changes  # noqa: E402
from app.config import Settings  # noqa: E402
from app.features import AccountState  # noqa: E402
from app.stream.stack import resolve_tansu_bin  # noqa: E402
from tests.conftest import _create_topics, start_tansu  # noqa: E402
from tests.worker_utils import Worker, worker_env  # noqa: E402

PARTITIONS = 4
_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _state(i: int, history: int) -> bytes:
    t0 = 1_530_662_400_000 + (i % 1000) * 1000
    return AccountState(
        times_ms=[t0 + k * 86_400_000 // 3 for k in range(history)],
        amounts_minor=[1000 + (i * 7 + k * 13) % 90_000 for k in range(history)],
        ids=[str(i * 100 + k) for k in range(history)],
    ).to_bytes()


async def _fill(
    bootstrap: str, topic: str, first: int, count: int, history: int,
    fmt: str = "single", keys_per_record: int = 125,
) -> float:
    """Write ``count`` account states to the changelog; seconds it took.

    In large batches, except the *last* record of each partition, which goes alone in
    its own batch: Tansu's reported end offset (the last batch's base offset + 1) is then
    the true one, so Faust's recovery reads everything (docs/operations.md, the Tansu defect). With
    ``fmt="batch"``, each record is a batch record of ``keys_per_record`` states.
    """
    if fmt == "batch":
        return await _fill_batches(bootstrap, topic, first, count, history, keys_per_record)
    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    by_partition: dict[int, list[int]] = {p: [] for p in parts}
    for i in range(first, first + count):
        by_partition[partitioner(f"acc-{i}".encode(), parts, parts)].append(i)
    lasts = {p: ids.pop() for p, ids in by_partition.items() if ids}
    started = time.monotonic()
    bulk = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, linger_ms=50, acks=1)
    single = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1, linger_ms=0, acks=1)
    await bulk.start()
    await single.start()
    try:
        done = 0
        for p, ids in by_partition.items():
            pending = []
            for i in ids:
                key = json.dumps(f"acc-{i}").encode()
                pending.append(await bulk.send(topic, _state(i, history), key=key, partition=p))
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    done += len(pending)
                    pending = []
                    print(f"\r  changelog: {done:,}/{count:,}", end="", flush=True)
            await asyncio.gather(*pending)
            done += len(pending)
        await bulk.flush()
        for p, i in lasts.items():
            key = json.dumps(f"acc-{i}").encode()
            await (await single.send(topic, _state(i, history), key=key, partition=p))
        print()
    finally:
        await bulk.stop()
        await single.stop()
    return time.monotonic() - started


async def _fill_batches(
    bootstrap: str, topic: str, first: int, count: int, history: int, keys_per_record: int
) -> float:
    """:func:`_fill` in batch records (what this version's worker writes)."""
    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    by_partition: dict[int, list[int]] = {p: [] for p in parts}
    for i in range(first, first + count):
        by_partition[partitioner(f"acc-{i}".encode(), parts, parts)].append(i)
    started = time.monotonic()
    bulk = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, linger_ms=50, acks=1)
    single = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1, linger_ms=0, acks=1)
    await bulk.start()
    await single.start()
    seq = 0
    try:
        for p, ids in by_partition.items():
            records = []
            for lo in range(0, len(ids), keys_per_record):
                changes = [(json.dumps(f"acc-{i}").encode(), _state(i, history))
                           for i in ids[lo : lo + keys_per_record]]
                for packed in pack_changes(changes):
                    seq += 1
                    records.append((json.dumps(f"{BATCH_KEY_PREFIX}bench-{first}:{seq}").encode(), packed))
            last = records.pop()
            pending = [await bulk.send(topic, v, key=k, partition=p) for k, v in records]
            await asyncio.gather(*pending)
            await bulk.flush()
            await (await single.send(topic, last[1], key=last[0], partition=p))
    finally:
        await bulk.stop()
        await single.stop()
    return time.monotonic() - started


async def _read_all(bootstrap: str, topic: str) -> dict:
    """The ceiling: a bare aiokafka consumer (no group, no decoding) reading every
    record of ``topic`` from the beginning to its true end
    (:func:`app.stream.offsets.true_end_offsets`)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.stream.offsets import true_end_offsets

    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await true_end_offsets(probe, tps)
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    records = nbytes = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.monotonic()
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=100_000)).items():
                records += len(batch)
                nbytes += sum(len(r.value or b"") for r in batch)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    return {"seconds": round(seconds, 2), "records": records, "value_mib": round(nbytes / 2**20, 1)}


def _stamp(line: str) -> float:
    m = _TS.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else float("nan")


def _timed_start(env: dict, log: Path, timeout: float) -> dict:
    started = time.time()
    worker = Worker(env, log).start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            worker.assert_alive()
            text = log.read_text(errors="replace")
            if "Worker ready" in text:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"worker not ready after {timeout}s: {worker.tail()}")
        lines = log.read_text(errors="replace").splitlines()
        first = lambda needle: next(_stamp(x) for x in lines if needle in x)  # noqa: E731
        restore = first("Restore complete") - first("Restoring state from changelog topics")
        ready = first("Worker ready") - started
        # what the restore does not cost: process start (imports, model) and group join
        # up to the restore, and what follows it up to "Worker ready"
        before_restore = first("Restoring state from changelog topics") - started
        after_restore = first("Worker ready") - first("Restore complete")
        rss = _rss_mib(worker.proc.pid)
        text = "\n".join(lines)
        hw = text[text.find("Highwater - Active"):]
        hw = hw[: hw.find("+ ") if "+ " in hw else len(hw)]
        # Faust logs each partition's highest offset ("highwater") and the offset it
        # starts reading after (-1: from the beginning)
        highest = [int(m) for m in re.findall(r"\|\s+\d+\s+\|\s+(\d+)\s+\|", hw)]
        st = text[text.find("Reading Starts At - Active"):]
        st = st[: st.find("+ ") if "+ " in st else len(st)]
        starts = [int(m) for m in re.findall(r"\|\s+\d+\s+\|\s+(-?\d+)\s+\|", st)]
        read = sum(highest) - sum(starts)
    finally:
        worker.stop(signal.SIGTERM, timeout=120)
    return {"restore_seconds": round(restore, 2), "start_to_ready_seconds": round(ready, 2),
            "start_to_restore_seconds": round(before_restore, 2),
            "restore_to_ready_seconds": round(after_restore, 2),
            "changelog_records": sum(highest) + len(highest), "changelog_records_read": read, "rss_mib": rss}


def _bare_faust_ready(env: dict, log: Path, timeout: float) -> dict:
    """The floor of a start: a bare Faust app (``bench.bare_faust`` with one table, its
    changelog empty) from process start to Faust's own "Ready" log line, on the same
    broker: imports, Faust's start, the consumer group join and an empty recovery."""
    started = time.time()
    worker = Worker(env, log, args=["-m", "bench.bare_faust", "worker", "-l", "info"]).start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            worker.assert_alive()
            lines = log.read_text(errors="replace").splitlines()
            ready = [x for x in lines if "]: Ready" in x]
            if ready:
                return {"start_to_ready_seconds": round(_stamp(ready[0]) - started, 2)}
            time.sleep(0.2)
        raise TimeoutError(f"bare Faust app not ready after {timeout}s: {worker.tail()}")
    finally:
        worker.stop(signal.SIGTERM, timeout=60)


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--history", type=int, default=9, help="transactions per account state")
    ap.add_argument("--tail", type=int, default=10_000, help="changelog records added before the RocksDB restart")
    ap.add_argument("--format", choices=["batch", "single"], default="batch",
                    help="changelog records as this version writes them (batch) or as the version before (single)")
    ap.add_argument("--keys-per-record", type=int, default=125, help="states per batch record (--format batch)")
    ap.add_argument("--ceiling", action="store_true", help="also time a bare aiokafka read of the changelog and a bare Faust start")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    broker = start_tansu(resolve_tansu_bin(Settings()), work)
    results: dict = {"accounts": args.accounts, "history": args.history, "tail": args.tail,
                     "state_bytes": len(_state(0, args.history)), "format": args.format,
                     "keys_per_record": args.keys_per_record if args.format == "batch" else 1,
                     "date": datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "load_average_at_start": list(os.getloadavg()), "cpus": os.cpu_count()}
    fill = dict(fmt=args.format, keys_per_record=args.keys_per_record)
    try:
        env = worker_env(broker.url, "redis://127.0.0.1:6379/14", work / "run",
                         APP_ID="bench-recovery", TOPIC_PARTITIONS=str(PARTITIONS))
        changelog = f"{env['APP_ID']}-account_states-changelog"
        asyncio.run(_create_topics(broker.bootstrap, [env["TRANSACTIONS_TOPIC"], changelog], PARTITIONS))
        results["fill_seconds"] = round(asyncio.run(_fill(broker.bootstrap, changelog, 0, args.accounts, args.history, **fill)), 1)
        if args.ceiling:
            results["ceiling_aiokafka_read"] = asyncio.run(_read_all(broker.bootstrap, changelog))
            print("ceiling:", results["ceiling_aiokafka_read"])

        print("memory:// start ...")
        results["memory"] = _timed_start({**env, "STORE_URL": "memory://", "DATA_DIR": str(work / "mem")},
                                         work / "memory.log", args.timeout)
        print(results["memory"])
        rocks = {**env, "STORE_URL": "rocksdb://", "DATA_DIR": str(work / "rocks")}
        print("rocksdb:// first start ...")
        results["rocksdb_first_start"] = _timed_start(rocks, work / "rocks-1.log", args.timeout)
        print(results["rocksdb_first_start"])
        asyncio.run(_fill(broker.bootstrap, changelog, args.accounts, args.tail, args.history, **fill))
        print("rocksdb:// restart ...")
        results["rocksdb_restart"] = _timed_start(rocks, work / "rocks-2.log", args.timeout)
        print(results["rocksdb_restart"])
        results["rocksdb_disk_mib"] = round(
            sum(f.stat().st_size for f in (work / "rocks").rglob("*") if f.is_file()) / 2**20, 1)
        if args.ceiling:
            bare = {**env, "APP_ID": "bench-recovery-bare", "BENCH_FAUST_TABLE": "1",
                    "DATA_DIR": str(work / "bare")}
            results["ceiling_bare_faust_start"] = _bare_faust_ready(bare, work / "bare.log", args.timeout)
            print("ceiling, bare Faust start:", results["ceiling_bare_faust_start"])
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

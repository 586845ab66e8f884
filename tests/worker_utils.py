"""Helpers for tests that run real worker processes against the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(broker_url: str, redis_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker with its own app id, topics, Redis key prefix and data
    dir (named after ``tmp``: its name, and a digest of its whole path, so that runs in
    directories of the same name, as one test on two brokers, share no Redis keys)."""
    digest = hashlib.sha1(str(tmp.resolve()).encode()).hexdigest()[:8]
    tag = f"{tmp.name.replace('_', '-')[-31:]}-{digest}"
    env = dict(os.environ)
    env.update(
        KAFKA_BROKER_URL=broker_url,
        REDIS_URL=redis_url,
        APP_ID=f"fraud-{tag}",
        TRANSACTIONS_TOPIC=f"tx-{tag}",
        ALERTS_TOPIC=f"alerts-{tag}",
        SCORED_TOPIC=f"scored-{tag}",
        LABELS_TOPIC=f"labels-{tag}",
        DEAD_LETTER_TOPIC=f"dlq-{tag}",
        # its own model-control and rules topics: what another test promoted or
        # applied on the shared broker must not reach this worker
        CONTROL_TOPIC=f"control-{tag}",
        RULES_TOPIC=f"rules-{tag}",
        REDIS_KEY_PREFIX=f"test:{tag}:",
        DATA_DIR=str(tmp / "worker-data"),
        RUN_DIR=str(tmp / "run"),
    )
    env.update(extra)
    return env


class Worker:
    """A ``python -m app worker`` subprocess (or another command of the project serving
    ``/metrics`` on the port in ``port_env``, e.g. ``fraudctl sinks run``)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        web_port: int | None = None,
        args: list[str] | None = None,
        port_env: str = "WEB_PORT",
    ):
        self.env = dict(env)
        self.web_port = web_port or free_port()
        self.env[port_env] = str(self.web_port)
        self.log_path = log_path
        self.args = args or ["-m", "app", "worker", "-l", "info"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        total = 0.0
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def wait_ready(self, timeout: float = 120.0, marker: str = "fraud_model_info{") -> None:
        """Wait until /metrics answers with ``marker`` in it (default: the model is loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                if marker in self.metrics_text():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout}s; log: {self.tail()}")

    def wait_metric(self, name: str, value: float, timeout: float = 300.0, **labels) -> float:
        """Wait until metric ``name`` reaches at least ``value``; return it."""
        deadline = time.monotonic() + timeout
        got = -1.0
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                got = self.metric(name, **labels)
            except OSError:
                got = -1.0
            if got >= value:
                return got
            time.sleep(0.5)
        raise TimeoutError(
            f"{name} = {got} < {value} after {timeout}s; counters: {self.counters()}; "
            f"log: {self.tail()}"
        )

    def counters(self) -> str:
        """The worker's ``fraud_`` counters and gauges (for a failure message)."""
        try:
            text = self.metrics_text()
        except OSError as exc:
            return f"/metrics unreachable ({exc})"
        keep = [
            line for line in text.splitlines()
            if line.startswith("fraud_") and "_bucket" not in line and "_created" not in line
        ]
        return "\n".join(keep)

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            self._log.close()


async def _read_topic(bootstrap: str, topic: str, idle_seconds: float, timeout: float):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout
        while not parts and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # topic may be new
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await asyncio.sleep(0.5)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle_seconds:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
                last = time.monotonic()
        return out
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, idle_seconds: float = 3.0, timeout: float = 120.0):
    """Every record of ``topic`` from the beginning, until ``idle_seconds`` pass without one."""
    return asyncio.run(_read_topic(bootstrap, topic, idle_seconds, timeout))


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 2**20)
    await producer.start()
    try:
        for key, value in records:
            await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Produce ``(key, value)`` records one by one, each acknowledged before the next
    (so their offsets follow the list's order); records up to 16 MiB."""
    asyncio.run(_produce(bootstrap, topic, records))

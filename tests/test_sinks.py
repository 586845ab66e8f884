"""Alert sinks against the real broker, the real RabbitMQ (127.0.0.1:5672, guest/guest)
and a real HTTP server: ``fraudctl sinks run`` as a process of its own, its own
consumer group, offsets committed only after the sink confirmed.

Every test uses its own alerts topic, app id (consumer group) and RabbitMQ queue
(deleted at the end). The shared RabbitMQ of this machine cannot be stopped by a test,
so its outage is made by a TCP proxy in the test between the sink and RabbitMQ
(:class:`BlockableProxy`): blocking it closes the open connections and refuses new
ones, which is what the sink sees when RabbitMQ stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import uuid
from collections import defaultdict

import aio_pika
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from werkzeug import Request, Response

from app.events import Alert, Transaction, encode

from .worker_utils import Worker

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]

RABBITMQ = ("127.0.0.1", 5672)
PARTITIONS = 3


def _alert(i: int) -> Alert:
    tx = Transaction(
        transaction_id=f"tx-{i}", account_id=f"acc-{i % 5}", terminal_id=f"m-{i % 7}",
        amount_minor=10_000 + i, currency="EUR", event_time_ms=1_530_000_000_000 + 1000 * i,
    )
    return Alert(
        alert_id=tx.transaction_id, transaction=tx, score=0.9, threshold=0.5,
        model_version="v-test", features={"amount": tx.amount}, reasons=[],
        event_time_ms=tx.event_time_ms, alert_time_ms=1_700_000_000_000 + i,
    )


async def _produce_async(bootstrap: str, topic: str, first: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, encode(_alert(i)), key=f"acc-{i % 5}".encode(), partition=i % PARTITIONS)
            for i in range(first, first + n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _produce(bootstrap: str, topic: str, first: int, n: int) -> None:
    asyncio.run(_produce_async(bootstrap, topic, first, n))


def _sink_process(broker, topic: str, tmp_path, sink: str, **extra: str) -> Worker:
    tag = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BROKER_URL": broker.url,
        "ALERTS_TOPIC": topic,
        "APP_ID": f"sinktest-{tag}",
        "SINK_RETRY_INITIAL_DELAY_SECONDS": "0.2",
        "SINK_RETRY_MAX_DELAY_SECONDS": "2",
        **extra,
    }
    import os

    env = {**os.environ, **env}
    return Worker(
        env,
        tmp_path / f"sink-{sink}.log",
        args=["-c", "from app.cli import main; main()", "sinks", "run", "--sink", sink],
        port_env="SINK_METRICS_PORT",
    ).start()


def _wait_up(proc: Worker) -> None:
    proc.wait_ready(timeout=60, marker="fraud_sink_alerts_sent_total")


# --- RabbitMQ ---------------------------------------------------------------------


async def _drain_queue(queue_name: str, expected: int, timeout: float = 90.0) -> list[aio_pika.IncomingMessage]:
    connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        got: list = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                if len(got) >= expected and time.monotonic() - quiet_since > 2.0:
                    break
                await asyncio.sleep(0.2)
                continue
            await msg.ack()
            got.append(msg)
            quiet_since = time.monotonic()
        return got
    finally:
        await connection.close()


async def _delete_queue(queue_name: str) -> None:
    connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)
    finally:
        await connection.close()


def _check_order(pairs: list[tuple[str, int, int]], n: int) -> int:
    """``pairs``: (alert id, partition, offset) in arrival order. Asserts every alert
    arrived and each partition's first arrivals are in offset order; returns how many
    arrivals were repeats."""
    first: dict[str, tuple[int, int]] = {}
    for alert_id, p, o in pairs:
        first.setdefault(alert_id, (p, o))
    assert sorted(first) == sorted(f"tx-{i}" for i in range(n))
    by_partition: dict[int, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for alert_id, p, o in pairs:
        if alert_id not in seen:
            seen.add(alert_id)
            by_partition[p].append(o)
    for p, offsets in by_partition.items():
        assert offsets == sorted(offsets), f"partition {p} out of order: {offsets}"
    assert set(by_partition) == set(range(PARTITIONS))
    return len(pairs) - len(first)


def _arrivals(messages) -> list[tuple[str, int, int]]:
    out = []
    for m in messages:
        body = orjson.loads(m.body)
        assert m.message_id == body["alert_id"]
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        Alert.model_validate(body)  # the alert exactly as on the topic
        out.append((m.message_id, int(m.headers["fraud-partition"]), int(m.headers["fraud-offset"])))
    return out


def test_rabbitmq_sink_delivers_each_alert_once_in_partition_order(broker, make_topic, tmp_path):
    topic = make_topic("alerts", PARTITIONS)
    queue = f"fraud-alerts-test-{uuid.uuid4().hex[:8]}"
    n = 60
    _produce(broker.bootstrap, topic, 0, n // 2)
    proc = _sink_process(broker, topic, tmp_path, "rabbitmq", RABBITMQ_QUEUE=queue)
    try:
        _wait_up(proc)
        _produce(broker.bootstrap, topic, n // 2, n // 2)  # some before, some after start
        proc.wait_metric("fraud_sink_alerts_sent_total", n, timeout=120, sink="rabbitmq")
        messages = asyncio.run(_drain_queue(queue, n))
        assert _check_order(_arrivals(messages), n) == 0  # once each
        assert proc.metric("fraud_sink_failures_total", sink="rabbitmq") == 0
        deadline = time.monotonic() + 30
        while proc.metric("fraud_sink_backlog_records", sink="rabbitmq") != 0:
            assert time.monotonic() < deadline, "backlog not 0 after every alert was confirmed"
            time.sleep(0.5)
    finally:
        proc.stop()
        asyncio.run(_delete_queue(queue))


class BlockableProxy:
    """A TCP proxy to RabbitMQ, in a thread of the test: ``block()`` closes every open
    connection and refuses new ones (accepted, then closed at once) until ``unblock()``."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.blocked = False
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "BlockableProxy":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader, writer) -> None:
        if self.blocked:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def block(self) -> None:
        def close_all():
            self.blocked = True
            for w in list(self._writers):
                w.close()

        self._loop.call_soon_threadsafe(close_all)

    def unblock(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "blocked", False)


def test_rabbitmq_unavailable_for_20_seconds_loses_no_alert(broker, make_topic, tmp_path):
    """RabbitMQ "stops" for 20 s mid-stream (the proxy closes and refuses connections);
    alerts keep arriving on the topic meanwhile. After it is back every alert is in the
    queue, each partition in order; during the outage the backlog metric shows the
    alerts waiting and the failures are counted."""
    topic = make_topic("alerts", PARTITIONS)
    queue = f"fraud-alerts-test-{uuid.uuid4().hex[:8]}"
    n1, n2 = 30, 30
    with BlockableProxy(RABBITMQ) as proxy:
        proc = _sink_process(
            broker, topic, tmp_path, "rabbitmq", RABBITMQ_QUEUE=queue,
            RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            RABBITMQ_CONFIRM_TIMEOUT_SECONDS="3",
        )
        try:
            _wait_up(proc)
            _produce(broker.bootstrap, topic, 0, n1)
            proc.wait_metric("fraud_sink_alerts_sent_total", n1, timeout=120, sink="rabbitmq")
            proxy.block()
            _produce(broker.bootstrap, topic, n1, n2)
            proc.wait_metric("fraud_sink_failures_total", 1, timeout=60, sink="rabbitmq")
            proc.wait_metric("fraud_sink_backlog_records", 1, timeout=30, sink="rabbitmq")
            assert proc.metric("fraud_sink_up", sink="rabbitmq") == 0
            time.sleep(20)
            assert proc.metric("fraud_sink_alerts_sent_total", sink="rabbitmq") == n1
            proxy.unblock()
            proc.wait_metric("fraud_sink_alerts_sent_total", n1 + n2, timeout=120, sink="rabbitmq")
            proc.assert_alive()
        finally:
            proc.stop()
    try:
        messages = asyncio.run(_drain_queue(queue, n1 + n2))
        repeats = _check_order(_arrivals(messages), n1 + n2)
        assert repeats == 0, f"{repeats} alerts delivered twice"  # nothing was in flight
    finally:
        asyncio.run(_delete_queue(queue))


# --- webhook ----------------------------------------------------------------------


def test_webhook_sink_signs_retries_after_500s_and_loses_nothing(broker, make_topic, tmp_path, httpserver):
    topic = make_topic("alerts", PARTITIONS)
    secret = "s3cret-" + uuid.uuid4().hex
    n = 40
    failing = {0, 1, 2, 10, 25}  # request numbers answered 500
    received: list[tuple[str, int, int]] = []
    bad_signatures: list[str] = []
    lock = threading.Lock()
    count = {"requests": 0}
    offsets_of = {}  # alert id -> (partition, offset): filled below from the topic order

    def handler(request: Request) -> Response:
        body = request.get_data()
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        with lock:
            k = count["requests"]
            count["requests"] += 1
            if not hmac.compare_digest(expected, request.headers.get("X-Fraud-Signature", "")):
                bad_signatures.append(request.headers.get("X-Fraud-Signature", ""))
                return Response("bad signature", status=401)
            if k in failing:
                return Response("try later", status=500)
            alert = orjson.loads(body)
            assert request.headers["Idempotency-Key"] == alert["alert_id"]
            received.append(alert["alert_id"])
        return Response("", status=204)

    httpserver.expect_request("/alerts", method="POST").respond_with_handler(handler)
    _produce(broker.bootstrap, topic, 0, n)
    proc = _sink_process(
        broker, topic, tmp_path, "webhook",
        WEBHOOK_URL=httpserver.url_for("/alerts"), WEBHOOK_SECRET=secret,
    )
    try:
        _wait_up(proc)
        proc.wait_metric("fraud_sink_alerts_sent_total", n, timeout=120, sink="webhook")
        assert proc.metric("fraud_sink_failures_total", sink="webhook") == len(failing)
    finally:
        proc.stop()
    assert bad_signatures == []
    for i in range(n):
        offsets_of[f"tx-{i}"] = (i % PARTITIONS, i // PARTITIONS)
    assert _check_order([(a, *offsets_of[a]) for a in received], n) == 0
    assert count["requests"] == n + len(failing)


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        pytest.param({}, [], "no alert sink configured", id="no-sink"),
        pytest.param({"WEBHOOK_URL": "http://127.0.0.1:1/x"}, ["--sink", "webhook"],
                     "needs WEBHOOK_URL and WEBHOOK_SECRET", id="webhook-without-secret"),
        pytest.param({}, ["--sink", "sqs"], "unknown sink 'sqs'", id="unknown-sink"),
    ],
)
def test_sink_configuration_errors_are_one_line_and_exit_2(env, args, message, tmp_path):
    import os
    import subprocess
    import sys

    from .worker_utils import ROOT

    result = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "sinks", "run", *args],
        cwd=ROOT, env={**os.environ, "SINK_METRICS_PORT": "0", **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1

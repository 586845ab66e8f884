"""Faust's own floor: an agent that only iterates over the transactions topic.

Run as ``python -m bench.bare_faust worker -l warn`` with the worker's environment
(``KAFKA_BROKER_URL``, ``APP_ID``, ``TRANSACTIONS_TOPIC``, ``WEB_PORT`` ...: the same
:class:`app.config.Settings` the project's worker reads). The consumer, producer and
group settings are those of :func:`app.stream.main.create_app`, so the only difference from the
project's worker is the work done per event. With ``BENCH_FAUST_TABLE=1`` the agent also
increments one table entry per event (each increment is a changelog record). With
``BENCH_FAUST_TABLE=hold`` it holds every event in a table instead (its value, padded to
``BENCH_HOLD_VALUE_BYTES`` if shorter, under the key ``partition:offset``) and releases it
(deletes the entry: a tombstone) once ``BENCH_HOLD_WINDOW`` (500) later events of its
partition are held: two changelog records per event, the cost of keeping transactions
that wait for event-time alignment in a changelogged table, acknowledged at once,
instead of unacknowledged as the worker does (docs/performance.md, "Held transactions").

With ``BENCH_FAUST_RELAY=1`` it is instead the Faust floor of the worker's latency: one
agent forwards every transaction to ``<APP_ID>-hop`` (keyed as it came), a second one
forwards every record of that topic to ``SCORED_TOPIC`` wrapped as
``{"transaction": <value>}`` (so the latency phase matches it to its transaction): the
two consumer hops every transaction takes in the worker, through Faust's streams and
producer, with the worker's fetch waits (:func:`app.stream.streaming.set_fetch_max_wait`),
and nothing else. Its ``bench_events_done_total`` counts the second hop.

``GET /metrics`` serves two Prometheus counters: ``bench_events_consumed_total`` and
``bench_events_done_total`` (the same number but for the relay: each event is consumed
and done at once), so the harness reads this app exactly as it reads the project's worker;
once its tables are recovered, also ``bench_recovered_seconds``: seconds from the start of
the process to the end of Faust's table recovery (a restart's hand-over cost), and
``bench_held_entries``: entries in the hold table then.
"""

from __future__ import annotations

import os
import time
from collections import deque

import faust

from app.config import get_settings
from app.stream.offsets import client_options, fix_recovery_end_offsets
from app.stream.streaming import set_fetch_max_wait

__all__ = ["app", "iterate", "COUNTERS", "DONE"]

#: the process's start, for ``bench_recovered_seconds``
_STARTED = time.monotonic()
_s = get_settings()
_TABLE_MODE = os.environ.get("BENCH_FAUST_TABLE", "0")
if _TABLE_MODE not in ("0", "1", "hold"):
    raise SystemExit(f"BENCH_FAUST_TABLE must be 0, 1 or hold, got {_TABLE_MODE!r}")
_TABLE = _TABLE_MODE == "1"
_HOLD = _TABLE_MODE == "hold"


def _int_env(name: str, default: int, lowest: int) -> int:
    """An integer setting of this app, at least ``lowest``; else exit with one line."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < lowest:
        raise SystemExit(f"{name} must be >= {lowest}, got {value}")
    return value


_HOLD_WINDOW = _int_env("BENCH_HOLD_WINDOW", 500, 1)
_HOLD_VALUE_BYTES = _int_env("BENCH_HOLD_VALUE_BYTES", 0, 0)
_RELAY = os.environ.get("BENCH_FAUST_RELAY", "0") == "1"
if _RELAY:  # the worker's consumer fetch waits (app.stream.main.create_app)
    set_fetch_max_wait(*_s.broker_fetch_waits_seconds)
if _HOLD and _s.fix_end_offsets:
    # the held table is restored as the worker restores its tables: to the changelog's
    # true end (on Tansu, Faust alone stops short of each partition's last batch)
    fix_recovery_end_offsets(client_options(_s))

app = faust.App(
    _s.app_id,
    broker=_s.kafka_broker_url,
    store="memory://",
    datadir=str(_s.data_dir),
    autodiscover=False,
    topic_partitions=_s.topic_partitions,
    topic_replication_factor=1,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    producer_max_batch_size=_s.producer_max_batch_size,
    producer_linger=_s.producer_linger_seconds,
    producer_acks=-1,
    broker_session_timeout=_s.broker_session_timeout_seconds,
    broker_heartbeat_interval=_s.broker_heartbeat_interval_seconds,
    broker_rebalance_timeout=_s.broker_rebalance_timeout_seconds,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    stream_wait_empty=True,
    web_enabled=True,
    web_host=_s.web_host,
    web_port=_s.web_port,
    web_in_thread=False,
    key_serializer="raw",
    value_serializer="raw",
)

transactions_topic = app.topic(
    _s.transactions_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=_s.topic_partitions,
    internal=True,
)
#: key -> events seen, only with ``BENCH_FAUST_TABLE=1`` (no changelog topic otherwise)
counts = (
    app.Table("bench_counts", default=int, key_type=bytes, value_type=int) if _TABLE else None
)
#: ``partition:offset`` -> held value, only with ``BENCH_FAUST_TABLE=hold``
held = (
    app.Table("bench_held", default=None, key_type=bytes, value_type=bytes) if _HOLD else None
)

#: Events seen by this process (a list so the agent can update it in place).
COUNTERS = [0]
#: With ``BENCH_FAUST_RELAY=1``: records forwarded by the second hop.
DONE = [0]
#: Seconds from the process's start to the end of table recovery (None before).
RECOVERED: list[float | None] = [None]


async def iterate(stream):
    """Count the events; with ``BENCH_FAUST_TABLE=1`` also ``counts[key] += 1``; with
    ``BENCH_FAUST_TABLE=hold`` hold each event in ``held`` and release the one
    ``BENCH_HOLD_WINDOW`` events before it in its partition."""
    if _HOLD:
        window: dict[int, deque] = {}
        async for event in stream.events():
            msg = event.message
            key = b"%d:%d" % (msg.partition, msg.offset)
            value = event.value
            if len(value) < _HOLD_VALUE_BYTES:
                value = value + b" " * (_HOLD_VALUE_BYTES - len(value))
            held[key] = value
            keys = window.setdefault(msg.partition, deque())
            keys.append(key)
            if len(keys) > _HOLD_WINDOW:
                del held[keys.popleft()]
            COUNTERS[0] += 1
    elif _TABLE:
        async for key, _value in stream.items():
            counts[key] += 1
            COUNTERS[0] += 1
    else:
        async for _value in stream:
            COUNTERS[0] += 1


if _RELAY:
    hop_topic = app.topic(
        f"{_s.app_id}-hop", key_type=bytes, value_type=bytes,
        partitions=_s.topic_partitions, internal=True,
    )
    scored_topic = app.topic(_s.scored_topic, key_type=bytes, value_type=bytes, internal=True)

    @app.agent(transactions_topic, name="hop1")
    async def hop1(stream):
        """Hop 1: every transaction to the internal topic."""
        async for key, value in stream.items():
            COUNTERS[0] += 1
            await hop_topic.send(key=key, value=value)

    @app.agent(hop_topic, name="hop2")
    async def hop2(stream):
        """Hop 2: every record of the internal topic to the output topic."""
        async for key, value in stream.items():
            await scored_topic.send(key=key, value=b'{"transaction":' + value + b"}")
            DONE[0] += 1
else:
    app.agent(transactions_topic, name="iterate")(iterate)


@app.task
async def note_recovery() -> None:
    """Record when Faust's table recovery ended (``bench_recovered_seconds``)."""
    await app.tables.wait_until_recovery_completed()
    RECOVERED[0] = time.monotonic() - _STARTED


@app.page("/metrics")
async def metrics_view(web, request):
    """The event counters in the Prometheus text format."""
    n, done = COUNTERS[0], (DONE[0] if _RELAY else COUNTERS[0])
    text = (
        "# TYPE bench_events_consumed_total counter\n"
        f"bench_events_consumed_total {n}\n"
        "# TYPE bench_events_done_total counter\n"
        f"bench_events_done_total {done}\n"
    )
    if RECOVERED[0] is not None:
        text += (
            "# TYPE bench_recovered_seconds gauge\n"
            f"bench_recovered_seconds {RECOVERED[0]:.3f}\n"
        )
        if held is not None:
            text += f"# TYPE bench_held_entries gauge\nbench_held_entries {len(held)}\n"
    return web.text(text)


if __name__ == "__main__":
    app.main()

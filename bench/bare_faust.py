"""Faust's own floor: an agent that only iterates over the transactions topic.

Run as ``python -m bench.bare_faust worker -l warn`` with the worker's environment
(``KAFKA_BROKER_URL``, ``APP_ID``, ``TRANSACTIONS_TOPIC``, ``WEB_PORT`` ...: the same
:class:`app.config.Settings` the project's worker reads). The consumer, producer and
group settings are those of :func:`app.main.create_app`, so the only difference from the
project's worker is the work done per event. With ``BENCH_FAUST_TABLE=1`` the agent also
increments one table entry per event (each increment is a changelog record), the
other reference point of issue 7.

``GET /metrics`` serves two Prometheus counters: ``bench_events_consumed_total`` and
``bench_events_done_total`` (the same number: each event is consumed and done at once),
so the harness reads this app exactly as it reads the project's worker.
"""

from __future__ import annotations

import os

import faust

from app.config import get_settings

__all__ = ["app", "iterate", "COUNTERS"]

_s = get_settings()
_TABLE = os.environ.get("BENCH_FAUST_TABLE", "0") == "1"

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

#: Events seen by this process (a list so the agent can update it in place).
COUNTERS = [0]


@app.agent(transactions_topic, name="iterate")
async def iterate(stream):
    """Count the events; with ``BENCH_FAUST_TABLE=1`` also ``counts[key] += 1``."""
    if _TABLE:
        async for key, _value in stream.items():
            counts[key] += 1
            COUNTERS[0] += 1
    else:
        async for _value in stream:
            COUNTERS[0] += 1


@app.page("/metrics")
async def metrics_view(web, request):
    """The event counters in the Prometheus text format."""
    n = COUNTERS[0]
    text = (
        "# TYPE bench_events_consumed_total counter\n"
        f"bench_events_consumed_total {n}\n"
        "# TYPE bench_events_done_total counter\n"
        f"bench_events_done_total {n}\n"
    )
    return web.text(text)


if __name__ == "__main__":
    app.main()

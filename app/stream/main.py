"""The one :class:`faust.App` of the service, built from :class:`app.config.Settings`.

Run a worker with ``python -m app worker -l info`` (or ``faust -A app.stream.main worker``);
several workers on one machine need distinct ``--web-port`` values.
"""

from __future__ import annotations

import faust

from ..config import get_settings
from ..security import kafka_ssl_context
from .offsets import client_options, fix_recovery_end_offsets
from .streaming import (
    ProcessedOnlyEvent,
    acknowledge_skipped_events,
    seek_on_consumer_thread,
    guard_offset_gaps,
    keep_root_logger_level,
    limit_timer_overlap_warnings,
    register_tables_at_once,
    set_fetch_max_wait,
)

__all__ = ["app", "create_app", "broker_credentials", "DEAD_LETTER_MAX_BYTES"]

from .offsets import DEAD_LETTER_MAX_BYTES  # noqa: E402 - re-exported


def broker_credentials(settings):
    """Faust broker credentials from the settings: SASL (over TLS with ``KAFKA_SSL``),
    TLS only, or None (plaintext).

    >>> from app.config import Settings
    >>> broker_credentials(Settings(kafka_sasl_username=None)) is None
    True
    >>> c = broker_credentials(Settings(kafka_sasl_username="u", kafka_sasl_password="pw",
    ...                                 kafka_sasl_mechanism="SCRAM-SHA-512"))
    >>> c.mechanism.value, c.username
    ('SCRAM-SHA-512', 'u')
    """
    ctx = kafka_ssl_context(settings)
    if not settings.kafka_sasl_username:
        return faust.SSLCredentials(ctx) if ctx is not None else None
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ctx,
    )


def create_app() -> faust.App:
    """Build the Faust app from the environment's settings.

    The settings that matter on the Tansu development broker: table recovery probes
    the true end of each changelog partition (``FIX_END_OFFSETS``, see
    :mod:`app.stream.offsets`), and short session/rebalance timeouts let a restarted worker
    rejoin its consumer group quickly.
    """
    s = get_settings()
    if s.fix_end_offsets:
        fix_recovery_end_offsets(client_options(s))
    # the stream's source topics have contiguous offsets: a skipped range is fetched
    # again (app/stream/streaming.py)
    guard_offset_gaps((s.transactions_topic, s.labels_topic, s.by_terminal_topic))
    acknowledge_skipped_events()  # so that the guard learns of every skipped event
    seek_on_consumer_thread()  # a seek never races the consumer thread's fetch
    register_tables_at_once()  # every table is declared at import (app/stream/tables.py)
    keep_root_logger_level()  # no DEBUG records built under Faust's spinner
    limit_timer_overlap_warnings()  # one "Timer ... is overlapping" a minute per timer
    set_fetch_max_wait(*s.broker_fetch_waits_seconds)
    try:  # Faust creates the app's own folder (DATA_DIR/<app id>), not its parents
        s.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # reported by Faust when the worker starts
    return faust.App(
        s.app_id,
        broker=s.kafka_broker_url,
        broker_credentials=broker_credentials(s),
        store=s.store_url,
        # one folder per app id: a RocksDB store never opens another app's tables
        datadir=str(s.data_dir / s.app_id),
        autodiscover=False,
        origin="app",
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_max_batch_size=s.producer_max_batch_size,
        producer_linger=s.producer_linger_seconds,
        producer_acks=-1,
        # a dead letter wraps the rejected payload in base64 (4/3 of its size): leave
        # room for a payload as large as a Kafka record can be (1 MiB by default)
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        broker_session_timeout=s.broker_session_timeout_seconds,
        broker_request_timeout=max(s.broker_request_timeout_seconds, s.broker_session_timeout_seconds),
        broker_heartbeat_interval=s.broker_heartbeat_interval_seconds,
        broker_rebalance_timeout=s.broker_rebalance_timeout_seconds,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
        table_standby_replicas=s.table_standby_replicas,
        web_enabled=True,
        web_host=s.web_host,
        web_port=s.web_port,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        # a skipped event (rebalance, shutdown) is not acknowledged: see app/stream/streaming.py
        Event=ProcessedOnlyEvent,
    )


app = create_app()

# agents, tables, topics and views register themselves on import
from . import agents  # noqa: E402,F401


@app.on_before_shutdown.connect
async def _close_runtime(app_, **kwargs) -> None:  # noqa: ANN001
    """At the worker's stop (its consumer stopped): close the clients the runtime
    created on demand (the alert topic lookup's consumer)."""
    from . import runtime

    if runtime._runtime is not None:
        await runtime._runtime.close()

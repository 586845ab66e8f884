"""Agents: thin loops wiring topics, the account table, scoring and sinks.

``score_transactions`` reads ``transactions`` in batches (``stream.take_events``), lets
:func:`app.pipeline.process_batch` do all the work, then sends dead letters, scored
transactions and alerts, records alert ids in Redis and writes each touched account's
state once per batch.

Failure rule: a batch is acknowledged only after all its output is acknowledged by the
broker. If anything fails after the bounded retries (broker, Redis), the worker exits
at once *without* acknowledging the batch, so after a restart the batch is processed
again; Redis then suppresses the alerts already raised.
"""

from __future__ import annotations

import base64
import logging
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .events import encode
from .features import AccountState
from .main import app
from .pipeline import RawRecord, process_batch
from .runtime import Runtime, get_runtime
from .tables import account_states
from .topics import alerts_topic, dead_letter_topic, scored_topic, transactions_topic

__all__ = ["score_transactions", "metrics_view", "EXIT_BATCH_FAILED", "EXIT_NO_MODEL"]

log = logging.getLogger(__name__)

#: Exit status of a worker whose batch failed (it was not acknowledged).
EXIT_BATCH_FAILED = 70
#: Exit status of a worker that could not load its model (sysexits EX_CONFIG).
EXIT_NO_MODEL = 78


def _state_of(account_id: str) -> AccountState | None:
    raw = account_states.get(account_id)
    return AccountState.from_bytes(raw) if raw else None


async def _handle_batch(rt: Runtime, scorer, events) -> None:
    s, m = rt.settings, rt.metrics
    now = time.monotonic()
    records = [
        RawRecord(
            value=e.message.value,
            key=e.message.key,
            topic=e.message.topic,
            partition=e.message.partition,
            offset=e.message.offset,
            arrival_s=e.message.time_in or now,  # set by Faust's monitor on receipt
        )
        for e in events
    ]
    m.transactions_consumed.inc(len(records))
    threshold = s.alert_threshold if s.alert_threshold is not None else scorer.alert_threshold
    with m.scoring_batch_duration.time():
        result = process_batch(
            records, _state_of, scorer, threshold, s.top_reasons, s.max_event_bytes
        )
    pending = []
    for dl in result.dead_letters:
        key = base64.b64decode(dl.raw_key_b64) if dl.raw_key_b64 is not None else None
        pending.append(await dead_letter_topic.send(key=key, value=encode(dl)))
        m.events_rejected.labels(reason=dl.reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s", dl.source_topic, dl.partition, dl.offset, dl.detail
        )
    for account_id, raw in result.rekeyed:
        pending.append(await transactions_topic.send(key=account_id.encode(), value=raw))
        m.transactions_rekeyed.inc()
    if s.publish_scored:
        for st in result.scored:
            key = st.transaction.account_id.encode()
            pending.append(await scored_topic.send(key=key, value=encode(st)))
    if result.alerts:
        seen = await rt.store.already_alerted([a.alert_id for a in result.alerts])
        fresh = [
            (a, t) for a, t, dup in zip(result.alerts, result.alert_arrivals_s, seen) if not dup
        ]
        m.alerts_suppressed.inc(len(result.alerts) - len(fresh) + result.alerts_deduplicated)
        sent = []
        for a, arrival in fresh:
            key = a.transaction.account_id.encode()
            sent.append((await alerts_topic.send(key=key, value=encode(a)), a, arrival))
        for fut, a, arrival in sent:
            await fut
            m.alert_latency.observe(max(0.0, time.monotonic() - arrival))
            m.alerts.labels(model_version=a.model_version).inc()
        await rt.store.mark_alerted([a.alert_id for a, _ in fresh], s.alert_dedup_ttl_seconds)
    for account_id, state in result.states.items():
        account_states.set_in_partition(
            account_id, state.to_bytes(), result.partitions[account_id]
        )
    for fut in pending:
        await fut
    done = time.monotonic()
    for arrival in result.arrivals_s:
        m.processing_latency.observe(max(0.0, done - arrival))
    m.accounts.set(len(account_states))
    if result.scored:
        m.scoring_batch_size.observe(len(result.scored))
        m.duplicate_transactions.inc(result.duplicates)
        for st in result.scored:
            m.scores.observe(st.score)
        # last: a transaction counts as scored once all its output is acknowledged
        m.transactions_scored.labels(model_version=scorer.version).inc(len(result.scored))


@app.agent(transactions_topic, name="score_transactions")
async def score_transactions(stream):
    """Score every transaction; publish alerts at or above the threshold."""
    rt = get_runtime()
    try:
        scorer = rt.scorer or await rt.load_model()
    except Exception as exc:  # noqa: BLE001 - no model: nothing can be scored
        log.critical("cannot load the model: %s", exc)
        os._exit(EXIT_NO_MODEL)
    s = rt.settings
    async for events in stream.take_events(s.batch_max_events, s.batch_max_wait_seconds):
        try:
            await _handle_batch(rt, scorer, events)
        except Exception:  # noqa: BLE001
            log.exception(
                "batch of %d events failed; exiting without acknowledging it, so it is "
                "processed again after a restart",
                len(events),
            )
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)


@app.page("/metrics")
async def metrics_view(web, request):
    """Prometheus exposition of this worker's metrics (read-only)."""
    return web.bytes(
        generate_latest(get_runtime().metrics.registry),
        content_type=CONTENT_TYPE_LATEST.split(";")[0],
    )

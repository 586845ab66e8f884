"""Agents: thin loops wiring topics, tables, scoring and sinks.

- ``featurize_accounts`` (``transactions``, keyed by account): dead-letters bad records,
  updates ``account_states``, forwards each valid transaction with its account
  features to the internal ``<app id>-transactions-by-terminal`` topic, keyed by
  terminal.
- ``record_labels`` (``transaction-labels``, keyed by terminal): applies labels to
  ``terminal_states``.
- ``score_transactions`` (internal topic, keyed by terminal): waits until the labels of
  its partition have caught up with the batch's event time, adds terminal features,
  scores the batch, publishes scored transactions and alerts (idempotent through
  Redis) and updates ``terminal_states``.

All the work is in :mod:`app.pipeline`. Failure rule: a batch is acknowledged only after
all its output is acknowledged by the broker; if anything fails after the bounded
retries, the worker exits at once *without* acknowledging the batch, so it is processed
again after a restart (Redis then suppresses alerts already raised).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time

from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .events import encode
from .features import AccountState, TerminalState
from .main import app
from .pipeline import Enriched, RawRecord, apply_labels, featurize_accounts, score_enriched
from .runtime import Runtime, get_runtime
from .tables import account_states, terminal_states
from .topics import (
    alerts_topic,
    by_terminal_topic,
    dead_letter_topic,
    labels_topic,
    scored_topic,
    transactions_topic,
)

__all__ = [
    "featurize_accounts_agent",
    "record_labels",
    "score_transactions",
    "metrics_view",
    "EXIT_BATCH_FAILED",
    "EXIT_NO_MODEL",
]

log = logging.getLogger(__name__)

#: Exit status of a worker whose batch failed (it was not acknowledged).
EXIT_BATCH_FAILED = 70
#: Exit status of a worker that could not load its model (sysexits EX_CONFIG).
EXIT_NO_MODEL = 78

#: labels partition -> (latest label time processed, next offset to process)
_label_progress: dict[int, tuple[int, int]] = {}


def _account(account_id: str) -> AccountState | None:
    raw = account_states.get(account_id)
    return AccountState.from_bytes(raw) if raw else None


def _terminal(terminal_id: str) -> TerminalState | None:
    raw = terminal_states.get(terminal_id)
    return TerminalState.from_bytes(raw) if raw else None


def _records(events) -> list[RawRecord]:
    now_ms = int(time.time() * 1000)
    return [
        RawRecord(
            value=e.message.value,
            key=e.message.key,
            topic=e.message.topic,
            partition=e.message.partition,
            offset=e.message.offset,
            received_ms=now_ms,
        )
        for e in events
    ]


async def _send_dead_letters(rt: Runtime, dead, pending: list) -> None:
    for dl in dead:
        key = base64.b64decode(dl.raw_key_b64) if dl.raw_key_b64 is not None else None
        pending.append(await dead_letter_topic.send(key=key, value=encode(dl)))
        rt.metrics.events_rejected.labels(reason=dl.reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s", dl.source_topic, dl.partition, dl.offset, dl.detail
        )


async def _guarded(name: str, events, handler) -> None:
    try:
        await handler(events)
    except Exception:  # noqa: BLE001
        log.exception(
            "%s: batch of %d events failed; exiting without acknowledging it, so it is "
            "processed again after a restart",
            name,
            len(events),
        )
        logging.shutdown()
        os._exit(EXIT_BATCH_FAILED)


# --- stage 1: accounts ------------------------------------------------------------------


async def _accounts_batch(events) -> None:
    rt = get_runtime()
    s, m = rt.settings, rt.metrics
    records = _records(events)
    m.transactions_consumed.inc(len(records))
    batch = featurize_accounts(records, _account, s.max_event_bytes)
    pending: list = []
    await _send_dead_letters(rt, batch.dead_letters, pending)
    for account_id, raw in batch.rekeyed:
        pending.append(await transactions_topic.send(key=account_id.encode(), value=raw))
        m.transactions_rekeyed.inc()
    for item in batch.enriched:
        key = item.transaction.terminal_id.encode()
        pending.append(await by_terminal_topic.send(key=key, value=item.to_bytes()))
    m.duplicate_transactions.inc(batch.duplicates)
    for account_id, state in batch.states.items():
        account_states.set_in_partition(account_id, state.to_bytes(), batch.partitions[account_id])
    for fut in pending:
        await fut
    m.accounts.set(len(account_states))
    if result.scored:
        m.scoring_batch_size.observe(len(result.scored))
        m.duplicate_transactions.inc(result.duplicates)
        for st in result.scored:
            m.scores.observe(st.score)
        # last: a transaction counts as scored once all its output is acknowledged
        m.transactions_scored.labels(model_version=scorer.version).inc(len(result.scored))


@app.agent(transactions_topic, name="featurize_accounts")
async def featurize_accounts_agent(stream):
    """Validate transactions, keep account state, add account features."""
    s = get_runtime().settings
    async for events in stream.take_events(s.batch_max_events, s.batch_max_wait_seconds):
        await _guarded("featurize_accounts", events, _accounts_batch)


# --- labels -----------------------------------------------------------------------------


async def _labels_batch(events) -> None:
    rt = get_runtime()
    s = rt.settings
    batch = apply_labels(_records(events), _terminal, max_event_bytes=s.max_event_bytes)
    pending: list = []
    await _send_dead_letters(rt, batch.dead_letters, pending)
    for terminal_id, state in batch.states.items():
        terminal_states.set_in_partition(terminal_id, state.to_bytes(), batch.partitions[terminal_id])
    for fut in pending:
        await fut
    rt.metrics.labels_consumed.inc(batch.labels)
    for p, next_offset in batch.next_offsets.items():
        latest, _ = _label_progress.get(p, (0, 0))
        _label_progress[p] = (max(latest, batch.latest_label_ms.get(p, 0)), next_offset)


@app.agent(labels_topic, name="record_labels")
async def record_labels(stream):
    """Apply fraud/genuine verdicts to the terminals' state."""
    s = get_runtime().settings
    async for events in stream.take_events(s.batch_max_events, s.batch_max_wait_seconds):
        await _guarded("record_labels", events, _labels_batch)


# --- stage 2: terminals and scoring -------------------------------------------------


def _highwater(partition: int) -> int | None:
    try:
        return app.consumer.highwater(TP(labels_topic.get_topic_name(), partition))
    except Exception:  # noqa: BLE001 - not assigned or not fetched yet
        return None


def _labels_ready(partition: int, event_time_ms: int) -> bool:
    """Whether every label timed before ``event_time_ms`` on ``partition`` is applied."""
    latest, next_offset = _label_progress.get(partition, (0, 0))
    if latest >= event_time_ms - 1:
        return True
    highwater = _highwater(partition)
    return highwater is not None and highwater >= 0 and next_offset >= highwater


async def _wait_for_labels(rt: Runtime, items: list[Enriched], partitions: list[int]) -> None:
    need: dict[int, int] = {}
    for item, p in zip(items, partitions):
        need[p] = max(need.get(p, 0), item.transaction.event_time_ms)
    deadline = time.monotonic() + rt.settings.label_wait_max_seconds
    while not all(_labels_ready(p, t) for p, t in need.items()):
        if time.monotonic() >= deadline:
            rt.metrics.label_wait_timeouts.inc()
            log.info(
                "labels not caught up after %.1fs: %s", rt.settings.label_wait_max_seconds,
                {p: (t, _label_progress.get(p), _highwater(p)) for p, t in need.items()},
            )
            return
        await asyncio.sleep(0.01)


async def _score_batch(events, scorer) -> None:
    rt = get_runtime()
    s, m = rt.settings, rt.metrics
    items = [Enriched.from_bytes(e.message.value) for e in events]
    partitions = [e.message.partition for e in events]
    await _wait_for_labels(rt, items, partitions)
    threshold = s.alert_threshold if s.alert_threshold is not None else scorer.alert_threshold
    with m.scoring_batch_duration.time():
        batch = score_enriched(items, _terminal, scorer, threshold, s.top_reasons)
    pending: list = []
    if s.publish_scored:
        for st in batch.scored:
            key = st.transaction.account_id.encode()
            pending.append(await scored_topic.send(key=key, value=encode(st)))
    if batch.alerts:
        seen = await rt.store.already_alerted([a.alert_id for a in batch.alerts])
        fresh = [
            (a, r) for a, r, dup in zip(batch.alerts, batch.alert_received_ms, seen) if not dup
        ]
        m.alerts_suppressed.inc(len(batch.alerts) - len(fresh))
        sent = []
        for a, received in fresh:
            key = a.transaction.account_id.encode()
            sent.append((await alerts_topic.send(key=key, value=encode(a)), a, received))
        for fut, a, received in sent:
            await fut
            m.alert_latency.observe(max(0.0, time.time() - received / 1000))
            m.alerts.labels(model_version=a.model_version).inc()
        await rt.store.mark_alerted([a.alert_id for a, _ in fresh], s.alert_dedup_ttl_seconds)
    partition_of = {i.transaction.terminal_id: p for i, p in zip(items, partitions)}
    for terminal_id, state in batch.states.items():
        terminal_states.set_in_partition(terminal_id, state.to_bytes(), partition_of[terminal_id])
    for fut in pending:
        await fut
    done = time.time()
    for received in batch.received_ms:
        m.processing_latency.observe(max(0.0, done - received / 1000))
    for st in batch.scored:
        m.scores.observe(st.score)
    m.scoring_batch_size.observe(len(batch.scored))
    m.terminals.set(len(terminal_states))
    # last: a transaction counts as scored once all its output is acknowledged
    m.transactions_scored.labels(model_version=scorer.version).inc(len(batch.scored))


@app.agent(by_terminal_topic, name="score_transactions")
async def score_transactions(stream):
    """Add terminal features, score every transaction, alert at the threshold."""
    rt = get_runtime()
    try:
        scorer = rt.scorer or await rt.load_model()
    except Exception as exc:  # noqa: BLE001 - no model: nothing can be scored
        log.critical("cannot load the model: %s", exc)
        logging.shutdown()
        os._exit(EXIT_NO_MODEL)
    s = rt.settings

    async def handle(events):
        await _score_batch(events, scorer)

    async for events in stream.take_events(s.batch_max_events, s.batch_max_wait_seconds):
        await _guarded("score_transactions", events, handle)


@app.page("/metrics")
async def metrics_view(web, request):
    """Prometheus exposition of this worker's metrics (read-only)."""
    return web.bytes(
        generate_latest(get_runtime().metrics.registry),
        content_type=CONTENT_TYPE_LATEST.split(";")[0],
    )

"""Agents: thin loops wiring topics, tables, scoring and sinks.

- ``featurize_accounts`` (``transactions``, keyed by account): dead-letters bad records,
  updates ``account_states``, forwards the valid transactions with their account
  features to the internal ``<app id>-transactions-by-terminal`` topic, one
  micro-batch record per partition of their terminals (the partition the Kafka
  default partitioner gives the terminal id, as for its labels), and after each batch
  (and every WATERMARK_INTERVAL_SECONDS when idle) a
  watermark of each of its partitions to every partition of that topic.
- ``score_transactions`` (the by-terminal topic and ``transaction-labels``, both keyed
  by terminal, read as one stream): applies labels and transactions to
  ``terminal_states`` as they arrive, holds each transaction until its terminal
  features are complete in event time (:mod:`app.alignment`), then scores the
  released ones in one model call, publishes scored transactions and alerts
  (idempotent through Redis).

All the work is in :mod:`app.pipeline` and :mod:`app.alignment`. Failure rule: a
record is acknowledged only after all its output is acknowledged by the broker (a held
transaction stays unacknowledged until it is scored); if anything fails after the
bounded retries, the worker exits at once *without* acknowledging the batch, so it is
processed again after a restart (Redis then suppresses alerts already raised).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from functools import partial

from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..alerting.sink import raise_alerts
from ..alignment import EventTimeAligner
from ..config import get_settings
from ..deadletters import carried_headers
from ..encoding import ENCODING_HEADER, encoding_of
from ..events import encode
from ..exceptions import RecoveryStalledError
from ..features import AccountState, TerminalState
from ..features.state import DAY_MS
from ..features.terminal import DEFAULT_DELAY_DAYS
from ..monitoring.stall import PartitionWatch
from ..monitoring.worker import (
    MetricsSensor,
    count_label_verdicts,
    count_produced,
    observe_scored,
    sample_gauges,
    watch_partitions,
    watch_recovery,
)
from ..pipeline import (
    RawRecord,
    Watermark,
    featurize_accounts,
    forward_records,
    receive_terminal_records,
    score_enriched,
)
from ..partitioning import key_partition
from ..tracing import continue_from, from_headers, headers_with
from ..tracing import new as new_traceparent
from .control import ControlFollower
from .main import app
from .streaming import (
    abandon,
    hand_over_on_wait_empty,
    next_offset_of,
    produce,
    produce_many,
    take_events_adaptive,
)
from .runtime import Runtime, get_runtime
from .tables import account_states, terminal_states
from .topics import (
    alerts_topic,
    by_terminal_topic,
    dead_letter_topic,
    labels_topic,
    scored_topic,
    scoring_inputs,
    transactions_topic,
)

__all__ = [
    "featurize_accounts_agent",
    "score_transactions",
    "report_idle_partitions",
    "release_held_transactions",
    "follow_control",
    "sample_worker_gauges",
    "metrics_view",
    "EXIT_BATCH_FAILED",
    "EXIT_NO_MODEL",
    "EXIT_STOP_OVERRUN",
]

log = logging.getLogger(__name__)

#: Exit status of a worker whose batch failed (it was not acknowledged).
EXIT_BATCH_FAILED = 70
#: Exit status of a worker that could not load its model (sysexits EX_CONFIG).
EXIT_NO_MODEL = 78

#: transactions partition -> (latest event time forwarded, next offset, monotonic time)
_stage1_progress: dict[int, tuple[int, int, float]] = {}


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
            timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None,
            encoding=encoding_of(e.message.headers),
            traceparent=from_headers(e.message.headers),
        )
        for e in events
    ]


async def _send_dead_letters(rt: Runtime, dead, pending: list, events, records) -> None:
    carried = carried_headers(
        ((e.message.topic, e.message.partition, e.message.offset), e.message.headers)
        for e in events
    )  # a re-driven record's origin stays on its new dead letter (never re-driven twice)
    # each dead letter continues the trace of its rejected record
    traces = {(r.topic, r.partition, r.offset): r.traceparent for r in records} if dead else {}
    for dl in dead:
        key = base64.b64decode(dl.raw_key_b64) if dl.raw_key_b64 is not None else None
        origin = (dl.source_topic, dl.partition, dl.offset)
        headers = list(carried.get(origin) or []) + headers_with(continue_from(traces.get(origin)))
        pending.append(
            await _produce(dead_letter_topic.get_topic_name(), encode(dl), key=key, headers=headers)
        )
        rt.metrics.events_rejected.labels(reason=dl.reason).inc()
        rt.dead_letter_log.event(  # a line per reason and partition per interval
            (dl.reason, dl.partition), dl.offset,
            "dead-lettered %s[%d]@%d: %s", dl.source_topic, dl.partition, dl.offset, dl.detail,
        )


async def _produce(
    topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
):
    """:func:`app.stream.streaming.produce`, counted in ``fraud_messages_produced_total``.

    ``headers`` default to a ``traceparent`` that starts a trace (every record the
    worker produces carries one)."""
    if headers is None:
        headers = headers_with(new_traceparent())
    fut = await produce(app, topic, value, key=key, partition=partition, headers=headers)
    fut.add_done_callback(_counted())
    return fut


async def _produce_many(topic: str, records: list) -> list:
    """:func:`app.stream.streaming.produce_many` (one future per partition and batch), counted
    in ``fraud_messages_produced_total``."""
    m = get_runtime().metrics
    futures = []
    for batch in await produce_many(app, topic, records):
        batch.future.add_done_callback(partial(count_produced, m, records=batch.records))
        futures.append(batch.future)
    return futures


def _counted():
    """Done-callback counting a produced record in this worker's metrics."""
    return partial(count_produced, get_runtime().metrics)


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
    if s.debug_batch_log:
        _log_batch(records)
    batch = featurize_accounts(
        records,
        _account,
        s.max_event_bytes,
        allowed_lateness_ms=int(s.allowed_lateness_seconds * 1000),
        max_clock_skew_ms=int(s.max_clock_skew_seconds * 1000),
    )
    pending: list = []
    await _send_dead_letters(rt, batch.dead_letters, pending, events, records)
    m.count_unknown_fields(transactions_topic.get_topic_name(), batch.unknown_fields)
    for account_id, raw, encoding, tp in batch.rekeyed:
        headers = [(ENCODING_HEADER, encoding)] if encoding is not None else []
        pending.append(
            await _produce(
                transactions_topic.get_topic_name(), raw, key=account_id.encode(),
                headers=headers + headers_with(continue_from(tp)),
            )
        )
        m.transactions_rekeyed.inc()
    partitions, by_terminal = list(range(s.topic_partitions)), by_terminal_topic.get_topic_name()
    # the micro-batches, then the watermarks that follow them, in one record batch per
    # scoring partition (one future each; the order within a partition is kept)
    to_scoring = [
        (None, raw, q, headers_with(new_traceparent()))
        for q, raw in forward_records(batch.enriched, lambda t: _scoring_partition(t, partitions))
    ]
    m.duplicate_transactions.inc(batch.duplicates)
    m.late_transactions.inc(batch.late)
    m.out_of_order_transactions.inc(batch.out_of_order)
    m.revised_transactions.inc(batch.revised)
    pending += await account_states.put_many(
        {a: state.to_bytes() for a, state in batch.states.items()}, batch.partitions, _counted(),
        headers=headers_with(new_traceparent()),
    )
    now = time.monotonic()
    for p, next_offset in batch.next_offsets.items():
        latest, _, _ = _stage1_progress.get(p, (0, 0, now))
        _stage1_progress[p] = (max(latest, batch.event_times.get(p, 0)), next_offset, now)
        to_scoring += _watermark_records(p)
    pending += await _produce_many(by_terminal, to_scoring)
    for fut in pending:
        await fut
    m.accounts.set(len(account_states))


def _log_batch(records: list[RawRecord]) -> None:
    """DEBUG_BATCH_LOG: one line per accounts-stage batch with, per partition, its
    offsets in the order handed on (runs of consecutive offsets)."""
    runs: dict[int, list[list[int]]] = {}
    for r in records:
        seq = runs.setdefault(r.partition, [])
        if seq and r.offset == seq[-1][1] + 1:
            seq[-1][1] = r.offset
        else:
            seq.append([r.offset, r.offset])
    log.info(
        "accounts batch: %s",
        "; ".join(
            f"[{p}] " + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in seq)
            for p, seq in sorted(runs.items())
        ),
    )


def _scoring_partition(terminal_id: str, partitions: list[int]) -> int:
    """The by-terminal partition of a terminal: the Kafka default partitioner's (murmur2
    of the key, remembered per terminal), the one that places the terminal's labels."""
    return partitions[key_partition(terminal_id, len(partitions))]


def _caught_up(tp: TP, next_offset: int | None) -> bool:
    """Whether everything the broker had on ``tp`` at the last fetch is processed."""
    try:
        highwater = app.consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - not assigned or not fetched yet
        return False
    if highwater is None or highwater < 0:
        return False
    return (next_offset or 0) >= highwater


def _watermark_records(partition: int) -> list[tuple]:
    """The records that tell every scoring-stage partition how far ``partition`` has
    come, as ``(key, value, partition, headers)`` for :func:`_produce_many`."""
    latest, next_offset, _ = _stage1_progress.get(partition, (0, None, 0.0))
    tp = TP(transactions_topic.get_topic_name(), partition)
    wm = Watermark(partition, latest, _caught_up(tp, next_offset)).to_bytes()
    n = get_runtime().settings.topic_partitions
    return [(None, wm, q, headers_with(new_traceparent())) for q in range(n)]


@app.agent(transactions_topic, name="featurize_accounts")
async def featurize_accounts_agent(stream):
    """Validate transactions, keep account state, add account features."""
    s = get_runtime().settings
    async for events in take_events_adaptive(stream, s.batch_max_events, s.batch_max_wait_seconds):
        await _guarded("featurize_accounts", events, _accounts_batch)


@app.timer(get_settings().watermark_interval_seconds)
async def report_idle_partitions() -> None:
    """Watermarks of assigned ``transactions`` partitions with no batch lately (an idle
    partition must not hold the scoring stage back)."""
    s = get_runtime().settings
    topic = transactions_topic.get_topic_name()
    now = time.monotonic()
    records: list = []
    for tp in app.consumer.assignment():
        if tp.topic != topic:
            continue
        _, next_offset, at = _stage1_progress.get(tp.partition, (0, None, 0.0))
        if now - at < s.watermark_interval_seconds:
            continue
        if next_offset is None:
            try:
                next_offset = await app.consumer.position(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                continue
            latest = _stage1_progress.get(tp.partition, (0, 0, 0.0))[0]
            _stage1_progress[tp.partition] = (latest, next_offset, 0.0)
        records += _watermark_records(tp.partition)
    for fut in await _produce_many(by_terminal_topic.get_topic_name(), records):
        await fut


# --- stage 2: terminals and scoring -------------------------------------------------

_aligner: EventTimeAligner | None = None
_stage2_lock = asyncio.Lock()
#: a rebalance or a stop has begun: held work is handed over, nothing new is held
_handing_over = False
#: labels partition -> (next offset to read, monotonic time of its last label)
_labels_progress: dict[int, tuple[int, float]] = {}


def _get_aligner() -> EventTimeAligner:
    global _aligner
    if _aligner is None:
        s = get_settings()
        _aligner = EventTimeAligner(
            n_sources=s.topic_partitions,
            delay_ms=DEFAULT_DELAY_DAYS * DAY_MS,
            stall_seconds=s.alignment_stall_seconds,
        )
    return _aligner


async def _intake(events) -> tuple[list[bytes], list]:
    """Apply a batch to terminal state and hold its transactions for alignment; returns
    the batch's label payloads and the futures of its writes (dead letters, terminal
    states' changelog), which the caller awaits with the scored records, before the
    batch is acknowledged."""
    rt = get_runtime()
    s, m = rt.settings, rt.metrics
    aligner = _get_aligner()
    records = _records(events)
    intake = receive_terminal_records(
        records,
        _terminal,
        labels_topic.get_topic_name(),
        aligner.keep_from_ms,
        max_event_bytes=s.max_event_bytes,
        max_clock_skew_ms=int(s.max_clock_skew_seconds * 1000),
    )
    pending: list = []
    await _send_dead_letters(rt, intake.dead_letters, pending, events, records)
    m.count_unknown_fields(labels_topic.get_topic_name(), intake.unknown_fields)
    pending += await terminal_states.put_many(
        {t: state.to_bytes() for t, state in intake.states.items()}, intake.partitions, _counted(),
        headers=headers_with(new_traceparent()),
    )
    # not awaited here: the table holds the new states already, and the broker's
    # acknowledgement is awaited with the scored records (one round trip, not two)
    now = time.monotonic()
    for q, wm in intake.watermarks:
        aligner.on_watermark(q, wm.source, wm.event_time_ms, wm.caught_up, now)
    for q, t in intake.label_times.items():
        aligner.on_label_time(q, t, now)
    labels_name = labels_topic.get_topic_name()
    label_values: list[bytes] = []
    for rec in records:
        if rec.topic == labels_name:
            _labels_progress[rec.partition] = (rec.offset + 1, now)
            label_values.append(rec.value)
    if _handing_over:  # a rebalance or a stop is under way: the next owner scores them
        abandon(app.consumer, (events[i].message for _, _, i in intake.arrived))
        m.alignment_handed_over.inc(len(intake.arrived))
    else:
        for q, item, i in intake.arrived:
            event = events[i]
            event.message.incref()  # acknowledged once scored (see _release)
            aligner.add(q, (item, event), item.transaction.event_time_ms, now)
    m.labels_consumed.inc(intake.labels)
    m.observe_labels(intake)
    m.duplicate_terminal_transactions.inc(intake.duplicates)
    m.terminals.set(len(terminal_states))
    return label_values, pending


async def _release(controller, writes: list | None = None) -> None:
    """Score every transaction the aligner lets through, then acknowledge them once
    their output and ``writes`` (the futures of the intake before) are acknowledged by
    the broker; ``writes`` are awaited in any case."""
    rt = get_runtime()
    s, m = rt.settings, rt.metrics
    aligner = _get_aligner()
    now = time.monotonic()
    by_terminal = by_terminal_topic.get_topic_name()
    for q in aligner.pending_partitions():
        own = TP(by_terminal, q)
        aligner.on_input_idle(q, _caught_up(own, next_offset_of(app.consumer, own)))
        tp = TP(labels_topic.get_topic_name(), q)
        if q not in _labels_progress:
            # no label read since the partition was assigned (a restart, a quiet
            # partition): reading resumed at its committed offset, not at offset 0
            resumed = next_offset_of(app.consumer, tp)
            if resumed is not None:
                _labels_progress[q] = (resumed, 0.0)
        next_offset, last = _labels_progress.get(q, (0, 0.0))
        idle = now - last >= s.label_idle_seconds and _caught_up(tp, next_offset)
        aligner.on_labels_idle(q, idle)
    released = aligner.release(now)
    m.alignment_pending.set(aligner.pending())
    # one stage-2 record carries up to FORWARD_MAX_ITEMS transactions: score in batches
    # of at most BATCH_MAX_EVENTS (bounded model calls, alert bursts and latency)
    writes = list(writes or ())
    for i in range(0, len(released), s.batch_max_events):
        await _score_released(released[i : i + s.batch_max_events], controller, writes)
        writes = []
    for fut in writes:
        await fut


async def _score_released(released: list, controller, writes: list | None = None) -> None:
    """Score, decide, publish and acknowledge one batch of released transactions
    (after ``writes``, futures of earlier writes, are acknowledged too)."""
    rt = get_runtime()
    s, m = rt.settings, rt.metrics
    items = [r.item[0] for r in released]
    snap = controller.snapshot()  # the models and rules of this whole batch
    with m.scoring_batch_duration.time():
        batch = score_enriched(
            items, _terminal, snap, s.top_reasons, alert_outcomes=s.alert_outcomes
        )
    pending: list = list(writes or ())
    # scored records and alerts continue the trace of their transaction's record
    traces = {i.transaction.transaction_id: i.traceparent for i in items}
    if s.publish_scored:
        records = [
            (
                st.transaction.account_id.encode(),
                encode(st),
                None,
                headers_with(continue_from(traces.get(st.transaction.transaction_id))),
            )
            for st in batch.scored
        ]
        pending += await _produce_many(scored_topic.get_topic_name(), records)
    if batch.alerts:
        # exactly once: reserve in Redis, send, commit once acknowledged (app/alerting)
        alerts_name = alerts_topic.get_topic_name()
        await raise_alerts(
            rt,
            batch.alerts,
            batch.alert_received_ms,
            batch.alerts_deduplicated,
            lambda a: _produce(
                alerts_name, encode(a), key=a.transaction.account_id.encode(),
                headers=headers_with(continue_from(traces.get(a.alert_id))),
            ),
        )
    for fut in pending:
        await fut
    done = time.time()
    for received in batch.received_ms:
        m.processing_latency.observe(max(0.0, done - received / 1000))
    for st in batch.scored:
        m.scores.observe(st.score)
    observe_scored(m, batch.scored, snap.active.feature_names, rt.drift)
    if batch.decisions is not None:
        m.observe_decisions(batch.decisions)
    for r in released:
        m.alignment_wait.observe(r.waited_seconds)
        if r.cause is not None:
            m.alignment_timeouts.labels(cause=r.cause).inc()
        r.item[1].ack()
    m.scoring_batch_size.observe(len(batch.scored))
    # last: a transaction counts as scored once all its output is acknowledged
    m.transactions_scored.labels(model_version=snap.model_version).inc(len(batch.scored))


@app.agent(scoring_inputs, name="score_transactions")
async def score_transactions(stream):
    """Terminal state, event-time alignment, scoring and alerts."""
    rt = get_runtime()
    try:
        controller = await rt.load_controller()
    except Exception as exc:  # noqa: BLE001 - no model: nothing can be scored
        log.critical("cannot load the model: %s", exc)
        logging.shutdown()
        os._exit(EXIT_NO_MODEL)
    s = rt.settings

    async def handle(events):
        async with _stage2_lock:
            label_values, writes = await _intake(events)
            await _release(controller, writes)
        if label_values:
            # live precision: labels by verdict and whether their transaction alerted
            # (a monitoring path: a failure is logged, the batch goes on)
            try:
                await count_label_verdicts(rt.metrics, rt.store, label_values)
            except Exception:  # noqa: BLE001
                log.exception("could not count %d labels", len(label_values))

    async for events in take_events_adaptive(stream, s.batch_max_events, s.batch_max_wait_seconds):
        await _guarded("score_transactions", events, handle)


@app.timer(0.1)
async def release_held_transactions() -> None:
    """Release transactions whose alignment completed, or timed out, without new input."""
    rt = get_runtime()
    if rt.controller is None or _aligner is None or not _aligner.pending():
        return
    if _stage2_lock.locked():
        # the scoring agent is at work and releases what is due after its batch: waiting
        # for it here only made this 0.1 s timer overrun (Faust's "is overlapping")
        return

    async def handle(_events):
        async with _stage2_lock:
            await _release(rt.controller)

    await _guarded("release_held_transactions", [], handle)


def _hand_over_held(consumer) -> None:  # noqa: ANN001
    """A rebalance or a stop begins (Faust is about to wait for the events in
    progress): leave every held transaction unacknowledged for the next owner instead
    of waiting for its features, and hold nothing new until partitions are assigned
    again. Without it the wait never ends: held transactions wait for watermarks and
    labels that stopped flowing with the streams (the whole group stalls)."""
    global _handing_over
    _handing_over = True
    if app.should_stop:  # the worker stops: bounded, whatever the broker does
        _arm_stop_deadline(get_settings().worker_stop_timeout_seconds)
    if _aligner is None:
        return
    held = _aligner.revoke(_aligner.partitions())
    if held:
        abandon(consumer, (event.message for _, event in held))
        get_runtime().metrics.alignment_handed_over.inc(len(held))
        get_runtime().metrics.alignment_pending.set(_aligner.pending())
        log.info("rebalance or stop: %d held transactions handed over unacknowledged", len(held))


hand_over_on_wait_empty(_hand_over_held)

#: exit status of a worker whose stop did not finish within WORKER_STOP_TIMEOUT_SECONDS
EXIT_STOP_OVERRUN = 75
_stop_deadline: list = []


def _arm_stop_deadline(seconds: float) -> None:
    """Exit with :data:`EXIT_STOP_OVERRUN` if the process still runs ``seconds`` from now.

    A stop waits for the events in progress to be acknowledged, commits, flushes the
    producer and leaves the group; with a broker that does not answer (gone, or
    unreachable) Faust waits for ever and the worker never exits. A timer thread (it
    fires even if the event loop is blocked) ends the process instead, without
    committing anything more: what was not committed is processed again after a
    restart (at least once; alerts stay exactly once through Redis). Armed once.
    """
    if _stop_deadline:
        return

    def overrun() -> None:
        log.error(
            "stop not finished after %.0f s (WORKER_STOP_TIMEOUT_SECONDS): events in "
            "progress unacknowledged or the broker not answering; exiting with status %d "
            "without committing them (they are processed again after a restart)",
            seconds, EXIT_STOP_OVERRUN,
        )
        logging.shutdown()
        os._exit(EXIT_STOP_OVERRUN)

    timer = threading.Timer(seconds, overrun)
    timer.daemon = True
    timer.start()
    _stop_deadline.append(timer)


@app.on_partitions_assigned.connect
async def _resume_holding(app_, assigned, **kwargs) -> None:  # noqa: ANN001
    """Partitions are assigned again: transactions are held for alignment again."""
    global _handing_over
    if _handing_over:
        log.info("partitions assigned: transactions are held for alignment again")
    _handing_over = False


@app.on_partitions_revoked.connect
async def _forget_revoked(app_, revoked, **kwargs) -> None:  # noqa: ANN001
    """Held transactions of revoked partitions are dropped unacknowledged: their new
    owner reads them again from the last committed offset."""
    if _aligner is None:
        return
    names = {by_terminal_topic.get_topic_name(), labels_topic.get_topic_name()}
    qs = {tp.partition for tp in revoked if tp.topic in names}
    async with _stage2_lock:
        dropped = _aligner.revoke(qs)
    if dropped:
        log.info("rebalance: %d held transactions of partitions %s dropped", len(dropped), sorted(qs))
    for tp in revoked:
        if tp.topic == transactions_topic.get_topic_name():
            _stage1_progress.pop(tp.partition, None)
        if tp.topic == labels_topic.get_topic_name():
            _labels_progress.pop(tp.partition, None)


@app.task
async def follow_control() -> None:
    """Every worker reads fraud-control and fraud-rules in full and applies them
    between two scoring batches (model promotion, rollback, shadows, rule sets)."""
    rt = get_runtime()
    try:
        controller = await rt.load_controller()
    except Exception:  # noqa: BLE001 - score_transactions reports it and exits
        return
    await ControlFollower(rt.settings, controller, on_result=rt.on_control).run()


app.sensors.add(MetricsSensor(lambda: get_runtime().metrics))
_partition_series: dict[str, set] = {}
_partition_watch = PartitionWatch(get_settings().partition_stall_seconds)
_recovery_watch = PartitionWatch(get_settings().partition_stall_seconds)
_recovery_seeks: dict = {}
_recovery_watcher: list = []


async def _watch_recoveries() -> None:
    """Every METRICS_INTERVAL_SECONDS: changelog partitions a table recovery receives
    nothing from are sought again; after three tries the worker exits with status 75
    to be restarted. A task of its own, started at the first assignment: Faust starts
    the app's timers only once the first recovery has ended."""
    interval = get_settings().metrics_interval_seconds
    while not app.should_stop:
        await asyncio.sleep(interval)
        try:
            _debug_pause()
            await watch_recovery(
                app, get_runtime().metrics, _recovery_watch, _partition_series,
                time.monotonic(), _recovery_seeks,
            )
        except RecoveryStalledError as exc:
            log.error("%s; exiting so that the worker is restarted (nothing is lost)", exc)
            logging.shutdown()
            os._exit(exc.exit_code)
        except Exception:  # noqa: BLE001 - not started or rebalancing: next time
            log.debug("recovery not watched", exc_info=True)


@app.on_partitions_assigned.connect
async def _start_recovery_watch(app_, assigned, **kwargs) -> None:  # noqa: ANN001
    """The first assignment starts :func:`_watch_recoveries` (before its recovery)."""
    if not _recovery_watcher:
        _recovery_watcher.append(asyncio.ensure_future(_watch_recoveries()))


@app.timer(interval=get_settings().metrics_interval_seconds)
async def sample_worker_gauges():
    """Sample assigned partitions, table sizes and state bytes; consumer lag and stalled
    partitions (a stalled one is sought back to its committed offset)."""
    m = get_runtime().metrics
    m.accounts.set(len(account_states))  # also when no batch came since a restart
    m.terminals.set(len(terminal_states))
    try:
        sample_gauges(
            app, m, {"account_states": account_states, "terminal_states": terminal_states}
        )
        await watch_partitions(
            app, m, _partition_watch, _partition_series, next_offset_of, time.monotonic()
        )
    except Exception:  # noqa: BLE001 - not started or rebalancing: next time
        log.debug("gauges not sampled", exc_info=True)


_debug_paused: list = []


def _debug_pause() -> None:
    """DEBUG_PAUSE_PARTITION (fault tests): stop fetching that partition once: a source
    partition after the worker has read from it while flow is active, a changelog
    partition while a table recovery still has records of it to read."""
    s = get_settings()
    target = s.debug_pause_partition
    if not target or (_debug_paused and not s.debug_pause_repeatedly):
        return
    topic, partition = target.rsplit(":", 1)
    tp = TP(topic, int(partition))
    if topic.endswith("-changelog"):
        recovery = app.tables.recovery
        paused = tp in getattr(app.consumer, "_paused_partitions", set())
        if getattr(recovery, "in_recovery", False) and tp in recovery.active_tps and not paused:
            if recovery.active_highwaters.get(tp, -1) > recovery.active_offsets.get(tp, -1):
                app.consumer.pause_partitions([tp])
                _debug_paused.append(tp)
                log.warning("DEBUG_PAUSE_PARTITION: %s[%s] no longer fetched", topic, partition)
        return
    if _debug_paused:
        return
    if not app.flow_control.is_active():
        return
    if tp in app.consumer.assignment() and next_offset_of(app.consumer, tp):
        app.consumer.pause_partitions([tp])
        _debug_paused.append(tp)
        log.warning("DEBUG_PAUSE_PARTITION: %s[%s] no longer fetched", topic, partition)


@app.page("/metrics")
async def metrics_view(web, request):
    """Prometheus exposition of this worker's metrics (read-only)."""
    return web.bytes(
        generate_latest(get_runtime().metrics.registry),
        content_type=CONTENT_TYPE_LATEST.split(";")[0],
    )

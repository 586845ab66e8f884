"""The thin adapter between a running worker and its metrics (not pure: it reads Faust's
consumer and tables). The computations are in :mod:`app.monitoring.lag`,
:mod:`~app.monitoring.drift` and :mod:`~app.monitoring.outcomes`.

- :class:`MetricsSensor`: a Faust sensor counting records read and written per topic,
  and rebalances.
- :func:`sample_gauges`: assigned partitions and table state bytes; called on a timer
  (``METRICS_INTERVAL_SECONDS``).
- :func:`watch_partitions`: consumer lag (end offset minus committed offset) of every
  assigned source partition, and stalled partitions found, told, counted and sought
  back to their committed offset (:mod:`app.monitoring.stall`); on the same timer.
- :func:`watch_recovery`: changelog partitions a table recovery waits for and receives
  nothing from, found, told, counted, resumed and sought again; on the same timer.
- :func:`observe_scored`: outcomes, rules and drift of a scored batch.
- :func:`count_label_verdicts`: label verdicts of alerted / not alerted transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
import numpy as np
from pydantic import ValidationError

from ..events import Label, ScoredTransaction
from ..exceptions import RecoveryStalledError
from ..metrics import Metrics
from .drift import DriftMonitor
from .lag import consumer_lag
from .stall import PartitionWatch
from .outcomes import SCORE_THRESHOLD_RULE, outcome_of, verdict_counts

__all__ = [
    "MetricsSensor",
    "count_produced",
    "sample_gauges",
    "watch_partitions",
    "watch_recovery",
    "observe_scored",
    "observe_alerts",
    "parse_labels",
    "count_label_verdicts",
]

log = logging.getLogger(__name__)

_CHANGELOG_SUFFIX = "-changelog"
_ASSIGNOR_MARK = "__assignor"  # Faust's leader-election topic


class MetricsSensor(faust.Sensor):
    """Counts records in and out per topic, and rebalances.

    Parameters
    ----------
    metrics : callable returning Metrics
        Resolved at each event, so the worker's runtime is built lazily.
    """

    def __init__(self, metrics: Callable[[], Metrics], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def on_message_in(self, tp, offset, message) -> None:  # noqa: D102
        self._metrics().messages_consumed.labels(topic=tp.topic).inc()

    def on_send_completed(self, producer, state, metadata) -> None:  # noqa: D102
        self._metrics().messages_produced.labels(topic=metadata.topic).inc()

    def on_rebalance_start(self, app) -> dict:  # noqa: D102
        self._metrics().rebalances.inc()
        return super().on_rebalance_start(app)


def count_produced(metrics: Metrics, fut: Any, *, records: int = 1) -> None:
    """Done-callback (with ``functools.partial``) of a record, or a batch of ``records``
    records, handed straight to the producer: counts them in
    ``fraud_messages_produced_total{topic}`` once the broker has them (what
    :class:`MetricsSensor` counts for records sent through Faust topics)."""
    if not fut.cancelled() and fut.exception() is None:
        metrics.messages_produced.labels(topic=fut.result().topic).inc(records)


def _table_bytes(table: Any) -> int:
    return sum(len(v) for v in table.values() if v)


def _source_partitions(assigned: Iterable[Any]) -> list[Any]:
    """Assigned partitions of source topics (changelogs and Faust's leader topic excluded)."""
    return [
        tp
        for tp in assigned
        if not tp.topic.endswith(_CHANGELOG_SUFFIX) and _ASSIGNOR_MARK not in tp.topic
    ]


def sample_gauges(app: faust.App, metrics: Metrics, tables: Mapping[str, Any]) -> None:
    """Set the sampled gauges: assigned partitions, state bytes of each table.

    Parameters
    ----------
    app : faust.App
        A started app.
    metrics : Metrics
    tables : mapping of str to faust.Table
        Table name (label ``table``) to table.
    """
    metrics.assigned_partitions.set(len(app.consumer.assignment()))
    for name, table in tables.items():
        metrics.state_bytes.labels(table=name).set(_table_bytes(table))


def _set_series(gauge: Any, values: Mapping[Any, float], exported: set) -> None:
    """Set ``gauge{topic, partition}`` for each partition of ``values`` and remove the
    series of partitions no longer there (``exported``: updated in place)."""
    now = set()
    for tp, value in values.items():
        key = (tp.topic, str(tp.partition))
        gauge.labels(*key).set(value)
        now.add(key)
    for key in exported - now:
        try:
            gauge.remove(*key)
        except KeyError:
            pass
    exported.clear()
    exported.update(now)


def held_back_by_streams(app: faust.App, partitions: Iterable[Any]) -> set:
    """Partitions Faust does not fetch on purpose: backpressure, not a stall.

    When a stream's buffer passes its high-water mark Faust stops fetching the
    partitions that fill it (``Consumer.on_buffer_full``) until the stream has taken
    enough (``on_buffer_drop``). During a catch-up the scoring stage's buffer (the
    by-terminal records and the labels share it) can stay full for longer than
    ``PARTITION_STALL_SECONDS``. A partition counts as held back while it is one of
    Faust's buffered partitions *and* a stream reading its topic still has records
    queued; a buffered partition whose streams hold nothing is not excused (Faust
    would never fetch it again).

    Parameters
    ----------
    app : faust.App
        A started app (``app.consumer``, ``app.topics``: the channels the agents read).
    partitions : iterable of TP
        The partitions to check.

    Returns
    -------
    set of TP
    """
    buffered = getattr(app.consumer, "_buffered_partitions", None) or set()
    if not buffered:
        return set()
    queued: dict[str, int] = {}
    for channel in app.topics:
        size = channel.queue.qsize()
        for topic in getattr(channel, "topics", ()) or ():
            queued[topic] = queued.get(topic, 0) + size
    return {tp for tp in partitions if tp in buffered and queued.get(tp.topic, 0) > 0}


async def watch_partitions(
    app: faust.App,
    metrics: Metrics,
    watch: PartitionWatch,
    exported: dict[str, set],
    position_of: Callable[[Any, Any], int | None],
    now: float,
) -> list[Any]:
    """Lag and stalls of the assigned source partitions; seek stalled ones back.

    Asks the broker for the end offset of every assigned source partition (one
    ListOffsets request), then sets ``fraud_consumer_lag{topic, partition}`` to end
    offset minus committed offset (the consumer group's lag, as an autoscaler reads
    it) and ``fraud_partition_stalled_seconds{topic, partition}`` to how long records
    have waited past the worker's position without it moving. While flow is active
    and no recovery runs, a partition stalled for ``watch.stall_seconds`` (not held back
    by its stream's backpressure, :func:`held_back_by_streams`) is told once
    (a warning with the consumer's state of it), counted in
    ``fraud_partition_stalls_total{topic}``, resumed if Faust left it paused, and sought
    back to its committed offset (at least once: what follows is read again).

    Parameters
    ----------
    app : faust.App
        A started app.
    metrics : Metrics
    watch : PartitionWatch
    exported : dict
        ``{"lag": set, "stalled": set}``: the series set by the previous call.
    position_of : callable
        ``position_of(consumer, tp)``: offset of the next record the worker hands on
        (:func:`app.stream.streaming.next_offset_of`), None when unknown.
    now : float
        A monotonic time, in seconds.

    Returns
    -------
    list of TP
        Partitions sought back by this call.
    """
    consumer = app.consumer
    sources = _source_partitions(consumer.assignment())
    if not sources:
        _set_series(metrics.consumer_lag, {}, exported.setdefault("lag", set()))
        _set_series(metrics.partition_stalled, {}, exported.setdefault("stalled", set()))
        return []
    ends = dict(await consumer.highwaters(*sources))
    committed = getattr(consumer, "_committed_offset", {})
    starts: dict[Any, int] = {}
    if any(committed.get(tp) is None for tp in sources):
        starts = dict(await consumer.earliest_offsets(*[tp for tp in sources if committed.get(tp) is None]))
    lag = consumer_lag(ends, {}, {tp: committed.get(tp) or starts.get(tp) or 0 for tp in sources})
    _set_series(metrics.consumer_lag, lag, exported.setdefault("lag", set()))
    positions = {}
    for tp in sources:
        position = position_of(consumer, tp)
        positions[tp] = position if position is not None else committed.get(tp)
    report = watch.observe(now, positions, ends, held_back=held_back_by_streams(app, sources))
    _set_series(metrics.partition_stalled, report.waiting_seconds, exported.setdefault("stalled", set()))
    for tp in report.resumed:
        log.warning("%s[%s]: reading again at offset %s", tp.topic, tp.partition, positions.get(tp))
    busy = getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False)
    if busy or not app.flow_control.is_active():
        return []
    sought = []
    for tp in report.new:
        paused = tp in getattr(consumer, "_paused_partitions", set())
        offset = committed.get(tp)
        if offset is None:
            offset = starts.get(tp, 0)
        if tp in report.started:
            log.warning(
                "%s[%s]: not read for %.0f s while records wait (position %s, end %s, "
                "committed %s, read offset %s, paused %s); resuming it from the "
                "committed offset %s",
                tp.topic, tp.partition, report.waiting_seconds.get(tp, 0.0), positions.get(tp),
                ends.get(tp), committed.get(tp), getattr(consumer, "_read_offset", {}).get(tp),
                paused, offset,
            )
        metrics.partition_stalls.labels(topic=tp.topic).inc()
        if paused:
            consumer.resume_partitions([tp])
        await consumer.seek(tp, offset)
        watch.recovered(tp, now)
        sought.append(tp)
    return sought


async def watch_recovery(
    app: faust.App,
    metrics: Metrics,
    watch: PartitionWatch,
    exported: dict[str, set],
    now: float,
    attempts: dict[Any, int],
    max_attempts: int = 3,
) -> list[Any]:
    """Changelog partitions a table recovery waits for and receives nothing from.

    While Faust recovers this worker's tables it reads every active changelog partition
    up to the high watermark it measured at the start, and serves nothing until then.
    A partition whose fetches deliver no record leaves the worker recovering for ever
    (Faust only logs ``No event received for active tp ... since recovery start``).
    Each call samples the recovery's offset and high watermark of every active
    changelog partition into ``watch`` and sets ``fraud_partition_stalled_seconds
    {topic, partition}`` for them; a partition that has not moved for
    ``watch.stall_seconds`` while records remain is told once (a warning with the
    consumer's state of it), counted in ``fraud_partition_stalls_total{topic}``,
    resumed if paused and sought again to the recovery's offset.

    Parameters
    ----------
    app : faust.App
        A started app.
    metrics : Metrics
    watch : PartitionWatch
        This watch's own instance (positions are changelog offsets).
    exported : dict
        ``{"recovery": set}``: the series set by the previous call.
    now : float
        A monotonic time, in seconds.
    attempts : dict
        Partition to the number of times it was sought again in the current recovery
        (updated in place; cleared when no recovery runs).
    max_attempts : int, default 3
        Seeks of one partition in one recovery before giving up.

    Returns
    -------
    list of TP
        Partitions sought again by this call.

    Raises
    ------
    RecoveryStalledError
        A partition is stalled again after ``max_attempts`` seeks (about
        ``(max_attempts + 1) * watch.stall_seconds`` without a record).
    """
    recovery = app.tables.recovery
    series = exported.setdefault("recovery", set())
    if not getattr(recovery, "in_recovery", False):
        watch.observe(now, {}, {})  # forget the partitions of the last recovery
        attempts.clear()
        _set_series(metrics.partition_stalled, {}, series)
        return []
    offsets, highwaters = recovery.active_offsets, recovery.active_highwaters
    positions = {tp: offsets.get(tp) for tp in recovery.active_tps}
    report = watch.observe(now, positions, {tp: highwaters.get(tp) for tp in positions})
    _set_series(metrics.partition_stalled, report.waiting_seconds, series)
    consumer = app.consumer
    sought = []
    for tp in report.new:
        if attempts.get(tp, 0) >= max_attempts:
            raise RecoveryStalledError(
                f"{tp.topic}[{tp.partition}]: table recovery received nothing for "
                f"{report.waiting_seconds.get(tp, 0.0):.0f} s after {max_attempts} seeks "
                f"(offset {positions.get(tp)}, high watermark {highwaters.get(tp)})"
            )
        attempts[tp] = attempts.get(tp, 0) + 1
        paused = tp in getattr(consumer, "_paused_partitions", set())
        offset = positions.get(tp)
        offset = 0 if offset is None or offset < 0 else offset  # as Faust's recovery seeks
        if tp in report.started:
            log.warning(
                "%s[%s]: table recovery has received nothing for %.0f s (offset %s, high "
                "watermark %s, read offset %s, paused %s); resuming it and seeking it "
                "to %s again",
                tp.topic, tp.partition, report.waiting_seconds.get(tp, 0.0),
                positions.get(tp), highwaters.get(tp),
                getattr(consumer, "_read_offset", {}).get(tp), paused, offset,
            )
        metrics.partition_stalls.labels(topic=tp.topic).inc()
        if paused:
            consumer.resume_partitions([tp])
        await consumer.seek_wait({tp: offset})
        watch.recovered(tp, now)
        sought.append(tp)
    return sought


def observe_scored(
    metrics: Metrics,
    scored: Sequence[ScoredTransaction],
    feature_names: Sequence[str],
    drift: DriftMonitor | None,
) -> None:
    """Count a scored batch's outcomes and feed its features to the drift monitor."""
    for st in scored:  # the decision engine's outcome; else from the decision
        given = "outcome" in st.model_fields_set
        metrics.decisions.labels(outcome=st.outcome if given else outcome_of(st.decision)).inc()
    if drift is None or not scored:
        return
    X = np.array([[st.features.get(f, np.nan) for f in feature_names] for st in scored])
    drift.observe(X)
    for feature, value in drift.psi().items():
        metrics.feature_psi.labels(feature=feature).set(value)


def observe_alerts(metrics: Metrics, alerts: Sequence[Any]) -> None:
    """Count published alerts by the rules that raised them: each rule id of
    ``rules_fired`` (analysts' rules, ``allow:``/``block:`` list hits), else the model
    score at or above the threshold (``score_threshold``)."""
    for a in alerts:
        for rule in getattr(a, "rules_fired", None) or (SCORE_THRESHOLD_RULE,):
            metrics.alerts_by_rule.labels(rule=rule).inc()


def parse_labels(values: Iterable[bytes | None]) -> list[Label]:
    """The valid labels among raw record values (invalid ones are skipped here: the
    labels consumer of the pipeline dead-letters them)."""
    out = []
    for value in values:
        if not value:
            continue
        try:
            out.append(Label.model_validate_json(value))
        except ValidationError:
            continue
    return out


async def count_label_verdicts(metrics: Metrics, store: Any, values: Iterable[bytes]) -> int:
    """Count the labels of a batch by verdict and whether their transaction was alerted
    (its alert id is in Redis). Returns the number of labels counted.

    Raises
    ------
    RedisUnavailableError
        If Redis fails after the store's retries.
    """
    labels = parse_labels(values)
    if not labels:
        return 0
    alerted = await store.already_alerted([lb.transaction_id for lb in labels])
    for (verdict, was_alerted), n in verdict_counts(
        [lb.is_fraud for lb in labels], alerted
    ).items():
        metrics.labelled_transactions.labels(verdict=verdict, alerted=was_alerted).inc(n)
    return len(labels)

"""The thin adapter between a running worker and its metrics (not pure: it reads Faust's
consumer and tables). The computations are in :mod:`app.monitoring.lag`,
:mod:`~app.monitoring.drift` and :mod:`~app.monitoring.outcomes`.

- :class:`MetricsSensor`: a Faust sensor counting records read and written per topic,
  and rebalances.
- :func:`sample_gauges`: consumer lag per partition, assigned partitions and table state
  bytes; called on a timer (``METRICS_INTERVAL_SECONDS``).
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
from ..metrics import Metrics
from .drift import DriftMonitor
from .lag import consumer_lag
from .outcomes import SCORE_THRESHOLD_RULE, outcome_of, verdict_counts

__all__ = [
    "MetricsSensor",
    "count_produced",
    "sample_gauges",
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


def sample_gauges(
    app: faust.App, metrics: Metrics, tables: Mapping[str, Any], exported: set
) -> None:
    """Set the sampled gauges: lag of every assigned partition of a source topic
    (changelogs and Faust's leader topic excluded), assigned partitions, state bytes of
    each table.

    Parameters
    ----------
    app : faust.App
        A started app.
    metrics : Metrics
    tables : mapping of str to faust.Table
        Table name (label ``table``) to table.
    exported : set of (topic, partition)
        Lag series set by the previous call; updated in place, so the series of
        partitions no longer assigned are removed.
    """
    consumer = app.consumer
    assigned = set(consumer.assignment())
    metrics.assigned_partitions.set(len(assigned))
    sources = [
        tp
        for tp in assigned
        if not tp.topic.endswith(_CHANGELOG_SUFFIX) and _ASSIGNOR_MARK not in tp.topic
    ]
    ends = {}
    for tp in sources:
        try:
            ends[tp] = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            ends[tp] = None
    read = getattr(consumer, "_read_offset", {})
    committed = getattr(consumer, "_committed_offset", {})
    lag = consumer_lag(
        ends, {tp: read.get(tp) for tp in sources}, {tp: committed.get(tp) for tp in sources}
    )
    now = set()
    for tp, value in lag.items():
        key = (tp.topic, str(tp.partition))
        metrics.consumer_lag.labels(*key).set(value)
        now.add(key)
    for key in exported - now:
        try:
            metrics.consumer_lag.remove(*key)
        except KeyError:
            pass
    exported.clear()
    exported.update(now)
    for name, table in tables.items():
        metrics.state_bytes.labels(table=name).set(_table_bytes(table))


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

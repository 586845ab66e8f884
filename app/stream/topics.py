"""Every topic of the service. Keys and values are raw bytes: values are JSON of the
records in :mod:`app.events`, decoded and validated by the agents themselves so a bad
payload becomes a dead letter instead of a crash.

Every topic is declared ``internal=True`` so the worker creates it with
``TOPIC_PARTITIONS`` partitions when it is missing: Tansu would otherwise create it on
first use with its own default (4), and a table's source topic and changelog must
have the same partition count."""

from __future__ import annotations

from ..config import get_settings
from .main import DEAD_LETTER_MAX_BYTES, app

__all__ = [
    "transactions_topic",
    "alerts_topic",
    "scored_topic",
    "labels_topic",
    "dead_letter_topic",
    "by_terminal_topic",
    "scoring_inputs",
]

_s = get_settings()

#: transactions, key = account id; value :class:`app.events.Transaction`
transactions_topic = app.topic(
    _s.transactions_topic, key_type=bytes, value_type=bytes, partitions=_s.topic_partitions, internal=True
)
#: fraud alerts, key = account id; value :class:`app.events.Alert`
alerts_topic = app.topic(
    _s.alerts_topic, key_type=bytes, value_type=bytes, partitions=_s.topic_partitions, internal=True
)
#: every scored transaction, key = account id; value :class:`app.events.ScoredTransaction`
scored_topic = app.topic(
    _s.scored_topic, key_type=bytes, value_type=bytes, partitions=_s.topic_partitions, internal=True
)
#: later verdicts, key = terminal id; value :class:`app.events.Label`
labels_topic = app.topic(
    _s.labels_topic, key_type=bytes, value_type=bytes, partitions=_s.topic_partitions, internal=True
)
#: rejected records, key = the original key; value :class:`app.events.DeadLetter`
dead_letter_topic = app.topic(
    _s.dead_letter_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=_s.topic_partitions,
    internal=True,
    config={"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
)

#: internal: valid transactions with their account features, key = terminal id; value
#: :meth:`app.pipeline.Enriched.to_bytes`. Named after the app id (one per consumer group).
by_terminal_topic = app.topic(
    _s.by_terminal_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=_s.topic_partitions,
    internal=True,
)

#: the scoring stage reads both of these in one stream (partition ``q`` of each goes to
#: the same worker: Faust co-partitions topics of equal partition counts)
scoring_inputs = app.topic(
    by_terminal_topic.get_topic_name(),
    _s.labels_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=_s.topic_partitions,
    internal=True,
)

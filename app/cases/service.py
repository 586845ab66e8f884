"""Cases, shell: the ``fraud-cases`` topic read into case state, alerts turned into
case events, analysts' requests written as events and verdict labels.

:class:`CaseService` holds the cases of the whole topic in memory (a case is a few
kilobytes; analysts work hundreds a day). It is used by ``fraudctl review serve``
(which also runs :meth:`CaseService.follow_cases` and :meth:`CaseService.follow_alerts`)
and, for one request at a time, by ``fraudctl review list|show|confirm|dismiss``.

Ordering of a verdict: its labels are written (and acknowledged) *before* its event.
If the process dies in between, the case is still open and the same request (same
idempotency key) writes the labels again and then the event; the scoring stage
deduplicates repeated labels. The other way round, a recorded verdict could lack its
labels for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from ..config import Settings
from ..events import Alert, CaseEvent, encode
from ..exceptions import BrokerUnavailableError
from ..metrics import ReviewMetrics
from ..stream.offsets import client_options, topic_partitions, true_end_offsets
from ..stream.offsets import ensure_topics
from ..exceptions import CaseError
from .activity import CardActivity, from_scored_json
from .model import (
    Case,
    Decision,
    Request,
    apply_one,
    decide,
    events_for_alert,
    verdict_labels,
    with_blocked_card,
)

__all__ = ["CaseService", "now_ms"]

log = logging.getLogger(__name__)

_POLL_MS = 200
_VERDICT_NAMES = {"confirmed_fraud": "fraud", "dismissed_genuine": "genuine"}


def now_ms() -> int:
    """Wall-clock time, UTC epoch ms."""
    return int(time.time() * 1000)


class CaseService:
    """Every case of ``CASES_TOPIC``, and the writes that change them.

    Parameters
    ----------
    settings : Settings
        Reads ``kafka_broker_url`` (and its SASL/TLS settings), ``cases_topic``,
        ``alerts_topic``, ``labels_topic``, ``topic_partitions``, ``review_group``, the
        ``broker_*`` consumer timeouts; with ``review_block_confirmed``, also
        ``redis_url``, ``redis_key_prefix`` and ``rules_topic``.
    metrics : ReviewMetrics, optional
        Counted: events applied after :meth:`start`, verdicts, refused requests.

    Notes
    -----
    Use as ``async with CaseService(settings) as service:``; :meth:`start` creates the
    topics that are missing and reads ``CASES_TOPIC`` to its end.
    """

    def __init__(self, settings: Settings, metrics: ReviewMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cases: dict[str, Case] = {}
        self.activity = CardActivity()
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._loaded = False
        self._next: dict[TopicPartition, int] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create missing topics, start the producer, read every case event.

        Raises
        ------
        BrokerUnavailableError
        """
        s = self.settings
        await ensure_topics(s, [s.cases_topic, s.alerts_topic, s.labels_topic])
        self._producer = AIOKafkaProducer(**client_options(s), acks="all", linger_ms=5)
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        await self.load()

    async def stop(self) -> None:
        """Stop the producer (after its pending sends)."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> "CaseService":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _unavailable(self, exc: BaseException) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"Kafka broker {self.settings.kafka_broker_url} is unavailable ({exc})"
        )

    # --- reading the case events -------------------------------------------------------

    def _consumer(self, **extra) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **client_options(s),
            enable_auto_commit=False,
            session_timeout_ms=int(s.broker_session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.broker_heartbeat_interval_seconds * 1000),
            rebalance_timeout_ms=int(s.broker_rebalance_timeout_seconds * 1000),
            **extra,
        )

    async def load(self) -> dict[str, Case]:
        """Rebuild every case from ``CASES_TOPIC`` (from its beginning to its end now).

        Returns
        -------
        dict of str to Case
            The cases (also in :attr:`cases`), rebuilt from scratch.
        """
        topic = self.settings.cases_topic
        consumer = self._consumer(group_id=None)
        cases: dict[str, Case] = {}
        try:
            await consumer.start()
            partitions = (await topic_partitions(self.settings, [topic])).get(topic, [])
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await true_end_offsets(consumer, tps) if tps else {}
            starts = await consumer.beginning_offsets(tps) if tps else {}
            nexts = dict(starts)
            for tp in tps:
                consumer.seek(tp, starts[tp])
            while any(nexts[tp] < ends[tp] for tp in tps):
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, records in batch.items():
                    for event in self._decode_events(records):
                        cases[event.case_id] = apply_one(cases.get(event.case_id), event)
                    if records:
                        nexts[tp] = records[-1].offset + 1
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        finally:
            await consumer.stop()
        self.cases = cases
        self._next = nexts
        self._loaded = True
        self._observe_state()
        return cases

    @staticmethod
    def _decode_events(records: Iterable[ConsumerRecord]) -> list[CaseEvent]:
        out = []
        for record in records:
            try:
                out.append(CaseEvent.model_validate_json(record.value or b""))
            except ValidationError as exc:
                # only this service writes the topic: an unreadable record is logged
                # and skipped, never fatal (it stays on the topic for inspection)
                log.warning(
                    "skipped %s[%d]@%d: not a case event (%s)", record.topic,
                    record.partition, record.offset, str(exc).splitlines()[0],
                )
        return out

    async def follow_cases(self) -> None:
        """Apply the events other writers (``fraudctl review confirm``...) add to
        ``CASES_TOPIC`` after :meth:`load`, until cancelled."""
        consumer = self._consumer(group_id=None)
        try:
            await consumer.start()
            tps = list(self._next)
            if not tps:
                return
            consumer.assign(tps)
            for tp, offset in self._next.items():
                consumer.seek(tp, offset)
            while True:
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
                for records in batch.values():
                    for event in self._decode_events(records):
                        self._apply(event)
                if batch:
                    self._observe_state()
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        finally:
            await consumer.stop()

    async def follow_scored(self) -> None:
        """Keep every card's recent transactions (:attr:`activity`), alerted or not, from
        ``SCORED_TOPIC`` (read from its beginning: its retention bounds the work), until
        cancelled. Returns when the topic does not exist yet (the caller retries)."""
        topic = self.settings.scored_topic
        consumer = self._consumer(group_id=None)
        try:
            await consumer.start()
            partitions = (await topic_partitions(self.settings, [topic])).get(topic)
            if not partitions:
                return
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=5_000)
                for records in batch.values():
                    for record in records:
                        tx = from_scored_json(record.value or b"")
                        if tx is not None:
                            self.activity.learn_one(tx)
                await asyncio.sleep(0)  # pages are served between batches
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        finally:
            await consumer.stop()

    # --- writing -----------------------------------------------------------------------

    def _apply(self, event: CaseEvent) -> bool:
        """Apply one event to the cases; count it if it is new. Returns whether it was."""
        before = self.cases.get(event.case_id)
        after = apply_one(before, event)
        if after is before:
            return False
        self.cases[event.case_id] = after
        m = self.metrics
        if m is not None:
            m.case_events.labels(type=event.type).inc()
            closed = before is not None and before.status == "open" and after.status != "open"
            if closed:
                m.case_verdicts.labels(verdict=_VERDICT_NAMES[event.type]).inc()
                first = after.first_alert_time_ms
                if first is not None:
                    m.verdict_delay.observe(max(0.0, (event.time_ms - first) / 1000))
        return True

    def _observe_state(self) -> None:
        m = self.metrics
        if m is None:
            return
        counts = Counter(c.status for c in self.cases.values())
        for status in ("open", "confirmed_fraud", "dismissed_genuine"):
            m.cases.labels(status=status).set(counts[status])
        m.open_cases.set(counts["open"])
        self.observe_targets()
        closed = counts["confirmed_fraud"] + counts["dismissed_genuine"]
        m.verdict_precision.set(counts["confirmed_fraud"] / closed if closed else 0.0)

    def observe_targets(self) -> None:
        """Set ``fraud_cases_past_target``: open cases older than REVIEW_TARGET_SECONDS."""
        if self.metrics is None:
            return
        limit_ms = now_ms() - int(self.settings.review_target_seconds * 1000)
        self.metrics.cases_past_target.set(sum(
            1 for c in self.cases.values()
            if c.status == "open" and (c.first_alert_time_ms or limit_ms) < limit_ms
        ))

    async def _send(self, topic: str, key: str, values: list[bytes]) -> None:
        assert self._producer is not None, "start() first"
        try:
            futures = [
                await self._producer.send(topic, value=v, key=key.encode()) for v in values
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"cannot write to {topic} ({exc})") from None

    async def _write_events(self, events: list[CaseEvent]) -> None:
        if not events:
            return
        await self._send(self.settings.cases_topic, events[0].case_id, [encode(e) for e in events])
        for event in events:
            self._apply(event)
        self._observe_state()

    async def add_alert(self, alert: Alert) -> list[CaseEvent]:
        """Open or join the case of the alert's card (nothing for an alert it holds).

        Returns
        -------
        list of CaseEvent
            The events written (acknowledged by the broker).
        """
        async with self._lock:
            case = self.cases.get(alert.transaction.account_id)
            events = events_for_alert(case, alert, now_ms())
            await self._write_events(events)
            return events

    async def request(self, case_id: str, request: Request, may_block: bool = True) -> Decision:
        """Check an analyst's request and record it (verdict: its labels first).

        ``block`` adds the card to the block list, then records a comment; with
        ``REVIEW_BLOCK_CONFIRMED``, a confirmation blocks the card when ``may_block``
        (the requester's role allows blocking).

        Returns
        -------
        Decision
            ``replayed=True``: the key was recorded before and nothing was written.

        Raises
        ------
        CaseError
            See :func:`app.cases.model.decide`.
        BrokerUnavailableError, RedisUnavailableError
            Nothing recorded, or labels written without their event, or (with
            ``review_block_confirmed``) the verdict recorded without the block: the same
            request again completes it.
        """
        async with self._lock:
            case = self.cases.get(case_id)
            try:
                decision = decide(case, request, now_ms(), case_id=case_id)
            except CaseError as exc:
                if self.metrics is not None:
                    self.metrics.requests_refused.labels(reason=exc.reason).inc()
                raise
            block = request.action == "block" or (
                decision.event.type == "confirmed_fraud" and self.settings.review_block_confirmed
                and may_block
            )
            if decision.replayed:
                if block:  # completes a block that failed the first time (idempotent)
                    await self._block(case_id)
                return decision
            labels = verdict_labels(case, decision.event)
            if request.action == "block":  # the block first: its comment says it is done
                await self._block(case_id)
                block = False
            if labels:
                # keyed by terminal id, as every label (the terminal's state partition)
                for label in labels:
                    await self._send(self.settings.labels_topic, label.terminal_id, [encode(label)])
                if self.metrics is not None:
                    self.metrics.verdict_labels.inc(len(labels))
            await self._write_events([decision.event])
            if block:
                await self._block(case_id)
            return decision

    async def _block(self, account_id: str) -> None:
        """Add a confirmed card to the block list of the rule set in force, as
        ``fraudctl rules apply`` does (rules topic, then Redis)."""
        from ..cli.rules import get_rules_in_redis, set_rules_in_redis
        from ..stream.control import publish_async
        from ..decisions import parse_rule_set

        s = self.settings
        url, prefix = s.redis_url.get_secret_value(), s.redis_key_prefix
        raw = await asyncio.to_thread(get_rules_in_redis, url, prefix)
        current = parse_rule_set(raw, score_outcome=s.score_outcome).rule_set if raw else None
        new = with_blocked_card(current, account_id)
        if new is None:
            return
        value = encode(new)
        await publish_async(s, s.rules_topic, new.id.encode(), value)
        await asyncio.to_thread(set_rules_in_redis, url, prefix, value)
        log.info("card %s blocked: rule set %s", account_id, new.label)

    async def follow_alerts(self, on_error=None) -> None:
        """Turn every alert of ``ALERTS_TOPIC`` into case events, until cancelled.

        Reads with its own consumer group (``Settings.review_group``), committing after
        the events of a batch are acknowledged: at-least-once, and idempotent (a
        redelivered alert changes nothing). A record that is no valid Alert is logged,
        counted and skipped.
        """
        s = self.settings
        consumer = self._consumer(group_id=s.review_group, auto_offset_reset="earliest")
        try:
            await consumer.start()
            consumer.subscribe([s.alerts_topic])
            while True:
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
                for records in batch.values():
                    for record in records:
                        try:
                            alert = Alert.model_validate_json(record.value or b"")
                        except ValidationError as exc:
                            log.warning(
                                "skipped %s[%d]@%d: not an alert (%s)", record.topic,
                                record.partition, record.offset, str(exc).splitlines()[0],
                            )
                            if self.metrics is not None:
                                self.metrics.alerts_rejected.inc()
                            continue
                        await self.add_alert(alert)
                if batch:
                    await consumer.commit()
        except KafkaError as exc:
            raise self._unavailable(exc) from None
        finally:
            await consumer.stop()

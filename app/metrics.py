"""Every Prometheus metric of the service, built in one place against a registry.

Names follow Prometheus conventions: base units (seconds, bytes), ``_total`` on
counters, labels from small fixed sets (reason, topic, decision) — never an account or
transaction id. Tests build their own :class:`Metrics` on a fresh
:class:`prometheus_client.CollectorRegistry`.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .contracts import FieldLabels
from .events import CASE_EVENT_TYPES, LABEL_SOURCES, REJECT_REASONS
from .monitoring.outcomes import OUTCOMES, RULES, VERDICTS

__all__ = [
    "Metrics",
    "ReviewMetrics",
    "VERDICT_DELAY_BUCKETS_SECONDS",
    "SinkMetrics",
    "UNKNOWN_FIELD_LABELS_MAX",
    "LATENCY_BUCKETS_SECONDS",
    "BATCH_BUCKETS_SECONDS",
    "REDIS_OPERATIONS",
    "RESERVATION_OUTCOMES",
    "LOOKUP_STARTS",
    "STATE_TABLES",
]

#: Buckets of the end-to-end latency histograms, in seconds (1 ms .. 10 min): a backlog
#: of minutes shows as a number, not as "+Inf".
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0,
)
#: Buckets of the scoring batch duration histogram, in seconds.
BATCH_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))
#: Buckets of the time from a case's first alert to its verdict, in seconds (1 min .. 30 d).
VERDICT_DELAY_BUCKETS_SECONDS = (
    60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86_400.0, 2 * 86_400.0,
    7 * 86_400.0, 30 * 86_400.0,
)
#: Operations of :class:`app.redis_store.RedisStore` (label ``operation``).
REDIS_OPERATIONS = (
    "get", "set", "mget", "alert_states", "reserve_alerts", "take_over_reservations",
    "mark_alerted",
)
#: Outcomes of a reserved but unmarked alert id looked up on the alert topic.
RESERVATION_OUTCOMES = ("found", "resent")
#: Where a look-up on the alert topic starts reading (label ``source``).
LOOKUP_STARTS = ("timestamp", "beginning")
#: Distinct unknown field names per topic that get a label of their own (the rest:
#: ``field="other"``).
UNKNOWN_FIELD_LABELS_MAX = 50
#: Tables whose state size is reported (label ``table``).
STATE_TABLES = ("account_states", "terminal_states")


def _with_series(metric, **label_values):
    """``metric`` with a series for every combination of ``label_values`` (name ->
    values), so each exists at 0 before the first event."""
    for combo in product(*label_values.values()):
        metric.labels(**dict(zip(label_values, combo)))
    return metric


class Metrics:
    """The service's metrics, registered on ``registry``.

    Parameters
    ----------
    registry : CollectorRegistry
        Where to register; use a fresh one per test.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.transactions_consumed = Counter(
            "fraud_transactions_consumed_total",
            "Records read from the transactions topic (valid or not).",
            registry=registry,
        )
        self.transactions_scored = Counter(
            "fraud_transactions_scored_total",
            "Transactions scored by the model.",
            ["model_version"],
            registry=registry,
        )
        self.duplicate_transactions = Counter(
            "fraud_duplicate_transactions_total",
            "Transactions already in their account's state (redelivered); scored again "
            "with the same features, never counted twice in state.",
            registry=registry,
        )
        self.transactions_rekeyed = Counter(
            "fraud_transactions_rekeyed_total",
            "Valid transactions whose record key was not their account id; re-produced "
            "with the right key before processing.",
            registry=registry,
        )
        self.alerts = Counter(
            "fraud_alerts_total",
            "Fraud alerts published.",
            ["model_version"],
            registry=registry,
        )
        self.alerts_suppressed = Counter(
            "fraud_alerts_suppressed_total",
            "Alerts not published again because Redis shows one was already raised for "
            "that transaction.",
            registry=registry,
        )
        self.alert_reservations_resolved = Counter(
            "fraud_alert_reservations_resolved_total",
            "Alert ids found reserved but not marked alerted (their worker died between "
            "the reservation and the mark), by what the alert topic showed: found (marked, "
            "not sent again) or resent (not on the topic: sent now).",
            ["outcome"],
            registry=registry,
        )
        for outcome in RESERVATION_OUTCOMES:
            self.alert_reservations_resolved.labels(outcome=outcome)
        self.alert_topic_lookups = Counter(
            "fraud_alert_topic_lookups_total",
            "Partitions of the alert topic read to resolve reserved alert ids, by where "
            "reading started: timestamp (offsets_for_times of the reservation time) or "
            "beginning (the broker gave no offset for that time).",
            ["source"],
            registry=registry,
        )
        for start in LOOKUP_STARTS:
            self.alert_topic_lookups.labels(source=start)
        self.alert_reservations_waited = Counter(
            "fraud_alert_reservations_waited_total",
            "Alert ids found reserved by a worker moments ago (possibly still sending) "
            "and waited on before deciding.",
            registry=registry,
        )
        self.events_rejected = Counter(
            "fraud_events_rejected_total",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason=reason)
        self.unknown_fields = Counter(
            "fraud_unknown_fields_total",
            "Fields an input record carried that its contract does not list (accepted, "
            "kept out of the features), by topic and field name; a name that is not an "
            f"identifier or beyond the first {UNKNOWN_FIELD_LABELS_MAX} of a topic counts "
            'as field="other".',
            ["topic", "field"],
            registry=registry,
        )
        self._unknown_field_labels = FieldLabels(UNKNOWN_FIELD_LABELS_MAX)
        self.scoring_batch_duration = Histogram(
            "fraud_scoring_batch_duration_seconds",
            "Time to compute features and scores of one batch.",
            buckets=BATCH_BUCKETS_SECONDS,
            registry=registry,
        )
        self.scoring_batch_size = Histogram(
            "fraud_scoring_batch_size",
            "Transactions per scoring batch.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
            registry=registry,
        )
        self.alert_latency = Histogram(
            "fraud_alert_latency_seconds",
            "From the transaction's arrival at the worker to its alert acknowledged by "
            "the broker.",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.processing_latency = Histogram(
            "fraud_processing_latency_seconds",
            "From the transaction's arrival at the worker to the end of its batch.",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.scores = Histogram(
            "fraud_score",
            "Distribution of model scores (0..1, higher is more likely fraud).",
            buckets=_SCORE_BUCKETS,
            registry=registry,
        )
        self.model_info = Info(
            "fraud_model", "The model version in use by this worker.", registry=registry
        )
        self.accounts = Gauge(
            "fraud_table_accounts",
            "Accounts held in this worker's account_states table.",
            registry=registry,
        )
        self.terminals = Gauge(
            "fraud_table_terminals",
            "Terminals held in this worker's terminal_states table.",
            registry=registry,
        )
        self.labels_consumed = Counter(
            "fraud_labels_consumed_total",
            "Valid labels applied to terminal state.",
            registry=registry,
        )
        self.verdicts = _with_series(Counter(
            "fraud_verdicts_total",
            "Labels read by the scoring stage, by source (investigation: an analyst's "
            "verdict; chargeback: the delayed feed) and verdict (fraud, genuine).",
            ["source", "verdict"],
            registry=registry,
        ), source=LABEL_SOURCES, verdict=VERDICTS)
        self.label_duplicates = Counter(
            "fraud_label_duplicates_total",
            "Labels of a transaction whose verdict the terminal state already holds (the "
            "delayed feed after an analyst's verdict, a redelivery): they change nothing.",
            registry=registry,
        )
        self.label_contradictions = Counter(
            "fraud_label_contradictions_total",
            "Labels that contradict the verdict the terminal state holds for their "
            "transaction (a fraud stays fraud; see docs/case-review.md).",
            registry=registry,
        )
        self.late_transactions = Counter(
            "fraud_late_transactions_total",
            "Transactions older than their account's newest by more than "
            "ALLOWED_LATENESS_SECONDS (processed; earlier scores did not see them).",
            registry=registry,
        )
        self.out_of_order_transactions = Counter(
            "fraud_out_of_order_transactions_total",
            "Transactions that arrived after a later transaction of the same account "
            "(redeliveries excluded); their own features are exact.",
            registry=registry,
        )
        self.revised_transactions = Counter(
            "fraud_account_features_revised_total",
            "Transactions already featurized whose account history missed an earlier "
            "transaction that arrived after them (each counted once; scores stand).",
            registry=registry,
        )
        self.alignment_timeouts = Counter(
            "fraud_alignment_timeouts_total",
            "Transactions scored although their terminal features were not known to be "
            "complete: the source they waited for (cause: watermark or labels) made no "
            "progress for ALIGNMENT_STALL_SECONDS while the input was read to its end.",
            ["cause"],
            registry=registry,
        )
        for cause in ("watermark", "labels"):
            self.alignment_timeouts.labels(cause=cause)
        self.alignment_handed_over = Counter(
            "fraud_alignment_handed_over_total",
            "Held transactions left unacknowledged for the partition's next owner when "
            "a rebalance or a stop began (read again there, never waited on).",
            registry=registry,
        )
        self.alignment_pending = Gauge(
            "fraud_alignment_pending",
            "Transactions held by the scoring stage until their terminal features are "
            "complete (event-time alignment).",
            registry=registry,
        )
        self.alignment_wait = Histogram(
            "fraud_alignment_wait_seconds",
            "Wall-clock time a transaction was held by the event-time alignment.",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.duplicate_terminal_transactions = Counter(
            "fraud_duplicate_terminal_transactions_total",
            "Transactions the scoring stage had already added to their terminal's state "
            "(redelivery after a restart or rebalance).",
            registry=registry,
        )
        self.redis_errors = Counter(
            "fraud_redis_errors_total",
            "Failed Redis calls (each is retried).",
            ["operation"],
            registry=registry,
        )
        self.redis_retry_wait = Counter(
            "fraud_redis_retry_wait_seconds_total",
            "Time spent waiting to retry failed Redis calls (REDIS_RETRY_MAX_SECONDS bounds "
            "one call's total).",
            registry=registry,
        )
        self.redis_up = Gauge(
            "fraud_redis_up",
            "1 if the last Redis call succeeded, 0 if it failed (the worker is retrying).",
            registry=registry,
        )
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation=operation)
        self._observability(registry)

    def _observability(self, registry: CollectorRegistry) -> None:
        """Throughput, lag, rebalances, state size, decisions and model health."""
        self.messages_consumed = Counter(
            "fraud_messages_consumed_total",
            "Records read by this worker, by topic (every topic it consumes, changelogs "
            "during recovery included).",
            ["topic"],
            registry=registry,
        )
        self.messages_produced = Counter(
            "fraud_messages_produced_total",
            "Records acknowledged by the broker, by topic (alerts, scored transactions, "
            "dead letters, changelogs, internal topics).",
            ["topic"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "fraud_consumer_lag",
            "Consumer group lag of a source partition assigned to this worker, in "
            "records: its end offset (asked of the broker) minus the group's committed "
            "offset, sampled every METRICS_INTERVAL_SECONDS (what an autoscaler scales on).",
            ["topic", "partition"],
            registry=registry,
        )
        self.partition_stalled = Gauge(
            "fraud_partition_stalled_seconds",
            "Seconds a source partition assigned to this worker has had records past "
            "the worker's position without that position moving (0 while it reads or "
            "has nothing to read); past PARTITION_STALL_SECONDS the worker seeks it back. "
            "During a table recovery, also the changelog partitions it restores.",
            ["topic", "partition"],
            registry=registry,
        )
        self.partition_stalls = Counter(
            "fraud_partition_stalls_total",
            "Stalled source partitions the worker resumed from their committed offset, "
            "and changelog partitions a table recovery fetched again.",
            ["topic"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "fraud_assigned_partitions",
            "Topic partitions assigned to this worker's consumer (all topics).",
            registry=registry,
        )
        self.rebalances = Counter(
            "fraud_rebalances_total",
            "Consumer group rebalances this worker took part in.",
            registry=registry,
        )
        self.state_bytes = Gauge(
            "fraud_state_bytes",
            "Bytes of the serialized values held in a table of this worker (keys "
            "excluded), sampled every METRICS_INTERVAL_SECONDS.",
            ["table"],
            registry=registry,
        )
        # --- lifecycle and decisions ------------------------------------------------------
        self.shadow_scores = Histogram(
            "fraud_shadow_score",
            "Scores of the shadow models, by version (they never alert).",
            ["model_version"],
            buckets=_SCORE_BUCKETS,
            registry=registry,
        )
        self.shadow_would_alert = Counter(
            "fraud_shadow_would_alert_total",
            "Transactions a shadow model scored at or above the active alert threshold.",
            ["model_version"],
            registry=registry,
        )
        self.decisions = Counter(
            "fraud_decisions_total",
            "Scored transactions by outcome: approve (below the threshold), review (an "
            "alert), block (reserved for the decision engine).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.decisions.labels(outcome=outcome)
        self.alerts_by_rule = Counter(
            "fraud_alerts_by_rule_total",
            "Alerts published, by the rule that raised them (score_threshold: the model "
            "score at or above the alert threshold).",
            ["rule"],
            registry=registry,
        )
        for rule in RULES:
            self.alerts_by_rule.labels(rule=rule)
        self.labelled_transactions = Counter(
            "fraud_labelled_transactions_total",
            "Labels received, by verdict (fraud, genuine) and whether the transaction had "
            "been alerted (true, false); live precision = fraud & alerted / alerted.",
            ["verdict", "alerted"],
            registry=registry,
        )
        for verdict in VERDICTS:
            for alerted in ("true", "false"):
                self.labelled_transactions.labels(verdict=verdict, alerted=alerted)
        self.feature_psi = Gauge(
            "fraud_feature_psi",
            "Population stability index of a served feature against the model's training "
            "distribution (recent transactions, decayed); > 0.25 is a significant shift.",
            ["feature"],
            registry=registry,
        )
        self.rules_fired = Counter(
            "fraud_rules_fired_total",
            "Rule hits, by rule id (ids come from the analysts' rule set: a small set) "
            "and allow:/block: list hits.",
            ["rule_id"],
            registry=registry,
        )
        self.control_messages = Counter(
            "fraud_control_messages_total",
            "Control messages handled, by kind (model, rules) and result (applied, "
            "refused: the old model or rules keep serving).",
            ["kind", "result"],
            registry=registry,
        )
        for kind in ("model", "rules"):
            for result in ("applied", "refused"):
                self.control_messages.labels(kind=kind, result=result)
        self.rule_set_info = Info(
            "fraud_rule_set", "The rule set in force in this worker.", registry=registry
        )

    def count_unknown_fields(self, topic: str, names: Iterable[str]) -> None:
        """Count the unknown fields of a batch of ``topic`` (one name per occurrence)."""
        for name in names:
            field = self._unknown_field_labels.label(topic, name)
            self.unknown_fields.labels(topic=topic, field=field).inc()

    def observe_decisions(self, batch) -> None:
        """Count one batch's rule hits and shadow scores (outcomes: ``decisions``,
        counted with the scored records by :func:`app.monitoring.worker.observe_scored`).

        Parameters
        ----------
        batch : app.decisions.BatchDecisions
        """
        for d in batch.decisions:
            for rule_id in d.rules_fired:
                self.rules_fired.labels(rule_id=rule_id).inc()
        for version, scores in batch.shadow_scores.items():
            hist = self.shadow_scores.labels(model_version=version)
            for x in scores.tolist():
                hist.observe(x)
            self.shadow_would_alert.labels(model_version=version).inc(
                int((scores >= batch.threshold).sum())
            )

    def observe_labels(self, intake) -> None:
        """Count one batch's labels by source and verdict, duplicates and contradictions.

        Parameters
        ----------
        intake : app.pipeline.TerminalIntake
        """
        for (source, verdict), n in intake.label_sources.items():
            self.verdicts.labels(source=source, verdict=verdict).inc(n)
        self.label_duplicates.inc(intake.label_duplicates)
        self.label_contradictions.inc(intake.label_contradictions)

    def observe_control(self, result) -> None:
        """Count one applied or refused control message.

        Parameters
        ----------
        result : app.decisions.ApplyResult
        """
        self.control_messages.labels(
            kind=result.kind, result="applied" if result.applied else "refused"
        ).inc()


class ReviewMetrics:
    """Metrics of the case-review process (``fraudctl review serve``, ``GET /metrics``).

    Counters and the histogram count what happened while the process ran (events it
    wrote or read after loading the case history); the gauges describe every case.

    Parameters
    ----------
    registry : CollectorRegistry
        Where to register; use a fresh one per test.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.open_cases = Gauge(
            "fraud_open_cases", "Cases waiting for a verdict.", registry=registry
        )
        self.cases = Gauge(
            "fraud_cases", "Cases by status (open, confirmed_fraud, dismissed_genuine).",
            ["status"], registry=registry,
        )
        self.case_events = _with_series(Counter(
            "fraud_case_events_total",
            "Case events applied, by type (opened, alert_added, confirmed_fraud, ...).",
            ["type"],
            registry=registry,
        ), type=CASE_EVENT_TYPES)
        self.case_verdicts = _with_series(Counter(
            "fraud_case_verdicts_total",
            "Verdicts given on cases, by verdict (fraud, genuine); each wrote one "
            "investigation label per alerted transaction of the case.",
            ["verdict"],
            registry=registry,
        ), verdict=VERDICTS)
        self.verdict_labels = Counter(
            "fraud_case_verdict_labels_total",
            "Labels written to the labels topic by verdicts (source investigation).",
            registry=registry,
        )
        self.verdict_delay = Histogram(
            "fraud_case_verdict_delay_seconds",
            "Time from a case's first alert (alert_time_ms) to its verdict, in seconds.",
            buckets=VERDICT_DELAY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.verdict_precision = Gauge(
            "fraud_case_verdict_precision",
            "Live precision from verdicts: closed cases confirmed as fraud / closed "
            "cases (0 before the first verdict).",
            registry=registry,
        )
        self.requests_refused = _with_series(Counter(
            "fraud_case_requests_refused_total",
            "Analyst requests refused, by reason (unknown_case, conflict, invalid).",
            ["reason"],
            registry=registry,
        ), reason=("unknown_case", "conflict", "invalid"))
        self.alerts_rejected = Counter(
            "fraud_case_alerts_rejected_total",
            "Records of the alerts topic that are no valid Alert (logged and skipped).",
            registry=registry,
        )
        self.requests_forbidden = _with_series(Counter(
            "fraud_review_requests_forbidden_total",
            "Console requests refused with 403, by reason (role: the role does not allow "
            "the action; csrf: no valid form token; untrusted_proxy: an identity header "
            "from an address that is no trusted proxy); nothing was written.",
            ["reason"],
            registry=registry,
        ), reason=("role", "csrf", "untrusted_proxy"))
        self.sign_ins = _with_series(Counter(
            "fraud_review_sign_ins_total",
            "Console sign-ins through the identity provider, by result (ok, failed).",
            ["result"],
            registry=registry,
        ), result=("ok", "failed"))
        self.cases_past_target = Gauge(
            "fraud_cases_past_target",
            "Open cases whose first alert is older than the review target "
            "(REVIEW_TARGET_SECONDS).",
            registry=registry,
        )


class SinkMetrics:
    """Metrics of the alert-sink process (``fraudctl sinks run``), label ``sink``.

    Parameters
    ----------
    registry : CollectorRegistry
        Where to register; use a fresh one per test.
    sinks : iterable of str
        Names of the configured sinks (their series start at 0).
    """

    def __init__(self, registry: CollectorRegistry, sinks: Iterable[str] = ()) -> None:
        self.registry = registry
        self.sent = Counter(
            "fraud_sink_alerts_sent_total",
            "Alerts the sink confirmed (RabbitMQ publisher confirm, webhook 2xx).",
            ["sink"],
            registry=registry,
        )
        self.failed = Counter(
            "fraud_sink_failures_total",
            "Failed delivery attempts (retried until the sink confirms).",
            ["sink"],
            registry=registry,
        )
        self.backlog = Gauge(
            "fraud_sink_backlog_records",
            "Records of the alerts topic not yet confirmed by the sink: end offsets "
            "minus the sink's committed offsets, over its partitions.",
            ["sink"],
            registry=registry,
        )
        self.delivery = Histogram(
            "fraud_sink_delivery_duration_seconds",
            "From reading a batch of alerts to the sink's confirmation of all of it "
            "(retries included).",
            ["sink"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.skipped = Counter(
            "fraud_sink_skipped_total",
            "Records of the alerts topic that are no alert (not JSON, no alert_id): "
            "logged and committed past.",
            ["sink"],
            registry=registry,
        )
        self.up = Gauge(
            "fraud_sink_up",
            "1 if the sink's last delivery attempt succeeded, 0 while it is retrying.",
            ["sink"],
            registry=registry,
        )
        for sink in sinks:
            for metric in (self.sent, self.failed, self.skipped, self.backlog, self.up):
                metric.labels(sink=sink)

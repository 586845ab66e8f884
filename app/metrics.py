"""Every Prometheus metric of the service, built in one place against a registry.

Names follow Prometheus conventions: base units (seconds, bytes), ``_total`` on
counters, labels from small fixed sets (reason, topic, decision) — never an account or
transaction id. Tests build their own :class:`Metrics` on a fresh
:class:`prometheus_client.CollectorRegistry`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .events import REJECT_REASONS

__all__ = ["Metrics", "LATENCY_BUCKETS_SECONDS", "BATCH_BUCKETS_SECONDS"]

#: Buckets of the end-to-end latency histogram, in seconds (1 ms .. 10 s).
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Buckets of the scoring batch duration histogram, in seconds.
BATCH_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


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
        self.events_rejected = Counter(
            "fraud_events_rejected_total",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason=reason)
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

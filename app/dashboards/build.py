"""The two dashboards, built with grafana-foundation-sdk.

"Fraud operations" answers *is the pipeline healthy?* (throughput, lag, latency, rejects,
workers, rebalances, Redis errors, state); "Model quality" answers *does the model still
work?* (score distribution, alert rate, outcomes and rules, live precision, drift, model
version). Every panel reads the metrics of :mod:`app.metrics` (or Prometheus' ``up``),
has a unit and a short description, and thresholds where a level means something.

``fraudctl dashboards build`` writes :func:`build_all` to ``dashboards/*.json``; a test
checks the committed files equal it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)

__all__ = ["fraud_operations", "model_quality", "build_all", "render", "FILES", "JOB"]

#: Prometheus job that scrapes the workers (ops/prometheus*.yml).
JOB = "fraud-worker"
#: Dashboard file name -> builder.
FILES = {"fraud-operations.json": "fraud_operations", "model-quality.json": "model_quality"}

_DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
_RATE = "$__rate_interval"
_RANGE = "$__range"


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value, color) for value, color in steps])
    )


_NEUTRAL = _thresholds((None, "green"))


def _q(expr: str, legend: str = "", ref: str = "A", instant: bool = False):
    query = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto")
    return query.instant() if instant else query.range()


def _targets(panel, queries: Sequence[tuple[str, str]], instant: bool = False):
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_q(expr, legend, chr(ord("A") + i), instant))
    return panel


def _timeseries(title, description, unit, queries, thresholds=_NEUTRAL, span=12, height=8):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .unit(unit)
        .thresholds(thresholds)
        .span(span)
        .height(height)
    )
    return _targets(panel, queries)


def _stat(title, description, unit, queries, thresholds=_NEUTRAL, span=6, height=5):
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .unit(unit)
        .thresholds(thresholds)
        .span(span)
        .height(height)
    )
    return _targets(panel, queries, instant=True)


def _quantiles(metric: str, by: str = "le") -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket[{_RATE}])))", f"p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


def _base(title: str, uid: str, description: str, tags: Sequence[str]) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(list(tags))
        .editable()
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )


def fraud_operations() -> dashboard.Dashboard:
    """Is the pipeline healthy? Workers, throughput, lag, latency, rejects, Redis, state."""
    up = f'up{{job="{JOB}"}}'
    return (
        _base(
            "Fraud operations",
            "fraud-operations",
            "Health of the fraud-detection pipeline: workers, throughput, consumer lag, "
            "latency, rejected events, Redis and state.",
            ["fraud-stream", "operations"],
        )
        .with_row(dashboard.Row("Workers"))
        .with_panel(
            _stat(
                "Workers up",
                "Worker targets answering Prometheus' scrape (job fraud-worker). Red: none.",
                units.Short,
                [(f"sum({up})", "workers")],
                _thresholds((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            table.Panel()
            .title("Down worker targets")
            .description("Worker targets that do not answer their scrape: empty when all are up.")
            .datasource(_DS)
            .unit(units.Short)
            .span(6)
            .height(5)
            .with_target(_q(f"{up} == 0", "{{instance}}", instant=True))
        )
        .with_panel(
            _stat(
                "Rebalances (range)",
                "Consumer group rebalances the workers took part in over the dashboard's "
                "time range. Frequent rebalances stall processing.",
                units.Short,
                [(f"sum(increase(fraud_rebalances_total[{_RANGE}]))", "rebalances")],
                _thresholds((None, "green"), (5, "orange"), (20, "red")),
            )
        )
        .with_panel(
            _stat(
                "Redis errors (range)",
                "Failed Redis calls (each retried; 30 failures in a row stop the worker).",
                units.Short,
                [(f"sum(increase(fraud_redis_errors_total[{_RANGE}]))", "errors")],
                _thresholds((None, "green"), (1, "orange"), (30, "red")),
            )
        )
        .with_panel(
            _timeseries(
                "Assigned partitions per worker",
                "Topic partitions assigned to each worker's consumer (all topics).",
                units.Short,
                [("sum by (instance) (fraud_assigned_partitions)", "{{instance}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Redis errors by operation",
                "Failed Redis calls per second, by operation (retried).",
                units.OpsPerSecond,
                [(f"sum by (operation) (rate(fraud_redis_errors_total[{_RATE}]))", "{{operation}}")],
                _thresholds((None, "green"), (0.1, "red")),
            )
        )
        .with_row(dashboard.Row("Throughput and lag"))
        .with_panel(
            _timeseries(
                "Records read by topic",
                "Records per second the workers read, by topic.",
                units.OpsPerSecond,
                [(f"sum by (topic) (rate(fraud_messages_consumed_total[{_RATE}]))", "{{topic}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Records written by topic",
                "Records per second acknowledged by the broker, by topic (alerts, scored "
                "transactions, dead letters, changelogs).",
                units.OpsPerSecond,
                [(f"sum by (topic) (rate(fraud_messages_produced_total[{_RATE}]))", "{{topic}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Consumer lag per partition",
                "Records in each assigned partition not read yet. Growing lag: workers "
                "fall behind (add workers up to the partition count).",
                units.Short,
                [("sum by (topic, partition) (fraud_consumer_lag)", "{{topic}}[{{partition}}]")],
                _thresholds((None, "green"), (1000, "orange"), (10000, "red")),
            )
        )
        .with_panel(
            _timeseries(
                "Transactions scored",
                "Transactions scored per second (all workers) and redelivered ones "
                "(already in their account's state).",
                units.OpsPerSecond,
                [
                    (f"sum(rate(fraud_transactions_scored_total[{_RATE}]))", "scored"),
                    (f"sum(rate(fraud_duplicate_transactions_total[{_RATE}]))", "redelivered"),
                ],
            )
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            _timeseries(
                "Latency to alert p50 / p95 / p99",
                "From a transaction's arrival at the worker to its alert acknowledged by "
                "the broker. Objective: 99 % within 1 s.",
                units.Seconds,
                _quantiles("fraud_alert_latency_seconds"),
                _thresholds((None, "green"), (0.5, "orange"), (1, "red")),
                span=8,
            )
        )
        .with_panel(
            _timeseries(
                "Processing latency p50 / p95 / p99",
                "From a transaction's arrival at the worker to the end of its batch (every "
                "transaction, alerted or not).",
                units.Seconds,
                _quantiles("fraud_processing_latency_seconds"),
                _thresholds((None, "green"), (0.5, "orange"), (1, "red")),
                span=8,
            )
        )
        .with_panel(
            _timeseries(
                "Scoring batch duration p50 / p99",
                "Time to compute the features and scores of one batch (up to "
                "BATCH_MAX_EVENTS transactions).",
                units.Seconds,
                [q for q in _quantiles("fraud_scoring_batch_duration_seconds") if q[1] != "p95"],
                _thresholds((None, "green"), (0.25, "orange"), (1, "red")),
                span=8,
            )
        )
        .with_row(dashboard.Row("Rejected events"))
        .with_panel(
            _timeseries(
                "Rejected events by reason",
                "Records sent to the dead-letter topic per second, by reason (see docs/architecture.md, "
                "event contracts).",
                units.OpsPerSecond,
                [(f"sum by (reason) (rate(fraud_events_rejected_total[{_RATE}]))", "{{reason}}")],
            )
        )
        .with_panel(
            _stat(
                "Rejected share",
                "Share of records read from transactions that were rejected, over the "
                "time range. Orange above 0.1 %, red above 1 %.",
                units.PercentUnit,
                [
                    (
                        f"sum(increase(fraud_events_rejected_total[{_RANGE}])) / "
                        f"sum(increase(fraud_transactions_consumed_total[{_RANGE}]))",
                        "rejected",
                    )
                ],
                _thresholds((None, "green"), (0.001, "orange"), (0.01, "red")),
                span=12,
                height=8,
            )
        )
        .with_row(dashboard.Row("State"))
        .with_panel(
            _timeseries(
                "Table sizes",
                "Accounts and terminals held in the workers' tables.",
                units.Short,
                [
                    ("sum(fraud_table_accounts)", "accounts"),
                    ("sum(fraud_table_terminals)", "terminals"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "State bytes and worker memory",
                "Serialized bytes of each table's values, and the workers' resident memory.",
                units.BytesIEC,
                [
                    ("sum by (table) (fraud_state_bytes)", "{{table}}"),
                    (f'sum(process_resident_memory_bytes{{job="{JOB}"}})', "resident memory"),
                ],
            )
        )
    )


def model_quality() -> dashboard.Dashboard:
    """Does the model still work? Scores, alert rate, outcomes, precision, drift, version."""
    labelled = "fraud_labelled_transactions_total"
    return (
        _base(
            "Model quality",
            "fraud-model-quality",
            "Whether the fraud model still works: scores, alert rate, outcomes and rules, "
            "live precision from labels, feature drift and the version in use.",
            ["fraud-stream", "model"],
        )
        .with_row(dashboard.Row("Model"))
        .with_panel(
            table.Panel()
            .title("Model version in use")
            .description("Model version each worker serves and where it was chosen "
                         "(redis: fraud:model:active, settings: MODEL_VERSION or models/ACTIVE).")
            .datasource(_DS)
            .unit(units.Short)
            .span(12)
            .height(5)
            .with_target(
                _q("count by (version, source) (fraud_model_info)", "{{version}}", instant=True)
            )
        )
        .with_panel(
            _stat(
                "Live precision (range)",
                "Share of alerted transactions whose label says fraud, over the time range "
                "(labels arrive days after the alert). Red below 0.1.",
                units.PercentUnit,
                [
                    (
                        f'sum(increase({labelled}{{verdict="fraud",alerted="true"}}[{_RANGE}])) / '
                        f'sum(increase({labelled}{{alerted="true"}}[{_RANGE}]))',
                        "precision",
                    )
                ],
                _thresholds((None, "red"), (0.1, "orange"), (0.3, "green")),
            )
        )
        .with_panel(
            _stat(
                "Live recall (range)",
                "Share of transactions labelled fraud that had been alerted, over the time range.",
                units.PercentUnit,
                [
                    (
                        f'sum(increase({labelled}{{verdict="fraud",alerted="true"}}[{_RANGE}])) / '
                        f'sum(increase({labelled}{{verdict="fraud"}}[{_RANGE}]))',
                        "recall",
                    )
                ],
                _thresholds((None, "red"), (0.1, "orange"), (0.3, "green")),
            )
        )
        .with_row(dashboard.Row("Scores and alerts"))
        .with_panel(
            heatmap.Panel()
            .title("Score distribution")
            .description("Transactions per score bucket (0..1, higher is more likely fraud) "
                         "per second.")
            .datasource(_DS)
            .unit(units.Short)
            .span(12)
            .height(8)
            .with_target(
                _q(f"sum by (le) (rate(fraud_score_bucket[{_RATE}]))", "{{le}}").format(
                    PromQueryFormat.HEATMAP
                )
            )
        )
        .with_panel(
            _timeseries(
                "Score quantiles",
                "Median, 90th and 99th percentile of the scores.",
                units.Short,
                [
                    (f"histogram_quantile({q}, sum by (le) (rate(fraud_score_bucket[{_RATE}])))", f"p{int(q * 100)}")
                    for q in (0.5, 0.9, 0.99)
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Alert rate",
                "Share of scored transactions that raised an alert. A jump or a drop far "
                "from the usual level means the data or the model changed.",
                units.PercentUnit,
                [
                    (
                        f"sum(rate(fraud_alerts_total[{_RATE}])) / "
                        f"sum(rate(fraud_transactions_scored_total[{_RATE}]))",
                        "alert rate",
                    )
                ],
                _thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
            )
        )
        .with_panel(
            _timeseries(
                "Alerts by model version",
                "Alerts published per second, by model version, and alerts suppressed "
                "because Redis had them already.",
                units.OpsPerSecond,
                [
                    (f"sum by (model_version) (rate(fraud_alerts_total[{_RATE}]))", "{{model_version}}"),
                    (f"sum(rate(fraud_alerts_suppressed_total[{_RATE}]))", "suppressed"),
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Outcomes",
                "Scored transactions per second by outcome: approve, review (alert), block.",
                units.OpsPerSecond,
                [(f"sum by (outcome) (rate(fraud_decisions_total[{_RATE}]))", "{{outcome}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Alerts by rule",
                "Alerts per second by the rule that raised them (score_threshold: the "
                "model's score at or above the alert threshold).",
                units.OpsPerSecond,
                [(f"sum by (rule) (rate(fraud_alerts_by_rule_total[{_RATE}]))", "{{rule}}")],
            )
        )
        .with_row(dashboard.Row("Labels and drift"))
        .with_panel(
            _timeseries(
                "Labels by verdict",
                "Labels received per second, by verdict and by whether the transaction had "
                "been alerted.",
                units.OpsPerSecond,
                [
                    (
                        f"sum by (verdict, alerted) (rate({labelled}[{_RATE}]))",
                        "{{verdict}}, alerted={{alerted}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Feature drift (PSI)",
                "Population stability index of each feature against the training "
                "distribution (recent transactions). Orange above 0.1, red above 0.25.",
                units.Short,
                [("max by (feature) (fraud_feature_psi)", "{{feature}}")],
                _thresholds((None, "green"), (0.1, "orange"), (0.25, "red")),
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Drift now, by feature")
            .description("Latest PSI of each feature, largest first. Orange above 0.1, red "
                         "above 0.25.")
            .datasource(_DS)
            .unit(units.Short)
            .thresholds(_thresholds((None, "green"), (0.1, "orange"), (0.25, "red")))
            .span(12)
            .height(8)
            .with_target(
                _q("sort_desc(max by (feature) (fraud_feature_psi))", "{{feature}}", instant=True)
            )
        )
    )


def build_all() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON (as a dict) of every dashboard, with panel ids set."""
    out = {}
    for name, builder in FILES.items():
        board = json.loads(json.dumps(globals()[builder]().build(), cls=JSONEncoder))
        for i, panel in enumerate(board.get("panels", []), start=1):
            panel["id"] = i
            if panel.get("options") is None and panel.get("type") != "row":
                panel["options"] = {}  # Grafana fills in the plugin's defaults
        out[name] = board
    return out


def render(board: dict[str, Any]) -> str:
    """The file text of a dashboard: sorted keys, 2-space indent, final newline."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

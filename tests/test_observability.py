"""Observability units: drift (PSI), consumer lag, outcomes and verdicts, the metrics'
names and labels, the worker adapter (with the real Redis), the drift reference of the
shipped model, and the dashboards: committed JSON equals the code, every panel has a
unit and a description and reads metrics the worker exports."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from faust.types import TP
from faust.types.tuples import RecordMetadata
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli import cli
from app.cli.dashboards import DASHBOARDS_DIR, load_dashboards
from app.config import PROJECT_ROOT, Settings
from app.dashboards.build import build_all, render
from app.dashboards.queries import expand, metric_names, panel_queries
from app.events import ScoredTransaction, Transaction, encode
from app.features import FEATURE_NAMES
from app.metrics import REDIS_OPERATIONS, Metrics, ReviewMetrics
from app.monitoring.drift import (
    DriftMonitor,
    FeatureReference,
    bin_indices,
    psi,
    reference_from_matrix,
)
from app.monitoring.lag import consumer_lag
from app.monitoring.outcomes import outcome_counts, outcome_of, verdict_counts
from app.monitoring.reference import reference_for_window
from app.monitoring.worker import MetricsSensor, count_label_verdicts, observe_scored
from app.redis_store import RedisStore
from app.scoring.registry import default_version, read_card

#: The label names a metric of the service may carry: small fixed sets, never an id.
ALLOWED_LABELS = {
    "topic", "partition", "reason", "outcome", "rule", "model_version", "feature",
    "operation", "table", "verdict", "alerted", "version", "source", "le",
    # issue 4: control messages (kind: model|rules, result: applied|refused) and the
    # ids of the analysts' rules (a rule set is a small, reviewed list)
    "kind", "result", "rule_id",
    # the source an event-time alignment timed out on (watermark|labels)
    "cause",
}


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


# --- drift ------------------------------------------------------------------------------


def test_reference_bins_hold_the_training_shares():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.exponential(size=10_000), rng.integers(0, 2, 10_000)]).astype(float)
    X[:100, 0] = np.nan
    ref = reference_from_matrix(X, ["amount", "flag"], n_bins=10)
    assert len(ref["amount"].edges) == 9
    assert ref["amount"].expected[-1] == pytest.approx(0.01)  # the NaN bin
    assert ref["flag"].edges == [0.0, 1.0]  # a flag: two bins (and two empty ones)
    assert sum(ref["flag"].expected) == pytest.approx(1.0)
    # the training matrix itself has no drift
    monitor = DriftMonitor(ref, ["amount", "flag"], min_events=10)
    monitor.observe(X)
    assert max(monitor.psi().values()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        pytest.param(dict(X=np.zeros((0, 1))), "no rows", id="empty"),
        pytest.param(dict(X=np.zeros((5, 2))), r"shape \(n_samples, 1\)", id="wrong-width"),
        pytest.param(dict(X=np.zeros((5, 1)), n_bins=1), "n_bins must be in 2..100", id="bins"),
    ],
)
def test_reference_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        reference_from_matrix(feature_names=["x"], **bad)


@pytest.mark.parametrize(
    "edges, expected, match",
    [
        pytest.param([0.0], [0.5, 0.5], "len\\(edges\\) \\+ 2", id="wrong-length"),
        pytest.param([1.0, 0.0], [0.25, 0.25, 0.25, 0.25], "ascending", id="not-ascending"),
        pytest.param([0.0], [0.5, 0.6, 0.0], "sum to 1", id="not-shares"),
    ],
)
def test_feature_reference_is_validated(edges, expected, match):
    with pytest.raises(ValidationError, match=match):
        FeatureReference(edges=edges, expected=expected)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    e = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(e, e * 40) == 0.0  # counts are normalised
    small, large = psi(e, np.array([0.3, 0.25, 0.25, 0.2])), psi(e, np.array([0.7, 0.1, 0.1, 0.1]))
    assert 0 < small < 0.1 < 0.25 < large
    with pytest.raises(ValueError, match="differ in shape"):
        psi(e, np.array([1.0]))


def test_drift_monitor_forgets_old_traffic():
    rng = np.random.default_rng(2)
    ref = reference_from_matrix(rng.normal(size=(20_000, 1)), ["x"])
    monitor = DriftMonitor(ref, ["x"], half_life_events=2_000, min_events=500)
    monitor.observe(rng.normal(size=(400, 1)))
    assert monitor.psi() == {}  # fewer than min_events
    monitor.observe(rng.normal(loc=3.0, size=(5_000, 1)))
    shifted = monitor.psi()["x"]
    for _ in range(10):
        monitor.observe(rng.normal(size=(2_000, 1)))
    assert shifted > 0.25 > 0.1 > monitor.psi()["x"]


def test_drift_monitor_ignores_features_without_reference():
    ref = {"a": FeatureReference(edges=[0.0], expected=[0.5, 0.5, 0.0])}
    monitor = DriftMonitor(ref, ["a", "b"], min_events=1)
    monitor.observe(np.array([[-1.0, 5.0], [1.0, 6.0]]))
    assert monitor.features == ["a"] and list(monitor.psi()) == ["a"]
    with pytest.raises(ValueError, match="half_life_events must be > 0"):
        DriftMonitor(ref, ["a"], half_life_events=0)


def test_nan_goes_to_its_own_bin():
    assert bin_indices(np.array([np.nan, 0.0, 9.0]), [1.0, 2.0]).tolist() == [3, 0, 2]


def test_shipped_model_card_has_a_drift_reference_for_every_feature():
    settings = Settings()
    card = read_card(default_version(settings.models_dir), settings.models_dir)
    assert card.drift_reference is not None
    assert set(card.drift_reference) == set(card.feature_names) == set(FEATURE_NAMES)


def test_reference_for_window_uses_only_the_training_days():
    from app.data.simulate import simulate

    df = simulate(n_customers=50, n_terminals=100, start_date="2018-04-01", n_days=6, seed=3)
    df = df.assign(TX_DATETIME=df["TX_DATETIME"].astype("datetime64[ns]"))
    ref, n = reference_for_window(df, "2018-04-05", "2018-04-06", FEATURE_NAMES, n_bins=5)
    in_window = df["TX_DATETIME"].dt.floor("D").between("2018-04-05", "2018-04-06").sum()
    assert n == in_window > 0
    assert set(ref) == set(FEATURE_NAMES)
    with pytest.raises(ValueError, match="no transaction between"):
        reference_for_window(df, "2019-01-01", "2019-01-02", FEATURE_NAMES)


# --- lag, outcomes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ends, read, committed, expected",
    [
        pytest.param({"p": 100}, {"p": 89}, {}, {"p": 10}, id="read-some"),
        pytest.param({"p": 100}, {"p": 99}, {}, {"p": 0}, id="caught-up"),
        pytest.param({"p": 100}, {}, {"p": 40}, {"p": 60}, id="from-committed"),
        pytest.param({"p": 100}, {}, {}, {"p": 100}, id="nothing-read-or-committed"),
        pytest.param({"p": None}, {"p": 3}, {}, {}, id="end-unknown"),
        pytest.param({"p": 5}, {"p": 20}, {}, {"p": 0}, id="stale-end-offset-clamped"),
    ],
)
def test_consumer_lag(ends, read, committed, expected):
    assert consumer_lag(ends, read, committed) == expected


def test_outcomes_and_verdicts():
    assert outcome_counts(["pass", "alert", "pass"]) == {"approve": 2, "review": 1}
    with pytest.raises(ValueError, match="unknown decision 'maybe'"):
        outcome_of("maybe")
    with pytest.raises(ValueError, match="differ in length"):
        verdict_counts([True], [])


# --- the metrics ------------------------------------------------------------------------


def test_metric_names_follow_conventions_and_labels_are_small_fixed_sets():
    metrics = Metrics(CollectorRegistry())
    families = list(metrics.registry.collect())
    assert families
    for family in families:
        assert family.name.startswith("fraud_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client adds it
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (family.name, sample.labels)


def test_series_of_known_label_values_exist_before_any_event():
    m = Metrics(CollectorRegistry())
    for outcome in ("approve", "review", "block"):
        assert _value(m, "fraud_decisions_total", outcome=outcome) == 0
    assert _value(m, "fraud_alerts_by_rule_total", rule="score_threshold") == 0
    for verdict in ("fraud", "genuine"):
        for alerted in ("true", "false"):
            assert _value(m, "fraud_labelled_transactions_total", verdict=verdict, alerted=alerted) == 0
    for op in REDIS_OPERATIONS:
        assert _value(m, "fraud_redis_errors_total", operation=op) == 0
    assert _value(m, "fraud_rebalances_total") == 0


def test_every_redis_operation_of_the_store_is_pre_registered():
    source = (PROJECT_ROOT / "app/redis_store.py").read_text()
    assert set(re.findall(r'_call\(\s*"([a-z_]+)"', source)) == set(REDIS_OPERATIONS)


def test_sensor_counts_records_per_topic_and_rebalances():
    m = Metrics(CollectorRegistry())
    sensor = MetricsSensor(lambda: m)
    tp = TP("transactions", 2)
    sensor.on_message_in(tp, 10, None)
    sensor.on_message_in(tp, 11, None)
    sensor.on_send_completed(None, None, RecordMetadata("fraud-alerts", 0, TP("fraud-alerts", 0), 5))
    state = sensor.on_rebalance_start(None)
    assert "time_start" in state
    assert _value(m, "fraud_messages_consumed_total", topic="transactions") == 2
    assert _value(m, "fraud_messages_produced_total", topic="fraud-alerts") == 1
    assert _value(m, "fraud_rebalances_total") == 1


def _scored(i: int, decision: str, amount: float) -> ScoredTransaction:
    tx = Transaction(
        transaction_id=f"t{i}", account_id="a1", terminal_id="x1", amount_minor=100,
        currency="EUR", event_time_ms=1_522_540_800_000 + i,
    )
    features = {name: 0.0 for name in FEATURE_NAMES} | {"amount": amount}
    return ScoredTransaction(
        transaction=tx, score=0.9 if decision == "alert" else 0.1, decision=decision,
        model_version="v1", features=features, scored_time_ms=0,
    )


def test_observe_scored_counts_outcomes_and_sets_the_psi():
    m = Metrics(CollectorRegistry())
    ref = {"amount": FeatureReference(edges=[10.0], expected=[0.5, 0.5, 0.0])}
    drift = DriftMonitor(ref, FEATURE_NAMES, min_events=2)
    batch = [_scored(0, "alert", 5.0), _scored(1, "pass", 5.0), _scored(2, "pass", 50.0)]
    observe_scored(m, batch, FEATURE_NAMES, drift)
    assert _value(m, "fraud_decisions_total", outcome="approve") == 2
    assert _value(m, "fraud_decisions_total", outcome="review") == 1
    assert _value(m, "fraud_feature_psi", feature="amount") == pytest.approx(
        psi(np.array([0.5, 0.5, 0.0]), np.array([2.0, 1.0, 0.0]))
    )
    assert m.registry.get_sample_value("fraud_feature_psi", {"feature": "is_night"}) is None


def test_label_verdicts_are_counted_against_the_alert_ids_in_redis(redis_url):
    async def run() -> int:
        store = RedisStore(redis_url, prefix="test:verdicts:", retry_max_seconds=0.5)
        try:
            await store.mark_alerted(["t1", "t2"], ttl_seconds=60)
            labels = [
                encode(_label("t1", True)), encode(_label("t2", False)),
                encode(_label("t3", True)), encode(_label("t4", False)), b"not json",
            ]
            return await count_label_verdicts(m, store, labels)
        finally:
            await store.close()

    m = Metrics(CollectorRegistry())
    assert asyncio.run(run()) == 4
    for verdict, alerted in [("fraud", "true"), ("genuine", "true"), ("fraud", "false"), ("genuine", "false")]:
        assert _value(m, "fraud_labelled_transactions_total", verdict=verdict, alerted=alerted) == 1


def _label(transaction_id: str, is_fraud: bool):
    from app.events import Label

    return Label(
        transaction_id=transaction_id, account_id="a1", terminal_id="x1", is_fraud=is_fraud,
        transaction_time_ms=1_522_540_800_000, label_time_ms=1_523_145_600_000,
    )


# --- dashboards -------------------------------------------------------------------------


def test_committed_dashboards_equal_the_generated_ones():
    built = build_all()
    assert sorted(built) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    for name, board in built.items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == render(board), (
            f"{name} is stale: run `fraudctl dashboards build`"
        )


def test_build_check_passes_on_the_committed_files(tmp_path: Path):
    assert CliRunner().invoke(cli, ["dashboards", "build", "--check"]).exit_code == 0
    result = CliRunner().invoke(cli, ["dashboards", "build", "--check", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "out of date" in result.output
    assert list(tmp_path.iterdir()) == []


def _exported_names() -> set[str]:
    """Names the worker and the review console export."""
    names = set()
    families = [*Metrics(CollectorRegistry()).registry.collect(),
                *ReviewMetrics(CollectorRegistry()).registry.collect()]
    for family in families:
        names |= {family.name, *(s.name for s in family.samples)}
        if family.type in ("histogram", "counter"):
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "total")}
        if family.type == "info":
            names.add(f"{family.name}_info")
    return names


def test_every_panel_has_a_unit_a_description_and_reads_exported_metrics():
    exported = _exported_names() | {"up", "process_resident_memory_bytes"}
    for board in load_dashboards(DASHBOARDS_DIR).values():
        titles = [p["title"] for p in board["panels"]]
        assert len(titles) == len(set(titles)), board["title"]
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["description"], panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for q in panel_queries(board):
            names = metric_names(q.expr)
            assert names and names <= exported, (q.name, names - exported)
            expand(q.expr)  # no variable but Grafana's interval ones


def test_the_dashboards_show_what_the_issue_asks_for():
    read = {}
    for board in load_dashboards(DASHBOARDS_DIR).values():
        for q in panel_queries(board):
            read.setdefault(board["title"], set()).update(metric_names(q.expr))
    assert {
        "fraud_messages_consumed_total", "fraud_consumer_lag", "fraud_alert_latency_seconds_bucket",
        "fraud_scoring_batch_duration_seconds_bucket", "fraud_events_rejected_total", "up",
        "fraud_rebalances_total", "fraud_redis_errors_total", "fraud_table_accounts",
        "fraud_table_terminals", "fraud_state_bytes",
    } <= read["Fraud operations"]
    assert {
        "fraud_score_bucket", "fraud_alerts_total", "fraud_transactions_scored_total",
        "fraud_decisions_total", "fraud_alerts_by_rule_total", "fraud_labelled_transactions_total",
        "fraud_feature_psi", "fraud_model_info",
    } <= read["Model quality"]
    assert {
        "fraud_open_cases", "fraud_cases", "fraud_verdicts_total",
        "fraud_case_verdict_delay_seconds_bucket", "fraud_case_verdict_precision",
        "fraud_label_duplicates_total", "fraud_label_contradictions_total", "up",
    } <= read["Case review"]
    thresholds = [
        p for b in load_dashboards(DASHBOARDS_DIR).values() for p in b["panels"]
        if len(p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])) > 1
    ]
    assert len(thresholds) >= 10


def test_docs_list_every_panel_with_the_metrics_it_reads():
    readme = (PROJECT_ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| (Fraud operations|Model quality|Case review) \| ([^|]+?) \| ([^|]+?) \|", readme, re.M))
    expected = set()
    for board in load_dashboards(DASHBOARDS_DIR).values():
        by_panel: dict[str, set[str]] = {}
        for q in panel_queries(board):
            by_panel.setdefault(q.panel, set()).update(metric_names(q.expr))
        for panel, names in by_panel.items():
            incident = " (incident only)" if panel == "Down worker targets" else ""
            metrics = ", ".join(f"`{n}`" for n in sorted(names))
            expected.add((board["title"], panel + incident, metrics))
    assert rows == expected


def test_compose_provisions_the_dashboards_and_the_rules():
    import yaml

    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load(
        (PROJECT_ROOT / "ops/grafana/provisioning/dashboards/fraud-stream.yml").read_text()
    )["providers"][0]
    assert f"./dashboards:{provider['options']['path']}:ro" in grafana
    assert provider["type"] == "file" and provider["folderUid"] == "fraud-stream"
    prometheus = compose["services"]["prometheus"]["volumes"]
    assert "./ops/rules:/etc/prometheus/rules:ro" in prometheus  # rule_files: rules/*.rules.yml


def test_drift_reference_command_writes_a_valid_card(tmp_path, monkeypatch):
    import json
    import shutil

    from app.config import get_settings
    from app.data.simulate import simulate

    version = default_version(Settings().models_dir)
    models = tmp_path / "models"
    shutil.copytree(Settings().models_dir / version, models / version)
    card_path = models / version / "card.json"
    raw = json.loads(card_path.read_text())
    del raw["drift_reference"]
    card_path.write_text(json.dumps(raw))
    df = simulate(n_customers=40, n_terminals=80, start_date="2018-06-04", n_days=37, seed=5)
    df.to_csv(tmp_path / "sim.csv.gz", index=False)
    monkeypatch.setenv("MODELS_DIR", str(models))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, ["drift", "reference", version, "--data", str(tmp_path / "sim.csv.gz"), "--bins", "5"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"drift reference of {len(FEATURE_NAMES)} features" in result.output
    card = read_card(version, models)  # still a valid card, now with the reference
    assert set(card.drift_reference) == set(FEATURE_NAMES)
    assert all(len(ref.edges) <= 4 for ref in card.drift_reference.values())


class _Recovering:
    """What :func:`watch_recovery` reads of a Faust app whose table recovery waits on
    changelog partition ``cl[1]`` (offset 5 of high watermark 9), with a consumer that
    records its resumes and seeks (no broker)."""

    def __init__(self):
        tp = TP("cl", 1)
        self.tp = tp
        self.tables = type("Tables", (), {})()
        self.tables.recovery = type("Recovery", (), {})()
        rec = self.tables.recovery
        rec.in_recovery, rec.active_tps = True, {tp}
        rec.active_offsets, rec.active_highwaters = {tp: 5}, {tp: 9}
        self.calls: list = []
        calls = self.calls

        class Consumer:
            _paused_partitions = {tp}
            _read_offset: dict = {}

            def resume_partitions(self, tps):
                calls.append(("resume", list(tps)))

            async def seek_wait(self, offsets):
                calls.append(("seek", dict(offsets)))

        self.consumer = Consumer()


def test_a_recovery_that_receives_nothing_is_resumed_then_given_up():
    """A changelog partition whose recovery offset does not move is resumed and sought
    to that offset again after each ``stall_seconds``; once the tries are spent the
    watch raises (the worker exits to be restarted); a partition that moves, or a
    finished recovery, starts the count anew."""
    from app.exceptions import RecoveryStalledError
    from app.monitoring.stall import PartitionWatch
    from app.monitoring.worker import watch_recovery

    app = _Recovering()
    metrics = Metrics(CollectorRegistry())
    watch, exported, attempts = PartitionWatch(3.0), {}, {}

    def run(now):
        return asyncio.run(watch_recovery(app, metrics, watch, exported, now, attempts, max_attempts=2))

    assert run(0.0) == [] and run(2.0) == []
    assert run(3.0) == [app.tp]
    assert app.calls == [("resume", [app.tp]), ("seek", {app.tp: 5})]
    stalled = metrics.partition_stalled.labels("cl", "1")._value.get()
    assert stalled == 3.0
    assert metrics.partition_stalls.labels(topic="cl")._value.get() == 1
    assert run(5.0) == [] and run(6.0) == [app.tp]
    with pytest.raises(RecoveryStalledError, match=r"cl\[1\].*after 2 seeks"):
        run(9.0)
    app.tables.recovery.in_recovery = False
    assert run(10.0) == [] and attempts == {}
    assert ("cl", "1") not in exported["recovery"]
    app.tables.recovery.in_recovery = True
    app.tables.recovery.active_offsets = {app.tp: -1}  # nothing restored yet: from 0
    app.calls.clear()
    assert run(11.0) == [] and run(14.0) == [app.tp]
    assert app.calls[-1] == ("seek", {app.tp: 0})


class _Watched:
    """What :func:`watch_partitions` reads of a Faust app that owns one partition
    ``tx[0]`` with records past its position (10 of 50), none of them fetched; Faust
    counts it as buffered (backpressure) or not, and the stream reading ``tx`` holds
    ``queued`` records. The consumer records its seeks (no broker)."""

    def __init__(self, buffered: bool, queued: int):
        from types import SimpleNamespace

        tp = TP("tx", 0)
        self.tp = tp
        self.rebalancing = self.in_recovery = False
        self.flow_control = SimpleNamespace(is_active=lambda: True)
        self.topics = [SimpleNamespace(topics=("tx",), queue=SimpleNamespace(qsize=lambda: queued))]
        self.seeks: list = []
        seeks = self.seeks

        class Consumer:
            _committed_offset = {tp: 10}
            _paused_partitions: set = set()
            _buffered_partitions = {tp} if buffered else set()
            _read_offset: dict = {}

            def assignment(self):
                return {tp}

            async def highwaters(self, *tps):
                return {tp: 50}

            async def earliest_offsets(self, *tps):
                return {tp: 0}

            async def seek(self, partition, offset):
                seeks.append((partition, offset))

        self.consumer = Consumer()


@pytest.mark.parametrize(
    "buffered, queued, sought",
    [(True, 5, False), (True, 0, True), (False, 5, True)],
    ids=["held-back-by-its-stream", "buffered-with-nothing-queued", "not-buffered"],
)
def test_a_partition_its_stream_holds_back_is_no_stall(buffered, queued, sought):
    """During a catch-up Faust stops fetching the partitions of a stream whose buffer
    is full until the stream has taken enough (backpressure): such a partition is not
    stalled and is not sought back (which would read its records again). A buffered
    partition whose stream holds nothing, or one not buffered at all, that does not
    move is stalled and sought back to its committed offset."""
    from app.monitoring.stall import PartitionWatch
    from app.monitoring.worker import watch_partitions

    app = _Watched(buffered, queued)
    metrics = Metrics(CollectorRegistry())
    watch, exported = PartitionWatch(3.0), {}

    def run(now):
        return asyncio.run(watch_partitions(app, metrics, watch, exported, lambda c, tp: 10, now))

    assert run(0.0) == [] and run(2.0) == []
    assert (run(4.0) == [app.tp]) is sought
    assert app.seeks == ([(app.tp, 10)] if sought else [])
    assert metrics.partition_stalls.labels(topic="tx")._value.get() == (1 if sought else 0)

"""Every dashboard query returns data on a real Prometheus scraping a real worker and a
real review console.

Prometheus (Debian's ``prometheus``, which .ci/run installs) runs with the project's
config (ops/prometheus-local.yml: its rule files, a 1 s scrape interval, the worker's
port as the only fraud-worker target and the console's as the only fraud-review one); a
real worker scores one replayed day of handbook transactions on the real Tansu broker
with the real Redis, the review console (``fraudctl review serve``) turns its alerts into
cases, an analyst gives two verdicts with ``fraudctl review confirm|dismiss`` (one the
delayed feed will repeat, one it will contradict), and once the worker has read the
verdicts' labels it receives the feed's labels of the day's transactions. Every panel
query of every dashboard in ``dashboards/``
is then evaluated through Prometheus' HTTP API until it returns at least one finite
value, except the panels that can only fill in during an incident (listed below by
name), which must be valid PromQL and return nothing. The rules must all evaluate
without error on the worker's real series.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from typer.testing import CliRunner

from app.cli import cli
from app.cli.dashboards import DASHBOARDS_DIR, load_dashboards
from app.cases.service import CaseService
from app.config import PROJECT_ROOT, Settings
from app.dashboards.prometheus import instant_query
from app.dashboards.queries import INCIDENT_ONLY_PANELS, PanelQuery, expand, panel_queries
from app.replay import plan_records, replay_frame

from .datasets import handbook_days
from .review_utils import Console, run_cli
from .worker_utils import Worker, free_port, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: Panels whose healthy state is "no data": they fill in only during an incident.
INCIDENT_ONLY = {("Fraud operations", "Down worker targets")}
#: Queries whose value stays 0 in a healthy run like this one (any other must show a
#: non-zero value at some point, so the metric it reads is proven to move).
ZERO_WHEN_HEALTHY = {
    # the first rebalance happens before Prometheus' first scrape
    "Fraud operations / Rebalances (range) / A",
    "Fraud operations / Redis errors (range) / A",
    "Fraud operations / Redis errors by operation / A",
    # redelivered transactions and suppressed alerts: nothing is replayed twice
    "Fraud operations / Transactions scored / B",
    "Model quality / Alerts by model version / B",
    # terminal state comes with the terminal features (issue 3)
    "Fraud operations / Table sizes / B",
}
#: Bad payloads sent among the transactions, so the reject panels move.
BAD_PAYLOADS = [b"not json", b"[1, 2]", b'{"transaction_id": "x"}']
#: Grafana variables, for a 1 s scrape interval and a test that lasts minutes.
RATE_INTERVAL, RANGE = "20s", "15m"
DEADLINE_SECONDS = 180


def _prometheus_config(worker_port: int, console_port: int, prom_port: int, tmp: Path) -> dict:
    """ops/prometheus-local.yml and its rules, scraping this test's worker and review
    console and evaluating every group every second (the rules' own group intervals are
    dropped)."""
    config = yaml.safe_load((PROJECT_ROOT / "ops/prometheus-local.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    rule_files = []
    for pattern in config["rule_files"]:
        for path in sorted((PROJECT_ROOT / "ops").glob(pattern)):
            rules = yaml.safe_load(path.read_text())
            for group in rules["groups"]:
                group.pop("interval", None)
            copy = tmp / path.name
            copy.write_text(yaml.safe_dump(rules, sort_keys=False))
            rule_files.append(str(copy))
    assert rule_files, config["rule_files"]
    config["rule_files"] = rule_files
    ports = {"fraud-worker": worker_port, "fraud-review": console_port, "prometheus": prom_port}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(ports)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


class Prometheus:
    """A ``prometheus`` process of the test's own."""

    def __init__(self, config: dict, port: int, tmp: Path):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: .ci/run installs Debian's `prometheus` package")
        self.port = port
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "prometheus.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {self.log_path.read_text()[-3000:]}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def _shows(result: list[dict], zero_ok: bool) -> bool:
    """Whether a query result has a finite value (non-zero unless ``zero_ok``)."""
    values = [float(item["value"][1]) for item in result if item.get("value")]
    return any(math.isfinite(v) and (zero_ok or v != 0) for v in values)


async def _send(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def _verdicts(settings: Settings, truth: dict[str, bool]) -> list[tuple[str, str, int]]:
    """(case id, ``confirm`` or ``dismiss``, its alerts) for two open cases, read from the
    cases topic as ``fraudctl review`` does: the first verdict agrees
    with the true label of its case's first alert, the second contradicts it, and one of
    them is a confirmation (so the precision from verdicts is above 0)."""

    async def cases():
        async with CaseService(settings) as service:
            return [c for c in service.cases.values() if c.status == "open"]

    by_truth: dict[bool, list] = {True: [], False: []}
    for case in asyncio.run(cases()):
        by_truth[truth[case.transaction_ids[0]]].append(case)
    fraud, genuine = by_truth[True], by_truth[False]
    if fraud and genuine:  # agree on a fraud, call a genuine card fraud
        chosen = [(fraud[0], "confirm"), (genuine[0], "confirm")]
    else:
        same, is_fraud = (fraud, True) if fraud else (genuine, False)
        assert len(same) >= 2, "the day must open at least two cases"
        agree, contradict = ("confirm", "dismiss") if is_fraud else ("dismiss", "confirm")
        chosen = [(same[0], agree), (same[1], contradict)]
    return [(case.case_id, action, len(case.alerts)) for case, action in chosen]


def test_incident_only_panels_are_the_listed_ones():
    assert INCIDENT_ONLY == set(INCIDENT_ONLY_PANELS)
    panels = {(q.dashboard, q.panel) for b in load_dashboards(DASHBOARDS_DIR).values() for q in panel_queries(b)}
    assert INCIDENT_ONLY <= panels


def test_every_dashboard_query_returns_data_on_real_prometheus(broker, redis_url, tmp_path):
    queries: list[PanelQuery] = [
        q for board in load_dashboards(DASHBOARDS_DIR).values() for q in panel_queries(board)
    ]
    assert {q.dashboard for q in queries} == {"Fraud operations", "Model quality", "Case review"}
    df = handbook_days("2018-04-01", 1)
    # a threshold that alerts enough of the day's cards for cases of both truths
    env = worker_env(
        broker.url, redis_url, tmp_path, METRICS_INTERVAL_SECONDS="1", DRIFT_MIN_EVENTS="500",
        ALERT_THRESHOLD="0.3", REVIEW_PORT=str(free_port()),
        CASES_TOPIC=f"cases-{tmp_path.name[-30:]}".replace("_", "-"),
    )
    worker = Worker(env, tmp_path / "worker.log")
    console = Console(env, tmp_path / "review.log")
    port = free_port()
    prometheus = Prometheus(
        _prometheus_config(worker.web_port, console.port, port, tmp_path), port, tmp_path
    )
    worker.start()
    try:
        prometheus.wait_ready()
        worker.wait_ready()
        console.start()
        run = Settings(
            kafka_broker_url=broker.url,
            app_id=env["APP_ID"],
            transactions_topic=env["TRANSACTIONS_TOPIC"],
            labels_topic=env["LABELS_TOPIC"],
            alerts_topic=env["ALERTS_TOPIC"],
            cases_topic=env["CASES_TOPIC"],
        )
        stats = asyncio.run(replay_frame(df, run, labels=False))
        assert stats.transactions == len(df)
        bad = [(b"bad", value) for value in BAD_PAYLOADS]
        assert asyncio.run(_send(run, run.transactions_topic, bad)) == len(bad)
        # the labels of the day's transactions, as replay sends them 7 days later
        labels = [(r.key, r.value) for r in plan_records(df) if r.is_label]
        truth = {
            label["transaction_id"]: label["is_fraud"]
            for label in (orjson.loads(value) for _, value in labels)
        }

        pending = {q.name: q for q in queries if (q.dashboard, q.panel) not in INCIDENT_ONLY}
        labels_sent = verdict_labels = 0
        seen: dict[str, list] = {}  # first data of each query (printed with -s)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while pending and time.monotonic() < deadline:
            worker.assert_alive()
            console.alive()
            # the day scored and every alert in a case: an analyst gives two verdicts
            if (
                not verdict_labels
                and worker.metric("fraud_transactions_scored_total") >= len(df)
                and console.alerts_in_cases() >= worker.metric("fraud_alerts_total") > 0
            ):
                for i, (case_id, action, n_alerts) in enumerate(_verdicts(run, truth)):
                    out = run_cli(env, "review", action, case_id, "--analyst", "Ann",
                                  "--key", f"panels-{i}")
                    assert out.returncode == 0, out.stderr
                    verdict_labels += n_alerts
            # the worker read the verdicts' labels: the delayed feed comes after them
            if (
                verdict_labels
                and not labels_sent
                and worker.metric("fraud_verdicts_total", source="investigation") >= verdict_labels
            ):
                labels_sent = asyncio.run(_send(run, run.labels_topic, labels))
            for name, q in list(pending.items()):
                result = instant_query(prometheus.url, expand(q.expr, RATE_INTERVAL, RANGE))
                if _shows(result, zero_ok=name in ZERO_WHEN_HEALTHY):
                    seen[name] = [(r.get("metric"), r["value"][1]) for r in result][:4]
                    del pending[name]
            time.sleep(1.0)
        print(json.dumps(seen, indent=1))
        assert labels_sent == len(df)
        assert worker.metric("fraud_label_duplicates_total") >= 1
        assert worker.metric("fraud_label_contradictions_total") >= 1
        assert ZERO_WHEN_HEALTHY <= {q.name for q in queries}
        assert not pending, f"no data after {DEADLINE_SECONDS}s: {sorted(pending)}"

        # incident-only panels: valid PromQL (instant_query raises on an error), empty now
        for q in queries:
            if (q.dashboard, q.panel) in INCIDENT_ONLY:
                assert instant_query(prometheus.url, expand(q.expr, RATE_INTERVAL, RANGE)) == [], q.name

        # what a reviewer runs against their Prometheus: every query returns series
        verify = CliRunner().invoke(
            cli,
            ["dashboards", "verify", "--prometheus", prometheus.url,
             "--rate-interval", RATE_INTERVAL, "--range", RANGE],
        )
        assert verify.exit_code == 0, verify.output
        assert all(t in verify.output for t in ("Model quality", "Fraud operations", "Case review"))

        # the project's rules were loaded and evaluate without error on real series
        def rules() -> list[dict]:
            groups = prometheus.get("/api/v1/rules")["data"]["groups"]
            return [r for g in groups for r in g["rules"]]

        deadline = time.monotonic() + 30
        while any(r.get("health") == "unknown" for r in rules()) and time.monotonic() < deadline:
            time.sleep(1.0)
        in_files = [
            rule
            for path in sorted((PROJECT_ROOT / "ops/rules").glob("*.rules.yml"))
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]
        ]
        assert len(rules()) == len(in_files) >= 16
        assert [(r["name"], r.get("lastError")) for r in rules() if r.get("health") != "ok"] == []
        targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in targets} == {
            "fraud-worker": "up",
            "fraud-review": "up",
            "prometheus": "up",
        }
        console.alive()
    finally:
        if console.proc is not None:
            console.stop()
        worker.stop()
        prometheus.stop()

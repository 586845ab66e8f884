"""Kafka with SASL_SSL and ACLs, for real: one Apache Kafka (KRaft) of this module with a
SCRAM-SHA-512 listener over TLS (a CA and broker certificate made here),
``StandardAuthorizer`` and ``allow.everyone.if.no.acl.found=false``, one SCRAM user per
component, the ACLs written by ``fraudctl acls apply`` from the table of
:mod:`app.acls`.

* every component works with its own principal: the worker scores and alerts what the
  replay principal produced, an alert sink delivers the alerts, the review console opens
  a case and confirms it (case events and labels), the operator applies a rule set and
  promotes a model;
* the ACL matrix: every component x topic x (read, write) cell and every component x
  consumer group cell, on topics of their own, checked against the table, the allowed
  cells and the refused ones;
* refusals are one line and write nothing; a wrong password or an untrusted certificate
  stops the worker and the CLI at start with exit status 78 and one line.

The table and its rendering in docs/security.md are checked without a broker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from app.acls import COMPONENTS, acl_grants, allowed, bindings, markdown_table
from app.config import Settings
from app.exceptions import BrokerAuthorizationError, ConfigError
from app.stream.offsets import client_options, ensure_topics

from .secure_kafka import SecureKafka, start_secure_kafka
from .worker_utils import ROOT, Worker, worker_env

FRAUDCTL = [sys.executable, "-c", "from app.cli import main; main()"]


# --- the table, without a broker -----------------------------------------------------


def test_docs_render_the_table_of_the_code():
    doc = (ROOT / "docs" / "security.md").read_text()
    assert markdown_table(acl_grants(Settings(_env_file=None))) in doc


def test_table_gives_each_component_only_its_own_rights():
    g = acl_grants(Settings(_env_file=None))
    # the refusals the service promises
    for topic in ("fraud-alerts", "fraud-control", "fraud-rules"):
        assert not allowed(g, "replay", "topic", topic, "WRITE")
    assert not allowed(g, "review-console", "topic", "transactions", "WRITE")
    assert not allowed(g, "alert-sinks", "topic", "fraud-alerts", "WRITE")
    assert not allowed(g, "operator", "topic", "transactions", "READ")
    # what each needs
    assert allowed(g, "worker", "topic", "fraud-detector-account_states-changelog", "WRITE")
    assert allowed(g, "alert-sinks", "group", "fraud-detector-sink-webhook", "READ")
    assert not allowed(g, "alert-sinks", "group", "fraud-detector", "READ")
    # the console blocks cards (rules topic) only when it is configured to
    assert not allowed(g, "review-console", "topic", "fraud-rules", "WRITE")
    blocking = acl_grants(Settings(_env_file=None, review_block_confirmed=True))
    assert allowed(blocking, "review-console", "topic", "fraud-rules", "WRITE")
    names = {b.principal for b in bindings(g, {"worker": "svc-scoring"})}
    assert "User:svc-scoring" in names and "User:worker" not in names


def test_plan_prints_the_table_and_refuses_unknown_components(monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli

    for name in ("APP_ID", "ALERTS_TOPIC", "REVIEW_BLOCK_CONFIRMED"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["acls", "plan", "--format", "markdown", "--user", "worker=svc-w"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == markdown_table(acl_grants(Settings()), {"worker": "svc-w"})
    rows = json.loads(runner.invoke(cli, ["acls", "plan", "--format", "json"]).stdout)
    assert {r["component"] for r in rows} == set(COMPONENTS)
    r = runner.invoke(cli, ["acls", "plan", "--user", "scanner=x"])
    assert r.exit_code == 2 and "unknown component 'scanner'" in r.output


def test_a_topic_under_the_worker_prefix_is_refused():
    with pytest.raises(ConfigError, match="ALERTS_TOPIC=fraud-detector-alerts starts with APP_ID"):
        acl_grants(Settings(_env_file=None, alerts_topic="fraud-detector-alerts"))


# --- the SASL_SSL broker ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory):
    """One SASL_SSL Kafka for the module, a SCRAM user per component and ``admin``."""
    k = start_secure_kafka(tmp_path_factory.mktemp("sasl-kafka"), list(COMPONENTS))
    try:
        yield k
    finally:
        k.broker.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry of the module: the shipped model and a copy ``v2-acl``."""
    from .test_lifecycle import make_registry

    models, _ = make_registry(tmp_path_factory.mktemp("registry"), ("v2-acl",))
    return models


def _settings(env: dict[str, str]) -> Settings:
    fields = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    return Settings(_env_file=None, **fields)


def _fraudctl(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*FRAUDCTL, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _apply(kafka: SecureKafka, env: dict[str, str]):
    """The ACLs of ``env``'s names, written as the super user (in process)."""
    from app.acl_admin import apply_acls

    admin = _settings({**env, **kafka.env("admin")})
    return asyncio.run(apply_acls(admin, bindings(acl_grants(admin))))


def _transactions(n: int):
    """``n`` transactions in the handbook's columns: 4 cards, 3 terminals, a minute apart."""
    import pandas as pd

    start = pd.Timestamp("2018-04-01 08:00:00")
    rows = [
        {
            "TRANSACTION_ID": i, "TX_DATETIME": start + pd.Timedelta(minutes=i),
            "CUSTOMER_ID": i % 4, "TERMINAL_ID": 100 + i % 3, "TX_AMOUNT": 10.0 + 7 * i,
            "TX_TIME_SECONDS": 8 * 3600 + 60 * i, "TX_TIME_DAYS": 0, "TX_FRAUD": 0,
            "TX_FRAUD_SCENARIO": 0,
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows)


async def _read_all(settings: Settings, topic: str) -> list:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer._client.add_topic(topic)  # the metadata of this topic too
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert parts, f"{topic} is not listed for {settings.kafka_sasl_username}"
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def read_all(settings: Settings, topic: str) -> list:
    """Every record of ``topic`` (as ``settings``' principal)."""
    return asyncio.run(_read_all(settings, topic))


@pytest.mark.broker
@pytest.mark.slow
def test_each_component_works_with_its_own_principal(kafka, registry, redis_url, tmp_path,
                                                     httpserver):
    from prometheus_client import CollectorRegistry
    from werkzeug import Response

    from app.cases.model import Request
    from app.cases.service import CaseService
    from app.events import Alert
    from app.replay import replay_frame
    from app.sinks.runner import SinkRunner, consumer_group
    from app.metrics import SinkMetrics
    from app.sinks.webhook import WebhookSink

    # every transaction alerts: the smallest replay that exercises every component
    env = worker_env(kafka.url, redis_url, tmp_path, ALERT_THRESHOLD="0.0")
    admin = _settings({**env, **kafka.env("admin")})
    wanted = bindings(acl_grants(admin))
    first = _fraudctl({**env, **kafka.env("admin")}, "acls", "apply")
    assert first.returncode == 0, first.stderr
    assert f"{len(wanted)} ACLs created, 0 already present" in first.stdout
    assert kafka.passwords["admin"] not in first.stdout + first.stderr
    again = _apply(kafka, env)  # idempotent
    assert again.created == [] and len(again.present) == len(wanted)

    worker = Worker({**env, **kafka.env("worker")}, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        df = _transactions(20)
        stats = asyncio.run(replay_frame(df, _settings({**env, **kafka.env("replay")}), labels=False))
        assert stats.transactions == len(df)
        worker.wait_metric("fraud_transactions_scored_total", len(df), timeout=120)
        alerts = [Alert.model_validate_json(r.value) for r in read_all(admin, admin.alerts_topic)]
        assert len(alerts) == len(df), worker.counters()
        assert len(read_all(admin, admin.scored_topic)) >= len(df)
        # its password appears in none of its output
        assert kafka.passwords["worker"] not in worker.tail(10**8) + worker.metrics_text()
    finally:
        worker.stop()

    # an alert sink delivers every alert, reading in its own group
    received: list[str] = []
    httpserver.expect_request("/alerts", method="POST").respond_with_handler(
        lambda req: (received.append(json.loads(req.get_data())["alert_id"]), Response("", 204))[1]
    )
    sinks = _settings({**env, **kafka.env("alert-sinks")})

    async def deliver() -> None:
        sink = WebhookSink(httpserver.url_for("/alerts"), b"secret", 5.0)
        runner = SinkRunner(sink, sinks.alerts_topic, consumer_group(sinks.app_id, "webhook"),
                            client_options(sinks), SinkMetrics(CollectorRegistry()))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        for _ in range(600):
            if len(set(received)) >= len({a.alert_id for a in alerts}) or task.done():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(deliver())
    assert set(received) == {a.alert_id for a in alerts}

    # the review console opens a case from an alert and confirms it: events and labels
    console = _settings({**env, **kafka.env("review-console")})

    async def review() -> str:
        async with CaseService(console) as service:
            await service.add_alert(alerts[0])
            case_id = alerts[0].transaction.account_id
            await service.request(case_id, Request(action="confirm", actor="analyst-1",
                                                   comment="card stolen", key=uuid.uuid4().hex))
            return case_id

    case_id = asyncio.run(review())
    events = [json.loads(r.value) for r in read_all(admin, admin.cases_topic)]
    assert [e["type"] for e in events if e["case_id"] == case_id][-1] == "confirmed_fraud"
    assert read_all(admin, admin.labels_topic), "the verdict's labels"

    # the operator applies a rule set and promotes a model
    operator_env = {**env, **kafka.env("operator")}
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"id": "acl", "version": 1, "rules": []}))
    r = _fraudctl(operator_env, "rules", "apply", str(rules))
    assert r.returncode == 0, r.stderr
    models = tmp_path / "models"
    shutil.copytree(registry, models)
    r = _fraudctl(operator_env, "models", "promote", "v2-acl", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert len(read_all(admin, admin.rules_topic)) == 1
    assert len(read_all(admin, admin.control_topic)) == 1


# --- the matrix ------------------------------------------------------------------------

#: Topic and group names of the matrix (their own: nothing another test reads).
MATRIX = {
    "APP_ID": "mx", "TRANSACTIONS_TOPIC": "m-transactions", "LABELS_TOPIC": "m-labels",
    "SCORED_TOPIC": "m-scored", "ALERTS_TOPIC": "m-alerts", "DEAD_LETTER_TOPIC": "m-dead",
    "CONTROL_TOPIC": "m-control", "RULES_TOPIC": "m-rules", "CASES_TOPIC": "m-cases",
}
#: One topic under the worker's prefix (a changelog).
CHANGELOG = "mx-account_states-changelog"


async def _can_write(settings: Settings, topics: list[str]) -> dict[str, bool]:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", request_timeout_ms=10_000)
    await producer.start()
    out = {}
    try:
        for t in topics:
            try:
                await producer.send_and_wait(t, b"matrix", partition=0)
                out[t] = True
            except TopicAuthorizationFailedError:
                out[t] = False
    finally:
        await producer.stop()
    return out


async def _can_read(settings: Settings, topics: list[str]) -> dict[str, bool]:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out = {}
    try:
        visible = await consumer.topics()  # without DESCRIBE a topic is not even listed
        for t in topics:
            if t not in visible:
                out[t] = False
                continue
            tp = TopicPartition(t, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            try:
                got = await consumer.getmany(tp, timeout_ms=10_000)
                assert got.get(tp), f"{t}: nothing read in 10 s (the admin wrote a record)"
                out[t] = True
            except TopicAuthorizationFailedError:
                out[t] = False
    finally:
        await consumer.stop()
    return out


async def _can_join(settings: Settings, groups: list[str], topic: str) -> dict[str, bool]:
    out = {}
    for g in groups:
        consumer = AIOKafkaConsumer(**client_options(settings), group_id=g, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.commit({tp: 0})  # OffsetCommit: READ on the group (and topic)
            out[g] = True
        except GroupAuthorizationFailedError:
            out[g] = False
        finally:
            await consumer.stop()
    return out


@pytest.mark.broker
@pytest.mark.slow
def test_acl_matrix_allowed_and_refused_cells(kafka):
    env = {**MATRIX, "REVIEW_BLOCK_CONFIRMED": "true"}
    admin = _settings({**env, **kafka.env("admin")})
    topics = [*MATRIX.values()][1:] + [CHANGELOG]
    asyncio.run(ensure_topics(admin.model_copy(update={"topic_partitions": 1}), topics))
    asyncio.run(_can_write(admin, topics))  # one record each, for the reads
    _apply(kafka, env)
    grants = acl_grants(admin)
    groups = ["mx", "mx-case-review", "mx-sink-webhook"]

    async def probe(component: str):
        s = _settings({**env, **kafka.env(component)})
        return await asyncio.gather(
            _can_read(s, topics), _can_write(s, topics), _can_join(s, groups, "m-alerts")
        )

    async def probe_all():
        return await asyncio.gather(*(probe(c) for c in COMPONENTS))

    expected, seen = {}, {}
    for component, (reads, writes, joins) in zip(COMPONENTS, asyncio.run(probe_all())):
        for t in topics:
            seen[(component, t, "READ")] = reads[t]
            seen[(component, t, "WRITE")] = writes[t]
            for op in ("READ", "WRITE"):
                expected[(component, t, op)] = allowed(grants, component, "topic", t, op)
        for g in groups:
            seen[(component, g, "READ")] = joins[g]
            expected[(component, g, "READ")] = allowed(grants, component, "group", g, "READ")
    wrong = {cell: seen[cell] for cell in expected if seen[cell] != expected[cell]}
    assert not wrong, f"cells where Kafka differs from the table (seen): {wrong}"
    # both kinds of cells are there, and the promised refusals among them
    assert sum(expected.values()) >= 20 and sum(not v for v in expected.values()) >= 80
    for t in ("m-alerts", "m-control", "m-rules"):
        assert seen[("replay", t, "WRITE")] is False
    assert seen[("review-console", "m-transactions", "WRITE")] is False


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.slow
def test_refusals_are_one_line_and_write_nothing(kafka, registry, redis_url, tmp_path,
                                                 redis_client):
    from app.replay import replay_frame

    env = worker_env(kafka.url, redis_url, tmp_path)
    _apply(kafka, env)
    admin = _settings({**env, **kafka.env("admin")})
    asyncio.run(ensure_topics(admin, [admin.alerts_topic]))
    asyncio.run(ensure_topics(admin.model_copy(update={"topic_partitions": 1}),
                              [admin.control_topic, admin.rules_topic]))
    replay_env = {**env, **kafka.env("replay")}

    # the replay tool aimed at the alerts topic: refused before any record is sent
    df = _transactions(5)
    aimed = _settings({**replay_env, "TRANSACTIONS_TOPIC": admin.alerts_topic})
    with pytest.raises(BrokerAuthorizationError, match=r"principal User:replay on topic alerts-"):
        asyncio.run(replay_frame(df, aimed, labels=False))

    # ... and at the control and rules topics through the operator's commands
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"id": "evil", "version": 1, "rules": []}))
    r = _fraudctl(replay_env, "rules", "apply", str(rules))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"Kafka refused principal User:replay on topic {admin.rules_topic}" in r.stderr
    before = sorted(p.name for p in registry.iterdir())
    r = _fraudctl(replay_env, "models", "promote", "v2-acl", "--models-dir", str(registry))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"Kafka refused principal User:replay on topic {admin.control_topic}" in r.stderr
    assert sorted(p.name for p in registry.iterdir()) == before  # no LIFECYCLE.json written

    # nor grant itself rights
    r = _fraudctl(replay_env, "acls", "apply", "--user", "operator=replay")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "describing ACLs: not authorized (ClusterAuthorizationFailedError)" in r.stderr

    for topic in (admin.alerts_topic, admin.control_topic, admin.rules_topic):
        assert read_all(admin, topic) == [], topic
    assert not redis_client.keys(f"{env['REDIS_KEY_PREFIX']}*"), "nothing stored in Redis"

    # the console's principal cannot write transactions
    console = _settings({**env, **kafka.env("review-console")})
    asyncio.run(ensure_topics(admin, [admin.transactions_topic]))
    assert asyncio.run(_can_write(console, [admin.transactions_topic])) == {
        admin.transactions_topic: False
    }
    assert read_all(admin, admin.transactions_topic) == []


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize(
    "problem", [
        pytest.param("password", id="wrong-password"),
        pytest.param("certificate", id="untrusted-certificate"),
    ],
)
def test_wrong_credentials_stop_worker_and_cli_at_start_with_78(kafka, redis_url, tmp_path, problem):
    env = {**worker_env(kafka.url, redis_url, tmp_path), **kafka.env("worker")}
    if problem == "password":
        env["KAFKA_SASL_PASSWORD"] = "not-" + env["KAFKA_SASL_PASSWORD"]
        expected = "refused the credentials of KAFKA_SASL_USERNAME=worker (SCRAM-SHA-512)"
    else:
        env.pop("KAFKA_SSL_CA_FILE")  # the system's CAs do not know the test's CA
        expected = "its TLS certificate is not trusted"
    env["BROKER_CONNECT_TIMEOUT_SECONDS"] = "60"  # not waited for: refused at once

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"id": "x", "version": 1, "rules": []}))
    # both at once: the worker's start check and a command of the operator
    procs = [
        subprocess.Popen(argv, env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for argv, e in [
            ([sys.executable, "-m", "app", "worker"], env),
            ([*FRAUDCTL, "rules", "apply", str(rules)], {**env, "KAFKA_SASL_USERNAME": "operator"}),
        ]
    ]
    (w_out, w_err), (_, c_err) = (p.communicate(timeout=120) for p in procs)
    worker = subprocess.CompletedProcess([], procs[0].returncode, w_out, w_err)
    cli = subprocess.CompletedProcess([], procs[1].returncode, "", c_err)
    assert worker.returncode == 78, worker.stderr
    assert worker.stderr.count("\n") == 1 and expected in worker.stderr, worker.stderr
    assert env["KAFKA_SASL_PASSWORD"] not in worker.stderr + worker.stdout
    assert cli.returncode == 78, cli.stderr
    assert env["KAFKA_SASL_PASSWORD"] not in cli.stderr
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith("error: Kafka broker"), cli.stderr

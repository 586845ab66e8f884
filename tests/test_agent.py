"""The agents with Faust's ``test_context()`` (in-memory input channel).

Faust's test context runs an agent without a broker: the records the agent sends to its
output topics are captured here in memory (the only stand-in in this file; the broker
itself is exercised by ``test_bad_input.py``, ``test_e2e.py`` and ``test_parity.py``).
Redis is real.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from app.events import Alert, DeadLetter, Label, ScoredTransaction, Transaction, encode
from app.features import FEATURE_NAMES

T0 = 1_530_662_400_000
DAY_MS = 86_400_000


def _tx(i: int, account: str = "a1", amount_minor: int = 1000, t_ms: int | None = None) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        account_id=account,
        terminal_id="m1",
        amount_minor=amount_minor,
        event_time_ms=T0 + i * 60_000 if t_ms is None else t_ms,
    )


@pytest.fixture
def agents(monkeypatch, redis_url, tmp_path):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", f"agent-test:{tmp_path.name}:")
    monkeypatch.setenv("LABEL_WAIT_MAX_SECONDS", "0")
    from app import config
    from app.stream import runtime

    config.get_settings.cache_clear()
    runtime._runtime = None
    from app.stream import agents as mod
    from app.stream import topics
    from app.stream.main import app

    mod._aligner = None  # built from this test's settings
    mod._stage1_progress.clear()

    app.finalize()
    app.flow_control.resume()
    sent: dict[str, list[tuple[bytes | None, bytes]]] = {}

    def capture(topic):
        async def send(*, key=None, value=None, partition=None, **_):
            sent.setdefault(topic.get_topic_name(), []).append((key, value))
            sent.setdefault(("partitions", topic.get_topic_name()), []).append(partition)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

        return send

    for t in (
        topics.alerts_topic,
        topics.scored_topic,
        topics.dead_letter_topic,
        topics.transactions_topic,
        topics.by_terminal_topic,
    ):
        monkeypatch.setattr(t, "send", capture(t))
    from app.stream.tables import account_states, terminal_states

    for table in (account_states, terminal_states):
        monkeypatch.setattr(table.changelog_topic, "send", capture(table.changelog_topic))

    class _Metadata:
        def __init__(self, topic, partition):
            self.topic, self.partition, self.offset = topic, partition, 0
            self.topic_partition = (topic, partition)

    # records handed straight to the producer (internal topics, scored, changelogs);
    # there is no broker here (test_context): they are captured like the others
    async def produce(_app, topic, value, *, key=None, partition=None, headers=None):
        sent.setdefault(topic, []).append((key, value))
        sent.setdefault(("partitions", topic), []).append(partition)
        sent.setdefault(("headers", topic), []).append(headers)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(_Metadata(topic, partition))
        return fut

    async def produce_many(_app, topic, records):
        from app.stream.streaming import ProducedBatch

        batches = []
        for key, value, partition, *headers in records:
            batches.append(ProducedBatch(partition or 0, 1, await produce(
                _app, topic, value, key=key, partition=partition,
                headers=headers[0] if headers else None)))
        return batches

    from app.stream import tables as tables_module

    monkeypatch.setattr(mod, "produce", produce)
    monkeypatch.setattr(mod, "produce_many", produce_many)
    monkeypatch.setattr(tables_module, "produce_many", produce_many)
    yield mod, topics, sent
    runtime._runtime = None
    config.get_settings.cache_clear()


async def _drive(agent, records, until, topics_of=None):
    """Put ``records`` ((key, value) pairs) on the agent's channel; ``topics_of``: the
    topic name of each record, for an agent that reads several topics."""
    async with agent.test_context() as ctx:
        to_message = ctx.to_message
        for i, (key, value) in enumerate(records):
            if topics_of is not None:
                def with_topic(*args, _topic=topics_of[i], **kwargs):
                    message = to_message(*args, **kwargs)
                    message.topic = _topic
                    return message

                ctx.to_message = with_topic
            await ctx.put(key=key, value=value)
        for _ in range(200):  # the agent works in batches; wait for the last one
            if until():
                break
            await asyncio.sleep(0.05)


def test_featurize_accounts_validates_and_forwards(agents):
    mod, topics, sent = agents
    from app.features import AccountState
    from app.stream.tables import account_states

    good = [_tx(i) for i in range(5)]
    records = [(t.account_id.encode(), encode(t)) for t in good[:3]]
    records += [
        (b"a1", b"{not json"),
        (b"a1", orjson.dumps({"transaction_id": "x"})),
        (b"a1", orjson.dumps({**good[0].model_dump(), "amount_minor": -1})),
    ]
    records += [(t.account_id.encode(), encode(t)) for t in good[3:]]
    by_terminal = topics.by_terminal_topic.get_topic_name()
    dlq = topics.dead_letter_topic.get_topic_name()
    asyncio.run(_drive(mod.featurize_accounts_agent, records,
                       lambda: len(sent.get(by_terminal, [])) + len(sent.get(dlq, [])) >= 8))

    from app.pipeline import Enriched

    bodies = [orjson.loads(v) for _, v in sent[by_terminal]]
    parts = sent[("partitions", by_terminal)]
    batches = [(p, b["b"]) for p, b in zip(parts, bodies) if "b" in b]
    marks = [b for b in bodies if "wm" in b]
    assert len(batches) + len(marks) == len(bodies)
    # batches adapt to load: records that arrive one by one may leave in several
    # batches; after each, partition 0's progress goes to every scoring-stage partition
    times = [m["t"] for m in marks]
    assert marks and all(m["wm"] == 0 for m in marks) and times == sorted(times)
    assert times[-1] == T0 + 4 * 60_000
    # micro-batch records, in the partition the Kafka default partitioner gives "m1"
    # (where the labels of terminal m1 are), each before its batch's watermarks
    from aiokafka.partitioner import DefaultPartitioner

    n = mod.get_runtime().settings.topic_partitions
    assert {p for p, _ in batches} == {DefaultPartitioner()(b"m1", list(range(n)), [])}
    assert "b" in bodies[0]
    fwd = [Enriched.from_dict(d) for _, items in batches for d in items]
    assert [e.transaction.transaction_id for e in fwd] == [f"t{i}" for i in range(5)]
    assert all(k is None for k, _ in sent[by_terminal])
    assert [e.account_features[FEATURE_NAMES.index("account_tx_count_1d")] for e in fwd] == [0, 1, 2, 3, 4]
    dead = [DeadLetter.model_validate_json(v) for _, v in sent[dlq]]
    assert [d.reason for d in dead] == ["not_json", "missing_field", "bad_amount"]
    assert dead[0].raw_value == b"{not json"
    assert AccountState.from_bytes(account_states["a1"]).ids == [f"t{i}" for i in range(5)]


@pytest.mark.parametrize("batch_records", [True, False], ids=["batch-records", "record-per-key"])
def test_account_changes_reach_the_changelog_as_batch_or_single_records(
    agents, monkeypatch, batch_records
):
    """A batch's account states go to the changelog as one batch record per partition
    (CHANGELOG_BATCH_RECORDS=true) or one record per key, with the table's own bytes."""
    mod, topics, sent = agents
    from app import config
    from app.changelog import is_batch_key, unpack_changes
    from app.stream.tables import account_states

    monkeypatch.setenv("CHANGELOG_BATCH_RECORDS", str(batch_records).lower())
    config.get_settings.cache_clear()
    txs = [_tx(i, account=f"acc{i % 3}") for i in range(9)]
    changelog = account_states.changelog_topic.get_topic_name()
    asyncio.run(_drive(mod.featurize_accounts_agent,
                       [(t.account_id.encode(), encode(t)) for t in txs],
                       lambda: len(account_states) >= 3 and bool(sent.get(changelog))))
    records = sent[changelog]
    keys = [orjson.loads(k) for k, _ in records]
    assert all(is_batch_key(k) for k in keys) == batch_records
    if batch_records:
        assert len(set(keys)) == len(keys)  # batch records never share a key
    last: dict[bytes, bytes | None] = {}
    for key, value in records:
        for k, v in (unpack_changes(value) if batch_records else [(key, value)]):
            last[k] = v
    assert last == {orjson.dumps(a): account_states[a] for a in ("acc0", "acc1", "acc2")}
    if batch_records:  # a batch record holds each key of its batch once
        for _, value in records:
            changed = [k for k, _ in unpack_changes(value)]
            assert len(changed) == len(set(changed))


def test_wrong_key_is_rekeyed_not_processed(agents):
    mod, topics, sent = agents
    tx = _tx(1, account="a7")
    name = topics.transactions_topic.get_topic_name()
    asyncio.run(_drive(mod.featurize_accounts_agent, [(b"other", encode(tx))],
                       lambda: bool(sent.get(name))))
    assert sent[name] == [(b"a7", encode(tx))]
    # nothing forwarded to the scoring stage but watermarks
    assert all("wm" in orjson.loads(v) for _, v in sent.get(topics.by_terminal_topic.get_topic_name(), []))


def test_labels_then_scoring_alert_on_a_known_compromised_terminal(agents, monkeypatch):
    mod, topics, sent = agents
    from app import config

    monkeypatch.setenv("ALERT_THRESHOLD", "0")  # every scored transaction alerts
    config.get_settings.cache_clear()
    from app.features import TerminalState
    from app.pipeline import Enriched
    from app.features import AccountState, extract_account
    from app.stream.tables import terminal_states

    # a fraud on terminal m1 eight days ago, its label arrived yesterday
    lbl = Label(transaction_id="old", account_id="a0", terminal_id="m1", is_fraud=True,
                transaction_time_ms=T0 - 8 * DAY_MS, label_time_ms=T0 - DAY_MS)
    old = _tx(0, account="a0", t_ms=T0 - 8 * DAY_MS).model_copy(update={"transaction_id": "old"})
    items = [Enriched(old, extract_account(AccountState(), old), 0)]
    items += [Enriched(_tx(i, account=f"c{i}"), extract_account(AccountState(), _tx(i)), 0)
              for i in (1, 2)]
    labels_name = topics.labels_topic.get_topic_name()
    by_terminal = topics.by_terminal_topic.get_topic_name()
    from app.pipeline import forward_records

    # one transaction alone (the single-record form), then two in one micro-batch record
    [(_, batch)] = forward_records(items[1:], lambda terminal: 0)
    records = [(b"m1", encode(lbl)), (b"m1", b"garbage"), (b"m1", items[0].to_bytes()),
               (None, batch)]
    scored_name = topics.scored_topic.get_topic_name()
    asyncio.run(_drive(mod.score_transactions, records,
                       lambda: len(sent.get(topics.alerts_topic.get_topic_name(), [])) >= 3,
                       topics_of=[labels_name, labels_name] + [by_terminal] * 2))
    state = TerminalState.from_bytes(terminal_states["m1"])
    assert state.fraud_ids == ["old"] and state.ids == ["old", "t1", "t2"]
    scored = {s.transaction.transaction_id: s for s in
              (ScoredTransaction.model_validate_json(v) for _, v in sent[scored_name])}
    assert set(scored) == {"old", "t1", "t2"}
    assert scored["t1"].features["terminal_risk_30d_delay_7d"] == 1.0
    assert scored["t1"].score > scored["old"].score
    alerts = [Alert.model_validate_json(v) for _, v in sent.get(topics.alerts_topic.get_topic_name(), [])]
    assert {a.alert_id for a in alerts} == {s for s, x in scored.items() if x.decision == "alert"}
    assert {a.alert_id for a in alerts} == {"old", "t1", "t2"}
    assert all(a.reasons for a in alerts)
    dead = [DeadLetter.model_validate_json(v) for _, v in sent[topics.dead_letter_topic.get_topic_name()]]
    assert [d.reason for d in dead] == ["not_json"]

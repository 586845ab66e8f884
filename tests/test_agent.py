"""The ``score_transactions`` agent with Faust's ``test_context()`` (in-memory channel).

Faust's test context runs the agent without a broker: the records that the agent sends
to its output topics are captured here in memory (the only stand-in in this file; the
broker itself is exercised by ``test_bad_input.py`` and ``test_e2e.py``). Redis is real.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from app.events import Alert, DeadLetter, ScoredTransaction, Transaction, encode

T0 = 1_530_662_400_000


def _tx(i: int, account: str = "a1", amount_minor: int = 1000) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        account_id=account,
        terminal_id="m1",
        amount_minor=amount_minor,
        event_time_ms=T0 + i * 60_000,
    )


@pytest.fixture
def faust_app(monkeypatch, redis_url, tmp_path):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", f"agent-test:{tmp_path.name}:")
    from app import config, runtime

    config.get_settings.cache_clear()
    runtime._runtime = None
    from app.agents import score_transactions
    from app.main import app
    from app import topics

    app.finalize()
    app.flow_control.resume()
    sent: dict[str, list[tuple[bytes | None, bytes]]] = {}

    def capture(topic):
        async def send(*, key=None, value=None, **_):
            sent.setdefault(topic.get_topic_name(), []).append((key, value))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

        return send

    for t in (
        topics.alerts_topic,
        topics.scored_topic,
        topics.dead_letter_topic,
        topics.transactions_topic,
    ):
        monkeypatch.setattr(t, "send", capture(t))
    yield app, score_transactions, sent
    runtime._runtime = None
    config.get_settings.cache_clear()


def _done(settings, sent) -> int:
    """Records fully processed: scored (counted once all its output is written),
    dead-lettered or re-keyed."""
    from app.runtime import get_runtime

    registry = get_runtime().metrics.registry
    scored = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "fraud_transactions_scored"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    return int(scored) + len(sent.get(settings.dead_letter_topic, [])) + len(
        sent.get(settings.transactions_topic, [])
    )


async def _run(agent, records, wait_for: int, sent, settings):
    async with agent.test_context() as ctx:
        for key, value in records:
            await ctx.put(key=key, value=value)
        for _ in range(400):  # the agent works in batches; wait for the last one
            if _done(settings, sent) >= wait_for:
                break
            await asyncio.sleep(0.05)


def test_scores_valid_and_dead_letters_invalid(faust_app):
    app, agent, sent = faust_app
    from app.config import get_settings
    from app.tables import account_states

    s = get_settings()
    good = [_tx(i) for i in range(5)]
    big = _tx(99, amount_minor=10_000_000)  # far above the account's usual amounts
    records = [(t.account_id.encode(), encode(t)) for t in good[:3]]
    records += [
        (b"a1", b"{not json"),
        (b"a1", orjson.dumps({"transaction_id": "x"})),
        (b"a1", orjson.dumps({**good[0].model_dump(), "amount_minor": -1})),
    ]
    records += [(t.account_id.encode(), encode(t)) for t in good[3:]]
    records += [(b"a1", encode(big))]
    asyncio.run(_run(agent, records, wait_for=len(records), sent=sent, settings=s))

    scored = [ScoredTransaction.model_validate_json(v) for _, v in sent[s.scored_topic]]
    assert [x.transaction.transaction_id for x in scored] == [f"t{i}" for i in range(5)] + ["t99"]
    dead = [DeadLetter.model_validate_json(v) for _, v in sent[s.dead_letter_topic]]
    assert [d.reason for d in dead] == ["not_json", "missing_field", "bad_amount"]
    assert dead[0].raw_value == b"{not json"
    assert all(d.source_topic == s.transactions_topic for d in dead)
    # the state holds the six valid transactions of a1, counted once each
    from app.features import AccountState

    state = AccountState.from_bytes(account_states["a1"])
    assert state.ids == [f"t{i}" for i in range(5)] + ["t99"]
    # the 100,000.00 EUR transaction on a 10 EUR card is alerted, with reasons
    alerts = [Alert.model_validate_json(v) for _, v in sent.get(s.alerts_topic, [])]
    assert [a.alert_id for a in alerts] == ["t99"]
    assert alerts[0].reasons and alerts[0].score >= alerts[0].threshold


def test_wrong_key_is_rekeyed_not_processed(faust_app):
    app, agent, sent = faust_app
    from app.config import get_settings

    s = get_settings()
    tx = _tx(1, account="a7")
    asyncio.run(_run(agent, [(b"other", encode(tx))], wait_for=1, sent=sent, settings=s))
    assert sent[s.transactions_topic] == [(b"a7", encode(tx))]
    assert s.scored_topic not in sent

"""REVIEW_BLOCK_CONFIRMED: a confirmed card goes on the block list of the rule set in
force through the rules mechanism (rules topic + Redis, as ``fraudctl rules apply``),
on the real broker and Redis; nothing else of the rule set changes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.cases.model import Request
from app.cases.service import CaseService
from app.config import Settings
from app.events import AccessList, Rule, RuleSet, encode
from app.redis_store import rules_key
from tests.test_cases import make_alert
from tests.worker_utils import read_topic

pytestmark = pytest.mark.broker


def test_a_confirmed_card_is_blocked_by_the_next_version_of_the_rule_set_in_force(
    broker, redis_client, redis_url
):
    tag = uuid.uuid4().hex[:10]
    prefix = f"test:{tag}:"
    settings = Settings(
        kafka_broker_url=broker.url, topic_partitions=1, app_id=f"review-{tag}",
        alerts_topic=f"alerts-{tag}", cases_topic=f"cases-{tag}", labels_topic=f"labels-{tag}",
        rules_topic=f"rules-{tag}", redis_url=redis_url, redis_key_prefix=prefix,
        review_block_confirmed=True,
    )
    in_force = RuleSet(
        id="default", version=3, review_threshold=0.4,
        rules=[Rule(id="big-amount", attribute="transaction.amount", op=">", value=500, outcome="review")],
        allow=AccessList(accounts=["vip-1"]), block=AccessList(terminals=["m666"]),
    )
    redis_client.set(rules_key(prefix), encode(in_force))

    async def work() -> None:
        async with CaseService(settings) as service:
            for alert in (make_alert(1, "card-1"), make_alert(2, "card-2"), make_alert(3, "card-3")):
                await service.add_alert(alert)
            await service.request("card-1", Request("confirm", "ann", "", "k1"))
            await service.request("card-1", Request("confirm", "ann", "", "k1"))  # replayed
            await service.request("card-2", Request("dismiss", "ann", "", "k2"))
            await service.request("card-3", Request("confirm", "bob", "", "k3"))

    asyncio.run(work())
    now = RuleSet.model_validate_json(redis_client.get(rules_key(prefix)))
    assert now.label == "default@5"
    assert now.block.accounts == ["card-1", "card-3"] and now.block.terminals == ["m666"]
    assert (now.rules, now.allow, now.review_threshold) == (in_force.rules, in_force.allow, 0.4)
    published = read_topic(broker.bootstrap, settings.rules_topic, idle_seconds=1.0)
    assert [(r.key, RuleSet.model_validate_json(r.value).label) for r in published] == [
        (b"default", "default@4"), (b"default", "default@5")]
    assert published[-1].value == encode(now)

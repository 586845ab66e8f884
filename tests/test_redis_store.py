"""The Redis store's retry policy against real Redis servers (no fakes)."""

from __future__ import annotations

import asyncio

import pytest

from app.redis_store import RedisStore, RedisUnavailableError, backoff_delays

from .conftest import free_port


def test_backoff_doubles_up_to_its_cap():
    assert backoff_delays(0.1, 1.0, 6) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        pytest.param({"retry_max_seconds": -1}, "retry_max_seconds", id="negative-budget"),
        pytest.param({"retry_initial_delay_seconds": 0}, "retry_initial_delay_seconds", id="zero-delay"),
        pytest.param({"retry_initial_delay_seconds": 5, "retry_max_delay_seconds": 1}, "<=", id="delay-above-cap"),
    ],
)
def test_store_checks_its_parameters(kwargs, words):
    with pytest.raises(ValueError, match=words):
        RedisStore("redis://127.0.0.1:6379/0", **kwargs)


def test_unreachable_redis_is_retried_until_the_budget_then_raises():
    errors, waits, ups = [], [], []
    store = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        retry_max_seconds=1.0,
        retry_initial_delay_seconds=0.05,
        retry_max_delay_seconds=0.2,
        on_error=errors.append,
        on_wait=waits.append,
        on_up=ups.append,
    )

    async def run():
        try:
            await store.already_alerted(["t1"])
        finally:
            await store.close()

    with pytest.raises(RedisUnavailableError, match="mget failed"):
        asyncio.run(run())
    assert len(errors) >= 2 and set(errors) == {"mget"}
    assert len(waits) == len(errors) - 1 and max(waits) <= 0.2
    assert set(ups) == {False}


def test_reachable_redis_answers_and_reports_up(redis_url):
    ups = []
    store = RedisStore(redis_url, prefix="test:store:", on_up=ups.append)

    async def run():
        try:
            await store.mark_alerted(["t1"], ttl_seconds=60)
            return await store.already_alerted(["t1", "t2"])
        finally:
            await store.close()

    assert asyncio.run(run()) == [True, False]
    assert ups and set(ups) == {True}

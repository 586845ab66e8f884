"""Redis: alert idempotency and the active model version (the thin shell's store).

Keys (``prefix`` is ``Settings.redis_key_prefix``, default ``fraud:``):

- ``{prefix}alerted:{transaction_id}``: set once an alert for the transaction is
  acknowledged by the broker; expires after ``Settings.alert_dedup_ttl_seconds``.
- ``{prefix}model:active``: the model version workers load at start.
- ``{prefix}model:shadows``: JSON list of the shadow versions.
- ``{prefix}rules:current``: JSON of the rule set in force (:class:`app.events.RuleSet`).

The control topics (``fraud-control``, ``fraud-rules``) tell running workers; these keys
tell a worker what to serve when it starts.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .exceptions import FraudError

__all__ = [
    "RedisStore",
    "RedisUnavailableError",
    "active_model_key",
    "shadow_models_key",
    "rules_key",
]


class RedisUnavailableError(FraudError):
    """Redis did not answer after the configured retries."""


def active_model_key(prefix: str) -> str:
    """Key holding the active model version."""
    return f"{prefix}model:active"


def shadow_models_key(prefix: str) -> str:
    """Key holding the JSON list of shadow model versions."""
    return f"{prefix}model:shadows"


def rules_key(prefix: str) -> str:
    """Key holding the JSON of the rule set in force."""
    return f"{prefix}rules:current"


class RedisStore:
    """Async access to the service's Redis keys, with bounded retries.

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    prefix : str
        Namespace of every key.
    retries : int, default=30
        Attempts per call before :class:`RedisUnavailableError`.
    retry_delay_seconds : float, default=0.5
    on_error : callable, optional
        Called with the operation name on every failed attempt (metrics).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "fraud:",
        retries: int = 30,
        retry_delay_seconds: float = 0.5,
        on_error=None,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.prefix = prefix
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self._on_error = on_error

    async def _call(self, operation: str, fn):
        last: Exception | None = None
        for _ in range(self.retries):
            try:
                return await fn()
            except (RedisError, OSError) as exc:
                last = exc
                if self._on_error:
                    self._on_error(operation)
                await asyncio.sleep(self.retry_delay_seconds)
        raise RedisUnavailableError(f"redis {operation} failed {self.retries} times: {last}")

    def _alert_key(self, transaction_id: str) -> str:
        return f"{self.prefix}alerted:{transaction_id}"

    async def already_alerted(self, transaction_ids: Sequence[str]) -> list[bool]:
        """For each id, whether an alert was already raised for it."""
        if not transaction_ids:
            return []
        keys = [self._alert_key(t) for t in transaction_ids]
        values = await self._call("mget", lambda: self._client.mget(keys))
        return [v is not None for v in values]

    async def mark_alerted(self, transaction_ids: Sequence[str], ttl_seconds: int) -> None:
        """Record that alerts for these ids were acknowledged by the broker."""
        if not transaction_ids:
            return

        async def _do():
            pipe = self._client.pipeline(transaction=False)
            for t in transaction_ids:
                pipe.set(self._alert_key(t), b"1", ex=ttl_seconds)
            return await pipe.execute()

        await self._call("mark_alerted", _do)

    async def active_model_version(self) -> str | None:
        """The version named in ``{prefix}model:active``, or None."""
        raw = await self._call("get", lambda: self._client.get(active_model_key(self.prefix)))
        return raw.decode() if raw else None

    async def set_active_model_version(self, version: str) -> None:
        """Make ``version`` the one workers load."""
        await self._call(
            "set", lambda: self._client.set(active_model_key(self.prefix), version.encode())
        )

    async def shadow_model_versions(self) -> list[str]:
        """The versions in ``{prefix}model:shadows`` (empty when unset)."""
        raw = await self._call("get", lambda: self._client.get(shadow_models_key(self.prefix)))
        return [str(v) for v in orjson.loads(raw)] if raw else []

    async def current_rules(self) -> bytes | None:
        """The JSON in ``{prefix}rules:current``, or None (validate it before use)."""
        return await self._call("get", lambda: self._client.get(rules_key(self.prefix)))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

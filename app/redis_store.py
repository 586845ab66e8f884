"""Redis: alert idempotency and the active model version (the thin shell's store).

Keys (``prefix`` is ``Settings.redis_key_prefix``, default ``fraud:``):

- ``{prefix}alerting:{transaction_id}``: the alert's reservation (``SET NX`` before it
  is sent; :class:`app.alerting.plan.Reservation`), deleted when it is marked alerted.
- ``{prefix}alerted:{transaction_id}``: set once an alert for the transaction is
  acknowledged by the broker; expires after ``Settings.alert_dedup_ttl_seconds``.
- ``{prefix}model:active``: the model version workers load at start.
- ``{prefix}model:shadows``: JSON list of the shadow versions.
- ``{prefix}rules:current``: JSON of the rule set in force (:class:`app.events.RuleSet`).

The control topics (``fraud-control``, ``fraud-rules``) tell running workers; these keys
tell a worker what to serve when it starts.

Outages: every call is retried with exponential backoff (``retry_initial_delay_seconds``
doubling up to ``retry_max_delay_seconds``) until it succeeds or ``retry_max_seconds``
have passed since its first attempt; only then does it raise
:class:`RedisUnavailableError` (and the worker exits without acknowledging its batch).
A Redis that is away for less than ``retry_max_seconds`` only delays the batch.
Authentication and permission errors are not retried.

Examples
--------
>>> backoff_delays(0.1, 2.0)[:6]
[0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Callable, Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, RedisError

from .exceptions import FraudError

__all__ = [
    "RedisStore",
    "RedisUnavailableError",
    "active_model_key",
    "shadow_models_key",
    "rules_key",
    "backoff_delays",
    "redis_client_options",
    "redis_url_of",
]


#: Reserve each key (``SET NX``) unless it is reserved already; a key holding this very
#: value counts as reserved by this call (a retried attempt whose first try got through).
#: Returns 1 (reserved by this call) or 0 per key.
_RESERVE = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  elseif redis.call('GET', key) == ARGV[1] then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: Take a stale reservation over: KEYS[i] holding ARGV[i] (the old value) gets ARGV[n+1]
#: (the new one); a key already holding the new value counts as taken (a retry).
#: Returns 1 or 0 per key.
_TAKE_OVER = """
local n = #KEYS
local new, ttl = ARGV[n + 1], ARGV[n + 2]
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[i] or cur == new then
    redis.call('SET', key, new, 'PX', ttl)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: Errors that retrying cannot cure: raised at once.
_NOT_TRANSIENT = (AuthenticationError, AuthorizationError, NoPermissionError)


class RedisUnavailableError(FraudError):
    """Redis did not answer within the configured retry budget."""


def active_model_key(prefix: str) -> str:
    """Key holding the active model version."""
    return f"{prefix}model:active"


def shadow_models_key(prefix: str) -> str:
    """Key holding the JSON list of shadow model versions."""
    return f"{prefix}model:shadows"


def rules_key(prefix: str) -> str:
    """Key holding the JSON of the rule set in force."""
    return f"{prefix}rules:current"


def backoff_delays(initial_seconds: float, max_seconds: float, n: int = 64) -> list[float]:
    """The first ``n`` waits between attempts: ``initial_seconds`` doubling, capped."""
    out, d = [], initial_seconds
    for _ in range(n):
        out.append(min(d, max_seconds))
        d *= 2
    return out


def redis_url_of(settings) -> str:
    """``REDIS_URL``, as ``rediss://`` when ``REDIS_TLS`` is set (the URL picks redis-py's
    TLS connection class; use it with :func:`redis_client_options`).

    >>> from app.config import Settings
    >>> redis_url_of(Settings(redis_url="redis://h:6379/0", redis_tls=True))
    'rediss://h:6379/0'
    """
    url = settings.redis_url.get_secret_value()
    if settings.redis_tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    return url


def redis_client_options(settings) -> dict:
    """Keyword arguments of ``redis.Redis.from_url`` built from :class:`~app.config.Settings`:
    ``REDIS_PASSWORD`` (overrides a password in ``REDIS_URL``) and ``REDIS_TLS_*``.

    ``REDIS_TLS=true`` or a ``rediss://`` URL connects over TLS, verifying the server
    certificate against ``REDIS_TLS_CA_FILE`` (default: the system's CAs); a client
    certificate is sent when ``REDIS_TLS_CERT_FILE``/``REDIS_TLS_KEY_FILE`` are set.
    """
    opts: dict = {}
    if settings.redis_password is not None:
        opts["password"] = settings.redis_password.get_secret_value()
    url = settings.redis_url.get_secret_value()
    if settings.redis_tls or url.startswith("rediss://"):
        # the TLS connection class comes from the scheme (redis_url_of): redis-py's
        # from_url passes an `ssl` keyword on to the connection, which refuses it
        opts["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if settings.redis_tls_ca_file is not None:
            opts["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
        if settings.redis_tls_cert_file is not None:
            opts["ssl_certfile"] = str(settings.redis_tls_cert_file)
        if settings.redis_tls_key_file is not None:
            opts["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return opts


class RedisStore:
    """Async access to the service's Redis keys, retried with bounded backoff.

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    prefix : str
        Namespace of every key.
    retry_max_seconds : float, default=60.0
        How long one call keeps retrying before :class:`RedisUnavailableError`.
    retry_initial_delay_seconds : float, default=0.1
        First wait after a failed attempt; doubled after each further failure.
    retry_max_delay_seconds : float, default=2.0
        Longest wait between two attempts.
    on_error : callable, optional
        Called with the operation name on every failed attempt (metrics).
    on_wait : callable, optional
        Called with the seconds about to be waited before a retry (metrics).
    on_up : callable, optional
        Called with ``True`` after a successful call, ``False`` after a failed one.
    client_options : dict, optional
        Extra keyword arguments of ``redis.Redis.from_url`` (password, TLS).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "fraud:",
        retry_max_seconds: float = 60.0,
        retry_initial_delay_seconds: float = 0.1,
        retry_max_delay_seconds: float = 2.0,
        on_error: Callable[[str], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
        on_up: Callable[[bool], None] | None = None,
        client_options: dict | None = None,
    ) -> None:
        if retry_max_seconds < 0:
            raise ValueError(f"retry_max_seconds must be >= 0, got {retry_max_seconds}")
        if not 0 < retry_initial_delay_seconds <= retry_max_delay_seconds:
            raise ValueError(
                "need 0 < retry_initial_delay_seconds <= retry_max_delay_seconds, got "
                f"{retry_initial_delay_seconds} and {retry_max_delay_seconds}"
            )
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, **(client_options or {})
        )
        self.prefix = prefix
        self.retry_max_seconds = retry_max_seconds
        self.retry_initial_delay_seconds = retry_initial_delay_seconds
        self.retry_max_delay_seconds = retry_max_delay_seconds
        self._on_error = on_error
        self._on_wait = on_wait
        self._on_up = on_up

    async def _call(self, operation: str, fn):
        deadline = time.monotonic() + self.retry_max_seconds
        delay = self.retry_initial_delay_seconds
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await fn()
            except _NOT_TRANSIENT as exc:  # a wrong password does not heal by waiting
                if self._on_error:
                    self._on_error(operation)
                raise RedisUnavailableError(
                    f"redis {operation} refused: {type(exc).__name__} (check REDIS_PASSWORD "
                    "and the user's permissions)"
                ) from None
            except (RedisError, OSError) as exc:
                if self._on_error:
                    self._on_error(operation)
                if self._on_up:
                    self._on_up(False)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RedisUnavailableError(
                        f"redis {operation} failed {attempts} times over "
                        f"{self.retry_max_seconds:g}s: {type(exc).__name__}: {exc}"
                    ) from None
                wait = min(delay, left)
                if self._on_wait:
                    self._on_wait(wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.retry_max_delay_seconds)
                continue
            if self._on_up:
                self._on_up(True)
            return result

    def _alert_key(self, transaction_id: str) -> str:
        return f"{self.prefix}alerted:{transaction_id}"

    async def already_alerted(self, transaction_ids: Sequence[str]) -> list[bool]:
        """For each id, whether an alert was already raised for it."""
        if not transaction_ids:
            return []
        keys = [self._alert_key(t) for t in transaction_ids]
        values = await self._call("mget", lambda: self._client.mget(keys))
        return [v is not None for v in values]

    def _reservation_key(self, transaction_id: str) -> str:
        return f"{self.prefix}alerting:{transaction_id}"

    async def alert_states(self, transaction_ids: Sequence[str]) -> list[tuple[bool, bytes | None]]:
        """For each id: whether it is marked alerted, and its reservation's value (None
        when not reserved). One ``MGET``."""
        if not transaction_ids:
            return []
        keys = [self._alert_key(t) for t in transaction_ids]
        keys += [self._reservation_key(t) for t in transaction_ids]
        values = await self._call("alert_states", lambda: self._client.mget(keys))
        n = len(transaction_ids)
        return [(values[i] is not None, values[n + i]) for i in range(n)]

    async def reserve_alerts(
        self, transaction_ids: Sequence[str], value: bytes, ttl_seconds: int
    ) -> list[bool]:
        """Reserve each id (``SET NX``) with ``value``; for each, whether this call holds
        the reservation (a retry that finds its own value holds it too)."""
        if not transaction_ids:
            return []
        keys = [self._reservation_key(t) for t in transaction_ids]
        ttl_ms = str(ttl_seconds * 1000)
        got = await self._call(
            "reserve_alerts", lambda: self._client.eval(_RESERVE, len(keys), *keys, value, ttl_ms)
        )
        return [bool(x) for x in got]

    async def take_over_reservations(
        self, reservations: Sequence[tuple[str, bytes]], value: bytes, ttl_seconds: int
    ) -> list[bool]:
        """Replace stale reservations ``(id, value seen)`` by ``value``, each only if it
        still holds the value seen (compare-and-set); for each, whether it is now ours."""
        if not reservations:
            return []
        keys = [self._reservation_key(t) for t, _ in reservations]
        args = [old for _, old in reservations] + [value, str(ttl_seconds * 1000)]
        got = await self._call(
            "take_over_reservations",
            lambda: self._client.eval(_TAKE_OVER, len(keys), *keys, *args),
        )
        return [bool(x) for x in got]

    async def mark_alerted(self, transaction_ids: Sequence[str], ttl_seconds: int) -> None:
        """Record that alerts for these ids were acknowledged by the broker (the commit
        of their reservations, which are deleted)."""
        if not transaction_ids:
            return

        async def _do():
            pipe = self._client.pipeline(transaction=True)
            for t in transaction_ids:
                pipe.set(self._alert_key(t), b"1", ex=ttl_seconds)
                pipe.delete(self._reservation_key(t))
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

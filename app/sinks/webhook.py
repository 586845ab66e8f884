"""HTTP webhook sink: one signed POST per alert, in order.

Each alert's JSON (as on ``fraud-alerts``) is POSTed to ``WEBHOOK_URL`` with

- ``Content-Type: application/json``
- ``Idempotency-Key: <alert id>`` (and ``X-Fraud-Alert-Id``): the receiver's key to
  drop a repeated delivery
- ``X-Fraud-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body with
  ``WEBHOOK_SECRET`` (:func:`signature`); the receiver recomputes it and compares in
  constant time (``hmac.compare_digest``).

Any 2xx confirms; anything else (other status, timeout, connection error) fails the
batch at that alert, and the runner retries from it with exponential backoff.

Examples
--------
>>> signature(b"secret", b'{"alert_id": "t1"}')
'sha256=a61bcb1d1eae1d505abd69c34809ca15f757bb23aa376a7452d5ee7b09189537'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import aiohttp

from ..exceptions import SinkDeliveryError
from .types import SinkMessage

__all__ = ["WebhookSink", "signature", "SIGNATURE_HEADER"]

#: Header carrying the body's HMAC-SHA256.
SIGNATURE_HEADER = "X-Fraud-Signature"


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body with secret>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POST alerts to an HTTP endpoint, signed.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` endpoint.
    secret : bytes
        HMAC key shared with the receiver.
    timeout_seconds : float, default=10.0
        Per request.
    name : str, default="webhook"
    """

    def __init__(self, url: str, secret: bytes, timeout_seconds: float = 10.0, name: str = "webhook") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected http:// or https://; got {url!r}")
        if not secret:
            raise ValueError("secret: expected a non-empty HMAC key")
        self.name = name
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (connections are made per request as needed)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def send_many(self, messages: Sequence[SinkMessage]) -> None:
        """POST each message in order; stop at the first that is not confirmed (2xx)."""
        await self.start()
        assert self._session is not None
        for i, m in enumerate(messages):
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": m.alert_id,
                "X-Fraud-Alert-Id": m.alert_id,
                SIGNATURE_HEADER: signature(self._secret, m.body),
            }
            try:
                async with self._session.post(self._url, data=m.body, headers=headers) as resp:
                    status = resp.status
                    await resp.read()
            except Exception as exc:  # noqa: BLE001 - timeouts, resets, DNS: all retried
                raise SinkDeliveryError(
                    f"webhook: {type(exc).__name__}: {exc}"[:300], confirmed=i
                ) from None
            if not 200 <= status < 300:
                raise SinkDeliveryError(f"webhook: HTTP {status} for alert {m.alert_id}", confirmed=i)

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

"""RabbitMQ sink: publisher confirms, a durable queue, persistent messages.

Each alert is published to the default exchange with the queue name as routing key,
``mandatory`` (an unroutable message is an error, not a silent drop),
``delivery_mode=2`` (persistent), ``message_id`` = the alert id and
``content_type=application/json``; the channel is in confirm mode, so a publish
returns only once the broker has taken responsibility for the message (``Basic.Ack``).
A lost connection, a ``Basic.Nack`` or a confirmation later than
``RABBITMQ_CONFIRM_TIMEOUT_SECONDS`` fails the batch; the connection is dropped and
made again on the next attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from pamqp.commands import Basic

from ..exceptions import SinkDeliveryError
from .types import SinkMessage

__all__ = ["RabbitMQSink"]


class RabbitMQSink:
    """Publish alerts to a durable RabbitMQ queue with publisher confirms.

    Parameters
    ----------
    url : str
        ``amqp://user:password@host:port/vhost`` (``amqps://`` for TLS).
    queue : str
        Durable queue, declared if missing.
    confirm_timeout_seconds : float, default=10.0
        Longest wait for a connection or a publisher confirm.
    name : str, default="rabbitmq"
    """

    def __init__(
        self, url: str, queue: str, confirm_timeout_seconds: float = 10.0, name: str = "rabbitmq"
    ) -> None:
        if confirm_timeout_seconds <= 0:
            raise ValueError(f"confirm_timeout_seconds: expected > 0; got {confirm_timeout_seconds}")
        self.name = name
        self.queue = queue
        self._url = url
        self._timeout = confirm_timeout_seconds
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def start(self) -> None:
        """Connect, open a confirm-mode channel and declare the durable queue."""
        if self._channel is not None and not self._channel.is_closed:
            return
        await self.close()
        try:
            self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
            self._channel = await self._connection.channel(publisher_confirms=True)
            await self._channel.declare_queue(self.queue, durable=True, timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
            await self.close()
            raise SinkDeliveryError(f"rabbitmq: cannot connect ({type(exc).__name__}: {exc})") from None

    async def send_many(self, messages: Sequence[SinkMessage]) -> None:
        """Publish in order, then wait for every confirm (see the module docstring)."""
        await self.start()
        assert self._channel is not None
        exchange = self._channel.default_exchange
        publishes = [
            exchange.publish(
                aio_pika.Message(
                    m.body,
                    message_id=m.alert_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"fraud-partition": m.partition, "fraud-offset": m.offset},
                ),
                routing_key=self.queue,
                mandatory=True,
                timeout=self._timeout,
            )
            for m in messages
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        confirmed = 0
        for result in results:
            if not isinstance(result, Basic.Ack):
                break
            confirmed += 1
        if confirmed < len(messages):
            bad = results[confirmed]
            what = f"{type(bad).__name__}: {bad}" if isinstance(bad, BaseException) else repr(bad)
            await self.close()
            raise SinkDeliveryError(
                f"rabbitmq: {len(messages) - confirmed} of {len(messages)} not confirmed ({what})"[:300],
                confirmed=confirmed,
            )

    async def close(self) -> None:
        """Close the connection (errors ignored: it may be gone already)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), self._timeout)
            except Exception:  # noqa: BLE001
                pass

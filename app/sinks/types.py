"""The sink interface (pure): what the runner needs of a channel.

At-least-once: the runner hands a sink the alerts of one partition in offset order and
commits their offsets only after :meth:`AlertSink.send_many` returned (every message
confirmed). A sink that fails raises :class:`app.exceptions.SinkDeliveryError` naming
how many leading messages it did confirm; the runner retries the rest, with backoff,
until it confirms. So a message may be delivered twice (after a failure between the
confirmation and the commit, or a rebalance), never lost: receivers deduplicate by
:attr:`SinkMessage.alert_id` (the message id / idempotency key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["SinkMessage", "AlertSink", "message_of"]


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One alert to deliver.

    Attributes
    ----------
    alert_id : str
        The alert's id (= its transaction id): message id and idempotency key.
    body : bytes
        The alert's JSON exactly as on ``fraud-alerts`` (an :class:`app.events.Alert`;
        a newer version's fields are passed on).
    partition, offset : int
        Where it is on the alerts topic.
    """

    alert_id: str
    body: bytes
    partition: int
    offset: int


@runtime_checkable
class AlertSink(Protocol):
    """A channel alerts are delivered to (RabbitMQ, a webhook; SQS or SNS would be one
    more class of this shape).

    Attributes
    ----------
    name : str
        Short, fixed: the metric label ``sink`` and part of the consumer group.
    """

    name: str

    async def start(self) -> None:
        """Connect and declare what the sink needs (queue, session). May raise
        :class:`app.exceptions.SinkDeliveryError`; the runner retries."""
        ...

    async def send_many(self, messages: Sequence[SinkMessage]) -> None:
        """Deliver ``messages`` in order; return only when the channel confirmed all.

        Raises
        ------
        app.exceptions.SinkDeliveryError
            With ``confirmed`` = how many leading messages were confirmed.
        """
        ...

    async def close(self) -> None:
        """Release connections; never raises."""
        ...


def message_of(partition: int, offset: int, value: bytes | None) -> SinkMessage | str:
    """The message of one ``fraud-alerts`` record, or why it cannot be delivered.

    Only ``alert_id`` is read: the body goes out as it is, so fields of a newer
    :class:`app.events.Alert` version reach the receivers.

    Examples
    --------
    >>> message_of(1, 7, b'{"alert_id": "t9", "score": 0.9}').alert_id
    't9'
    >>> message_of(1, 8, b'[1]')
    'not an alert: no string alert_id'
    """
    import orjson

    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return "not an alert: not JSON"
    alert_id = doc.get("alert_id") if isinstance(doc, dict) else None
    if not isinstance(alert_id, str) or not alert_id:
        return "not an alert: no string alert_id"
    return SinkMessage(alert_id, value, partition, offset)  # type: ignore[arg-type]

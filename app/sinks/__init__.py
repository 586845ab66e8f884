"""Alert sinks: deliver ``fraud-alerts`` to the channels teams already use.

``fraudctl sinks run`` runs each configured sink with a Kafka consumer group of its own
(:mod:`app.sinks.runner`), never inside the scoring worker, so a slow or absent sink
cannot slow scoring. A sink is a small class that follows :class:`app.sinks.types.AlertSink`:
:class:`app.sinks.rabbitmq.RabbitMQSink` and :class:`app.sinks.webhook.WebhookSink`.
"""

from .types import AlertSink, SinkMessage

__all__ = ["AlertSink", "SinkMessage"]

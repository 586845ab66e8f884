"""``fraudctl sinks run``: deliver ``fraud-alerts`` to RabbitMQ and/or a webhook.

A process of its own, never the scoring worker: each sink in ``SINKS`` reads the alerts
topic with its own consumer group (:mod:`app.sinks.runner`) and serves its metrics on
``SINK_METRICS_PORT``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Optional

import typer

from ..config import Settings
from ..exceptions import ConfigError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, settings_epilog
from .replay import with_broker

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    from ..metrics import SinkMetrics
    from ..sinks.types import AlertSink

__all__ = ["sinks_cli", "build_sinks"]

sinks_cli = typer.Typer(
    name="sinks", help="Deliver fraud alerts to RabbitMQ and webhooks.", no_args_is_help=True
)
cli.add_typer(sinks_cli, name="sinks")


def build_sinks(settings: Settings, names: tuple[str, ...]) -> list["AlertSink"]:
    """The sinks called ``names``, configured from ``settings``.

    Raises
    ------
    ConfigError
        No sink named, or a webhook without WEBHOOK_URL / WEBHOOK_SECRET.
    """
    from ..sinks.rabbitmq import RabbitMQSink
    from ..sinks.webhook import WebhookSink

    if not names:
        raise ConfigError('no alert sink configured: set SINKS (e.g. ["rabbitmq"]) or pass --sink')
    out: list["AlertSink"] = []
    for name in dict.fromkeys(names):
        if name == "rabbitmq":
            out.append(
                RabbitMQSink(
                    settings.rabbitmq_url.get_secret_value(),
                    settings.rabbitmq_queue,
                    settings.rabbitmq_confirm_timeout_seconds,
                )
            )
        elif name == "webhook":
            if settings.webhook_url is None or settings.webhook_secret is None:
                raise ConfigError("the webhook sink needs WEBHOOK_URL and WEBHOOK_SECRET")
            out.append(
                WebhookSink(
                    settings.webhook_url,
                    settings.webhook_secret.get_secret_value().encode(),
                    settings.webhook_timeout_seconds,
                )
            )
        else:
            raise ConfigError(f"unknown sink {name!r}: expected rabbitmq or webhook")
    return out


async def _run_all(settings: Settings, sinks: list["AlertSink"], metrics: "SinkMetrics") -> None:
    from ..stream.offsets import client_options
    from ..sinks.runner import SinkRunner, consumer_group

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runners = [
        SinkRunner(
            sink,
            settings.alerts_topic,
            consumer_group(settings.app_id, sink.name),
            client_options(settings),
            metrics,
            batch_max_records=settings.sink_batch_max_records,
            retry_initial_delay_seconds=settings.sink_retry_initial_delay_seconds,
            retry_max_delay_seconds=settings.sink_retry_max_delay_seconds,
        )
        for sink in sinks
    ]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@sinks_cli.command(
    "run",
    epilog=settings_epilog(
        *KAFKA_CLIENT_SETTINGS, "ALERTS_TOPIC", "APP_ID", "SINKS", "RABBITMQ_URL",
        "RABBITMQ_QUEUE", "RABBITMQ_CONFIRM_TIMEOUT_SECONDS", "WEBHOOK_URL", "WEBHOOK_SECRET",
        "WEBHOOK_TIMEOUT_SECONDS", "SINK_BATCH_MAX_RECORDS", "SINK_RETRY_INITIAL_DELAY_SECONDS",
        "SINK_RETRY_MAX_DELAY_SECONDS", "SINK_METRICS_PORT", "WEB_HOST",
    ),
)
def run_command(
    sink: Optional[list[str]] = typer.Option(
        None, "--sink", help="rabbitmq or webhook (repeatable; default: SINKS).", show_default=False
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """Deliver every alert of ALERTS_TOPIC to each sink, at least once, until Ctrl-C or
    SIGTERM (consumer group <APP_ID>-sink-<name> per sink)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from ..metrics import SinkMetrics

    settings = with_broker(broker)
    sinks = build_sinks(settings, tuple(sink) if sink else settings.sinks)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry, [s.name for s in sinks])
    if settings.sink_metrics_port:
        try:
            start_http_server(settings.sink_metrics_port, settings.web_host, registry)
        except OSError as exc:
            raise ConfigError(
                f"SINK_METRICS_PORT {settings.sink_metrics_port}: cannot listen ({exc.strerror})"
            ) from None
    console.print(
        f"delivering {settings.alerts_topic} to {', '.join(s.name for s in sinks)}; metrics on "
        f"{settings.web_host}:{settings.sink_metrics_port or '-'}",
        highlight=False,
    )
    asyncio.run(_run_all(settings, sinks, metrics))

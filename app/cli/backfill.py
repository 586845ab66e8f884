"""``fraudctl backfill``: load history into the workers' tables without alerting.

A new deployment starts with accounts and terminals the service has never seen. The
backfill replays the history (a training file, through its mapping) at full speed to
``TRANSACTIONS_TOPIC`` (and its labels to ``LABELS_TOPIC``): the workers build their
per-account and per-terminal state from it and score it, and, with ``ALERTS_FROM`` set
after the history's last event time, raise no alert and so open no case for it. The
command refuses to start when ``ALERTS_FROM`` (read from the same environment as the
workers) is unset or earlier than the history's end.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..exceptions import ConfigError, FraudError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, err_console, fail, settings_epilog
from .data import mapping_option

__all__ = ["backfill_command"]

_PROGRESS_EVERY_SECONDS = 5.0


@cli.command(
    "backfill",
    epilog=settings_epilog("ALERTS_FROM_TIME_MS", *KAFKA_CLIENT_SETTINGS, "TRANSACTIONS_TOPIC",
                           "LABELS_TOPIC", "TOPIC_PARTITIONS"),
)
def backfill_command(
    path: Path = typer.Argument(..., help="History: a file or folder (docs/data.md)."),
    start: Optional[str] = typer.Option(None, "--start", metavar="YYYY-MM-DD",
                                        help="First day (inclusive).", show_default=False),
    end: Optional[str] = typer.Option(None, "--end", metavar="YYYY-MM-DD",
                                      help="Last day (inclusive).", show_default=False),
    mapping: Optional[Path] = mapping_option(),
    labels: bool = typer.Option(True, "--labels/--no-labels",
                                help="Also send each transaction's label, 7 days late."),
    broker: Optional[str] = broker_option(),
) -> None:
    """Load history into the workers' state at full speed, without alerts or cases
    (the workers must run with ALERTS_FROM, alias of ALERTS_FROM_TIME_MS as an ISO
    date-time, after the history's end)."""
    from ..data.handbook import parse_date, read_handbook
    from ..replay import DAY_MS, replay_frame
    from .replay import with_broker

    try:
        settings = with_broker(broker)
        first, last = parse_date(start, "--start"), parse_date(end, "--end")
        df = read_handbook(path, first, last, mapping=mapping)
        if df.empty:
            raise ConfigError(f"{path}: no transactions to backfill")
        last_ms = int(df["TX_DATETIME"].iloc[-1].value // 1_000_000)
        since = settings.alerts_from_time_ms
        if since is None or since <= last_ms:
            raise ConfigError(
                f"the history ends at {df['TX_DATETIME'].iloc[-1]} UTC but ALERTS_FROM is "
                f"{'unset' if since is None else f'{since} ms'}: the workers would alert on "
                "it; run them (and this command) with ALERTS_FROM after the history's end"
            )
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    n, t0 = len(df), time.monotonic()
    shown = [t0]

    def on_progress(transactions: int, labels_sent: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= _PROGRESS_EVERY_SECONDS:
            shown[0] = now
            err_console.print(
                f"backfill: {transactions:,} of {n:,} transactions ({transactions / n:.0%}), "
                f"{labels_sent:,} labels, {transactions / (now - t0):,.0f} tx/s", highlight=False,
            )

    try:
        stats = asyncio.run(replay_frame(df, settings, None, 7 * DAY_MS, labels=labels,
                                         tail_labels=labels, on_progress=on_progress))
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    console.print(
        f"backfilled {stats.transactions:,} transactions ({df['TX_DATETIME'].iloc[0]:%Y-%m-%d}.."
        f"{df['TX_DATETIME'].iloc[-1]:%Y-%m-%d}) and {stats.labels:,} labels to "
        f"{settings.transactions_topic} in {stats.elapsed_seconds:.1f} s "
        f"({stats.transactions_per_second:,.0f} tx/s); the workers alert from event time "
        f"{settings.alerts_from_time_ms} ms (ALERTS_FROM)",
        highlight=False, soft_wrap=True,
    )

"""``fraudctl alerts``: show the alerts on ALERTS_TOPIC, as a table or as JSON lines.

The consumer has no group: it assigns itself every partition of the topic, so it
never joins, rebalances or commits offsets of the workers' consumer group.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..events import Alert, encode
from ..exceptions import BrokerUnavailableError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, err_console, settings_epilog

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    from aiokafka import ConsumerRecord

__all__ = ["alerts", "OutputFormat", "decode_alert", "alert_row", "ALERT_COLUMNS"]

logging.getLogger("aiokafka").addHandler(logging.NullHandler())

_POLL_MS = 200
_WIDE_CONSOLE = Console(width=200)
#: Longest wait for the last record batch of a partition when locating its true end.
_PROBE_SECONDS = 5.0

#: Table columns: (header, justify, no_wrap)
ALERT_COLUMNS = (
    ("alert time (UTC)", "left", True),
    ("transaction", "left", False),
    ("account", "left", False),
    ("terminal", "left", False),
    ("amount", "right", True),
    ("score", "right", True),
    ("model", "left", False),
    ("top reasons", "left", False),
)


class OutputFormat(str, enum.Enum):
    """How ``fraudctl alerts`` prints alerts."""

    table = "table"
    jsonl = "jsonl"


def decode_alert(raw: bytes | None) -> Alert:
    """Parse one ``fraud-alerts`` value.

    Raises
    ------
    ValueError
        If ``raw`` is empty or not a valid :class:`~app.events.Alert` JSON; the message
        is one line.
    """
    if raw is None:
        raise ValueError("empty value (tombstone)")
    try:
        return Alert.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(value)"
        raise ValueError(f"{loc}: {err['msg']}"[:200]) from None


def alert_row(alert: Alert) -> tuple[str, ...]:
    """The table cells of one alert, in :data:`ALERT_COLUMNS` order."""
    tx = alert.transaction
    when = datetime.fromtimestamp(alert.alert_time_ms / 1000, tz=timezone.utc)
    reasons = "\n".join(f"{r.contribution:+.2f} {r.feature}" for r in alert.reasons)
    return (
        when.strftime("%Y-%m-%d %H:%M:%S"),
        tx.transaction_id,
        tx.account_id,
        tx.terminal_id,
        f"{tx.amount:,.2f} {tx.currency}",
        f"{alert.score:.3f}",
        alert.model_version,
        reasons or "-",
    )


def _table(rows: list[tuple[str, ...]], header: bool) -> Table:
    table = Table(
        show_header=header, box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold"
    )
    for name, justify, no_wrap in ALERT_COLUMNS:
        table.add_column(name, justify=justify, no_wrap=no_wrap, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


@cli.command(epilog=settings_epilog(*KAFKA_CLIENT_SETTINGS, "ALERTS_TOPIC"))
def alerts(
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest alert (default: new alerts only)."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new alerts until Ctrl-C. Without it, stops at the end of the "
        "topic as it was at start (with --from-beginning), after --idle-seconds without "
        "a new alert, or after --limit alerts.",
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat.table,
        "--format",
        help="table: one row per alert; jsonl: each Alert JSON exactly as on the topic.",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, metavar="N", help="Stop after N alerts.", show_default=False
    ),
    idle_seconds: float = typer.Option(
        3.0,
        "--idle-seconds",
        min=0.1,
        metavar="SECONDS",
        help="Without --follow, stop after this long without a new record.",
    ),
    topic: Optional[str] = typer.Option(
        None, "--topic", help="Topic to read (default: ALERTS_TOPIC).", show_default=False
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """Show fraud alerts from ALERTS_TOPIC (records that are no Alert are reported on
    stderr and skipped)."""
    from .replay import with_broker

    settings = with_broker(broker)
    printer = _Printer(output_format, follow)
    try:
        asyncio.run(
            _consume(
                settings,
                topic or settings.alerts_topic,
                printer,
                from_beginning=from_beginning,
                follow=follow,
                limit=limit,
                idle_seconds=idle_seconds,
            )
        )
    finally:
        printer.close()
    if output_format is OutputFormat.table and printer.printed == 0:
        err_console.print("no alerts", style="dim")


class _Printer:
    """Prints decoded alerts; warns on stderr about records that are no Alert.

    JSON lines are written as they come; table rows are printed per batch when
    following, else as one table at :meth:`close`.
    """

    def __init__(self, output_format: OutputFormat, follow: bool) -> None:
        self.output_format = output_format
        self.follow = follow
        self.printed = 0
        self.skipped = 0
        self._rows: list[tuple[str, ...]] = []
        self._header_shown = False

    def print_batch(self, records: list[ConsumerRecord], limit: int | None) -> None:
        lines: list[str] = []
        for record in records:
            if limit is not None and self.printed >= limit:
                break
            try:
                alert = decode_alert(record.value)
            except ValueError as exc:
                self.skipped += 1
                err_console.print(
                    f"warning: skipped {record.topic}[{record.partition}]@{record.offset}: "
                    f"not an Alert ({exc})",
                    style="yellow",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
                continue
            self.printed += 1
            if self.output_format is OutputFormat.jsonl:
                raw = record.value
                lines.append(raw.decode() if b"\n" not in raw else encode(alert).decode())
            else:
                self._rows.append(alert_row(alert))
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        if self.follow:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self._rows:
            # piped output is not wrapped at 80 columns: one alert, one row (per reason)
            out = console if console.is_terminal else _WIDE_CONSOLE
            out.print(_table(self._rows, not self._header_shown))
            self._header_shown = True
            self._rows = []

    def close(self) -> None:
        """Print the rows not printed yet."""
        self._flush_rows()


async def _consume(
    settings: Settings,
    topic: str,
    printer: _Printer,
    *,
    from_beginning: bool,
    follow: bool,
    limit: int | None,
    idle_seconds: float,
) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError
    from ..stream.offsets import start_on_topic, true_end_offsets
    from ..replay import client_options

    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        tps = await start_on_topic(
            consumer, settings, topic, " (no alert was produced yet, or ALERTS_TOPIC is wrong)"
        )
        consumer.assign(tps)
        ends = await true_end_offsets(consumer, tps, _PROBE_SECONDS)
        if from_beginning:
            starts = await consumer.beginning_offsets(tps)
        else:
            starts = ends
        next_offsets = dict(starts)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        last_record = time.monotonic()
        while limit is None or printer.printed < limit:
            batch = await consumer.getmany(timeout_ms=_POLL_MS)
            records = [r for rs in batch.values() for r in rs]
            if records:
                last_record = time.monotonic()
                printer.print_batch(records, limit)
                for tp, rs in batch.items():
                    next_offsets[tp] = rs[-1].offset + 1
            if follow:
                continue
            if from_beginning and all(next_offsets[tp] >= ends[tp] for tp in tps):
                break
            if time.monotonic() - last_record >= idle_seconds:
                break
    except KafkaError as exc:
        raise BrokerUnavailableError(f"reading {topic!r} failed ({exc})") from None
    finally:
        await consumer.stop()

"""``fraudctl replay``: produce handbook transactions and their labels to Kafka."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..config import Settings, check_broker_url, get_settings
from ..exceptions import ConfigError, DataError
from .data import mapping_option
from .base import (
    KAFKA_CLIENT_SETTINGS,
    broker_option,
    cli,
    console,
    err_console,
    investigation_policy,
    investigators_option,
    policy_model_option,
    settings_epilog,
    verdict_delay_option,
)

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import pandas as pd
    from ..replay import ReplayStats

__all__ = ["replay"]

# aiokafka logs connection failures at ERROR; the command reports them in one line.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())


def with_broker(broker: str | None) -> Settings:
    """Settings, with ``kafka_broker_url`` replaced by ``broker`` when given."""
    settings = get_settings()
    if broker:
        url = broker if "://" in broker else f"kafka://{broker}"
        try:
            check_broker_url(url)
        except ValueError as exc:
            raise ConfigError(f"--broker: {exc}") from None
        settings = settings.model_copy(update={"kafka_broker_url": url})
    return settings


@cli.command(
    epilog=settings_epilog(
        *KAFKA_CLIENT_SETTINGS, "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "TOPIC_PARTITIONS"
    ),
)
def replay(
    path: Path = typer.Argument(
        ...,
        help="Handbook data: the public .csv.gz, a folder of daily YYYY-MM-DD.pkl/.csv "
        "files, or `fraudctl simulate` output.",
        show_default=False,
    ),
    start: Optional[str] = typer.Option(
        None,
        "--start",
        metavar="YYYY-MM-DD",
        help="First day to replay (inclusive).",
        show_default=False,
    ),
    end: Optional[str] = typer.Option(
        None,
        "--end",
        metavar="YYYY-MM-DD",
        help="Last day to replay (inclusive).",
        show_default=False,
    ),
    days: Optional[int] = typer.Option(
        None,
        "--days",
        min=1,
        metavar="N",
        help="Replay N days from --start (default: from the first day in the data). "
        "Not with --end.",
        show_default=False,
    ),
    rate: Optional[float] = typer.Option(
        None,
        "--rate",
        min=0.001,
        metavar="N",
        help="Transactions per second, evenly spaced in wall-clock time "
        "(default: as fast as possible).",
        show_default=False,
    ),
    labels: bool = typer.Option(
        True,
        "--labels/--no-labels",
        help="Also produce each transaction's label (fraud or genuine) to LABELS_TOPIC.",
    ),
    labels_delay_days: float = typer.Option(
        7.0,
        "--labels-delay-days",
        min=0.0,
        max=3650.0,
        metavar="DAYS",
        help="A label is produced once the replay's event time passes its transaction's "
        "time plus this delay (key: terminal id, timestamp: label time).",
    ),
    tail_labels: bool = typer.Option(
        True,
        "--tail-labels/--no-tail-labels",
        help="Labels timed after the last replayed transaction are flushed at the end; "
        "--no-tail-labels skips them.",
    ),
    broker: Optional[str] = broker_option(),
    investigators: int = investigators_option(),
    verdict_delay_hours: float = verdict_delay_option(),
    policy_model: Optional[str] = policy_model_option(),
    mapping: Optional[Path] = mapping_option(),
) -> None:
    """Replay transactions to TRANSACTIONS_TOPIC in event-time order (key: account id,
    Kafka timestamp: event time), with their labels merged in after a delay.

    Topics missing on the broker are created with TOPIC_PARTITIONS partitions. Reads
    KAFKA_BROKER_URL, TRANSACTIONS_TOPIC, LABELS_TOPIC, TOPIC_PARTITIONS, and
    MODELS_DIR with --investigators (the policy model).
    """
    from ..data.handbook import parse_date, read_handbook
    from ..replay import DAY_MS, select_days
    from ..scoring.investigators import investigation_arrivals_of, policy_scorer

    if days is not None and end is not None:
        raise DataError("give --end or --days, not both")
    first_day, last_day = parse_date(start, "--start"), parse_date(end, "--end")
    if first_day and last_day and first_day > last_day:
        raise DataError(f"--start {first_day} is after --end {last_day}")
    settings = with_broker(broker)
    with err_console.status(f"reading {path}"):
        df = read_handbook(path, first_day, last_day, mapping=mapping)
        if days is not None:
            df = select_days(df, days, first_day)
    if df.empty:
        until = last_day or (f"+{days} days" if days else "last day")
        raise DataError(f"{path}: no transactions in the range {first_day or 'first day'}..{until}")
    span = f"{df['TX_DATETIME'].iloc[0]:%Y-%m-%d}..{df['TX_DATETIME'].iloc[-1]:%Y-%m-%d}"
    policy = investigation_policy(investigators, verdict_delay_hours)
    arrivals = None
    if policy.active and labels:
        if abs(labels_delay_days - policy.chargeback_delay_ms / DAY_MS) > 1e-9:
            raise DataError("--investigators needs --labels-delay-days 7 (the chargeback "
                            "delay the features assume)")
        queue = policy_scorer(settings.models_dir, policy_model)
        with err_console.status(f"simulating investigators (queue: model {queue.version})"):
            arrivals = investigation_arrivals_of(df, policy, queue)
        err_console.print(
            f"investigators: {policy.k} cards a day, verdicts {verdict_delay_hours:g} h after "
            f"the alert: {int(arrivals[1].sum()):,} labels by investigation "
            f"({int((arrivals[1] & (df['TX_FRAUD'].to_numpy() == 1)).sum()):,} fraud), "
            "the rest 7 days late", highlight=False,
        )
    stats = _run(
        df,
        settings,
        rate,
        labels,
        int(round(labels_delay_days * DAY_MS)),
        tail_labels,
        f"replay {span}",
        arrivals,
    )
    console.print(
        f"transactions produced: {stats.transactions:,} -> {settings.transactions_topic}\n"
        f"labels produced:       {stats.labels:,}"
        + (f" -> {settings.labels_topic}" if labels else "")
        + f"\nelapsed:               {stats.elapsed_seconds:.2f} s\n"
        f"rate:                  {stats.transactions_per_second:,.0f} transactions/s "
        f"({stats.records_per_second:,.0f} records/s)",
        highlight=False,
    )


def _run(
    df: pd.DataFrame,
    settings: Settings,
    rate: float | None,
    labels: bool,
    labels_delay_ms: int,
    tail_labels: bool,
    title: str,
    arrivals: tuple | None = None,
) -> ReplayStats:
    """Run :func:`replay_frame` under a progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from ..replay import replay_frame

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("tx, {task.fields[labels]:,} labels"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,  # the summary follows; an error leaves one line only
        disable=not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task(title, total=len(df), labels=0)

        def on_progress(transactions: int, labels_sent: int) -> None:
            progress.update(task, completed=transactions, labels=labels_sent)

        return asyncio.run(
            replay_frame(
                df,
                settings,
                rate,
                labels_delay_ms,
                labels=labels,
                tail_labels=tail_labels,
                on_progress=on_progress,
                arrivals=arrivals,
            )
        )

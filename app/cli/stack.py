"""``fraudctl stack up|down|status``: the local Tansu broker and Redis, without Docker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..config import get_settings
from .base import cli, console, settings_epilog

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    from ..stream import stack as local_stack

__all__ = ["stack_app"]

stack_app = typer.Typer(
    name="stack",
    help=(
        "The local stack without Docker: a broker (KAFKA_BROKER_URL: Tansu, or Apache "
        "Kafka in KRaft mode with --broker kafka) and Redis (REDIS_URL). Pid and log "
        "files go to RUN_DIR."
    ),
    no_args_is_help=True,
)
cli.add_typer(stack_app, name="stack")


def _table(statuses: list[local_stack.ComponentStatus], title: str) -> Table:
    table = Table(title=title)
    table.add_column("component")
    table.add_column("url", overflow="fold")
    for column in ("running", "pid", "started by stack up"):
        table.add_column(column)
    for s in statuses:
        table.add_row(
            s.name,
            s.url,
            "[green]yes[/]" if s.running else "[red]no[/]",
            str(s.pid) if s.pid is not None else "-",
            "yes" if s.started_by_us else "no",
        )
    return table


@stack_app.command(
    "up",
    epilog=settings_epilog(
        "KAFKA_BROKER_URL", "REDIS_URL", "REDIS_PASSWORD", "RUN_DIR", "TANSU_BIN",
        "KAFKA_CACHE_DIR", "TOPIC_PARTITIONS", "TOPIC_REPLICATION_FACTOR", "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "ALERTS_TOPIC",
        "SCORED_TOPIC", "DEAD_LETTER_TOPIC"
    ),
)
def up(
    timeout: float = typer.Option(
        30.0, min=1.0, help="Seconds to wait for each component to answer."
    ),
    topics: bool = typer.Option(
        True,
        help="Create the service topics with TOPIC_PARTITIONS partitions on a local broker.",
    ),
    broker: str = typer.Option(
        "tansu",
        help=(
            "tansu (embedded, starts in milliseconds) or kafka (Apache Kafka in KRaft "
            "mode from its official jars: Java 17+, and Maven to fetch them the first "
            "time into KAFKA_CACHE_DIR)."
        ),
    ),
    brokers: int = typer.Option(
        1, min=1, max=5,
        help=(
            "Kafka nodes (broker + controller each) on consecutive ports from "
            "KAFKA_BROKER_URL's; 3 gives replication factor 3, min.insync.replicas=2."
        ),
    ),
) -> None:
    """Start a broker and Redis unless they already answer; create the service topics."""
    from ..stream import stack as local_stack
    from ..exceptions import StackError

    if broker not in ("tansu", "kafka"):
        raise StackError(f"--broker must be tansu or kafka, not {broker!r}")
    settings = get_settings()
    if broker == "kafka" and brokers > 1 and settings.topic_replication_factor == 1:
        settings = settings.model_copy(update={"topic_replication_factor": min(3, brokers)})
    started = local_stack.up(
        settings, timeout_seconds=timeout, create_topics=topics, broker=broker, brokers=brokers
    )
    for s in started:
        console.print(f"started {s.name} (pid {s.pid}) at {s.url}", highlight=False)
    if not started:
        console.print("nothing to start: everything already answers")
    nodes = [s.url for s in started if s.name.startswith("broker")]
    if len(nodes) > 1:
        console.print(
            f"workers and fraudctl: KAFKA_BROKER_URL='{';'.join(nodes)}' "
            f"TOPIC_REPLICATION_FACTOR={min(3, len(nodes))}",
            highlight=False, soft_wrap=True,  # one line to copy, whatever the width
        )
    console.print(_table(local_stack.status(settings), "stack"))


@stack_app.command("fetch-kafka", epilog=settings_epilog("KAFKA_CACHE_DIR"))
def fetch_kafka() -> None:
    """Fetch Apache Kafka's jars (ops/kafka/pom.xml) and check their sha256 (ops/kafka/jars.sha256)."""
    from ..stream.kafka_cluster import fetch_kafka as fetch, kafka_version

    libs = fetch(get_settings())
    console.print(f"Apache Kafka {kafka_version()}: {libs}", highlight=False)


@stack_app.command("down", epilog=settings_epilog("KAFKA_BROKER_URL", "REDIS_URL", "RUN_DIR"))
def down(
    timeout: float = typer.Option(
        10.0, min=0.0, help="Seconds between SIGTERM and SIGKILL for each process."
    ),
) -> None:
    """Stop what `stack up` started; leave anything else running."""
    from ..stream import stack as local_stack

    settings = get_settings()
    stopped = local_stack.down(settings, timeout_seconds=timeout)
    for s in stopped:
        console.print(f"stopped {s.name} (pid {s.pid})", highlight=False)
    if not stopped:
        console.print("nothing to stop: no process started by `stack up` is running")


@stack_app.command("status", epilog=settings_epilog("KAFKA_BROKER_URL", "REDIS_URL", "RUN_DIR"))
def status() -> None:
    """Show whether the broker and Redis answer, and which were started by `stack up`."""
    from ..stream import stack as local_stack

    console.print(_table(local_stack.status(get_settings()), "stack"))

"""The ``fraudctl`` Typer application that every command module registers on."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ..exceptions import FraudError
from ..features.labels import DEFAULT_VERDICT_DELAY_MS, InvestigationPolicy

__all__ = [
    "cli", "console", "err_console", "fail", "stage_progress", "broker_option",
    "investigators_option", "verdict_delay_option", "policy_model_option",
    "investigation_policy",
]

cli = typer.Typer(
    name="fraudctl",
    help="Operate the fraud-detection service: data, replay, models, alerts, local stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


@cli.callback()
def _root() -> None:
    """Operate the fraud-detection service: data, replay, models, alerts, local stack."""
err_console = Console(stderr=True)


def stage_progress() -> Progress:
    """The progress bar of long CLI work: on stderr, and gone once the work is done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def broker_option():
    """The ``--broker`` option of the commands that talk to Kafka."""
    return typer.Option(
        None,
        "--broker",
        metavar="HOST:PORT",
        help="Broker host:port or kafka:// URL (default: KAFKA_BROKER_URL).",
        show_default=False,
    )


def investigators_option():
    """``--investigators K``: simulated investigators checking K cards a day."""
    return typer.Option(
        0, "--investigators", min=0, max=100_000, metavar="K",
        help="Simulate a team that investigates up to K cards a day (the handbook's k is "
        "100): a card is investigated at its first transaction reaching the previous "
        "day's K-th highest card score of the policy model, and the verdict labels its "
        "transactions --verdict-delay-hours later; every other label arrives 7 days "
        "late (docs/investigators.md). 0: chargebacks only.",
    )


def verdict_delay_option():
    """``--verdict-delay-hours H``."""
    return typer.Option(
        DEFAULT_VERDICT_DELAY_MS / 3_600_000, "--verdict-delay-hours", min=0.0, max=168.0,
        metavar="H", help="Hours from the alerting transaction to the verdict (with "
        "--investigators).",
    )


def policy_model_option():
    """``--policy-model VERSION``."""
    return typer.Option(
        None, "--policy-model", metavar="VERSION",
        help="Model whose scores order the investigators' queue, computed with "
        "chargeback labels only; default: the registry's default (models/ACTIVE).",
        show_default=False,
    )


def investigation_policy(k: int, verdict_delay_hours: float) -> InvestigationPolicy:
    """The policy of ``--investigators`` and ``--verdict-delay-hours``."""
    return InvestigationPolicy(k=k, verdict_delay_ms=int(round(verdict_delay_hours * 3_600_000)))


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run() -> None:
    """Entry point: run the CLI, turning any :class:`FraudError` into a one-line error."""
    try:
        cli(prog_name="fraudctl")
    except FraudError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:  # a bad environment setting (Settings)
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"]).upper() or "settings"
        message = f"setting {where}: {err['msg']} (got {err.get('input')!r})"
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

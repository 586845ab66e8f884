"""The ``fraudctl`` Typer application that every command module registers on.

Start-up cost matters here: ``fraudctl --help`` and a usage error must answer at once,
so this module and the command modules import only Typer, Rich's console, pydantic and
the settings at import time; Faust, aiokafka, pandas and scikit-learn are imported
inside the commands that use them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
# Typer vendors Click (typer._click); its public API names no class for "no arguments:
# show the help", the one usage error that is not a one-line message.
from typer._click.exceptions import NoArgsIsHelpError

from ..exceptions import FraudError
from ..features.labels import DEFAULT_VERDICT_DELAY_MS, InvestigationPolicy

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "cli",
    "console",
    "err_console",
    "fail",
    "stage_progress",
    "broker_option",
    "settings_epilog",
    "KAFKA_CLIENT_SETTINGS",
    "investigators_option",
    "verdict_delay_option",
    "policy_model_option",
    "investigation_policy",
]

cli = typer.Typer(
    name="fraudctl",
    help="Operate the fraud-detection service: data, replay, models, alerts, local stack.",
    epilog="Every setting is an environment variable (also read from .env); "
    "each command's --help names the ones it reads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain (Click) help: flags without a type column, and no Rich rendering at start.
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

#: The settings every command that talks to Kafka reads (broker, SASL, TLS).
KAFKA_CLIENT_SETTINGS = (
    "KAFKA_BROKER_URL",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SSL",
    "KAFKA_SSL_CA_FILE",
    "KAFKA_SSL_CERT_FILE",
    "KAFKA_SSL_KEY_FILE",
)


def settings_epilog(*names: str) -> str:
    """The epilog of a command's ``--help``: the settings (environment variables) it reads.

    >>> settings_epilog("REDIS_URL", "MODELS_DIR")
    'Settings: REDIS_URL, MODELS_DIR.'
    """
    names = tuple(dict.fromkeys(names))
    return "Settings: " + (", ".join(names) if names else "none") + "."


@cli.callback()
def _root() -> None:
    """Operate the fraud-detection service: data, replay, models, alerts, local stack."""


def stage_progress() -> Progress:
    """The progress bar of long CLI work: on stderr, and gone once the work is done.

    Shown only when stderr is a terminal: piped to a file or a test, a bar is noise, and
    Rich's closing refresh would put an empty line before an error message.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
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


def _print_error(message: str) -> None:
    """``error: <message>`` as one line on stderr (line breaks in ``message`` become spaces)."""
    one_line = " ".join(message.split())
    err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
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
    _print_error(message)
    raise typer.Exit(code)


def _usage_message(exc: typer.TyperException) -> str:
    """A Click usage error (bad option, value out of range, missing argument) in one line."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see {ctx.command_path} --help)"
    return message


def run(args: list[str] | None = None) -> None:
    """Entry point: run the CLI; every user error is one line on stderr and exit code 2.

    Usage errors (unknown option, value out of range, missing argument), a
    :class:`FraudError` and a bad setting (pydantic ``ValidationError``) all end the
    same way.
    """
    import logging

    # aiokafka logs each failed connection; without a handler configured they would
    # reach stderr beside the command's own one-line error (a command that configures
    # logging still gets them)
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    try:
        code = cli(args=args, prog_name="fraudctl", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `fraudctl` or a group alone: its help
        typer.echo(exc.ctx.get_help())
        sys.exit(2)
    except typer.TyperException as exc:  # Typer's usage errors: bad option, range, missing
        _print_error(_usage_message(exc))
        sys.exit(2)
    except typer.Abort:
        _print_error("aborted")
        sys.exit(130)
    except FraudError as exc:  # 2, or 78 for a service configured wrong (BrokerAuthenticationError)
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # a bad environment setting (Settings)
        from app.config import settings_error_line

        _print_error(settings_error_line(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)

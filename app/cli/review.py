"""``fraudctl review``: the case-review console and its commands for scripts.

``serve`` runs the console (:mod:`app.cases.web`) and turns alerts into case events;
``list``, ``show``, ``confirm``, ``dismiss`` and ``reopen`` rebuild the cases from
``CASES_TOPIC`` and act on one, without the console running.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional

import orjson
import typer
from prometheus_client import CollectorRegistry
from rich.table import Table
from rich.text import Text

from ..cases.model import Case, Request, queue
from ..config import Settings
from ..events import encode
from ..exceptions import FraudError
from ..metrics import ReviewMetrics
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, fail, settings_epilog
from .replay import with_broker

if TYPE_CHECKING:  # the service and the web app import aiokafka and aiohttp: lazily
    from ..cases.service import CaseService

__all__ = ["review_cli"]

_SETTINGS = (
    "Reads KAFKA_BROKER_URL (and its SASL/TLS settings), CASES_TOPIC, ALERTS_TOPIC, "
    "LABELS_TOPIC, TOPIC_PARTITIONS, APP_ID"
)

_BLOCK = "REVIEW_BLOCK_CONFIRMED (then REDIS_URL, REDIS_KEY_PREFIX, RULES_TOPIC)"
_READS = (
    *KAFKA_CLIENT_SETTINGS, "CASES_TOPIC", "ALERTS_TOPIC", "LABELS_TOPIC", "TOPIC_PARTITIONS",
    "APP_ID", "REVIEW_BLOCK_CONFIRMED", "REDIS_URL", "REDIS_KEY_PREFIX", "RULES_TOPIC",
)
_EPILOG = settings_epilog(*_READS)

review_cli = typer.Typer(
    name="review",
    help="Case review: the analysts' console, and cases for scripts. " + _SETTINGS + ".",
    no_args_is_help=True,
)
cli.add_typer(review_cli, name="review")


class CaseStatus(str, enum.Enum):
    """Which cases ``review list`` shows."""

    open = "open"
    closed = "closed"
    all = "all"


class Format(str, enum.Enum):
    """How ``review list`` and ``review show`` print."""

    table = "table"
    json = "json"


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


async def _with_service(settings: Settings, work):
    from ..cases.service import CaseService

    async with CaseService(settings) as service:
        return await work(service)


def _run(settings: Settings, work):
    try:
        return asyncio.run(_with_service(settings, work))
    except FraudError as exc:
        fail(str(exc))


def _case_json(case: Case) -> dict:
    return {
        "case_id": case.case_id,
        "status": case.status,
        "max_score": case.max_score,
        "assignee": case.assignee,
        "verdict_time_ms": case.verdict_time_ms,
        "alerts": [orjson.loads(encode(a)) for a in case.alerts],
        "history": [orjson.loads(encode(e)) for e in case.history],
    }


_AUTH_READS = (
    "REVIEW_AUTH", "REVIEW_OIDC_ISSUER", "REVIEW_OIDC_CLIENT_ID", "REVIEW_OIDC_CLIENT_SECRET",
    "REVIEW_SESSION_KEY", "REVIEW_PUBLIC_URL", "REVIEW_COOKIE_SECURE", "REVIEW_TRUSTED_PROXIES",
    "REVIEW_ROLES", "REVIEW_TARGET_SECONDS",
)


@review_cli.command("serve", epilog=settings_epilog(*_READS, "REVIEW_HOST", "REVIEW_PORT", *_AUTH_READS))
def serve_command(
    host: Optional[str] = typer.Option(
        None, "--host", help="Bind address (default: REVIEW_HOST).", show_default=False
    ),
    port: Optional[int] = typer.Option(
        None, "--port", min=1, max=65535, help="Port (default: REVIEW_PORT).", show_default=False
    ),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a non-loopback bind address (needs REVIEW_AUTH=oidc or proxy: who acts "
        "must be known).",
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """Serve the review console and turn alerts into cases."""
    settings = with_broker(broker)
    host = host or settings.review_host
    port = port or settings.review_port
    from ..cases.service import CaseService
    from ..cases.auth import Auth
    from ..cases.web import build_app, check_bind_address

    try:
        check_bind_address(host, allow_remote, settings.review_auth)
        metrics = ReviewMetrics(CollectorRegistry())
        service = CaseService(settings, metrics)
        auth = Auth(settings, settings.review_public_url or f"http://{host}:{port}", metrics)
    except FraudError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from aiohttp import web

    try:
        web.run_app(
            build_app(service, auth=auth), host=host, port=port, access_log=None,
            print=lambda _: console.print(
                f"review console on http://{host}:{port}/ (cases: {settings.cases_topic})",
                highlight=False,
            ),
        )
    except FraudError as exc:
        fail(str(exc))


serve_command.__doc__ = (
    "Serve the review console and turn alerts into cases (consumer group "
    f"APP_ID-case-review). {_SETTINGS}, REVIEW_HOST, REVIEW_PORT, {_BLOCK}; sign-in: "
    "REVIEW_AUTH (oidc, proxy, none) and its REVIEW_* settings (docs/case-review.md)."
)


@review_cli.command("list", epilog=_EPILOG)
def list_command(
    status: CaseStatus = typer.Option(CaseStatus.open, "--status", help="Which cases."),
    output_format: Format = typer.Option(Format.table, "--format", help="table or json lines."),
    broker: Optional[str] = broker_option(),
) -> None:
    """List cases by risk (highest score first), rebuilt from CASES_TOPIC."""
    settings = with_broker(broker)

    async def work(service: CaseService):
        return queue(service.cases.values(), status.value)

    cases = _run(settings, work)
    if output_format is Format.json:
        for case in cases:
            summary = _case_json(case)
            summary["alerts"] = len(case.alerts)
            del summary["history"]
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("case (card)", "status", "max score", "alerts", "first alert (UTC)", "assignee"):
        table.add_column(name)
    for c in cases:
        table.add_row(
            c.case_id, c.status, f"{c.max_score:.3f}", str(len(c.alerts)),
            _time(c.first_alert_time_ms), c.assignee or "-",
        )
    console.print(table if cases else "no cases")


@review_cli.command("show", epilog=_EPILOG)
def show_command(
    case_id: str = typer.Argument(..., help="The case: the card's account id."),
    output_format: Format = typer.Option(Format.table, "--format", help="table or json."),
    broker: Optional[str] = broker_option(),
) -> None:
    """Show one case: its alerted transactions and its history."""
    settings = with_broker(broker)

    async def work(service: CaseService):
        return service.cases.get(case_id)

    case = _run(settings, work)
    if case is None:
        fail(f"no case {case_id!r}")
    if output_format is Format.json:
        sys.stdout.write(orjson.dumps(_case_json(case)).decode() + "\n")
        return
    console.print(
        f"case {case.case_id}: {case.status}, max score {case.max_score:.3f}, "
        f"{len(case.alerts)} alert(s), assignee {case.assignee or '-'}",
        highlight=False, markup=False,
    )
    alerts = Table(box=None, header_style="bold", pad_edge=False, title="alerted transactions")
    for name in ("transaction", "time (UTC)", "terminal", "amount", "score", "reasons", "rules"):
        alerts.add_column(name)
    for a in case.alerts:
        tx = a.transaction
        alerts.add_row(
            tx.transaction_id, _time(tx.event_time_ms), tx.terminal_id,
            f"{tx.amount:,.2f} {tx.currency}", f"{a.score:.3f}",
            "\n".join(f"{r.contribution:+.2f} {r.feature}" for r in a.reasons) or "-",
            ", ".join(a.rules_fired) or "-",
        )
    history = Table(box=None, header_style="bold", pad_edge=False, title="history")
    for name in ("time (UTC)", "event", "by", "comment"):
        history.add_column(name)
    for e in case.history:
        history.add_row(_time(e.time_ms), e.type, Text(e.actor), Text(e.comment))  # not markup
    console.print(alerts)
    console.print(history)


def _act(action: str, case_id: str, analyst: str, comment: str, key: str | None, broker) -> None:
    settings = with_broker(broker)
    request = Request(action, analyst, comment, key or f"cli-{uuid.uuid4().hex}")

    async def work(service: CaseService):
        decision = await service.request(case_id, request)
        return decision, service.cases[case_id]

    decision, case = _run(settings, work)
    if decision.replayed:
        console.print(
            f"case {case_id}: {decision.event.type} already recorded with key {request.key} "
            f"at {_time(decision.event.time_ms)}; nothing written",
            highlight=False, markup=False,
        )
        return
    n = len(case.alerts) if action in ("confirm", "dismiss") else 0
    labels = f"; {n} label(s) written to {settings.labels_topic}" if n else ""
    console.print(
        f"case {case_id}: {decision.event.type} by {decision.event.actor}{labels}",
        highlight=False, markup=False,
    )


_ANALYST = typer.Option(..., "--analyst", help="Your name, recorded with the event.")
_COMMENT = typer.Option("", "--comment", help="Why (at most 4000 characters).")
_KEY = typer.Option(
    None, "--key",
    help="Idempotency key: running the command again with the same key records once "
    "(default: a new key).",
    show_default=False,
)


def _register(action: str, doc: str) -> None:
    """Register ``review <action> CASE_ID --analyst NAME [--comment] [--key]``."""

    def command(
        case_id: str = typer.Argument(..., help="The case: the card's account id."),
        analyst: str = _ANALYST,
        comment: str = _COMMENT,
        key: Optional[str] = _KEY,
        broker: Optional[str] = broker_option(),
    ) -> None:
        _act(action, case_id, analyst, comment, key, broker)

    command.__doc__ = f"{doc} {_SETTINGS}."
    command.__name__ = f"{action}_command"
    review_cli.command(action, epilog=_EPILOG)(command)


_register(
    "confirm",
    "Confirm a case as fraud: a fraud label (source investigation) per transaction; "
    f"with {_BLOCK}, the card goes on the block list.",
)
_register("dismiss", "Dismiss a case as genuine: a genuine label (source investigation) per transaction.")
_register("reopen", "Reopen a closed case (a new verdict can then be given).")

for _command in (list_command, show_command):
    _command.__doc__ = f"{_command.__doc__} {_SETTINGS}."

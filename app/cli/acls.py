"""``fraudctl acls plan|apply``: the Kafka ACLs of every component's principal.

The table is :func:`app.acls.acl_grants` (pure, from the settings' topic names and app
id); ``apply`` writes the missing ACLs with :mod:`app.acl_admin`, as a principal that may
(a super user, or ``ALTER`` on the cluster).
"""

from __future__ import annotations

import asyncio
import enum
from typing import List, Optional

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from ..exceptions import ConfigError, FraudError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, fail, settings_epilog

__all__ = ["acls_cli"]

acls_cli = typer.Typer(
    name="acls",
    help="Kafka ACLs of the service's principals: print the table, write it to the brokers.",
    no_args_is_help=True,
)
cli.add_typer(acls_cli, name="acls")

_TABLE_SETTINGS = (
    "APP_ID", "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "SCORED_TOPIC", "ALERTS_TOPIC",
    "DEAD_LETTER_TOPIC", "CONTROL_TOPIC", "RULES_TOPIC", "CASES_TOPIC",
    "REVIEW_BLOCK_CONFIRMED",
)


class PlanFormat(str, enum.Enum):
    """How ``plan`` prints."""

    table = "table"
    json = "json"
    markdown = "markdown"


def _users_option():
    return typer.Option(
        None, "--user", metavar="COMPONENT=NAME",
        help="SASL user name of a component (worker, review-console, alert-sinks, replay, "
        "operator); default: the component's name. Repeatable.",
        show_default=False,
    )


def _parse_users(pairs: list[str] | None) -> dict[str, str]:
    from ..acls import principals

    users = {}
    for pair in pairs or []:
        component, sep, name = pair.partition("=")
        if not sep:
            raise ConfigError(f"--user {pair!r}: expected COMPONENT=NAME")
        users[component.strip()] = name.strip()
    try:
        principals(users)
    except ValueError as exc:
        raise ConfigError(f"--user: {exc}") from None
    return users


@acls_cli.command("plan", epilog=settings_epilog(*_TABLE_SETTINGS))
def plan_command(
    users: Optional[List[str]] = _users_option(),
    output: PlanFormat = typer.Option(PlanFormat.table, "--format", help="table, json or markdown."),
) -> None:
    """Print every component's rights: principal, resource, operations and what for."""
    from ..acls import acl_grants, markdown_table, principals
    from ..config import Settings

    try:
        who = _parse_users(users)
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    grants = acl_grants(Settings())
    names = principals(who)
    if output is PlanFormat.json:
        rows = [
            {
                "principal": names[g.component], "component": g.component,
                "resource_type": g.resource_type, "resource": g.resource,
                "pattern": g.pattern, "operations": list(g.operations), "why": g.why,
            }
            for g in grants
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if output is PlanFormat.markdown:
        typer.echo(markdown_table(grants, who))
        return
    table = Table(title="Kafka ACLs (ALLOW, any host)")
    for column in ("principal", "resource", "operations", "what for"):
        table.add_column(column)
    for g in grants:
        name = g.resource + ("*" if g.pattern == "prefixed" else "")
        table.add_row(names[g.component], f"{g.resource_type} {name}", ", ".join(g.operations), g.why)
    console.print(table)


@acls_cli.command("apply", epilog=settings_epilog(*_TABLE_SETTINGS, *KAFKA_CLIENT_SETTINGS))
def apply_command(
    users: Optional[List[str]] = _users_option(),
    broker: Optional[str] = broker_option(),
) -> None:
    """Create the ACLs of the table the brokers lack (idempotent; none is removed).

    Run it as a principal allowed to write ACLs (a super user, or ALTER on the cluster):
    KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD of that principal.
    """
    from ..acl_admin import apply_acls
    from ..acls import acl_grants, bindings
    from .replay import with_broker

    try:
        who = _parse_users(users)
        settings = with_broker(broker)
        wanted = bindings(acl_grants(settings), who)
        result = asyncio.run(apply_acls(settings, wanted))
    except FraudError as exc:
        fail(escape(str(exc)), exc.exit_code)
        return
    for b in result.created:
        console.print(f"created {escape(b.describe())}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(result.created)} ACLs created, {len(result.present)} already present "
        f"({len(wanted)} in the table)",
        highlight=False,
    )

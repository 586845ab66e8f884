"""``fraudctl data check|contract``: a team's own data against the input contract.

The contract and the mapping file live in :mod:`app.data.contract` (``docs/data.md``);
``--mapping`` is the same option on ``train``, ``evaluate``, ``replay`` and
``models compare``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..exceptions import FraudError
from .base import cli, console, fail, settings_epilog

__all__ = ["data_cli", "check_command", "contract_command", "mapping_option"]

data_cli = typer.Typer(
    name="data",
    help="Training data: the input contract, and checking a file (with a mapping) against it.",
    no_args_is_help=True,
)
cli.add_typer(data_cli, name="data")


def mapping_option():
    """``--mapping FILE``: the data's mapping file (YAML or JSON, docs/data.md)."""
    return typer.Option(
        None, "--mapping", metavar="FILE",
        help="Mapping file (YAML/JSON) from the data's own column names and forms to the "
        "input contract (docs/data.md); default: the data uses the contract's names.",
        show_default=False,
    )


@data_cli.command("check", epilog=settings_epilog())
def check_command(
    path: Path = typer.Argument(
        ..., help="Data: a .csv/.csv.gz/.parquet/.pkl file or a folder of daily files."
    ),
    mapping: Optional[Path] = mapping_option(),
    output: str = typer.Option("text", "--format", help="text or json."),
) -> None:
    """Validate data against the input contract: exit 0 and a summary, or one line on
    stderr naming the first bad row, column and value, and exit 2."""
    from ..data.handbook import read_handbook

    if output not in ("text", "json"):
        fail(f"--format: expected text or json, got {output!r}")
    try:
        df = read_handbook(path, mapping=mapping)
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    if df.empty:
        fail(escape(f"{path}: no transactions"))
    days = df["TX_DATETIME"].dt.floor("D")
    summary = {
        "path": str(path),
        "mapping": str(mapping) if mapping else None,
        "transactions": int(len(df)),
        "frauds": int(df["TX_FRAUD"].sum()),
        "fraud_rate": float(df["TX_FRAUD"].mean()),
        "first_time_utc": df["TX_DATETIME"].iloc[0].isoformat(),
        "last_time_utc": df["TX_DATETIME"].iloc[-1].isoformat(),
        "days": int(days.nunique()),
        "customers": int(df["CUSTOMER_ID"].nunique()),
        "terminals": int(df["TERMINAL_ID"].nunique()),
        "amount_total": float(df["TX_AMOUNT"].sum()),
    }
    if output == "json":
        typer.echo(json.dumps(summary))
        return
    console.print(
        f"{escape(str(path))}: valid{' with mapping ' + escape(str(mapping)) if mapping else ''}"
        f": {summary['transactions']:,} transactions, {summary['frauds']:,} frauds "
        f"({summary['fraud_rate']:.3%}), {summary['first_time_utc']}..{summary['last_time_utc']}"
        f" UTC ({summary['days']} days), {summary['customers']:,} customers, "
        f"{summary['terminals']:,} terminals",
        highlight=False, soft_wrap=True,
    )


@data_cli.command("contract", epilog=settings_epilog())
def contract_command() -> None:
    """The input contract: each column's type, unit and meaning."""
    from ..data.contract import CONTRACT

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("column", "type", "unit", "required", "meaning"):
        table.add_column(col, overflow="fold")
    for c in CONTRACT:
        table.add_row(c.name, c.type, c.unit, "yes" if c.required else "no", c.meaning)
    console.print(table)

"""``fraudctl simulate``: write handbook-format transactions from the handbook's generator.

The data layer does the work (:mod:`app.data.simulate`); this module checks the
options, shows a progress bar on stderr and prints a one-line summary on stdout.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.markup import escape

from ..exceptions import DataError, FraudError
from .base import cli, console, fail, settings_epilog, stage_progress

__all__ = ["simulate_command"]

#: The CLI option of each :func:`~app.data.simulate.simulate` parameter, for messages.
_OPTION_OF = {
    "n_customers": "--customers",
    "n_terminals": "--terminals",
    "start_date": "--start-date",
    "n_days": "--days",
    "radius": "--radius",
    "seed": "--seed",
}
_DAILY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.(pkl|csv|csv\.gz)$")


def _option_message(exc: ValueError) -> str:
    """``n_days must be >= 1, got 0`` -> ``--days must be >= 1, got 0``."""
    text = str(exc)
    name = text.split(" ", 1)[0]
    return _OPTION_OF[name] + text[len(name):] if name in _OPTION_OF else text


def _check_out(out: Path, daily: bool, force: bool) -> list[Path]:
    """Check ``--out``; return the stale daily files ``--force`` will remove.

    The folder that is to hold ``--out`` must exist: a mistyped path is refused rather
    than created.
    """
    parent = out.absolute().parent
    if not parent.is_dir():
        raise DataError(f"--out {out}: folder {parent} does not exist")
    if daily:
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out}: is a file; --daily needs a folder")
        present = sorted(out.iterdir()) if out.is_dir() else []
        stale = [p for p in present if _DAILY_FILE.match(p.name)]
        if stale and not force:
            raise DataError(
                f"--out {out}: already holds {len(stale)} daily files; use --force to "
                "replace them"
            )
        return stale
    if not out.name.endswith((".csv.gz", ".csv")):
        raise DataError(f"--out {out}: expected a file name ending .csv.gz or .csv")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; give a file name or use --daily")
    if out.exists() and not force:
        raise DataError(f"--out {out}: exists; use --force to replace it")
    return []


@cli.command("simulate", epilog=settings_epilog())
def simulate_command(
    out: Path = typer.Option(
        ..., "--out", "-o", help="File to write (.csv.gz or .csv), or with --daily a folder."
    ),
    customers: int = typer.Option(5000, "--customers", help="Number of customers (cards)."),
    terminals: int = typer.Option(10000, "--terminals", help="Number of terminals."),
    start_date: str = typer.Option(
        "2018-04-01", "--start-date", help="First day, YYYY-MM-DD (UTC)."
    ),
    days: int = typer.Option(183, "--days", help="Number of days to simulate."),
    radius: float = typer.Option(
        5.0, "--radius", help="Customers use terminals closer than this (grid 100x100)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same output."),
    daily: bool = typer.Option(
        False, "--daily", help="Write one YYYY-MM-DD.csv.gz per day into the folder --out."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing output."),
) -> None:
    """Simulate card transactions with the Fraud Detection Handbook's generator.

    Defaults give the handbook's dataset size: 5,000 customers, 10,000 terminals,
    183 days from 2018-04-01, about 1.75 million transactions and 0.8 % fraud.
    """
    from ..data.handbook import parse_date
    from ..data.simulate import (
        SIMULATION_STEPS,
        check_parameters,
        simulate,
        summarize,
        write_handbook_csv,
        write_handbook_daily,
    )

    try:
        start = parse_date(start_date, "--start-date")
        try:
            check_parameters(customers, terminals, start, days, radius, seed)
        except ValueError as exc:
            raise DataError(_option_message(exc)) from None
        stale = _check_out(out, daily, force)
        began = time.monotonic()
        with stage_progress() as bar:
            task = bar.add_task("simulating", total=len(SIMULATION_STEPS) + 1)
            df = simulate(
                customers, terminals, start, days, radius, seed,
                progress=lambda step, done, total: bar.update(
                    task, completed=done, description=f"simulating: {step}"
                ),
            )
            bar.update(task, description=f"writing {out}")

            def written(done: int, total: int) -> None:
                bar.update(task, completed=len(SIMULATION_STEPS) + done / max(total, 1))

            try:
                if daily:
                    for path in stale:
                        path.unlink()
                    write_handbook_daily(df, out, progress=written)
                else:
                    write_handbook_csv(df, out, progress=written)
            except OSError as exc:
                raise DataError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
            bar.update(task, completed=len(SIMULATION_STEPS) + 1)
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    s = summarize(df)
    last = start + timedelta(days=days - 1)
    console.print(
        f"wrote {s['n_transactions']:,} transactions ({start}..{last}, "
        f"{s['tx_per_day']:,.0f}/day, mean amount {s['mean_amount']:.2f}) to {out}"
        f"{' (daily files)' if daily else ''}: fraud {s['n_frauds']:,} = "
        f"{s['fraud_rate']:.2%} (scenario 1: {s['scenario_1']:,}, scenario 2: "
        f"{s['scenario_2']:,}, scenario 3: {s['scenario_3']:,}) in "
        f"{time.monotonic() - began:.1f} s",
        markup=False, highlight=False, soft_wrap=True,
    )

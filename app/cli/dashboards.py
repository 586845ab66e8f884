"""``fraudctl dashboards build|push|verify``: the Grafana dashboards as code."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..config import PROJECT_ROOT, get_settings
from ..exceptions import ObservabilityError
from .base import cli, console, fail, settings_epilog

__all__ = ["dashboards_cli", "DASHBOARDS_DIR", "load_dashboards"]

#: Where the dashboards' JSON is kept (and provisioned from).
DASHBOARDS_DIR = PROJECT_ROOT / "dashboards"

dashboards_cli = typer.Typer(
    name="dashboards",
    help="Grafana dashboards as code: build the JSON, push it to a Grafana, verify the "
    "queries against a Prometheus.",
    no_args_is_help=True,
)
cli.add_typer(dashboards_cli, name="dashboards")

_DIR_OPTION = typer.Option(DASHBOARDS_DIR, "--dir", help="Folder of the dashboard JSON files.")


def load_dashboards(folder: Path) -> dict[str, dict]:
    """File name -> dashboard JSON of every ``*.json`` in ``folder``.

    Raises
    ------
    ObservabilityError
        If the folder holds none, or a file is not JSON.
    """
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ObservabilityError(f"{folder}: no dashboard JSON (run `fraudctl dashboards build`)")
    out = {}
    for path in files:
        try:
            out[path.name] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ObservabilityError(f"{path}: not JSON ({exc})") from None
    return out


@dashboards_cli.command("build", epilog=settings_epilog())
def build_command(
    out: Path = _DIR_OPTION,
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if the files differ from the code."
    ),
) -> None:
    """Generate dashboards/*.json from app/dashboards/build.py (grafana-foundation-sdk)."""
    try:
        from ..dashboards.build import build_all, render

    except ImportError as exc:
        fail(f"building dashboards needs the dev extra (pip install -e '.[dev]'): {exc}")
    stale = []
    for name, board in build_all().items():
        path = Path(out) / name
        text = render(board)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        console.print(f"{path}: {len(board['panels'])} panels" + (" (changed)" if current != text else ""))
    if check and stale:
        fail(f"out of date: {', '.join(stale)} (run `fraudctl dashboards build`)", code=1)


@dashboards_cli.command("push", epilog=settings_epilog("GRAFANA_URL", "GRAFANA_TOKEN"))
def push_command(
    url: str = typer.Option(None, "--url", help="Grafana base URL (default: GRAFANA_URL)."),
    token: str = typer.Option(
        None, "--token", help="Service-account token (default: GRAFANA_TOKEN).", show_default=False
    ),
    folder_uid: str = typer.Option("fraud-stream", "--folder-uid", help="Target folder uid."),
    folder_title: str = typer.Option("Fraud stream", "--folder-title", help="Its title if created."),
    source: Path = _DIR_OPTION,
) -> None:
    """Upload the dashboards to an existing Grafana (created or replaced by uid)."""
    from ..dashboards.grafana import push_dashboards

    s = get_settings()
    url = url or s.grafana_url
    token = token or (s.grafana_token.get_secret_value() if s.grafana_token else None)
    if not token:
        fail("no Grafana token: pass --token or set GRAFANA_TOKEN")
    results = push_dashboards(url, token, load_dashboards(source), folder_uid, folder_title)
    for r in results:
        console.print(
            f"{escape(r.title)}: {url.rstrip('/')}{escape(r.url)} (version {r.version})",
            soft_wrap=True,
        )


@dashboards_cli.command("verify", epilog=settings_epilog("PROMETHEUS_URL"))
def verify_command(
    prometheus: str = typer.Option(
        None, "--prometheus", help="Prometheus base URL (default: PROMETHEUS_URL)."
    ),
    rate_interval: str = typer.Option("1m", "--rate-interval", help="For $__rate_interval."),
    range_: str = typer.Option("1h", "--range", help="For $__range (the time range)."),
    source: Path = _DIR_OPTION,
) -> None:
    """Evaluate every panel query through Prometheus' HTTP API and show how many series
    each returns; exit 1 if one is rejected, or returns nothing and is not marked as
    filling only during an incident."""
    from ..dashboards.prometheus import instant_query
    from ..dashboards.queries import INCIDENT_ONLY_PANELS, expand, metric_names, panel_queries

    base = prometheus or get_settings().prometheus_url
    table = Table("dashboard", "panel", "metrics", "series")
    missing = []
    for board in load_dashboards(source).values():
        for q in panel_queries(board):
            result = instant_query(base, expand(q.expr, rate_interval, range_))
            incident = (q.dashboard, q.panel) in INCIDENT_ONLY_PANELS
            if not result and not incident:
                missing.append(q.name)
            shown = str(len(result)) if result else ("0 (incident only)" if incident else "[red]0[/]")
            table.add_row(q.dashboard, q.panel, ", ".join(sorted(metric_names(q.expr))), shown)
    console.print(table)
    if missing:
        fail(f"no data for {len(missing)} queries: {'; '.join(missing)}", code=1)

"""``fraudctl demo``: the whole service on one machine, start to end, then cleaned up.

Brings the local stack up (Tansu, Redis), starts one worker, replays some days of
transactions (the shared handbook file when present, else simulated data), prints the
alerts as they come and a summary, then stops the worker and what ``stack up`` started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from ..config import PROJECT_ROOT, get_settings
from ..exceptions import StackError
from .base import KAFKA_CLIENT_SETTINGS, cli, console, settings_epilog

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import pandas as pd

__all__ = ["demo", "histogram_quantile", "SHARED_DATA"]

#: The public handbook file, where the project's checkout sits beside ``shared/``.
SHARED_DATA = (
    PROJECT_ROOT.parent / "shared" / "data" / "handbook-transactions-2018-04-01_2018-07-31.csv.gz"
)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Quantile ``q`` of a Prometheus histogram, interpolated as PromQL does.

    Parameters
    ----------
    q : float
        In [0, 1].
    buckets : list of (upper_bound, cumulative_count)
        Sorted by bound, the last bound ``inf``.

    Returns
    -------
    float
        In the histogram's unit; ``nan`` when it is empty.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 1)
        prev_bound, prev_count = bound, count
    return prev_bound


def _metrics(port: int) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(m: dict[str, list], name: str) -> float:
    return sum(s.value for s in m.get(name, []))


def _buckets(m: dict[str, list], name: str) -> list[tuple[float, float]]:
    return sorted(
        (float(s.labels["le"]), s.value) for s in m.get(f"{name}_bucket", [])
    )


def _alert_line(a) -> str:
    tx = a.transaction
    why = ", ".join(f"{r.feature} {r.contribution:+.2f}" for r in a.reasons[:2])
    return (
        f"ALERT tx {tx.transaction_id} card {tx.account_id} terminal {tx.terminal_id} "
        f"{tx.amount:,.2f} {tx.currency} score {a.score:.3f} ({why})"
    )


def _load(data: Optional[Path], days: int, start: Optional[str]) -> tuple[pd.DataFrame, str]:
    import pandas as pd
    from ..data.handbook import parse_date, read_handbook

    if data is None and SHARED_DATA.exists():
        data = SHARED_DATA
    first = pd.Timestamp(parse_date(start, "--start") or date(2018, 4, 1))
    if data is not None:
        end = (first + pd.Timedelta(days=days - 1)).date()
        return read_handbook(data, first.date(), end), str(data)
    from ..data.simulate import simulate

    origin = min(first, pd.Timestamp("2018-04-01"))  # let frauds build up, then slice
    df = simulate(n_days=(first - origin).days + days, start_date=origin.date().isoformat(), seed=42)
    df["TX_DATETIME"] = pd.to_datetime(df["TX_DATETIME"])
    df = df[df["TX_DATETIME"] >= first].reset_index(drop=True)
    return df, f"simulated ({days} days from {first.date()}, seed 42)"


@cli.command(
    epilog=settings_epilog(
        *KAFKA_CLIENT_SETTINGS, "REDIS_URL", "REDIS_KEY_PREFIX", "RUN_DIR", "TANSU_BIN",
        "TRANSACTIONS_TOPIC", "LABELS_TOPIC", "ALERTS_TOPIC", "TOPIC_PARTITIONS", "MODELS_DIR"
    ),
)
def demo(
    days: int = typer.Option(5, min=1, max=60, help="Days of transactions to replay."),
    start: Optional[str] = typer.Option(None, help="First day, YYYY-MM-DD (default 2018-04-01)."),
    data: Optional[Path] = typer.Option(
        None, help="Handbook-format data; default: the shared file if present, else simulated."
    ),
    rate: Optional[float] = typer.Option(
        None, min=0.001, help="Transactions/s (default: as fast as possible)."
    ),
    show: int = typer.Option(20, min=0, help="Alerts to print as they come (then only count)."),
    web_port: int = typer.Option(6066, help="The demo worker's web port (/metrics)."),
) -> None:
    """Run the service end to end on some days of data, print alerts and a summary."""
    from .. import stack

    # SIGTERM stops the demo like Ctrl-C: its worker and stack are stopped, keys deleted
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    df, source = _load(data, days, start)
    if df.empty:
        raise typer.BadParameter("no transactions in that range", param_hint="--start/--days")
    base = get_settings()
    tag = time.strftime("demo-%Y%m%d-%H%M%S")
    env = dict(os.environ)
    env.update(
        TRANSACTIONS_TOPIC=f"{tag}-transactions",
        ALERTS_TOPIC=f"{tag}-fraud-alerts",
        SCORED_TOPIC=f"{tag}-scored-transactions",
        LABELS_TOPIC=f"{tag}-transaction-labels",
        DEAD_LETTER_TOPIC=f"{tag}-dead-letter",
        # its own control topics: promotions or rules already on the broker stay out
        CONTROL_TOPIC=f"{tag}-fraud-control",
        RULES_TOPIC=f"{tag}-fraud-rules",
        APP_ID=f"fraud-{tag}",
        REDIS_KEY_PREFIX=f"{tag}:",
        WEB_PORT=str(web_port),
        DATA_DIR=str(base.run_dir / tag),
    )
    settings = base.model_copy(
        update={k.lower(): env[k] for k in (
            "TRANSACTIONS_TOPIC", "ALERTS_TOPIC", "SCORED_TOPIC", "LABELS_TOPIC", "DEAD_LETTER_TOPIC"
        )}
    )
    console.print(f"[bold]demo[/]: {len(df):,} transactions from {source}; topics {tag}-*")
    started = stack.up(base)
    worker: subprocess.Popen | None = None
    log_path = base.run_dir / f"{tag}-worker.log"
    try:
        base.run_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "app", "worker", "-l", "warn"],
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        console.print(f"worker pid {worker.pid}, log {log_path}, metrics :{web_port}/metrics")
        _wait_ready(worker, web_port, log_path)
        summary = asyncio.run(_run(df, settings, rate, worker, web_port, show, log_path))
        _print_summary(df, summary)
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        _forget_alerts(base, f"{tag}:")
        shutil.rmtree(base.run_dir / tag, ignore_errors=True)  # its DATA_DIR; the log stays
        stack.down(base, only=started)
        console.print("stack down: nothing left running")


def _forget_alerts(settings, prefix: str) -> None:
    """Delete the demo's alert ids from Redis (its own key prefix only)."""
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass


def _wait_ready(worker: subprocess.Popen, port: int, log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise StackError(f"worker exited ({worker.returncode}); see {log_path}")
        try:
            if "fraud_model_info" in _metrics(port):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"worker not ready after {timeout:.0f}s; see {log_path}")


async def _run(df, settings, rate, worker, port, show, log_path) -> dict:
    from aiokafka import AIOKafkaConsumer
    from ..replay import client_options, ensure_topics

    await ensure_topics(settings, [settings.transactions_topic, settings.alerts_topic])
    consumer = AIOKafkaConsumer(
        settings.alerts_topic, **client_options(settings), auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None,
    )
    await consumer.start()
    try:
        return await _follow(df, settings, rate, worker, port, show, log_path, consumer)
    finally:
        await consumer.stop()


async def _follow(df, settings, rate, worker, port, show, log_path, consumer) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from ..replay import replay_frame
    from .alerts import decode_alert

    n = len(df)
    alerts: dict[str, object] = {}
    printed = 0
    t0 = time.monotonic()
    first_scored = last_scored = None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:
        sent = progress.add_task("replayed", total=n)
        scored = progress.add_task("scored", total=n)
        replay = asyncio.create_task(
            replay_frame(
                df, settings, rate=rate, labels=False,
                on_progress=lambda tx, _l: progress.update(sent, completed=tx),
            )
        )
        done_scoring = False
        while not (replay.done() and done_scoring):
            if worker.poll() is not None:
                raise StackError(f"worker exited ({worker.returncode}); see {log_path}")
            if replay.done() and replay.exception() is not None:
                raise replay.exception()  # type: ignore[misc]
            batch = await consumer.getmany(timeout_ms=250)
            for recs in batch.values():
                for r in recs:
                    try:
                        a = decode_alert(r.value)
                    except Exception:  # noqa: BLE001 - a bad record is skipped, not fatal
                        continue
                    if a.alert_id in alerts:
                        continue
                    alerts[a.alert_id] = a
                    if printed < show:
                        progress.console.print(_alert_line(a), highlight=False)
                        printed += 1
            try:
                count = _value(_metrics(port), "fraud_transactions_scored_total")
            except OSError:
                count = 0
            if count and first_scored is None:
                first_scored = time.monotonic()
            if count >= n and last_scored is None:
                last_scored = time.monotonic()
            progress.update(scored, completed=min(count, n))
            done_scoring = count >= n
            if time.monotonic() - t0 > 900:
                raise StackError("demo timed out after 15 minutes")
        stats = replay.result()
        # drain alerts produced with the last batch
        for _ in range(8):
            batch = await consumer.getmany(timeout_ms=250)
            for recs in batch.values():
                for r in recs:
                    a = decode_alert(r.value)
                    alerts.setdefault(a.alert_id, a)
    m = _metrics(port)
    return {
        "replay": stats,
        "alerts": alerts,
        "elapsed": (last_scored or time.monotonic()) - t0,
        "latency": _buckets(m, "fraud_processing_latency_seconds"),
        "alert_latency": _buckets(m, "fraud_alert_latency_seconds"),
        "rejected": _value(m, "fraud_events_rejected_total"),
    }


def _ms(seconds: float, top: float) -> str:
    """A latency quantile; at the histogram's top bound it is only known to be above it."""
    return f"> {top * 1000:.0f} ms" if seconds >= top else f"{seconds * 1000:.1f} ms"


def _precision_recall(df: pd.DataFrame, alerts) -> tuple[int, int, float, float]:
    fraud_ids = set(df.loc[df["TX_FRAUD"] == 1, "TRANSACTION_ID"].astype(str))
    ids = set(df["TRANSACTION_ID"].astype(str))
    raised = [a for a in alerts if a in ids]
    hit = sum(1 for a in raised if a in fraud_ids)
    precision = hit / len(raised) if raised else float("nan")
    recall = hit / len(fraud_ids) if fraud_ids else float("nan")
    return len(fraud_ids), len(raised), precision, recall


def _print_summary(df: pd.DataFrame, s: dict) -> None:
    import pandas as pd

    alerts = s["alerts"]
    n = len(df)
    frauds, raised, precision, recall = _precision_recall(df, alerts)
    t = Table(title="demo summary", show_header=False)
    t.add_row("transactions replayed", f"{s['replay'].transactions:,}")
    t.add_row("frauds among them (labels)", f"{frauds:,}")
    t.add_row("alerts", f"{raised:,}")
    t.add_row("precision / recall of alerts", f"{precision:.3f} / {recall:.3f}")
    day = df["TX_DATETIME"].dt.floor("D")
    if day.nunique() > 2:
        warm = df[day >= day.min() + pd.Timedelta(days=2)]
        _, raised_w, p_w, r_w = _precision_recall(warm, alerts)
        t.add_row(
            "  from day 3 (account histories filled)",
            f"{raised_w:,} alerts, precision {p_w:.3f} / recall {r_w:.3f}",
        )
    t.add_row("rejected events", f"{s['rejected']:.0f}")
    t.add_row("worker throughput", f"{n / s['elapsed']:,.0f} transactions/s (replay start to last scored)")
    for label, key in (("latency arrival->scored", "latency"), ("latency arrival->alert", "alert_latency")):
        top = max((b for b, _ in s[key] if b != float("inf")), default=float("inf"))
        p50, p99 = (histogram_quantile(q, s[key]) for q in (0.5, 0.99))
        t.add_row(label, f"p50 {_ms(p50, top)}, p99 {_ms(p99, top)}")
    console.print(t)

"""``fraudctl demo``: the whole service on one machine, start to end, then cleaned up.

Brings the local stack up (Tansu, Redis) and starts one worker. Then, on the shared
handbook file when present, else simulated data: replays some weeks of history as fast
as it goes (labels seven days late, as always), so that account and terminal histories
are full, and waits until the worker scored it all; then streams the following days
live at a steady rate with Kafka timestamp = send time, follows the
``scored-transactions`` and ``fraud-alerts`` records by their broker timestamps, prints
live progress and the first alerts, a summary (latency to score and to alert in ms,
precision and recall of the alerts against the labels, throughput) and writes a
picture (:func:`app.demo_report.write_picture`). At the end it stops the worker and
what ``stack up`` started, and deletes its keys from Redis.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import PROJECT_ROOT, get_settings
from ..exceptions import StackError
from .base import KAFKA_CLIENT_SETTINGS, cli, console, settings_epilog

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import pandas as pd

    from ..demo_report import LiveRun

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


def _load(
    data: Optional[Path], warm_days: int, days: int, start: Optional[str]
) -> tuple[pd.DataFrame, str, pd.Timestamp]:
    """The frame of ``warm_days + days`` days from ``start`` and where it came from, and
    the first live day."""
    import pandas as pd

    from ..data.handbook import parse_date, read_handbook

    if data is None and SHARED_DATA.exists():
        data = SHARED_DATA
    first = pd.Timestamp(parse_date(start, "--start") or date(2018, 4, 1))
    live = first + pd.Timedelta(days=warm_days)
    if data is not None:
        end = (live + pd.Timedelta(days=days - 1)).date()
        return read_handbook(data, first.date(), end), str(data), live
    from ..data.simulate import simulate

    origin = min(first, pd.Timestamp("2018-04-01"))  # let frauds build up, then slice
    df = simulate(
        n_days=(live - origin).days + days, start_date=origin.date().isoformat(), seed=42
    )
    df["TX_DATETIME"] = pd.to_datetime(df["TX_DATETIME"])
    df = df[df["TX_DATETIME"] >= first].reset_index(drop=True)
    return df, "simulated data (seed 42)", live


@cli.command(
    epilog=settings_epilog(
        *KAFKA_CLIENT_SETTINGS, "REDIS_URL", "REDIS_KEY_PREFIX", "RUN_DIR", "TANSU_BIN",
        "TOPIC_PARTITIONS", "MODELS_DIR"
    ),
)
def demo(
    warm_days: int = typer.Option(
        14, min=0, max=120, help="Days of history replayed fast first (not timed)."
    ),
    days: int = typer.Option(2, min=1, max=30, help="Days after the history streamed live."),
    rate: float = typer.Option(
        300.0, min=1.0, max=5000.0,
        help="Live transactions per second (Kafka timestamp = send time); lowered to half "
        "the worker's catch-up rate when that is below twice this (a busy machine).",
    ),
    live_seconds: float = typer.Option(
        60.0, min=5.0, max=3600.0,
        help="Longest live phase: at most rate x this many transactions of the live days.",
    ),
    start: Optional[str] = typer.Option(None, help="First day of history, YYYY-MM-DD (default 2018-04-01)."),
    data: Optional[Path] = typer.Option(
        None, help="Handbook-format data; default: the shared file if present, else simulated."
    ),
    show: int = typer.Option(10, min=0, help="Live alerts to print as they come (then only count)."),
    picture: Path = typer.Option(
        Path("demo.png"), "--picture", help="The PNG written at the end (relative: in RUN_DIR)."
    ),
    web_port: Optional[int] = typer.Option(
        None, help="The demo worker's web port (/metrics); default: WEB_PORT (6066)."
    ),
) -> None:
    """Run the service on one machine: warm its state on some weeks of history, stream
    some days live at a steady rate, print live progress, a summary (latency to score
    and to alert in ms, precision and recall of the alerts, throughput) and write a
    picture; then stop everything it started.

    The worker's topics, APP_ID and REDIS_KEY_PREFIX are the demo's own.
    """
    from ..stream import stack

    # SIGTERM stops the demo like Ctrl-C: its worker and stack are stopped, keys deleted
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    df, source, live_start = _load(data, warm_days, days, start)
    live_ms = int(live_start.value // 1_000_000)
    n_live = int((df["TX_DATETIME"] >= live_start).sum())
    if n_live == 0:
        raise typer.BadParameter("no transactions in the live days", param_hint="--start/--days")
    base = get_settings()
    web_port = web_port or base.web_port
    picture = picture if picture.is_absolute() else base.run_dir / picture
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
    console.print(
        f"[bold]demo[/]: {source}; {len(df) - n_live:,} transactions of {warm_days} days of "
        f"history from {df['TX_DATETIME'].min().date()}, then up to {live_seconds:.0f} s of "
        f"the {n_live:,} of the {days} days after it, live at {rate:,.0f}/s; topics {tag}-*",
        highlight=False,
    )
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
        ctx = _Context(df, settings, worker, web_port, log_path, live_ms, rate, show, live_seconds)
        summary = asyncio.run(_run(ctx))
        from ..demo_report import write_picture

        hours = (ctx.until_ms - live_ms) / 3_600_000
        title = (
            f"fraud-stream demo: {hours:.0f} h of event time live at {ctx.rate:,.0f} "
            f"transactions/s after {warm_days} days of history ({source})"
        )
        try:
            summary["picture"] = write_picture(summary["live"], picture, title)
        except ImportError as exc:  # matplotlib comes with the dev extra
            summary["picture"] = f"not written: {exc.name} is not installed (pip install -e '.[dev]')"
        _print_summary(summary, ctx, warm_days)
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



@dataclass
class _Context:
    df: pd.DataFrame
    settings: Any
    worker: subprocess.Popen
    port: int
    log_path: Path
    live_ms: int
    rate: float
    show: int
    live_seconds: float
    #: end of the live window (exclusive), event time, UTC epoch ms; set by _plan_live
    until_ms: int = 0
    #: the rate asked for, when the live rate was lowered
    rate_asked: float | None = None

    def check_worker(self) -> None:
        if self.worker.poll() is not None:
            raise StackError(f"worker exited ({self.worker.returncode}); see {self.log_path}")


#: Longest time without a transaction scored (catching up with the history, or after
#: the last live one was sent) before the demo gives up, in seconds.
_STALL_SECONDS = 180.0


async def _run(ctx: _Context) -> dict:
    from ..stream.offsets import ensure_topics

    s = ctx.settings
    await ensure_topics(s, [s.transactions_topic, s.labels_topic, s.scored_topic, s.alerts_topic])
    warm = await _warm(ctx)
    _plan_live(ctx, warm)
    before = _metrics(ctx.port)
    live = await _live(ctx)
    after = _metrics(ctx.port)
    name = "fraud_processing_latency_seconds"
    worker_buckets = [
        (bound, a - b) for (bound, a), (_, b) in zip(_buckets(after, name), _buckets(before, name))
    ]
    return {
        "warm": warm,
        "live": live,
        "worker_latency": worker_buckets,
        "rejected": _value(after, "fraud_events_rejected_total"),
    }


def _scored_total(ctx: _Context) -> float:
    try:
        return _value(_metrics(ctx.port), "fraud_transactions_scored_total")
    except OSError:
        return 0.0


async def _warm(ctx: _Context) -> dict | None:
    """Replay the history as fast as it goes and wait until the worker scored it all."""
    import pandas as pd

    from ..replay import replay_frame

    n = int((ctx.df["TX_DATETIME"] < pd.Timestamp(ctx.live_ms, unit="ms")).sum())
    if n == 0:
        return None
    t0 = time.monotonic()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress:
        sent = progress.add_task("history: replayed", total=n)
        scored = progress.add_task("history: scored  ", total=n)
        replay = asyncio.create_task(
            replay_frame(
                ctx.df, ctx.settings, until_ms=ctx.live_ms, create_topics=False,
                on_progress=lambda tx, _l: progress.update(sent, completed=tx),
            )
        )
        last, last_at = 0.0, time.monotonic()
        while True:
            ctx.check_worker()
            if replay.done() and replay.exception() is not None:
                raise replay.exception()  # type: ignore[misc]
            count = _scored_total(ctx)
            progress.update(scored, completed=min(count, n))
            if replay.done() and count >= n:
                break
            if count > last:
                last, last_at = count, time.monotonic()
            elif time.monotonic() - last_at > _STALL_SECONDS:
                raise StackError(
                    f"the worker scored nothing for {_STALL_SECONDS:.0f} s ({count:.0f} of {n} "
                    f"history transactions); see {ctx.log_path}"
                )
            await asyncio.sleep(0.5)
        stats = replay.result()
    return {"transactions": n, "labels": stats.labels, "seconds": time.monotonic() - t0}


def _plan_live(ctx: _Context, warm: dict | None) -> None:
    """The live rate and window: the rate asked for, or half the worker's catch-up
    rate when that is below twice it (live traffic must not queue up); at most
    ``rate x live_seconds`` transactions."""
    import numpy as np

    if warm is not None and warm["seconds"] > 0:
        catch_up = warm["transactions"] / warm["seconds"]
        if catch_up < 2 * ctx.rate:
            ctx.rate_asked, ctx.rate = ctx.rate, max(10.0, round(catch_up / 2))
            console.print(
                f"the worker caught up at {catch_up:,.0f} transactions/s on this machine: "
                f"live rate {ctx.rate:,.0f}/s instead of {ctx.rate_asked:,.0f}/s", highlight=False,
            )
    times = ctx.df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    live = times[times >= ctx.live_ms]
    n = min(len(live), max(1, int(ctx.rate * ctx.live_seconds)))
    ctx.until_ms = int(live[n - 1]) + 1


def _live_run(ctx: _Context) -> LiveRun:
    import pandas as pd

    from ..demo_report import LiveRun

    times = ctx.df["TX_DATETIME"]
    live = ctx.df[
        (times >= pd.Timestamp(ctx.live_ms, unit="ms")) & (times < pd.Timestamp(ctx.until_ms, unit="ms"))
    ]
    ids = live["TRANSACTION_ID"].astype(str).tolist()
    times_ms = live["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype("int64")
    hours = ((times_ms - ctx.live_ms) // 3_600_000).tolist()
    return LiveRun(
        truth=dict(zip(ids, live["TX_FRAUD"].astype(bool).tolist())),
        event_hour=dict(zip(ids, hours)),
    )


class LagWatch:
    """Watches the live phase's own lag and chooses a lower rate when the worker falls
    behind (pure: the caller feeds counts and applies the rate).

    Every ``period_seconds`` the caller reports how many live transactions were sent and
    scored so far. When the unscored backlog exceeds ``max_backlog_seconds`` of traffic
    at the current rate, the rate becomes 80 % of what the worker scored over the last
    period (at least ``floor``); at the floor, the watch says the machine cannot keep
    up.

    Parameters
    ----------
    rate : float
        The live rate, transactions per second (> 0).
    period_seconds : float, default=2.0
    max_backlog_seconds : float, default=3.0
    floor : float, default=10.0

    Examples
    --------
    >>> w = LagWatch(300.0)
    >>> w.observe(0.0, sent=0, scored=0) is None
    True
    >>> w.observe(2.0, sent=600, scored=100) is None   # 500 behind: under 3 s of traffic
    True
    >>> w.observe(4.0, sent=1200, scored=210)          # 990 behind, scored 55/s
    44.0
    >>> w.rate
    44.0
    """

    def __init__(self, rate: float, period_seconds: float = 2.0,
                 max_backlog_seconds: float = 3.0, floor: float = 10.0) -> None:
        if not rate > 0:
            raise ValueError(f"rate: expected > 0, got {rate!r}")
        self.rate = float(rate)
        self.period_seconds = period_seconds
        self.max_backlog_seconds = max_backlog_seconds
        self.floor = floor
        self.cannot_keep_up = False
        self._last: tuple[float, int] | None = None

    def due(self, now: float) -> bool:
        """Whether a period has passed since the last observation."""
        return self._last is None or now - self._last[0] >= self.period_seconds

    def observe(self, now: float, sent: int, scored: int) -> float | None:
        """Record the counts at ``now`` (seconds); the new rate when it must fall, else None."""
        last, self._last = self._last, (now, scored)
        if last is None or now <= last[0]:
            return None
        backlog = sent - scored
        if backlog <= self.rate * self.max_backlog_seconds:
            return None
        scored_per_second = (scored - last[1]) / (now - last[0])
        lower = max(self.floor, float(round(0.8 * scored_per_second)))
        if lower >= self.rate:
            if self.rate <= self.floor:
                self.cannot_keep_up = True
            return None
        self.rate = lower
        return lower


def _fmt_ms(ms: float) -> str:
    return "-" if math.isnan(ms) else f"{ms:,.0f} ms"


def _live_line(f) -> str:
    precision = "-" if math.isnan(f.precision) else f"{f.precision:.3f}"
    return (
        f"live: sent {f.sent:,}, alerts {f.alerts:,} (precision {precision}); "
        f"send→scored p50 {_fmt_ms(f.scored_ms_p50)} p99 {_fmt_ms(f.scored_ms_p99)}"
    )


async def _live(ctx: _Context) -> LiveRun:
    """Stream the live days at ``ctx.rate`` and follow transactions, scored records and
    alerts by their broker timestamps."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ..stream.offsets import client_options, topic_partitions, true_end_offsets
    from ..replay import Pacer, replay_frame
    from .alerts import decode_alert

    s = ctx.settings
    run = _live_run(ctx)
    n = len(run.truth)
    consumer = AIOKafkaConsumer(**client_options(s), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = (s.transactions_topic, s.scored_topic, s.alerts_topic)
        known = await topic_partitions(s, topics)
        tps = [TopicPartition(t, p) for t in topics for p in known.get(t, ())]
        ends = await true_end_offsets(consumer, tps)  # assigns them: read only what is new
        for tp in tps:
            consumer.seek(tp, ends[tp])
        printed = 0
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as progress:
            task = progress.add_task(_live_line(run.figures()), total=n)
            pacer = Pacer(ctx.rate)
            watch = LagWatch(ctx.rate)
            told_cannot = False
            replay = asyncio.create_task(
                replay_frame(
                    ctx.df, s, rate=ctx.rate, from_ms=ctx.live_ms, until_ms=ctx.until_ms,
                    send_time_stamps=True, create_topics=False, pacer=pacer,
                )
            )
            last_new = time.monotonic()
            shown = 0.0
            while True:
                ctx.check_worker()
                if replay.done() and replay.exception() is not None:
                    raise replay.exception()  # type: ignore[misc]
                batch = await consumer.getmany(timeout_ms=200)
                for tp, recs in batch.items():
                    for r in recs:
                        body = orjson.loads(r.value)
                        if tp.topic == s.transactions_topic:
                            run.sent(str(body.get("transaction_id")), r.timestamp)
                        elif tp.topic == s.scored_topic:
                            run.scored(body["transaction"]["transaction_id"], r.timestamp)
                            last_new = time.monotonic()
                        else:
                            a = decode_alert(r.value)
                            if a.alert_id in run.truth and a.alert_id not in run.alert_ms:
                                if printed < ctx.show:
                                    verdict = "fraud" if run.truth[a.alert_id] else "genuine"
                                    progress.console.print(
                                        f"{_alert_line(a)} [{verdict}]", highlight=False, markup=False
                                    )
                                    printed += 1
                            run.alerted(a.alert_id, r.timestamp)
                now = time.monotonic()
                if not replay.done() and watch.due(now):
                    f = run.figures()
                    lower = watch.observe(now, f.sent, f.scored)
                    if lower is not None:
                        pacer.set_rate(lower)
                        ctx.rate_asked = ctx.rate_asked or ctx.rate
                        ctx.rate = lower
                        progress.console.print(
                            f"the worker is {f.sent - f.scored:,} transactions behind: this "
                            f"machine cannot keep up with {ctx.rate_asked:,.0f}/s now; live "
                            f"rate lowered to {lower:,.0f}/s", highlight=False,
                        )
                    elif watch.cannot_keep_up and not told_cannot:
                        told_cannot = True
                        progress.console.print(
                            f"the worker is {f.sent - f.scored:,} transactions behind even at "
                            f"{watch.rate:,.0f}/s: this machine cannot keep up with live "
                            "traffic now (other jobs?); latencies below include the backlog",
                            highlight=False,
                        )
                if now - shown > 0.5:
                    f = run.figures()
                    progress.update(task, completed=f.scored, description=_live_line(f))
                    shown = now
                if replay.done() and len(run.scored_ms) >= n:
                    break
                if replay.done() and now - last_new > _STALL_SECONDS:
                    progress.console.print(
                        f"warning: {n - len(run.scored_ms)} live transactions not scored "
                        f"{_STALL_SECONDS:.0f} s after the last one was sent; see {ctx.log_path}"
                    )
                    break
            for _ in range(5):  # alerts of the last batch (sent before its scored records)
                for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                    if tp.topic == s.alerts_topic:
                        for r in recs:
                            run.alerted(decode_alert(r.value).alert_id, r.timestamp)
            progress.update(task, completed=len(run.scored_ms), description=_live_line(run.figures()))
    finally:
        await consumer.stop()
    return run


def _ms(seconds: float, top: float) -> str:
    """A latency quantile; at the histogram's top bound it is only known to be above it."""
    return f"> {top * 1000:,.0f} ms" if seconds >= top else f"{seconds * 1000:,.0f} ms"


def _print_summary(s: dict, ctx: _Context, warm_days: int) -> None:
    run: LiveRun = s["live"]
    f = run.figures()
    t = Table(title="demo summary", show_header=False)
    warm = s["warm"]
    if warm is not None:
        t.add_row(
            "history (warm-up, not timed)",
            f"{warm['transactions']:,} transactions and {warm['labels']:,} labels of "
            f"{warm_days} days, scored in {warm['seconds']:.0f} s "
            f"({warm['transactions'] / warm['seconds']:,.0f}/s catching up)",
        )
    hours = (ctx.until_ms - ctx.live_ms) / 3_600_000
    lowered = f", lowered from {ctx.rate_asked:,.0f}/s" if ctx.rate_asked else ""
    t.add_row(
        "live",
        f"{f.sent:,} transactions, {hours:.1f} h of event time, at {ctx.rate:,.0f}/s{lowered} "
        f"(a day in {f.sent / ctx.rate * 24 / max(hours, 1e-9):.0f} s; Kafka timestamp = send time)",
    )
    t.add_row("scored", f"{f.scored:,}; throughput {f.throughput_per_second:,.0f} transactions/s")
    t.add_row("latency send → scored record", f"p50 {_fmt_ms(f.scored_ms_p50)}, p99 {_fmt_ms(f.scored_ms_p99)}")
    t.add_row("latency send → alert", f"p50 {_fmt_ms(f.alert_ms_p50)}, p99 {_fmt_ms(f.alert_ms_p99)}")
    buckets = s["worker_latency"]
    if buckets and buckets[-1][1] > 0:
        top = max((b for b, _ in buckets if b != float("inf")), default=float("inf"))
        p50, p99 = (histogram_quantile(q, buckets) for q in (0.5, 0.99))
        t.add_row("  of which in the worker", f"p50 {_ms(p50, top)}, p99 {_ms(p99, top)} (arrival → scored, its histogram)")
    t.add_row("frauds among them (labels)", f"{f.frauds:,}")
    precision = "-" if math.isnan(f.precision) else f"{f.precision:.3f}"
    recall = "-" if math.isnan(f.recall) else f"{f.recall:.3f}"
    t.add_row("alerts", f"{f.alerts:,} ({f.true_alerts:,} on frauds): precision {precision}, recall {recall}")
    t.add_row("rejected events", f"{s['rejected']:.0f}")
    t.add_row("picture", str(s["picture"]))
    console.print(t)

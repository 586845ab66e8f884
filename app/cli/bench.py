"""``fraudctl bench``: the performance harness on a running local stack.

The measurements live in ``bench/`` at the top of the checkout (:mod:`bench.harness`);
this command parses the options, runs them, prints a table and writes the results as
JSON to ``bench/results/<UTC time>.json``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import orjson
import typer
from rich.table import Table

from ..config import PROJECT_ROOT, check_broker_url, get_settings
from ..exceptions import StackError
from .base import cli, console, err_console, fail, settings_epilog

__all__ = ["bench", "results_table", "DEFAULT_REDIS_URL"]

#: Redis of the harness's workers when ``REDIS_URL`` is unset: the machine's, database 7.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
#: ``--broker`` values that start a broker of the run's own.
OWN_BROKERS = ("kafka", "tansu")
#: The phases of the harness (``bench.harness.PHASES``).
PHASE_NAMES = ("throughput", "profile", "latency", "memory", "scaleout")


def _harness():
    """Import :mod:`bench.harness` from the checkout (it is not part of the package)."""
    if not (PROJECT_ROOT / "bench" / "harness.py").exists():
        fail(f"no bench/harness.py under {PROJECT_ROOT}: run fraudctl bench from a checkout")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    from bench import harness

    return harness


def _start_own_kafka():
    """A one-node Apache Kafka on free ports under ``.run/bench/``, started and ready.

    Raises
    ------
    StackError
        No Java, the jars cannot be fetched, or the node does not start.
    """
    from bench.procs import free_port

    from ..stream.kafka_cluster import KafkaCluster, fetch_kafka

    libs = fetch_kafka(get_settings())
    port, controller_port = free_port(), free_port()
    cluster = KafkaCluster(libs, PROJECT_ROOT / ".run" / "bench" / f"kafka-{port}",
                           [(port, controller_port)])
    cluster.start()
    return cluster


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=name) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected integers >= 1, got {text!r}", param_hint=name)
    return values


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--worker-env")
        out[key] = value
    return out


def _rate(x) -> str:
    return "-" if x is None else f"{x:,.0f}/s"


def _ms(r: dict) -> str:
    return " / ".join("never" if r.get(k) is None else f"{r[k]:,.0f}"
                      for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")) + " ms"


def results_table(results: dict) -> Table:
    """The headline numbers of a harness run, one row each."""
    t = Table(title=f"fraudctl bench {results.get('tag', '')}")
    t.add_column("measurement")
    t.add_column("result", justify="right")
    t.add_column("notes", overflow="fold")
    m = results.get("machine", {})
    t.add_row("machine", f"{m.get('cpus')} CPUs",
              f"{m.get('memory_gib')} GiB, Python {m.get('python')}, "
              f"load {m.get('load_avg_1m')} at start")
    tp = results.get("throughput")
    if tp and "error" not in tp:
        t.add_row("produce", _rate(tp["produce"]["per_second"]),
                  f"{tp['n']:,} transactions to {tp['topic']}")
        for key, label in (("bare_aiokafka", "(a) bare aiokafka"), ("bare_faust", "(b) bare Faust"),
                           ("faust_table", "(b2) Faust + table"),
                           ("faust_hold", "(b3) Faust + held in a table"), ("worker", "(c) worker")):
            if key in tp:
                r = tp[key]
                note = f"{r['events']:,} in {r['seconds']:.2f} s"
                if r.get("events_per_cpu_second"):
                    note += f", {r['events_per_cpu_second']:,.0f} per CPU-second"
                if "rss_bytes" in r:
                    note += f", RSS {r['rss_bytes'] / 2**20:.0f} MiB"
                t.add_row(label, _rate(r["events_per_second"]), note)
                restart = r.get("restart")
                if restart:
                    records = restart.get("changelog_records")
                    t.add_row("  restart: tables recovered", f"{restart['recovered_seconds']:.1f} s",
                              f"from process start, {restart.get('cpu_seconds', 0):.1f} CPU-s"
                              + (f"; {records:,} changelog records read, "
                                                      f"{restart['held_entries']:,} entries held"
                                                      if records is not None else ""))
        for run in (tp.get("pure_work") or {}).get("runs", []):
            t.add_row(f"(p) pure work, batches of {run['batch']}",
                      f"{run['us_per_transaction']:,.0f} µs/tx",
                      "the worker's pipeline functions in one process, no Kafka or Faust "
                      "(CPU time per transaction)")
        if "c_over_b_ceiling" in tp["ratios"]:
            per_cpu = tp["ratios"].get("c_over_b_ceiling_per_cpu_second")
            t.add_row("c/b ceiling", f"{tp['ratios']['c_over_b_ceiling']:.3f}",
                      "(1/b) / (1/b + p at batches of 500): any Faust worker doing (p)"
                      + (f"; per CPU-second {per_cpu:.3f}" if per_cpu is not None else ""))
        t.add_row("c/a", f"{tp['ratios']['c_over_a']:.3f}", "")
        per_cpu = tp["ratios"].get("c_over_b_per_cpu_second")
        t.add_row("c/b", f"{tp['ratios']['c_over_b']:.3f}",
                  "target >= 0.6" + (f"; per CPU-second {per_cpu:.3f}" if per_cpu else ""))
        held = tp["ratios"].get("c_over_b_with_held_table_per_cpu_second")
        if held is not None:
            t.add_row("c/b, held in a table", f"{held:.3f}",
                      f"per CPU-second, with (b3) - (b) = "
                      f"{tp['ratios']['held_table_us_per_event']:.0f} µs per transaction added")
    prof = results.get("profile")
    if prof and "error" not in prof:
        top = ", ".join(f"{e['function']} {e['share']:.0%}" for e in prof["self"][:3])
        t.add_row("profile (self)", f"{prof['samples']:,} samples", top)
    lat = results.get("latency")
    if lat and "error" not in lat:
        if lat.get("sent"):
            cpu = lat.get("cpu") or {}
            t.add_row("latency p50 / p95 / p99 / max", _ms(lat),
                      f"{lat['achieved_rate']:,.0f}/s for {lat['offered_seconds']:.0f} s after "
                      f"{lat.get('warmup_seconds', 0):.0f} s warm-up, "
                      f"{lat['alerts_matched']:,} {lat.get('sink', 'alerts')} records, "
                      f"{lat['missing']:,} missing; CPU idle {cpu.get('idle_share', 0):.0%}, "
                      f"worker {cpu.get('worker_cpu_seconds', 0):.1f} CPU-s; target p99 <= 50 ms")
            alert = lat.get("alert")
            if alert:
                t.add_row("  to the alert", _ms(alert), f"{alert['alerts']:,} alerts")
            ceiling = lat.get("ceiling")
            for key, label in (("ceiling", "  two bare aiokafka hops"),
                               ("faust_ceiling", "  two bare Faust agents")):
                floor = lat.get(key)
                if floor and floor.get("sent"):
                    t.add_row(label, _ms(floor),
                              f"{floor['achieved_rate']:,.0f}/s for {floor['offered_seconds']:.0f} s, "
                              f"{floor['missing']:,} missing; CPU idle "
                              f"{(floor.get('cpu') or {}).get('idle_share', 0):.0%}")
        else:
            t.add_row("latency", "no alert", f"{lat['sent']:,} sent")
    for phase in PHASE_NAMES:
        error = (results.get(phase) or {}).get("error")
        if error:
            t.add_row(phase, "[red]failed[/]", error)
    for row in (results.get("memory") or {}).get("runs", []):
        t.add_row(f"memory, {row['accounts']:,} accounts",
                  f"{row['bytes_per_account']:,.0f} B/account",
                  f"{row['tx_per_account']} tx each; RSS {row['rss_before_bytes'] / 2**20:.0f} -> "
                  f"{row['rss_after_bytes'] / 2**20:.0f} MiB; target <= 2 KB at ~100 tx/account")
    sc = results.get("scaleout")
    if sc and "error" not in sc:
        for run in sc["runs"]:
            t.add_row(f"{run['workers']} worker(s)", _rate(run["events_per_second"]),
                      f"{sc['n']:,} transactions, per worker {run['per_worker']}, "
                      f"{run['cpu_seconds_per_1000']:.2f} CPU-s per 1,000")
        for name, r in sc["ratios"].items():
            t.add_row(name.replace("_", " "), f"{r['throughput']:.2f}x",
                      f"CPU-s per 1,000 x{r['cpu_seconds_per_1000']:.2f}; "
                      "targets >= 1.6x (2 vs 1), CPU within 10 %")
    return t


@cli.command(epilog=settings_epilog("KAFKA_BROKER_URL", "REDIS_URL", "TANSU_BIN"))
def bench(
    n: int = typer.Option(200_000, "--n", min=1, help="Transactions of the throughput topic."),
    rate: float = typer.Option(2_000.0, min=1.0, help="Latency phase: offered transactions/s."),
    duration: float = typer.Option(120.0, min=1.0, help="Latency phase: measured seconds of load."),
    warmup: float = typer.Option(
        30.0, min=0.0, help="Latency phase: seconds of load before the measured window."
    ),
    ceiling_seconds: float = typer.Option(
        30.0, min=0.0,
        help="Latency phase: measured seconds of the same rate through two bare aiokafka "
        "hops (the floor); 0: not run.",
    ),
    scaleout_workers: str = typer.Option(
        "1,2,4", help="Scale-out phase: comma-separated numbers of workers (first: reference)."
    ),
    latency_sink: str = typer.Option(
        "alerts",
        help="Latency phase: 'alerts' (ALERT_THRESHOLD=0, every transaction alerts) or "
        "'scored' (the model's threshold; latency to the scored-transactions record).",
    ),
    memory_accounts: str = typer.Option(
        "100000,1000000", help="Memory phase: comma-separated numbers of accounts."
    ),
    tx_per_account: int = typer.Option(3, min=1, help="Memory phase: transactions per account."),
    phases: str = typer.Option(
        "throughput,latency,memory,scaleout",
        help="Comma-separated phases: throughput, profile, latency, memory, scaleout.",
    ),
    faust_table: bool = typer.Option(
        False,
        help=(
            "Also measure a Faust agent that increments a table entry per event (b2), one "
            "that holds each event in a table and releases it 500 events later (b3), and "
            "the restart of (b) and (b3) to their tables recovered."
        ),
    ),
    profile_seconds: float = typer.Option(20.0, min=1.0, help="py-spy sampling of `profile`."),
    partitions: int = typer.Option(4, min=1, help="Partitions of every topic of the run."),
    data: Optional[Path] = typer.Option(
        None, help="Handbook-format data; default: the shared file, else simulated."
    ),
    broker: Optional[str] = typer.Option(
        None,
        "--broker",
        metavar="kafka|tansu|HOST:PORT",
        help=(
            "kafka: start a one-node Apache Kafka of the run's own (KRaft, from its "
            "jars); tansu: start a Tansu of the run's own (as --own-broker); else a "
            "running broker's host:port or kafka:// URL (default: KAFKA_BROKER_URL). "
            "The results name the broker (\"broker\")."
        ),
        show_default=False,
    ),
    own_broker: bool = typer.Option(
        False, help="Start a Tansu of the run's own on a free port (stopped at the end)."
    ),
    redis_url: Optional[str] = typer.Option(
        None, help=f"Redis of the workers (default: REDIS_URL if set, else {DEFAULT_REDIS_URL})."
    ),
    worker_env: list[str] = typer.Option(
        [], "--worker-env", metavar="KEY=VALUE", help="Extra environment of every worker."
    ),
    poll_interval: float = typer.Option(0.1, min=0.01, help="Seconds between /metrics polls."),
    log_level: str = typer.Option(
        "warn", help="Faust -l of every worker: crit, error, warn, info or debug."
    ),
    results_dir: Optional[Path] = typer.Option(None, help="Default: bench/results/."),
) -> None:
    """Measure throughput (bare aiokafka, bare Faust, the worker), latency at a steady rate
    (and through two bare hops), memory per account and scale-out (throughput and CPU per
    transaction); print a table and write bench/results/<time>.json."""
    from ..stream.stack import redact_url

    harness = _harness()
    from ..stream import stack

    chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
    redis_url = redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    kind = broker if broker in OWN_BROKERS else ("tansu" if own_broker else None)
    own_broker = kind is not None
    broker_url = broker if broker and not kind else get_settings().kafka_broker_url
    if "://" not in broker_url:
        broker_url = f"kafka://{broker_url}"
    check_broker_url(broker_url)
    try:  # every option checked before anything is started
        config = harness.BenchConfig(
            broker_url=broker_url, redis_url=redis_url, n=n, partitions=partitions, data=data,
            rate=rate, duration_s=duration, warmup_s=warmup, ceiling_s=ceiling_seconds,
            latency_sink=latency_sink,
            scaleout_workers=_ints(scaleout_workers, "--scaleout-workers"),
            memory_accounts=_ints(memory_accounts, "--memory-accounts"),
            memory_tx_per_account=tx_per_account, phases=chosen, faust_table=faust_table,
            profile_seconds=profile_seconds, poll_interval_s=poll_interval, log_level=log_level,
            worker_env=_env_pairs(worker_env),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not stack.redis_ping(redis_url):
        fail(f"no Redis answers at {redact_url(redis_url)}: `fraudctl stack up` or --redis-url")
    if not own_broker:
        host_port = broker_url.split("://", 1)[1].split(";")[0].split(",")[0]
        if not stack.kafka_ready(host_port):
            fail(f"no Kafka broker answers at {broker_url}: `fraudctl stack up` or --own-broker")
    started_broker = started_cluster = None
    try:
        if kind == "tansu":
            from bench.procs import free_port

            port = free_port()
            log = PROJECT_ROOT / ".run" / "bench" / f"tansu-{port}.log"
            binary = stack.resolve_tansu_bin(get_settings())
            started_broker = stack.spawn(stack.tansu_command(binary, "127.0.0.1", port), log)
            stack.wait_for_kafka(f"127.0.0.1:{port}", 20.0, process=started_broker)
            config = dataclasses.replace(config, broker_url=f"kafka://127.0.0.1:{port}")
        elif kind == "kafka":
            started_cluster = _start_own_kafka()
            config = dataclasses.replace(config, broker_url=started_cluster.url)
        run = harness.Harness(
            config, say=lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False)
        )
        err_console.print(
            f"bench {run.tag}: broker {config.broker_url}, logs {run.dir}", highlight=False
        )
        results = run.run()
    except StackError as exc:
        fail(str(exc))
    finally:
        if started_broker is not None:
            stack.stop_process(started_broker.pid, 5.0)
        if started_cluster is not None:
            started_cluster.stop()
    results["broker"] = kind or "external"
    out_dir = results_dir or harness.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    console.print(results_table(results))
    console.print(f"results: {out}", highlight=False)
    if any("error" in (results.get(p) or {}) for p in PHASE_NAMES):
        raise typer.Exit(1)

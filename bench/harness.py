"""The performance measurements of the service, run side by side on one broker.

:class:`Harness` ``.run()`` produces transactions to fresh topics and measures:

* **throughput**: from the beginning of one topic of ``n`` transactions, (a) a bare
  aiokafka consume-and-decode loop, (b) a Faust agent that only iterates (optionally
  (b2) one that also increments a table entry per event) and (c) the project's worker;
  events/s of each and the ratios c/a and c/b; and (p) the worker's pipeline functions
  on the same transactions in the harness's own process (:mod:`bench.pure_work`, CPU
  time per transaction), which bounds c/b for any Faust worker doing that work;
* **latency** (steady state): transactions sent at a fixed rate (Kafka timestamp =
  send time), first for a warm-up (not measured: histories fill, batches settle), then
  for the measured window; latency = Kafka timestamp of the output record minus that of
  its transaction, p50/p95/p99/max (nearest rank; a transaction with no output after
  the drain time counts as infinitely late: its percentile is ``None``). The output is
  the alert of a worker that alerts on every one (``ALERT_THRESHOLD=0``), or the
  ``scored-transactions`` record at the model's own threshold, and then also the alerts
  among those transactions. The share of both cores left idle and the worker's CPU time
  over the measured window go with it, and the same load through a bare aiokafka relay
  of two hops (:mod:`bench.two_hop`) and through two bare Faust agents
  (:mod:`bench.bare_faust` with ``BENCH_FAUST_RELAY=1``), the floors of the worker's
  path;
* **memory**: resident memory of a worker before and after it took in the
  transactions of ``accounts`` distinct accounts, per account;
* **scale-out**: 1, 2 and 4 workers (``scaleout_workers``) in one consumer group on
  the same data; throughput and CPU-seconds per 1,000 transactions (summed over the
  workers' processes), each as a ratio to one worker;
* **profile** (optional): py-spy samples of a worker while it processes the topic.

How each number is defined
--------------------------
Workers are black boxes started as subprocesses; the harness reads their
``GET /metrics`` every ``poll_interval_s``. A worker's throughput is ``n / (last -
first)``: ``first`` is the midpoint of the two polls between which its consumed counter
(``fraud_transactions_consumed_total``) left zero, ``last`` the midpoint of the two
polls between which its scored counter (``fraud_transactions_scored_total``, summed
over labels) reached ``n`` (see :func:`bench.procs.wait_for_count`); both within half a
poll interval. The bare Faust app exposes counters read the same way. The bare
aiokafka loop runs in the harness, after it is connected, assigned every partition and
told to seek to the beginning: from its first ``getmany`` call to the decode of its
``n``-th record. Memory, scale-out and latency first "gate" their
workers: probe transactions go to every partition until each worker has consumed
some and all are scored, so group joins and rebalances are over before the measured
records are produced; then the counters are read, and the records are produced (in a
thread) while the harness polls, so the workers consume as the records arrive.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd
import redis

from app.config import PROJECT_ROOT, Settings
from app.replay import ensure_topics

from .clients import bare_aiokafka, paced_latency, topic_records
from .data import load_frame, produce_frame, send_probes, synthetic_accounts_frame
from .procs import (
    BARE_FAUST,
    PROJECT_WORKER,
    TWO_HOP,
    BenchError,
    Throughput,
    WorkerProcess,
    cpu_seconds,
    wait_for_count,
)
from .pure_work import held_value_bytes, pure_work

__all__ = ["BenchConfig", "Harness", "PHASES", "RESULTS_DIR", "WORKER_METRICS"]

#: Every phase, in the order they run.
PHASES = ("throughput", "profile", "latency", "memory", "scaleout")
#: Where results JSON files go by default.
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
#: (consumed, done) counters of the project's worker and of the bare Faust app.
WORKER_METRICS = ("fraud_transactions_consumed_total", "fraud_transactions_scored_total")
FAUST_METRICS = ("bench_events_consumed_total", "bench_events_done_total")
_READY_MARKER = "fraud_model_info"
#: Histograms of the worker whose means over the latency window are reported.
LATENCY_HISTOGRAMS = (
    "fraud_processing_latency_seconds",
    "fraud_alignment_wait_seconds",
    "fraud_scoring_batch_duration_seconds",
)


@dataclass
class BenchConfig:
    """What to measure, and how much.

    Attributes
    ----------
    broker_url : str
        ``kafka://host:port`` of a running broker (Tansu or Kafka).
    redis_url : str
        Redis of the workers; the harness deletes its own keys (``<tag>:*``) at the end.
    n : int, default=200_000
        Transactions of the throughput and scale-out topics.
    partitions : int, default=4
    data : Path, optional
        Handbook-format file; default the shared file, else simulated data.
    rate : float, default=2000
        Offered rate of the latency phase, transactions/s.
    duration_s : float, default=120
        Length of the latency phase's measured load, seconds.
    warmup_s : float, default=30
        Load offered at the same rate before the measured window (not measured), seconds.
    ceiling_s : float, default=30
        Measured seconds of the same load through the bare two-hop relay
        (:mod:`bench.two_hop`, after a warm-up of ``min(warmup_s, 5)``); 0: not run.
    latency_sink : {"alerts", "scored"}, default="alerts"
        ``alerts``: the worker alerts on every transaction (``ALERT_THRESHOLD=0``) and
        latency ends at the alert; ``scored``: the model's own threshold, and latency
        ends at the transaction's record on the scored topic (``PUBLISH_SCORED=true``).
    memory_accounts : tuple of int, default=(100_000, 1_000_000)
    memory_tx_per_account : int, default=3
    scaleout_workers : tuple of int, default=(1, 2, 4)
        Workers of each scale-out run; the first is the reference of the ratios.
    phases : tuple of str
        Subset of :data:`PHASES`; default all but ``profile``.
    faust_table : bool, default=False
        Also measure (b2), a Faust agent that increments a table entry per event.
    profile_seconds : float, default=20
        py-spy sampling time of the ``profile`` phase.
    poll_interval_s : float, default=0.1
    log_level : str, default="warn"
        Faust ``-l`` of every worker. At ``warn`` and above Faust's worker sets the
        root logger to DEBUG for its terminal spinner (handlers stay at the level), so
        every ``log.debug`` call in Faust and aiokafka builds a record; ``info`` does not.
    worker_env : dict of str to str
        Extra environment of every worker (e.g. ``PUBLISH_SCORED=false``).
    work_dir : Path
        Logs and profiles (``<work_dir>/<tag>/``).
    phase_timeout_s : float, default=3600
    """

    broker_url: str
    redis_url: str
    n: int = 200_000
    partitions: int = 4
    data: Path | None = None
    rate: float = 2_000.0
    duration_s: float = 120.0
    warmup_s: float = 30.0
    ceiling_s: float = 30.0
    latency_sink: str = "alerts"
    memory_accounts: tuple[int, ...] = (100_000, 1_000_000)
    memory_tx_per_account: int = 3
    scaleout_workers: tuple[int, ...] = (1, 2, 4)
    phases: tuple[str, ...] = ("throughput", "latency", "memory", "scaleout")
    faust_table: bool = False
    profile_seconds: float = 20.0
    poll_interval_s: float = 0.1
    log_level: str = "warn"
    worker_env: dict[str, str] = field(default_factory=dict)
    work_dir: Path = PROJECT_ROOT / ".run" / "bench"
    phase_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"phases must be among {PHASES}, got {sorted(unknown)}")
        for name in ("n", "partitions", "memory_tx_per_account"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.rate > 0 or not self.duration_s > 0:
            raise ValueError(f"rate and duration_s must be > 0, got {self.rate}, {self.duration_s}")
        if self.log_level not in ("crit", "error", "warn", "info", "debug"):
            raise ValueError(f"log_level must be crit/error/warn/info/debug, got {self.log_level!r}")
        if self.latency_sink not in ("alerts", "scored"):
            raise ValueError(f"latency_sink must be 'alerts' or 'scored', got {self.latency_sink!r}")
        if self.warmup_s < 0 or self.ceiling_s < 0:
            raise ValueError(f"warmup_s and ceiling_s must be >= 0, got {self.warmup_s}, {self.ceiling_s}")
        if not self.scaleout_workers or min(self.scaleout_workers) < 1:
            raise ValueError(f"scaleout_workers must be >= 1, got {self.scaleout_workers}")
        if any(a < 1 for a in self.memory_accounts):
            raise ValueError(f"memory_accounts must be >= 1, got {self.memory_accounts}")


def _throughput_dict(t: Throughput) -> dict:
    return {
        "events": t.events,
        "counted": t.counted,
        "seconds": round(t.seconds, 3),
        "events_per_second": round(t.events_per_second, 1),
        "poll_interval_s": t.poll_interval_s,
        "cpu_seconds": round(t.cpu_seconds, 2),
        "events_per_cpu_second": round(t.events_per_cpu_second, 1),
        "per_worker": [int(x) for x in t.per_worker],
    }


def machine_info() -> dict:
    """CPUs, memory, Python and load of this machine."""
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


class Harness:
    """Runs the phases of a :class:`BenchConfig` and collects their results.

    Parameters
    ----------
    config : BenchConfig
    say : callable(str), optional
        Progress messages (one line each).
    """

    def __init__(self, config: BenchConfig, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say or (lambda _msg: None)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.tag = f"bench-{stamp}-{secrets.token_hex(2)}"
        self.dir = config.work_dir / self.tag
        self._workers: list[WorkerProcess] = []
        self._frame: pd.DataFrame | None = None
        self._source = ""
        self._probes_sent = 0

    # --- settings and processes ---------------------------------------------------

    def settings(self, run: str) -> Settings:
        """Settings of run ``run``: its own topics on the configured broker."""
        name = f"{self.tag}-{run}"
        return Settings(
            kafka_broker_url=self.config.broker_url,
            topic_partitions=self.config.partitions,
            transactions_topic=f"{name}-tx",
            alerts_topic=f"{name}-alerts",
            scored_topic=f"{name}-scored",
            labels_topic=f"{name}-labels",
            dead_letter_topic=f"{name}-dlq",
            app_id=name,
        )

    def _env(self, settings: Settings, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BROKER_URL=settings.kafka_broker_url,
            TOPIC_PARTITIONS=str(settings.topic_partitions),
            APP_ID=settings.app_id,
            TRANSACTIONS_TOPIC=settings.transactions_topic,
            ALERTS_TOPIC=settings.alerts_topic,
            SCORED_TOPIC=settings.scored_topic,
            LABELS_TOPIC=settings.labels_topic,
            DEAD_LETTER_TOPIC=settings.dead_letter_topic,
            CONTROL_TOPIC=f"{self.tag}-fraud-control",
            RULES_TOPIC=f"{self.tag}-fraud-rules",
            REDIS_URL=self.config.redis_url,
            # per phase: a transaction alerted in one phase must not be suppressed in the
            # next (the phases replay the same transactions)
            REDIS_KEY_PREFIX=f"{self.tag}:{settings.app_id}:",
            DATA_DIR=str(self.dir / settings.app_id),
            RUN_DIR=str(self.dir / "run"),
        )
        env.update(self.config.worker_env)
        env.update(extra)
        return env

    def _start(
        self, settings: Settings, argv: tuple[str, ...], name: str, **extra: str
    ) -> WorkerProcess:
        self._create_topics(settings)
        worker = WorkerProcess(
            name=name,
            argv=(*argv, "-l", self.config.log_level),
            env=self._env(settings, **extra),
            log_path=self.dir / f"{name}.log",
        ).start()
        self._workers.append(worker)
        return worker

    def _stop(self, *workers: WorkerProcess) -> None:
        for w in workers:
            w.stop()
            if w in self._workers:
                self._workers.remove(w)

    def _create_topics(self, s: Settings) -> None:
        names = [s.transactions_topic, s.alerts_topic, s.scored_topic, s.labels_topic,
                 s.dead_letter_topic]
        asyncio.run(ensure_topics(s, names))

    def close(self) -> None:
        """Stop every worker still running and delete the run's Redis keys."""
        self._stop(*list(self._workers))
        try:
            client = redis.Redis.from_url(self.config.redis_url, socket_timeout=5)
            keys = list(client.scan_iter(match=f"{self.tag}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
            client.close()
        except redis.RedisError:
            pass

    # --- data ---------------------------------------------------------------------

    def frame(self) -> pd.DataFrame:
        """The transactions of the run (loaded once): enough for throughput and latency."""
        if self._frame is None:
            c = self.config
            wanted = c.n
            if "latency" in c.phases:
                wanted = max(wanted, int(c.rate * (c.warmup_s + c.duration_s)) + 1)
            self._frame, self._source = load_frame(wanted, c.data)
        return self._frame

    def _produce(self, df: pd.DataFrame, settings: Settings) -> dict:
        self._create_topics(settings)
        seconds = asyncio.run(produce_frame(df, settings))
        return {"transactions": len(df), "seconds": round(seconds, 3),
                "per_second": round(len(df) / seconds, 1) if seconds else None}

    def _produce_and_count(
        self, df: pd.DataFrame, settings: Settings, workers: list[WorkerProcess],
        poll_interval_s: float,
    ) -> tuple[dict, Throughput]:
        """Produce ``df`` (in a thread) while counting what ``workers`` score of it."""
        outcome: dict = {}

        def produce() -> None:
            try:
                outcome["produced"] = self._produce(df, settings)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                outcome["error"] = exc

        thread = threading.Thread(target=produce, name="bench-producer", daemon=True)
        t = wait_for_count(
            workers, len(df), consumed_metric=WORKER_METRICS[0], done_metric=WORKER_METRICS[1],
            poll_interval_s=poll_interval_s, timeout_s=self.config.phase_timeout_s,
            on_start=thread.start,
        )
        thread.join(60)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("produced", {}), t

    def _gate(self, workers: list[WorkerProcess], settings: Settings, timeout_s: float = 180.0,
              metrics: tuple[str, str] = WORKER_METRICS):
        """Send probes to every partition until each worker consumed some and all probes
        are scored (``metrics``: the consumed and done counters): the workers have
        joined, been assigned partitions and caught up."""
        consumed_name, done_name = metrics
        event_ms = int(self.frame()["TX_DATETIME"].iloc[0].value // 1_000_000)
        deadline = time.monotonic() + timeout_s
        sent_here = 0
        while time.monotonic() < deadline:
            n = asyncio.run(send_probes(settings, self.tag, self._probes_sent, event_ms))
            self._probes_sent += n
            sent_here += n
            wait_until = time.monotonic() + 2.0
            while time.monotonic() < wait_until:
                time.sleep(0.2)
                metrics = []
                for w in workers:
                    w.check_alive()
                    try:
                        metrics.append(w.metrics())
                    except OSError:
                        metrics.append({})
                consumed_each = [m.get(consumed_name, 0.0) for m in metrics]
                done = sum(m.get(done_name, 0.0) for m in metrics)
                if all(c > 0 for c in consumed_each) and done >= sent_here:
                    return
        raise BenchError(f"workers not all consuming after {timeout_s:.0f} s of probes")

    # --- phases -------------------------------------------------------------------

    def run(self) -> dict:
        """Run the configured phases; the results.

        A phase that fails has an ``error`` (type and message) instead of its numbers,
        and the next phases still run.
        """
        c = self.config
        results: dict = {
            "tag": self.tag,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(c).items()
                       if k not in ("redis_url",)},
        }
        try:
            self.frame()
            results["data"] = {"source": self._source, "rows_loaded": len(self.frame())}
            for phase in PHASES:
                if phase not in c.phases:
                    continue
                self.say(f"phase {phase}")
                load_before = os.getloadavg()[0]
                started = time.perf_counter()
                try:
                    out = getattr(self, f"_phase_{phase}")()
                except Exception as exc:  # noqa: BLE001 - record it, go on with the others
                    self.say(f"phase {phase} failed: {exc}")
                    out = {"error": f"{type(exc).__name__}: {exc}"}
                out["wall_seconds"] = round(time.perf_counter() - started, 1)
                out["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                results[phase] = out
        finally:
            self.close()
            results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return results

    def _throughput_topic(self) -> Settings:
        return self.settings("tp")

    def _phase_throughput(self) -> dict:
        c = self.config
        s = self._throughput_topic()
        df = self.frame().head(c.n)
        out: dict = {"n": len(df), "topic": s.transactions_topic}
        self.say(f"producing {len(df):,} transactions to {s.transactions_topic}")
        out["produce"] = self._produce(df, s)
        self._throughput_produced = True

        self.say("(a) bare aiokafka consume + orjson decode")
        out["bare_aiokafka"] = asyncio.run(bare_aiokafka(s, len(df), c.phase_timeout_s))

        runs = [("bare_faust", BARE_FAUST, FAUST_METRICS, {"BENCH_FAUST_TABLE": "0"})]
        if c.faust_table:
            runs.append(("faust_table", BARE_FAUST, FAUST_METRICS, {"BENCH_FAUST_TABLE": "1"}))
            hold_bytes = held_value_bytes(df)
            hold_env = {"BENCH_FAUST_TABLE": "hold", "BENCH_HOLD_VALUE_BYTES": str(hold_bytes)}
            runs.append(("faust_hold", BARE_FAUST, FAUST_METRICS, hold_env))
        runs.append(("worker", PROJECT_WORKER, WORKER_METRICS, {}))
        labels = {"bare_faust": "b", "faust_table": "b2", "faust_hold": "b3", "worker": "c"}
        for name, argv, (consumed, done), extra in runs:
            self.say(f"({labels[name]}) {name}")
            run = s.model_copy(update={"app_id": f"{self.tag}-tp-{name}"})
            w = self._start(run, argv, f"tp-{name}", **extra)
            try:
                t = wait_for_count(
                    [w], len(df), consumed_metric=consumed, done_metric=done,
                    poll_interval_s=c.poll_interval_s, timeout_s=c.phase_timeout_s,
                    from_zero=True,
                )
                out[name] = _throughput_dict(t)
                out[name]["rss_bytes"] = w.rss_bytes()
            finally:
                self._stop(w)
        if c.faust_table:
            out["faust_hold"]["value_bytes"] = hold_bytes
            for name, extra in (("bare_faust", {"BENCH_FAUST_TABLE": "0"}),
                                ("faust_hold", hold_env)):
                self.say(f"restart of {name}: start to tables recovered")
                out[name]["restart"] = self._restart(s, name, extra)
        self.say("(p) pure work: the worker's pipeline functions in this process")
        out["pure_work"] = pure_work(df, s)
        a = out["bare_aiokafka"]["events_per_second"]
        b = out["bare_faust"]["events_per_second"]
        worker = out["worker"]["events_per_second"]
        out["ratios"] = {"c_over_a": round(worker / a, 4), "c_over_b": round(worker / b, 4)}
        # a Faust worker that does (p) spends at least 1/b + p seconds per transaction
        # (one Faust event each: the scoring stage's events are micro-batches of many)
        pure = out["pure_work"]["runs"][0]["us_per_transaction"] / 1e6
        out["ratios"]["c_over_b_ceiling"] = round((1 / b) / (1 / b + pure), 6)
        cpu_b, cpu_c = (out[k].get("events_per_cpu_second") for k in ("bare_faust", "worker"))
        if cpu_b and cpu_c:
            out["ratios"]["c_over_b_per_cpu_second"] = round(cpu_c / cpu_b, 4)
            # the same in CPU time, as (p) is measured
            out["ratios"]["c_over_b_ceiling_per_cpu_second"] = round(
                (1 / cpu_b) / (1 / cpu_b + pure), 6)
            cpu_h = out.get("faust_hold", {}).get("events_per_cpu_second")
            if cpu_h:
                # holding each transaction in a changelogged table (b3 - b per event),
                # added to the worker's own CPU per transaction
                hold = 1 / cpu_h - 1 / cpu_b
                out["ratios"]["held_table_us_per_event"] = round(hold * 1e6, 1)
                out["ratios"]["c_over_b_with_held_table_per_cpu_second"] = round(
                    (1 / (1 / cpu_c + hold)) / cpu_b, 4)
        return out

    def _restart(self, s: Settings, name: str, extra: dict[str, str]) -> dict:
        """Start the bare Faust app of run ``name`` again (same group, same tables, its
        input all committed): seconds from its start to the end of its table recovery,
        and the records of its hold table's changelog it had to read."""
        run = s.model_copy(update={"app_id": f"{self.tag}-tp-{name}"})
        records = None
        if extra.get("BENCH_FAUST_TABLE") == "hold":
            records = asyncio.run(topic_records(run, f"{run.app_id}-bench_held-changelog"))
        w = self._start(run, BARE_FAUST, f"tp-{name}-restart", **extra)
        try:
            deadline = time.monotonic() + self.config.phase_timeout_s
            while True:
                w.check_alive()
                try:
                    got = w.metrics()
                except OSError:
                    got = {}
                if "bench_recovered_seconds" in got:
                    cpu = cpu_seconds(w.pid)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} restart: tables not recovered")
                time.sleep(0.1)
        finally:
            self._stop(w)
        return {"recovered_seconds": round(got["bench_recovered_seconds"], 3),
                "cpu_seconds": round(cpu, 2),
                "held_entries": int(got.get("bench_held_entries", 0)),
                "changelog_records": records}

    def _phase_profile(self) -> dict:
        from .profiling import record, top_entries

        c = self.config
        s = self._throughput_topic()
        if not getattr(self, "_throughput_produced", False):
            self._produce(self.frame().head(c.n), s)
            self._throughput_produced = True
        run = s.model_copy(update={"app_id": f"{self.tag}-profile"})
        w = self._start(run, PROJECT_WORKER, "profile-worker")
        try:
            deadline = time.monotonic() + 300
            while True:  # profile from the first record consumed
                w.check_alive()
                try:
                    if w.metrics().get(WORKER_METRICS[0], 0) > 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError("profiled worker consumed nothing in 300 s")
                time.sleep(0.1)
            path = self.dir / "profile-worker.raw.txt"
            self.say(f"py-spy on pid {w.pid} for {c.profile_seconds:.0f} s -> {path}")
            before = w.metrics().get(WORKER_METRICS[1], 0.0)
            record(w.pid, c.profile_seconds, path)
            after = w.metrics().get(WORKER_METRICS[1], 0.0)
        finally:
            self._stop(w)
        top = top_entries(path.read_text())
        top.update(raw_path=str(path), seconds=c.profile_seconds,
                   scored_while_sampled=int(after - before))
        return top

    def _phase_latency(self) -> dict:
        c = self.config
        s = self.settings("lat")
        if c.latency_sink == "alerts":
            extra, sink_topic, alerts = {"ALERT_THRESHOLD": "0.0"}, s.alerts_topic, None
        else:
            extra, sink_topic, alerts = {"PUBLISH_SCORED": "true"}, s.scored_topic, s.alerts_topic
        w = self._start(s, PROJECT_WORKER, "lat-worker", **extra)
        try:
            w.wait_ready(_READY_MARKER)
            self._gate([w], s)
            df = self.frame().head(int(c.rate * (c.warmup_s + c.duration_s)) + 1)
            self.say(f"offering {c.rate:,.0f} transactions/s: {c.warmup_s:.0f} s warm-up, "
                     f"{c.duration_s:.0f} s measured")
            out = asyncio.run(paced_latency(
                s, sink_topic, df, c.rate, c.duration_s, w, warmup_s=c.warmup_s,
                alerts_topic=alerts, histograms=LATENCY_HISTOGRAMS,
            ))
            out["sink"] = c.latency_sink
        finally:
            self._stop(w)
        if c.ceiling_s > 0:
            out["ceiling"] = self._two_hop_ceiling()
            out["faust_ceiling"] = self._faust_two_hop_ceiling()
        return out

    def _faust_two_hop_ceiling(self) -> dict:
        """The same rate through two bare Faust agents (``bench.bare_faust`` with
        ``BENCH_FAUST_RELAY=1``): the Faust floor of the worker's path."""
        return self._relay_floor(
            "fhop", BARE_FAUST, "Faust two-agent relay",
            "bare Faust relay, two agents (bench/bare_faust.py, BENCH_FAUST_RELAY=1)",
            # joined, assigned, caught up
            lambda relay, s: self._gate([relay], s, metrics=FAUST_METRICS),
            BENCH_FAUST_RELAY="1",
        )

    def _two_hop_ceiling(self) -> dict:
        """The same rate through :mod:`bench.two_hop` (two bare aiokafka hops)."""

        def connected(relay: WorkerProcess, _s: Settings) -> None:
            time.sleep(2.0)  # connected and assigned; a later start only delays the warm-up
            relay.check_alive()

        return self._relay_floor(
            "hop", TWO_HOP, "two-hop relay", "bare aiokafka relay, two hops (bench/two_hop.py)",
            connected,
        )

    def _relay_floor(self, tag: str, argv: tuple[str, ...], label: str, what: str,
                     ready, **extra: str) -> dict:
        """The latency phase's rate through a relay process (``argv``) for ``ceiling_s``
        after a warm-up of ``min(warmup_s, 5)``, once ``ready(relay, settings)`` returned."""
        c = self.config
        s = self.settings(tag)
        warmup = min(c.warmup_s, 5.0)
        relay = self._start(s, argv, label.replace(" ", "-"), **extra)
        try:
            ready(relay, s)
            df = self.frame().head(int(c.rate * (warmup + c.ceiling_s)) + 1)
            self.say(f"{label} at {c.rate:,.0f}/s: {warmup:.0f} s warm-up, "
                     f"{c.ceiling_s:.0f} s measured")
            out = asyncio.run(paced_latency(
                s, s.scored_topic, df, c.rate, c.ceiling_s, relay, warmup_s=warmup
            ))
        finally:
            self._stop(relay)
        out["what"] = what
        return out

    def _phase_memory(self) -> dict:
        c = self.config
        rows = []
        for accounts in c.memory_accounts:
            s = self.settings(f"mem{accounts}")
            df = synthetic_accounts_frame(accounts, c.memory_tx_per_account)
            w = self._start(s, PROJECT_WORKER, f"mem{accounts}-worker")
            try:
                w.wait_ready(_READY_MARKER)
                self._gate([w], s)
                time.sleep(1.0)
                rss_before = w.rss_bytes()
                self.say(f"{accounts:,} accounts x {c.memory_tx_per_account}: "
                         f"producing {len(df):,} transactions")
                produced, t = self._produce_and_count(
                    df, s, [w], max(c.poll_interval_s, 0.5)
                )
                time.sleep(2.0)
                rss_after = w.rss_bytes()
                metrics = w.metrics()
            finally:
                self._stop(w)
            state_gauges = {k: v for k, v in metrics.items()
                            if k.startswith(("fraud_table_", "fraud_state_"))}
            rows.append({
                "accounts": accounts,
                "tx_per_account": c.memory_tx_per_account,
                "transactions": len(df),
                "rss_before_bytes": rss_before,
                "rss_after_bytes": rss_after,
                "bytes_per_account": round((rss_after - rss_before) / accounts, 1),
                "state_gauges": state_gauges,
                "produce": produced,
                "throughput": _throughput_dict(t),
            })
        return {"runs": rows}

    def _phase_scaleout(self) -> dict:
        c = self.config
        df = self.frame().head(c.n)
        runs = []
        for k in c.scaleout_workers:
            s = self.settings(f"scale{k}")
            workers = [self._start(s, PROJECT_WORKER, f"scale{k}-worker{i}") for i in range(k)]
            try:
                for w in workers:
                    w.wait_ready(_READY_MARKER)
                self._gate(workers, s)
                self.say(f"{k} worker(s): producing {len(df):,} transactions")
                produced, t = self._produce_and_count(df, s, workers, c.poll_interval_s)
            finally:
                self._stop(*workers)
            run = {"workers": k} | _throughput_dict(t) | {"produce": produced}
            run["cpu_seconds_per_1000"] = round(1000 * t.cpu_seconds / len(df), 4)
            runs.append(run)
        ref = runs[0]
        ratios = {}
        for run in runs[1:]:
            ratios[f"{run['workers']}_vs_{ref['workers']}"] = {
                "throughput": round(run["events_per_second"] / ref["events_per_second"], 4),
                "cpu_seconds_per_1000": round(
                    run["cpu_seconds_per_1000"] / ref["cpu_seconds_per_1000"], 4
                ),
            }
        return {"n": len(df), "runs": runs, "ratios": ratios}

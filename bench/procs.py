"""Worker processes started by the harness, and what their ``/metrics`` say.

A :class:`WorkerProcess` is ``python -m app worker`` (the project's worker) or
``python -m bench.bare_faust worker`` (the reference app) in its own session, with its
settings in the environment; the harness only reads its ``GET /metrics`` and its
resident memory. :func:`wait_for_count` turns counter readings into a throughput.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.config import PROJECT_ROOT
from app.exceptions import FraudError

__all__ = [
    "BenchError",
    "WorkerProcess",
    "Throughput",
    "free_port",
    "rss_bytes",
    "cpu_seconds",
    "system_cpu_ticks",
    "idle_share",
    "wait_for_count",
    "PROJECT_WORKER",
    "BARE_FAUST",
    "TWO_HOP",
]

#: Command of the project's worker (after ``python``; the harness appends ``-l LEVEL``).
PROJECT_WORKER = ("-m", "app", "worker")
#: Command of the reference Faust app (after ``python``; the harness appends ``-l LEVEL``).
BARE_FAUST = ("-m", "bench.bare_faust", "worker")
#: Command of the bare two-hop relay of the latency phase (:mod:`bench.two_hop`).
TWO_HOP = ("-m", "bench.two_hop")


class BenchError(FraudError):
    """A measurement could not be made (a worker died, a count was not reached...)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process ``pid`` has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all cores so far, from the ``cpu`` line of ``/proc/stat``.

    Idle counts ``idle`` and ``iowait``; total every field up to ``steal`` (guest time is
    already in ``user``).
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of the CPU time of all cores left idle between two :func:`system_cpu_ticks`.

    >>> idle_share((100, 400), (150, 600))
    0.25
    >>> idle_share((1, 2), (1, 2)) is None
    True
    """
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 4) if total > 0 else None


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` of ``/proc/<pid>/status``), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass
class WorkerProcess:
    """One worker subprocess of the harness.

    Parameters
    ----------
    name : str
        For logs and messages.
    argv : tuple of str
        Arguments after the Python interpreter (:data:`PROJECT_WORKER`, :data:`BARE_FAUST`).
    env : dict of str to str
        Its whole environment; ``WEB_PORT`` is set to :attr:`web_port`.
    log_path : Path
        Its stdout and stderr.
    """

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        """Start it (own session, so it and its children can be stopped together)."""
        self.env = {**self.env, "WEB_PORT": str(self.web_port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.argv],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """Its process id (after :meth:`start`)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise :class:`BenchError` with the end of its log if it has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.name} exited ({code}); log {self.log_path}: {self.tail()}")

    def metrics(self, timeout_seconds: float = 2.0) -> dict[str, float]:
        """Every sample of its ``/metrics``, summed over labels, by sample name."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    def wait_ready(self, marker: str | None, timeout_seconds: float = 180.0) -> None:
        """Wait until ``/metrics`` answers (and holds a sample named ``marker``)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                got = self.metrics()
                if marker is None or marker in got:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise BenchError(f"{self.name} not ready after {timeout_seconds:.0f} s: {self.tail()}")

    def rss_bytes(self) -> int:
        """Its resident memory now, in bytes."""
        return rss_bytes(self.pid)

    def tail(self, n_bytes: int = 1500) -> str:
        """The end of its log, on one line."""
        try:
            text = self.log_path.read_bytes()[-n_bytes:].decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines() if line.strip())

    def stop(self, timeout_seconds: float = 30.0) -> None:
        """SIGTERM its process group, SIGKILL after ``timeout_seconds``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout_seconds)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass(frozen=True)
class Throughput:
    """Events counted by workers between two counter readings.

    ``first_s`` is the midpoint of the two polls between which the *consumed* counter
    (summed over the workers) left its starting value, ``last_s`` the midpoint of the
    two polls between which the *done* counter reached ``start + events``; both are
    known to within half a poll interval.

    Attributes
    ----------
    events : int
        The events awaited (the records in the topic); the rate's numerator.
    counted : int
        Increase of the done counter (more than ``events`` if some were redelivered).
    first_s, last_s : float
        ``time.perf_counter()`` values, in seconds.
    poll_interval_s : float
    per_worker : list of float
        Each worker's increase of the done counter.
    cpu_seconds : float
        CPU time the workers used between the poll before ``first_s`` and the poll
        after ``last_s`` (on a shared machine, ``events / cpu_seconds`` is steadier
        than the wall-clock rate).
    """

    events: int
    counted: int
    first_s: float
    last_s: float
    poll_interval_s: float
    per_worker: list[float]
    cpu_seconds: float = float("nan")

    @property
    def events_per_cpu_second(self) -> float:
        """``events / cpu_seconds``."""
        return self.events / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

    @property
    def seconds(self) -> float:
        """``last_s - first_s``."""
        return self.last_s - self.first_s

    @property
    def events_per_second(self) -> float:
        """``events / seconds``."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def _sums(
    workers: list[WorkerProcess], consumed: str, done: str, unreachable_is_zero: bool
) -> tuple[float, float, list[float]]:
    c = d = 0.0
    each = []
    for w in workers:
        w.check_alive()
        try:
            m = w.metrics()
        except OSError:
            if not unreachable_is_zero:
                raise
            m = {}
        c += m.get(consumed, m.get(done, 0.0))
        each.append(m.get(done, 0.0))
        d += each[-1]
    return c, d, each


def wait_for_count(
    workers: list[WorkerProcess],
    events: int,
    *,
    consumed_metric: str,
    done_metric: str,
    poll_interval_s: float = 0.1,
    timeout_s: float = 3600.0,
    from_zero: bool = False,
    on_start=None,
    on_poll=None,
) -> Throughput:
    """Poll ``workers`` until their ``done_metric`` rose by ``events``; the throughput.

    Parameters
    ----------
    workers : list of WorkerProcess
        Their counters are summed.
    events : int
        Increase of ``done_metric`` awaited, over its value at the first poll.
    consumed_metric, done_metric : str
        Sample names (a counter's ``..._total``); a missing ``consumed_metric`` falls
        back to ``done_metric``.
    poll_interval_s : float, default=0.1
    timeout_s : float, default=3600
    from_zero : bool, default=False
        Count from zero rather than from the first poll, and read a worker whose
        ``/metrics`` does not answer yet as zero: for workers just started on a topic
        that already holds the events (they may start consuming before any poll).
    on_start : callable(), optional
        Called once the starting values are read, e.g. to start producing the events.
    on_poll : callable(done_so_far), optional
        Progress callback.

    Raises
    ------
    BenchError
        If a worker exits or the count is not reached within ``timeout_s``.
    """
    if from_zero:
        c0, d0, each0 = 0.0, 0.0, [0.0] * len(workers)
    else:
        c0, d0, each0 = _sums(workers, consumed_metric, done_metric, False)
    if on_start is not None:
        on_start()

    def cpu() -> float:
        return sum(cpu_seconds(w.pid) for w in workers)

    prev = time.perf_counter()
    prev_cpu = cpu0 = cpu()
    first = None
    deadline = prev + timeout_s
    while True:
        time.sleep(poll_interval_s)
        c, d, each = _sums(workers, consumed_metric, done_metric, from_zero)
        now = time.perf_counter()
        now_cpu = cpu()
        if first is None and c > c0:
            first = (prev + now) / 2
            cpu0 = prev_cpu
        if on_poll is not None:
            on_poll(d - d0)
        if d - d0 >= events:
            last = (prev + now) / 2
            return Throughput(
                events=events,
                counted=int(d - d0),
                first_s=first if first is not None else last,
                last_s=last,
                poll_interval_s=poll_interval_s,
                per_worker=[b - a for a, b in zip(each0, each)],
                cpu_seconds=now_cpu - cpu0,
            )
        if now > deadline:
            raise BenchError(
                f"{done_metric} rose by {d - d0:.0f} of {events} in {timeout_s:.0f} s"
            )
        prev, prev_cpu = now, now_cpu

"""What ``fraudctl demo`` measures on its live phase, and its picture (pure: no Kafka).

The demo collects, for each transaction it streams live, its send time (the Kafka
timestamp of its ``transactions`` record), the broker timestamps of its
``scored-transactions`` record and of its alert, and its ground truth (``TX_FRAUD``,
what its label says seven days later). :class:`LiveRun` holds them;
:meth:`LiveRun.figures` gives latency quantiles, precision, recall and throughput;
:func:`write_picture` draws alerts and frauds per hour, the latency distribution,
precision and recall over time, and scored transactions per second.

Examples
--------
>>> run = LiveRun(truth={"a": True, "b": False, "c": True},
...               event_hour={"a": 0, "b": 0, "c": 1})
>>> for tid, sent in (("a", 1000), ("b", 1010), ("c", 1020)):
...     run.sent(tid, sent)
>>> for tid, at in (("a", 1050), ("b", 1030), ("c", 1120)):
...     run.scored(tid, at)
>>> run.alerted("a", 1060); run.alerted("b", 1040)
>>> f = run.figures()
>>> f.scored, f.alerts, f.true_alerts, f.frauds
(3, 2, 1, 2)
>>> f.precision, f.recall, f.scored_ms_p50
(0.5, 0.5, 50.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LiveRun", "LiveFigures", "quantile_ms", "write_picture"]


def quantile_ms(latencies_ms: list[float], q: float) -> float:
    """Quantile ``q`` (in [0, 1]) of latencies in ms, ``nan`` when there are none.

    Raises
    ------
    ValueError
        ``q`` outside [0, 1].
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if not latencies_ms:
        return math.nan
    return float(np.quantile(np.asarray(latencies_ms, dtype=float), q))


@dataclass(frozen=True)
class LiveFigures:
    """The live phase's figures. Latencies in ms, throughput in transactions/s;
    precision and recall ``nan`` when undefined."""

    sent: int
    scored: int
    alerts: int
    true_alerts: int
    frauds: int
    precision: float
    recall: float
    scored_ms_p50: float
    scored_ms_p99: float
    alert_ms_p50: float
    alert_ms_p99: float
    throughput_per_second: float


@dataclass
class LiveRun:
    """Observations of the live phase, by transaction id.

    Parameters
    ----------
    truth : dict of str to bool
        Transaction id -> fraud (``TX_FRAUD``), for every transaction streamed live.
    event_hour : dict of str to int
        Transaction id -> hours since the first live hour (event time).
    """

    truth: dict[str, bool]
    event_hour: dict[str, int]
    sent_ms: dict[str, int] = field(default_factory=dict)
    scored_ms: dict[str, int] = field(default_factory=dict)
    alert_ms: dict[str, int] = field(default_factory=dict)

    def sent(self, transaction_id: str, timestamp_ms: int) -> None:
        """Its ``transactions`` record's Kafka timestamp (the send time)."""
        if transaction_id in self.truth:
            self.sent_ms.setdefault(transaction_id, timestamp_ms)

    def scored(self, transaction_id: str, timestamp_ms: int) -> None:
        """Its ``scored-transactions`` record's broker timestamp (first one kept)."""
        if transaction_id in self.truth:
            self.scored_ms.setdefault(transaction_id, timestamp_ms)

    def alerted(self, transaction_id: str, timestamp_ms: int) -> None:
        """Its ``fraud-alerts`` record's broker timestamp (first one kept)."""
        if transaction_id in self.truth:
            self.alert_ms.setdefault(transaction_id, timestamp_ms)

    def latencies_ms(self, arrived: dict[str, int]) -> list[float]:
        """Arrival (``scored_ms`` or ``alert_ms``) minus send time, where both are known."""
        return [float(t - self.sent_ms[k]) for k, t in arrived.items() if k in self.sent_ms]

    def figures(self) -> LiveFigures:
        """The figures so far (also while the run goes on)."""
        scored_lat = self.latencies_ms(self.scored_ms)
        alert_lat = self.latencies_ms(self.alert_ms)
        true_alerts = sum(1 for k in self.alert_ms if self.truth[k])
        frauds = sum(1 for k in self.sent_ms if self.truth[k])
        alerts = len(self.alert_ms)
        span_ms = (
            max(self.scored_ms.values()) - min(self.sent_ms.values())
            if self.scored_ms and self.sent_ms else 0
        )
        return LiveFigures(
            sent=len(self.sent_ms),
            scored=len(self.scored_ms),
            alerts=alerts,
            true_alerts=true_alerts,
            frauds=frauds,
            precision=true_alerts / alerts if alerts else math.nan,
            recall=true_alerts / frauds if frauds else math.nan,
            scored_ms_p50=quantile_ms(scored_lat, 0.5),
            scored_ms_p99=quantile_ms(scored_lat, 0.99),
            alert_ms_p50=quantile_ms(alert_lat, 0.5),
            alert_ms_p99=quantile_ms(alert_lat, 0.99),
            throughput_per_second=len(self.scored_ms) / (span_ms / 1000) if span_ms > 0 else 0.0,
        )

    def hourly(self) -> dict[str, np.ndarray]:
        """Per event-time hour of the live phase: ``hours``, ``frauds`` (among the
        transactions sent), ``alerts``, ``true_alerts``, and the cumulative
        ``precision`` and ``recall`` up to each hour (``nan`` while undefined)."""
        n = max(self.event_hour.values(), default=-1) + 1
        frauds, alerts, hits = np.zeros(n), np.zeros(n), np.zeros(n)
        for k in self.sent_ms:
            frauds[self.event_hour[k]] += self.truth[k]
        for k in self.alert_ms:
            alerts[self.event_hour[k]] += 1
            hits[self.event_hour[k]] += self.truth[k]
        c_alerts, c_hits, c_frauds = np.cumsum(alerts), np.cumsum(hits), np.cumsum(frauds)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(c_alerts > 0, c_hits / c_alerts, np.nan)
            recall = np.where(c_frauds > 0, c_hits / c_frauds, np.nan)
        return {
            "hours": np.arange(n), "frauds": frauds, "alerts": alerts, "true_alerts": hits,
            "precision": precision, "recall": recall,
        }

    def scored_per_second(self) -> tuple[np.ndarray, np.ndarray]:
        """(seconds since the first send, transactions scored in that second)."""
        if not self.scored_ms or not self.sent_ms:
            return np.zeros(0), np.zeros(0)
        t0 = min(self.sent_ms.values())
        secs = (np.asarray(list(self.scored_ms.values())) - t0) // 1000
        counts = np.bincount(np.maximum(secs, 0).astype(int))
        return np.arange(len(counts)), counts


def write_picture(run: LiveRun, path: Path, title: str) -> Path:
    """Draw the live phase in one PNG (matplotlib, Agg backend).

    Panels: alerts, true alerts and frauds per event-time hour; the latency
    distribution from send to scored record and to alert (ms, log scale); cumulative
    precision and recall of the alerts; transactions scored per second.

    Parameters
    ----------
    run : LiveRun
    path : Path
        Written (its folder is created).
    title : str
        The figure's title.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    f = run.figures()
    h = run.hourly()
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    ax = axes[0][0]
    ax.bar(h["hours"], h["alerts"], width=0.9, color="#f4a582", label="alerts")
    ax.bar(h["hours"], h["true_alerts"], width=0.9, color="#b2182b", label="alerts on frauds")
    ax.plot(h["hours"], h["frauds"], color="black", lw=1.2, label="frauds (labels)")
    ax.set(title="Alerts and frauds per hour (event time)", xlabel="hour of the live days",
           ylabel="transactions")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[0][1]
    lat = {
        "send → scored record": run.latencies_ms(run.scored_ms),
        "send → alert": run.latencies_ms(run.alert_ms),
    }
    values = [v for vs in lat.values() for v in vs]
    if values:
        lo, hi = max(1.0, min(values)), max(values) * 1.05 + 1
        bins = np.geomspace(lo, max(hi, lo * 1.1), 60)
        for (name, vs), color in zip(lat.items(), ("#2166ac", "#b2182b")):
            if vs:
                ax.hist(vs, bins=bins, alpha=0.6, color=color, density=True,
                        label=f"{name}: p50 {quantile_ms(vs, .5):.0f} ms, "
                        f"p99 {quantile_ms(vs, .99):.0f} ms")
        ax.set_xscale("log")
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000,
                             20_000, 50_000, 100_000) if bins[0] <= t <= bins[-1]]
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        for vs, color in zip(lat.values(), ("#2166ac", "#b2182b")):
            for q, style in ((0.5, "--"), (0.99, ":")):
                if vs:
                    ax.axvline(quantile_ms(vs, q), color=color, ls=style, lw=1)
        ax.legend(loc="upper right", fontsize=8)
    ax.set(title="Latency from send, broker timestamps (dashed p50, dotted p99)",
           xlabel="ms (log scale)", ylabel="density")

    ax = axes[1][0]
    ax.plot(h["hours"], h["precision"], color="#b2182b", label=f"precision (end: {f.precision:.3f})")
    ax.plot(h["hours"], h["recall"], color="#2166ac", label=f"recall (end: {f.recall:.3f})")
    ax.set(title="Precision and recall of the alerts, cumulative", xlabel="hour of the live days",
           ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1][1]
    secs, counts = run.scored_per_second()
    ax.plot(secs, counts, color="#4d4d4d", lw=1)
    ax.set(title=f"Throughput: scored per second (mean {f.throughput_per_second:,.0f}/s)",
           xlabel="seconds since the live phase began", ylabel="transactions/s")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

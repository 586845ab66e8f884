"""Every panel query of a dashboard JSON, as Prometheus can evaluate it (pure).

Grafana replaces its variables before sending a query; :func:`expand` does the same for
the ones the dashboards use (``$__rate_interval``, ``$__interval``, ``$__range``), so
the queries can be checked against Prometheus' HTTP API (``fraudctl dashboards verify``
and ``tests/test_observability_prometheus.py``).

Examples
--------
>>> board = {"title": "D", "panels": [
...     {"type": "row", "title": "R", "panels": []},
...     {"type": "stat", "title": "S", "targets": [
...         {"refId": "A", "expr": "sum(rate(x_total[$__rate_interval]))"}]}]}
>>> [(q.dashboard, q.panel, q.ref_id, q.expr) for q in panel_queries(board)]
[('D', 'S', 'A', 'sum(rate(x_total[$__rate_interval]))')]
>>> expand("increase(x[$__range]) / rate(y[$__rate_interval])", rate_interval="30s", range_="10m")
'increase(x[10m]) / rate(y[30s])'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PanelQuery", "panel_queries", "expand", "metric_names", "INCIDENT_ONLY_PANELS"]

#: (dashboard, panel) of the panels that can only show data during an incident: empty
#: is their healthy state (the queries are still checked to be valid PromQL).
INCIDENT_ONLY_PANELS = frozenset({("Fraud operations", "Down worker targets")})
_BARE_METRIC = re.compile(r"\b(fraud_[a-z0-9_]+|up|process_[a-z_]+)\b")


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def name(self) -> str:
        """``dashboard / panel / refId``."""
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows hold theirs


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    """Every Prometheus query of every panel of a dashboard JSON, in panel order.

    Parameters
    ----------
    board : mapping
        A dashboard JSON (the ``dashboard`` object of Grafana's API, or a file of
        ``dashboards/``).

    Returns
    -------
    list of PanelQuery
    """
    title = board.get("title", "")
    out = []
    for panel in _panels(board.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                out.append(
                    PanelQuery(
                        dashboard=title,
                        panel=panel.get("title", ""),
                        ref_id=target.get("refId", ""),
                        expr=target["expr"],
                        instant=bool(target.get("instant")),
                    )
                )
    return out


def expand(expr: str, rate_interval: str = "1m", range_: str = "1h", interval: str = "15s") -> str:
    """``expr`` with Grafana's interval variables replaced by durations.

    Parameters
    ----------
    expr : str
        A panel query.
    rate_interval : str, default="1m"
        For ``$__rate_interval`` (Grafana: at least four scrape intervals).
    range_ : str, default="1h"
        For ``$__range`` (the dashboard's time range).
    interval : str, default="15s"
        For ``$__interval``.

    Raises
    ------
    ValueError
        If another ``$`` variable is left in the query.
    """
    out = (
        expr.replace("$__rate_interval", rate_interval)
        .replace("${__rate_interval}", rate_interval)
        .replace("$__range", range_)
        .replace("${__range}", range_)
        .replace("$__interval", interval)
        .replace("${__interval}", interval)
    )
    if "$" in out:
        raise ValueError(f"unknown variable left in query {out!r}")
    return out


def metric_names(expr: str) -> set[str]:
    """Names of the metrics a query reads (the service's ``fraud_*``, ``up`` and the
    ``process_*`` collector metrics).

    Examples
    --------
    >>> sorted(metric_names('histogram_quantile(0.5, sum by (le) (rate(fraud_score_bucket[1m])))'))
    ['fraud_score_bucket']
    """
    return set(_BARE_METRIC.findall(expr))

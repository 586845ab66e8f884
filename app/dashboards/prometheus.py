"""Evaluate PromQL through Prometheus' HTTP API (``GET /api/v1/query``), standard
library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..exceptions import ObservabilityError

__all__ = ["instant_query"]


def instant_query(base_url: str, expr: str, timeout_seconds: float = 10.0) -> list[dict[str, Any]]:
    """The result of an instant query: Prometheus' ``data.result`` list.

    Parameters
    ----------
    base_url : str
        E.g. ``http://127.0.0.1:9090``.
    expr : str
        PromQL, Grafana variables already expanded.
    timeout_seconds : float, default=10

    Returns
    -------
    list of dict
        One item per series (``metric``, ``value``) for a vector, or one item holding
        the ``value`` of a scalar; empty when the query selects nothing.

    Raises
    ------
    ObservabilityError
        Prometheus is unreachable, or rejects the query (its error is in the message).
    """
    url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400/422: bad query, with a JSON error body
        try:
            body = json.loads(exc.read())
        except ValueError:
            raise ObservabilityError(f"{base_url}: HTTP {exc.code} for {expr!r}") from None
    except (OSError, ValueError) as exc:
        raise ObservabilityError(f"Prometheus at {base_url} unreachable: {exc}") from None
    if body.get("status") != "success":
        raise ObservabilityError(
            f"Prometheus rejected {expr!r}: {body.get('errorType')}: {body.get('error')}"
        )
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"value": data["result"]}]
    return list(data["result"])

"""Upload the dashboards to an existing Grafana with grafana-client.

Grafana's HTTP API (the ``/api`` endpoints of Grafana 9-11, still served by 12):

1. ``GET /api/folders/{uid}``: is the target folder there (404 if not)?
2. ``POST /api/folders`` ``{"uid", "title"}``: create it when missing.
3. ``POST /api/dashboards/db`` ``{"dashboard", "folderUid", "overwrite": true,
   "message"}`` for each dashboard; the dashboard's ``id`` is sent as null so the
   ``uid`` decides which dashboard is replaced.

Authentication is a service-account token (``Authorization: Bearer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from ..exceptions import ObservabilityError

__all__ = ["PushResult", "push_dashboards", "DEFAULT_FOLDER_UID", "DEFAULT_FOLDER_TITLE"]

DEFAULT_FOLDER_UID = "fraud-stream"
DEFAULT_FOLDER_TITLE = "Fraud stream"
_MESSAGE = "fraudctl dashboards push"
_ERRORS = (GrafanaException, niquests.exceptions.RequestException, OSError)


@dataclass(frozen=True)
class PushResult:
    """What Grafana answered for one dashboard."""

    title: str
    uid: str
    url: str
    version: int


def _fail(action: str, url: str, exc: Exception) -> ObservabilityError:
    status = getattr(exc, "status_code", None)
    detail = getattr(exc, "message", None) or str(exc)
    where = f"HTTP {status}: " if status else ""
    return ObservabilityError(f"Grafana at {url}: {action} failed ({where}{detail})")


def push_dashboards(
    url: str,
    token: str,
    dashboards: Mapping[str, Mapping[str, Any]],
    folder_uid: str = DEFAULT_FOLDER_UID,
    folder_title: str = DEFAULT_FOLDER_TITLE,
    timeout_seconds: float = 10.0,
) -> list[PushResult]:
    """Create or replace ``dashboards`` in a folder of the Grafana at ``url``.

    Parameters
    ----------
    url : str
        Grafana's base URL, e.g. ``http://127.0.0.1:3000``.
    token : str
        A service-account token with dashboard and folder write permissions.
    dashboards : mapping of str to dashboard JSON
        E.g. the files of ``dashboards/`` by name.
    folder_uid, folder_title : str
        The folder to put them in; created when missing.
    timeout_seconds : float, default=10

    Returns
    -------
    list of PushResult
        One per dashboard, in order.

    Raises
    ------
    ObservabilityError
        Grafana is unreachable, refuses the token, or rejects a request.
    """
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_seconds)
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise _fail(f"reading folder {folder_uid!r}", url, exc) from None
        try:
            api.folder.create_folder(folder_title, uid=folder_uid)
        except _ERRORS as exc2:
            raise _fail(f"creating folder {folder_uid!r}", url, exc2) from None
    except _ERRORS as exc:
        raise _fail(f"reading folder {folder_uid!r}", url, exc) from None
    results = []
    for board in dashboards.values():
        payload = {
            "dashboard": {**board, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": _MESSAGE,
        }
        try:
            answer = api.dashboard.update_dashboard(payload)
        except _ERRORS as exc:
            raise _fail(f"saving dashboard {board.get('title')!r}", url, exc) from None
        results.append(
            PushResult(
                title=str(board.get("title")),
                uid=str(answer.get("uid")),
                url=str(answer.get("url")),
                version=int(answer.get("version", 0)),
            )
        )
    return results

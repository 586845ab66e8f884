"""The review console: an aiohttp application over a :class:`~app.cases.service.CaseService`.

Pages (HTML; every value from a case is escaped with :func:`html.escape`, so a comment
holding HTML shows as text and never runs):

- ``GET /``: the queue, open cases by risk (highest score first); ``?status=closed|all``.
- ``GET /cases/{case_id}``: one case: its alerted transactions with scores, reasons,
  rules fired and features, its history (the case events), and a form.
- ``POST /cases/{case_id}/actions``: the form's action (confirm, dismiss, reopen,
  assign, comment) with the analyst's name, a comment and the form's idempotency key:
  posting the same form twice records it once. Success answers 303 to the case page;
  a refused request answers 400 (invalid), 404 (unknown case), 409 (conflict) or 413
  (too large a form) with the reason.
- ``GET /metrics`` (Prometheus) and ``GET /healthz``.

There is no login: the console is meant to run behind the organisation's
authenticating proxy (see docs/case-review.md). A post whose ``Origin`` is another site
is refused (403).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..events import MAX_ACTOR_CHARS, MAX_COMMENT_CHARS, Alert
from ..exceptions import BrokerUnavailableError, CaseError, ConfigError, FraudError
from .model import Case, Request, queue
from .service import CaseService

__all__ = ["build_app", "check_bind_address", "MAX_FORM_BYTES"]

log = logging.getLogger(__name__)

#: Largest form body accepted, in bytes (a comment is at most MAX_COMMENT_CHARS).
MAX_FORM_BYTES = 64 * 1024
_RETRY_SECONDS = 2.0
_SERVICE = web.AppKey("service", CaseService)
_STATUS_CODES = {"invalid": 400, "unknown_case": 404, "conflict": 409}
_ANALYST_COOKIE = "review_analyst"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2b4f;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#cfe0ff;text-decoration:none}header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:16px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ec;font-size:14px;vertical-align:top}
th{background:#eef1f6;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600}
.open{background:#fff1c2;color:#7a5600}.confirmed_fraud{background:#ffd6d6;color:#8a1111}
.dismissed_genuine{background:#d8f3dc;color:#1b5e20}
.score{font-weight:600}.hi{color:#b00020}
.card{background:#fff;padding:12px 16px;margin-bottom:16px;border:1px solid #e3e6ec}
.comment{white-space:pre-wrap;word-break:break-word}
form label{display:block;margin:6px 0 2px;font-size:13px;font-weight:600}
input[type=text],textarea{width:100%;max-width:600px;padding:6px;font:inherit;box-sizing:border-box}
button{margin:8px 8px 0 0;padding:6px 14px;font:inherit;cursor:pointer;border:1px solid #888;border-radius:4px;background:#fff}
button.fraud{background:#b00020;color:#fff;border-color:#b00020}
button.genuine{background:#1b5e20;color:#fff;border-color:#1b5e20}
.error{background:#ffd6d6;border:1px solid #b00020;padding:12px 16px}
nav a{margin-right:12px}small{color:#5a6270}
"""


def check_bind_address(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind address unless ``allow_remote``.

    Raises
    ------
    ConfigError
        ``host`` is not ``localhost`` nor a loopback IP and ``allow_remote`` is False.
    """
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigError(
            f"review console on {host!r} would be reachable from other machines and has no "
            "login of its own: bind 127.0.0.1 behind your organisation's authenticating "
            "proxy, or pass --allow-remote"
        )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} - fraud case review</title><style>{_CSS}</style></head><body>"
        "<header><h1>Fraud case review</h1><nav><a href='/'>Open cases</a>"
        "<a href='/?status=closed'>Closed</a><a href='/?status=all'>All</a></nav></header>"
        f"<main>{body}</main></body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _badge(status: str) -> str:
    return f"<span class='badge {_e(status)}'>{_e(status.replace('_', ' '))}</span>"


def _score(x: float) -> str:
    return f"<span class='score{' hi' if x >= 0.8 else ''}'>{x:.3f}</span>"


def render_queue(cases: list[Case], status: str) -> str:
    """The queue page (HTML)."""
    rows = []
    for c in cases:
        amount = sum(a.transaction.amount_minor for a in c.alerts) / 100
        currency = c.alerts[0].transaction.currency if c.alerts else ""
        rows.append(
            "<tr>"
            f"<td><a href='/cases/{_e(c.case_id)}'>{_e(c.case_id)}</a></td>"
            f"<td>{_badge(c.status)}</td>"
            f"<td class=num>{_score(c.max_score)}</td>"
            f"<td class=num>{len(c.alerts)}</td>"
            f"<td class=num>{amount:,.2f} {_e(currency)}</td>"
            f"<td>{_time(c.first_alert_time_ms)}</td>"
            f"<td>{_e(c.assignee or '-')}</td>"
            "</tr>"
        )
    title = {"open": "Open cases", "closed": "Closed cases", "all": "All cases"}[status]
    body = (
        f"<h2>{title} <small>({len(cases)}, highest risk first)</small></h2>"
        "<table id=queue><thead><tr><th>Card (case)</th><th>Status</th><th class=num>Max score</th>"
        "<th class=num>Alerts</th><th class=num>Amount</th><th>First alert (UTC)</th>"
        "<th>Assignee</th></tr></thead><tbody>"
        + ("".join(rows) or "<tr><td colspan=7>No cases.</td></tr>")
        + "</tbody></table>"
    )
    return _page(title, body)


def _alert_row(a: Alert) -> str:
    tx = a.transaction
    reasons = "<br>".join(
        f"{r.contribution:+.3f} {_e(r.feature)} = {r.value:g}" for r in a.reasons
    ) or "-"
    rules = ", ".join(_e(r) for r in a.rules_fired) or "-"
    features = "".join(
        f"<tr><td>{_e(k)}</td><td class=num>{v:g}</td></tr>" for k, v in sorted(a.features.items())
    )
    return (
        "<tr>"
        f"<td>{_e(tx.transaction_id)}</td><td>{_time(tx.event_time_ms)}</td>"
        f"<td>{_e(tx.terminal_id)}</td>"
        f"<td class=num>{tx.amount:,.2f} {_e(tx.currency)}</td>"
        f"<td class=num>{_score(a.score)}</td><td>{_e(a.outcome)}</td>"
        f"<td>{reasons}</td><td>{rules}</td>"
        f"<td><details><summary>{len(a.features)}</summary><table>{features}</table>"
        f"</details><small>{_e(a.model_version)}</small></td>"
        "</tr>"
    )


def _alert_note(alert: Alert | None) -> str:
    if alert is None:
        return ""
    return f"alert on {_e(alert.transaction.transaction_id)}, score {alert.score:.3f}"


def render_case(case: Case, analyst: str = "") -> str:
    """One case's page (HTML), with a fresh idempotency key in its form."""
    key = uuid.uuid4().hex
    alerts = "".join(_alert_row(a) for a in sorted(case.alerts, key=lambda a: -a.score))
    history = "".join(
        "<tr>"
        f"<td>{_time(ev.time_ms)}</td><td>{_e(ev.type.replace('_', ' '))}</td>"
        f"<td>{_e(ev.actor)}</td>"
        f"<td class=comment>{_e(ev.comment)}{_alert_note(ev.alert)}</td>"
        "</tr>"
        for ev in case.history
    )
    if case.status == "open":
        buttons = (
            "<button class=fraud name=action value=confirm>Confirm fraud</button>"
            "<button class=genuine name=action value=dismiss>Dismiss as genuine</button>"
            "<button name=action value=assign>Assign to me</button>"
        )
    else:
        buttons = "<button name=action value=reopen>Reopen</button>"
    buttons += "<button name=action value=comment>Add comment</button>"
    form = (
        f"<form class=card method=post action='/cases/{_e(case.case_id)}/actions'>"
        f"<input type=hidden name=key value='{key}'>"
        f"<label for=actor>Analyst</label><input type=text id=actor name=actor required "
        f"maxlength={MAX_ACTOR_CHARS} value='{_e(analyst)}'>"
        f"<label for=comment>Comment</label><textarea id=comment name=comment rows=3 "
        f"maxlength={MAX_COMMENT_CHARS}></textarea>"
        f"<div>{buttons}</div></form>"
    )
    verdict = f" on {_time(case.verdict_time_ms)}" if case.verdict_time_ms else ""
    body = (
        f"<h2>Card {_e(case.case_id)} {_badge(case.status)}<small>{verdict}</small></h2>"
        f"<p>Max score {_score(case.max_score)} &middot; {len(case.alerts)} alerted "
        f"transaction(s) &middot; assignee {_e(case.assignee or '-')}</p>"
        f"{form}"
        "<h3>Alerted transactions</h3><table id=alerts><thead><tr><th>Transaction</th>"
        "<th>Time (UTC)</th><th>Terminal</th><th class=num>Amount</th><th class=num>Score</th>"
        "<th>Outcome</th><th>Reasons (contribution)</th><th>Rules fired</th><th>Features</th>"
        f"</tr></thead><tbody>{alerts}</tbody></table>"
        "<h3>History</h3><table id=history><thead><tr><th>Time (UTC)</th><th>Event</th>"
        f"<th>By</th><th>Comment</th></tr></thead><tbody>{history}</tbody></table>"
    )
    return _page(f"Card {case.case_id}", body)


def _error(status: int, message: str, case_id: str | None = None) -> web.Response:
    back = f"<p><a href='/cases/{_e(case_id)}'>Back to the case</a></p>" if case_id else ""
    body = f"<div class=error id=error><strong>Refused.</strong> {_e(message)}</div>{back}"
    return _html(_page("Refused", body), status)


async def _queue(request: web.Request) -> web.Response:
    status = request.query.get("status", "open")
    if status not in ("open", "closed", "all"):
        return _error(400, f"status must be open, closed or all, not {status!r}")
    service = request.app[_SERVICE]
    return _html(render_queue(queue(service.cases.values(), status), status))  # type: ignore[arg-type]


async def _case(request: web.Request) -> web.Response:
    case_id = request.match_info["case_id"]
    case = request.app[_SERVICE].cases.get(case_id)
    if case is None:
        return _error(404, f"no case {case_id!r}")
    return _html(render_case(case, request.cookies.get(_ANALYST_COOKIE, "")))


def _cross_site(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"
    host = request.headers.get("X-Forwarded-Host", request.host)
    return urlsplit(origin).netloc != host


async def _action(request: web.Request) -> web.Response:
    case_id = request.match_info["case_id"]
    if _cross_site(request):
        return _error(403, "form posted from another site", case_id)
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _error(
            413, f"form larger than {MAX_FORM_BYTES} bytes: a comment holds at most "
            f"{MAX_COMMENT_CHARS} characters", case_id,
        )
    fields = {k: form.get(k, "") for k in ("action", "actor", "comment", "key")}
    if not all(isinstance(v, str) for v in fields.values()):
        return _error(400, "form fields must be text", case_id)
    if not fields["key"]:
        return _error(400, "the form has no idempotency key: reload the case page", case_id)
    req = Request(fields["action"], fields["actor"], fields["comment"], fields["key"])
    service = request.app[_SERVICE]
    try:
        await service.request(case_id, req)
    except CaseError as exc:
        return _error(_STATUS_CODES.get(exc.reason, 400), exc.detail, case_id)
    except FraudError as exc:  # broker or Redis down: the same form again completes it
        return _error(503, f"{exc}; nothing is lost: post the same form again", case_id)
    response = web.Response(status=303, headers={"Location": f"/cases/{case_id}"})
    response.set_cookie(_ANALYST_COOKIE, req.actor.strip(), httponly=True, samesite="Strict")
    return response


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[_SERVICE].metrics
    body = generate_latest(metrics.registry) if metrics is not None else b""
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"cases": len(request.app[_SERVICE].cases)})


async def _supervise(name: str, follow) -> None:
    """Run a follower for ever; a broker outage is logged and retried."""
    while True:
        try:
            await follow()
        except asyncio.CancelledError:
            raise
        except BrokerUnavailableError as exc:
            log.warning("%s stopped (%s); retrying in %.0f s", name, exc, _RETRY_SECONDS)
        except Exception:  # the console keeps serving; the log has the traceback
            log.exception("%s failed; retrying in %.0f s", name, _RETRY_SECONDS)
        await asyncio.sleep(_RETRY_SECONDS)


def build_app(service: CaseService, follow: bool = True) -> web.Application:
    """The console's aiohttp application.

    Parameters
    ----------
    service : CaseService
        Started by the application (on startup) and stopped on cleanup.
    follow : bool, default=True
        Also run the followers: alerts -> case events, and case events written by
        others (``fraudctl review confirm``).
    """
    app = web.Application(client_max_size=MAX_FORM_BYTES)
    app[_SERVICE] = service

    async def lifecycle(app: web.Application):
        await service.start()
        tasks = []
        if follow:
            tasks = [
                asyncio.create_task(_supervise("alerts follower", service.follow_alerts)),
                asyncio.create_task(_supervise("cases follower", service.follow_cases)),
            ]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", _queue)
    app.router.add_get("/cases/{case_id}", _case)
    app.router.add_post("/cases/{case_id}/actions", _action)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app

"""The review console: an aiohttp application over a :class:`~app.cases.service.CaseService`.

Pages (HTML; every value from a case is escaped with :func:`html.escape`, so a comment
holding HTML shows as text and never runs; scripts only from ``/review.js``, by the
Content-Security-Policy):

- ``GET /``: the queue, a page at a time: ``status`` (open, closed, all), ``q`` (card,
  transaction or terminal id), ``assignee`` (``me``, ``none`` or a name), ``min_score``,
  ``min_age_hours``, ``sort`` (score, age, alerts, amount), ``page``
  (:mod:`app.cases.views`). Cases past the review target are highlighted.
- ``GET /cases/{case_id}``: one case: its alerted transactions with scores, reasons in
  words, rules fired and features, its history (the case events), and a form with the
  actions the analyst's role allows (keys: ``c`` confirm, ``d`` dismiss, ``n`` next).
- ``POST /cases/{case_id}/actions``: the form's action (confirm, dismiss, reopen,
  assign, comment, block) with a comment, the form's idempotency key and its CSRF
  token: posting the same form twice records it once. The actor is the signed-in
  analyst (:mod:`app.cases.auth`). Success answers 303 to the case page; a refused
  request answers 400 (invalid), 403 (role, CSRF token, another site: nothing written),
  404 (unknown case), 409 (conflict) or 413 (too large a form) with the reason.
- ``GET /login``, ``GET /auth/callback``, ``POST /logout``: sign-in (``REVIEW_AUTH=oidc``).
- ``GET /metrics`` (Prometheus) and ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import html
import logging
import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..events import MAX_ACTOR_CHARS, MAX_COMMENT_CHARS, Alert
from ..exceptions import BrokerUnavailableError, CaseError, ConfigError, FraudError
from ..security import is_loopback_host
from .activity import CardTransaction
from .auth import LOCAL_ANALYST, Analyst, Auth
from .model import Case, Request
from .service import CaseService, now_ms
from .views import SORTS, QueueQuery, age_seconds, reason_in_words, select

__all__ = ["build_app", "check_bind_address", "MAX_FORM_BYTES"]

log = logging.getLogger(__name__)

#: Largest form body accepted, in bytes (a comment is at most MAX_COMMENT_CHARS).
MAX_FORM_BYTES = 64 * 1024
_RETRY_SECONDS = 2.0
_SERVICE = web.AppKey("service", CaseService)
_AUTH = web.AppKey("auth", Auth)
#: Contributions smaller than this (absolute) are not shown as reasons.
_MIN_CONTRIBUTION = 0.0005
_CSP = "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self' {idp}"
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
tr.late td{background:#fff4e5}.late-badge{color:#a04000;font-weight:600}tr.alerted td{background:#fdecec}
.who{margin-left:auto;font-size:13px}.who form{display:inline}.who button{margin:0 0 0 8px;padding:2px 8px}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:12px}
form.filters label{margin:0}form.filters input,form.filters select{padding:4px}
form.filters input[type=number]{width:80px}form.filters input[type=search]{width:220px}
.pager a{margin:0 6px}
"""

_SCRIPT = """
document.addEventListener('keydown', function (e) {
  var t = e.target && e.target.tagName;
  if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT' || e.ctrlKey || e.metaKey || e.altKey) return;
  var keys = {c: 'button[value=confirm]', d: 'button[value=dismiss]'};
  if (keys[e.key]) { var b = document.querySelector(keys[e.key]); if (b) { e.preventDefault(); b.click(); } }
  if (e.key === 'n') { var n = document.getElementById('next-case'); if (n) { e.preventDefault(); n.click(); } }
});
"""


def check_bind_address(host: str, allow_remote: bool, auth_mode: str = "none") -> None:
    """Refuse a non-loopback bind address unless ``allow_remote``.

    With ``auth_mode="none"`` a non-loopback address is still served when allowed (a
    container whose port is published on the host's loopback only), with a warning:
    whoever reaches the port acts under the name they type.

    Raises
    ------
    ConfigError
        ``host`` is not ``localhost`` nor a loopback IP and ``allow_remote`` is False.
    """
    if is_loopback_host(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"review console on {host!r} would be reachable from other machines: set "
            "REVIEW_AUTH=oidc (sign-in) or REVIEW_AUTH=proxy (behind your organisation's "
            "authenticating proxy) and pass --allow-remote"
        )
    if auth_mode == "none":
        log.warning(
            "review console on %r with REVIEW_AUTH=none: whoever reaches this port acts "
            "under the name they type; publish it on loopback only, or set REVIEW_AUTH", host,
        )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _page(title: str, body: str, who: Analyst | None = None, csrf: str = "") -> str:
    user = ""
    if who is not None and who is not LOCAL_ANALYST:
        role = who.role or "no role: read only"
        user = (
            f"<span class=who id=who>{_e(who.name)} <small>({_e(role)})</small>"
            f"<form method=post action='/logout'><input type=hidden name=csrf value='{_e(csrf)}'>"
            "<button id=sign-out>Sign out</button></form></span>"
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} - fraud case review</title><style>{_CSS}</style>"
        "<script src='/review.js' defer></script></head><body>"
        "<header><h1>Fraud case review</h1><nav><a href='/'>Open cases</a>"
        "<a href='/?assignee=me'>My cases</a>"
        "<a href='/?status=closed'>Closed</a><a href='/?status=all'>All</a></nav>"
        f"{user}</header><main>{body}</main></body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _badge(status: str) -> str:
    return f"<span class='badge {_e(status)}'>{_e(status.replace('_', ' '))}</span>"


def _score(x: float) -> str:
    return f"<span class='score{' hi' if x >= 0.8 else ''}'>{x:.3f}</span>"


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _filters(q: QueueQuery) -> str:
    def option(value: str, label: str, current: str) -> str:
        sel = " selected" if value == current else ""
        return f"<option value='{_e(value)}'{sel}>{_e(label)}</option>"

    statuses = "".join(option(s, s, q.status) for s in ("open", "closed", "all"))
    sorts = "".join(option(s, f"by {s}", q.sort) for s in SORTS)
    return (
        "<form class=filters method=get action='/' id=filters>"
        f"<label>Search<br><input type=search name=q id=q value='{_e(q.search)}' "
        "placeholder='card, transaction or terminal' maxlength=100></label>"
        f"<label>Status<br><select name=status>{statuses}</select></label>"
        f"<label>Assignee<br><input type=text name=assignee value='{_e(q.assignee)}' "
        "placeholder='me, none or a name' size=12></label>"
        f"<label>Min score<br><input type=number name=min_score step=0.01 min=0 max=1 "
        f"value='{q.min_score:g}' size=5></label>"
        f"<label>Older than (h)<br><input type=number name=min_age_hours step=0.5 min=0 "
        f"value='{q.min_age_hours:g}' size=5></label>"
        f"<label>Sort<br><select name=sort>{sorts}</select></label>"
        "<button>Show</button></form>"
    )


def _link(q: QueueQuery, page: int) -> str:
    params = {"status": q.status, "q": q.search, "assignee": q.assignee, "sort": q.sort,
              "min_score": f"{q.min_score:g}", "min_age_hours": f"{q.min_age_hours:g}", "page": page}
    return "/?" + urlencode({k: v for k, v in params.items() if v not in ("", "0")})


def render_queue(cases: list[Case], status: str = "open", *, q: QueueQuery | None = None,
                 total: int | None = None, pages: int = 1, now: int | None = None,
                 target_seconds: float = float("inf"), who: Analyst | None = None,
                 csrf: str = "") -> str:
    """The queue page (HTML): one page of cases, with the filters that chose it."""
    q = q or QueueQuery(status=status)
    now = now_ms() if now is None else now
    total = len(cases) if total is None else total
    rows = []
    for c in cases:
        amount = sum(a.transaction.amount_minor for a in c.alerts) / 100
        currency = c.alerts[0].transaction.currency if c.alerts else ""
        age = age_seconds(c, now)
        late = c.status == "open" and age > target_seconds
        rows.append(
            f"<tr{' class=late' if late else ''}>"
            f"<td><a href='/cases/{_e(c.case_id)}'>{_e(c.case_id)}</a></td>"
            f"<td>{_badge(c.status)}</td>"
            f"<td class=num>{_score(c.max_score)}</td>"
            f"<td class=num>{len(c.alerts)}</td>"
            f"<td class=num>{amount:,.2f} {_e(currency)}</td>"
            f"<td>{_time(c.first_alert_time_ms)}</td>"
            f"<td class=num>{_age(age)}{' <span class=late-badge>past target</span>' if late else ''}</td>"
            f"<td>{_e(c.assignee or '-')}</td>"
            "</tr>"
        )
    title = {"open": "Open cases", "closed": "Closed cases", "all": "All cases"}[q.status]
    pager = ""
    if pages > 1:
        prev = f"<a href='{_e(_link(q, q.page - 1))}' id=prev>previous</a>" if q.page > 1 else ""
        nxt = f"<a href='{_e(_link(q, q.page + 1))}' id=next>next</a>" if q.page < pages else ""
        pager = f"<p class=pager>{prev} page {min(q.page, pages)} of {pages} {nxt}</p>"
    body = (
        f"<h2>{title} <small id=count>({total}, by {_e(q.sort)})</small></h2>"
        f"{_filters(q)}"
        "<table id=queue><thead><tr><th>Card (case)</th><th>Status</th><th class=num>Max score</th>"
        "<th class=num>Alerts</th><th class=num>Amount</th><th>First alert (UTC)</th>"
        "<th class=num>Age</th><th>Assignee</th></tr></thead><tbody>"
        + ("".join(rows) or "<tr><td colspan=8>No cases.</td></tr>")
        + f"</tbody></table>{pager}"
    )
    return _page(title, body, who, csrf)


def _reasons(a: Alert) -> str:
    shown = [r for r in a.reasons if abs(r.contribution) >= _MIN_CONTRIBUTION]
    return "<br>".join(
        f"{_e(reason_in_words(r.feature, r.value, a.features))} <small>({r.contribution:+.2f})</small>"
        for r in shown
    ) or "-"


def _alert_row(a: Alert) -> str:
    tx = a.transaction
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
        f"<td>{_reasons(a)}</td><td>{rules}</td>"
        f"<td><details><summary>{len(a.features)}</summary><table>{features}</table>"
        f"</details><small>{_e(a.model_version)}</small></td>"
        "</tr>"
    )


def _spending(case: Case, recent: list[CardTransaction]) -> str:
    """The card's recent transactions, those that did not alert included (amount bars,
    terminals); only its alerted ones when the scored stream has none of it."""
    alerted = {a.transaction.transaction_id for a in case.alerts}
    if not recent:
        recent = [CardTransaction(t.transaction_id, t.account_id, t.terminal_id, t.amount_minor,
                                  t.currency, t.event_time_ms, a.score, "alert")
                  for a in case.alerts for t in (a.transaction,)]
        recent.sort(key=lambda t: t.event_time_ms)
    if not recent:
        return ""
    top = max(t.amount for t in recent) or 1.0
    rows = "".join(
        f"<tr{' class=alerted' if t.transaction_id in alerted else ''}><td>{_time(t.event_time_ms)}</td>"
        f"<td>{_e(t.transaction_id)}</td><td>{_e(t.terminal_id)}</td>"
        f"<td class=num>{t.amount:,.2f} {_e(t.currency)}</td><td class=num>{_score(t.score)}</td>"
        f"<td>{'alert' if t.transaction_id in alerted else _e(t.decision)}</td>"
        f"<td><div style='background:#1d2b4f;height:8px;width:{max(2, int(200 * t.amount / top))}px'></div></td></tr>"
        for t in recent
    )
    terminals = len({t.terminal_id for t in recent})
    mean = sum(t.amount for t in recent) / len(recent)
    return (
        f"<h3>Card activity <small>({len(recent)} recent transaction(s) at {terminals} "
        f"terminal(s), mean {mean:,.2f}; alerted ones highlighted)</small></h3>"
        "<table id=activity><thead><tr><th>Time (UTC)</th><th>Transaction</th>"
        "<th>Terminal</th><th class=num>Amount</th><th class=num>Score</th><th>Decision</th>"
        f"<th></th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _alert_note(alert: Alert | None) -> str:
    if alert is None:
        return ""
    return f"alert on {_e(alert.transaction.transaction_id)}, score {alert.score:.3f}"


_BUTTONS = {
    "confirm": "<button class=fraud name=action value=confirm title='key: c'>Confirm fraud</button>",
    "dismiss": "<button class=genuine name=action value=dismiss title='key: d'>Dismiss as genuine</button>",
    "assign": "<button name=action value=assign>Assign to me</button>",
    "reopen": "<button name=action value=reopen>Reopen</button>",
    "block": "<button class=fraud name=action value=block>Block the card</button>",
    "comment": "<button name=action value=comment>Add comment</button>",
}


def render_case(case: Case, analyst: str = "", *, who: Analyst = LOCAL_ANALYST, csrf: str = "",
                next_case: str | None = None, now: int | None = None,
                target_seconds: float = float("inf"),
                recent: list[CardTransaction] | None = None) -> str:
    """One case's page (HTML), with a fresh idempotency key and the CSRF token in its
    form, and only the buttons the analyst's role allows."""
    key = uuid.uuid4().hex
    now = now_ms() if now is None else now
    alerts = "".join(_alert_row(a) for a in sorted(case.alerts, key=lambda a: -a.score))
    history = "".join(
        "<tr>"
        f"<td>{_time(ev.time_ms)}</td><td>{_e(ev.type.replace('_', ' '))}</td>"
        f"<td>{_e(ev.actor)}</td>"
        f"<td class=comment>{_e(ev.comment)}{_alert_note(ev.alert)}</td>"
        "</tr>"
        for ev in case.history
    )
    wanted = ("confirm", "dismiss", "assign") if case.status == "open" else ("reopen",)
    wanted += ("block", "comment")
    buttons = "".join(_BUTTONS[a] for a in wanted if who.may(a))
    actor = ""
    if who is LOCAL_ANALYST:  # one local user: the name is typed (REVIEW_AUTH=none)
        actor = (f"<label for=actor>Analyst</label><input type=text id=actor name=actor required "
                 f"maxlength={MAX_ACTOR_CHARS} value='{_e(analyst)}'>")
    form = (
        f"<form class=card method=post action='/cases/{_e(case.case_id)}/actions' id=case-form>"
        f"<input type=hidden name=key value='{key}'><input type=hidden name=csrf value='{_e(csrf)}'>"
        f"{actor}<label for=comment>Comment</label><textarea id=comment name=comment rows=3 "
        f"maxlength={MAX_COMMENT_CHARS}></textarea>"
        f"<div>{buttons}</div></form>"
    ) if buttons else "<p class=card id=read-only>Your role allows no action on cases.</p>"
    verdict = f" on {_time(case.verdict_time_ms)}" if case.verdict_time_ms else ""
    age = age_seconds(case, now)
    late = " <span class=late-badge id=late>past the review target</span>" if (
        case.status == "open" and age > target_seconds) else ""
    nxt = (f" &middot; <a href='/cases/{_e(next_case)}' id=next-case>next case (n)</a>"
           if next_case else "")
    body = (
        f"<h2>Card {_e(case.case_id)} {_badge(case.status)}<small>{verdict}</small></h2>"
        f"<p>Max score {_score(case.max_score)} &middot; {len(case.alerts)} alerted "
        f"transaction(s) &middot; age {_age(age)}{late} &middot; assignee "
        f"{_e(case.assignee or '-')}{nxt}</p>"
        f"{form}"
        "<h3>Alerted transactions</h3><table id=alerts><thead><tr><th>Transaction</th>"
        "<th>Time (UTC)</th><th>Terminal</th><th class=num>Amount</th><th class=num>Score</th>"
        "<th>Outcome</th><th>Reasons</th><th>Rules fired</th><th>Features</th>"
        f"</tr></thead><tbody>{alerts}</tbody></table>"
        f"{_spending(case, recent or [])}"
        "<h3>History</h3><table id=history><thead><tr><th>Time (UTC)</th><th>Event</th>"
        f"<th>By</th><th>Comment</th></tr></thead><tbody>{history}</tbody></table>"
    )
    return _page(f"Card {case.case_id}", body, who, csrf)


def _error(status: int, message: str, case_id: str | None = None) -> web.Response:
    back = f"<p><a href='/cases/{_e(case_id)}'>Back to the case</a></p>" if case_id else ""
    body = f"<div class=error id=error><strong>Refused.</strong> {_e(message)}</div>{back}"
    return _html(_page("Refused", body), status)


def _who(request: web.Request) -> Analyst:
    return request.get("analyst", LOCAL_ANALYST)


async def _queue(request: web.Request) -> web.Response:
    try:
        q = QueueQuery.parse(request.query)
    except ValueError as exc:
        return _error(400, str(exc))
    service, auth = request.app[_SERVICE], request.app[_AUTH]
    who = _who(request)
    now = now_ms()
    page = select(service.cases.values(), q, now, who.actor, service.settings.review_page_size)
    return _html(render_queue(
        page.cases, q=q, total=page.total, pages=page.pages, now=now,
        target_seconds=service.settings.review_target_seconds, who=who,
        csrf=auth.csrf_token(request),
    ))


def _next_open(service: CaseService, case_id: str, me: str) -> str | None:
    """The case after ``case_id`` in the open queue by score (the ``n`` key)."""
    ranked = select(service.cases.values(), QueueQuery(), now_ms(), me, 10**9).cases
    ids = [c.case_id for c in ranked]
    if case_id in ids:
        i = ids.index(case_id)
        return ids[i + 1] if i + 1 < len(ids) else None
    return ids[0] if ids else None


async def _case(request: web.Request) -> web.Response:
    case_id = request.match_info["case_id"]
    service, auth = request.app[_SERVICE], request.app[_AUTH]
    case = service.cases.get(case_id)
    if case is None:
        return _error(404, f"no case {case_id!r}")
    who = _who(request)
    return _html(render_case(
        case, request.cookies.get(_ANALYST_COOKIE, ""), who=who, csrf=auth.csrf_token(request),
        next_case=_next_open(service, case_id, who.actor),
        target_seconds=service.settings.review_target_seconds,
        recent=service.activity.recent(case_id),
    ))


def _cross_site(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"
    host = request.headers.get("X-Forwarded-Host", request.host)
    return urlsplit(origin).netloc != host


async def _action(request: web.Request) -> web.Response:
    case_id = request.match_info["case_id"]
    auth = request.app[_AUTH]
    if _cross_site(request):
        return _error(403, "form posted from another site", case_id)
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _error(
            413, f"form larger than {MAX_FORM_BYTES} bytes: a comment holds at most "
            f"{MAX_COMMENT_CHARS} characters", case_id,
        )
    fields = {k: form.get(k, "") for k in ("action", "actor", "comment", "key", "csrf")}
    if not all(isinstance(v, str) for v in fields.values()):
        return _error(400, "form fields must be text", case_id)
    who = _who(request)
    if auth.mode != "none":
        try:
            auth.check_csrf(request, fields["csrf"])
        except web.HTTPForbidden as exc:
            return _error(403, exc.text or "CSRF", case_id)
    if fields["action"] in _BUTTONS and not who.may(fields["action"]):
        auth.forbid(fields["action"], who)
        return _error(403, f"your role ({who.role or 'none'}) does not allow {fields['action']}", case_id)
    if not fields["key"]:
        return _error(400, "the form has no idempotency key: reload the case page", case_id)
    actor = fields["actor"] if who is LOCAL_ANALYST else who.actor
    comment = fields["comment"]
    if fields["action"] == "block" and not comment.strip():
        comment = "blocked the card"
    req = Request(fields["action"], actor, comment, fields["key"])
    service = request.app[_SERVICE]
    try:
        await service.request(case_id, req, may_block=who.may("block"))
    except CaseError as exc:
        return _error(_STATUS_CODES.get(exc.reason, 400), exc.detail, case_id)
    except FraudError as exc:  # broker or Redis down: the same form again completes it
        return _error(503, f"{exc}; nothing is lost: post the same form again", case_id)
    response = web.Response(status=303, headers={"Location": f"/cases/{case_id}"})
    if who is LOCAL_ANALYST:
        response.set_cookie(_ANALYST_COOKIE, req.actor.strip(), httponly=True, samesite="Strict")
    return response


async def _script(request: web.Request) -> web.Response:
    return web.Response(text=_SCRIPT, content_type="application/javascript")


async def _signed_out(request: web.Request) -> web.Response:
    body = "<p id=signed-out>Signed out. <a href='/login'>Sign in again</a></p>"
    return _html(_page("Signed out", body))


async def _metrics(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    metrics = service.metrics
    if metrics is not None:
        service.observe_targets()
    body = generate_latest(metrics.registry) if metrics is not None else b""
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"cases": len(request.app[_SERVICE].cases)})


@web.middleware
async def _headers(request: web.Request, handler):
    """Security headers on every answer (CSP: scripts from this site only)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.text or exc.reason)
    issuer = request.app[_AUTH].settings.review_oidc_issuer or ""
    idp = f"{urlsplit(issuer).scheme}://{urlsplit(issuer).netloc}" if issuer else ""
    response.headers["Content-Security-Policy"] = _CSP.format(idp=idp).strip()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


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


def build_app(service: CaseService, follow: bool = True, auth: Auth | None = None) -> web.Application:
    """The console's aiohttp application.

    Parameters
    ----------
    service : CaseService
        Started by the application (on startup) and stopped on cleanup.
    follow : bool, default=True
        Also run the followers: alerts -> case events, and case events written by
        others (``fraudctl review confirm``).
    auth : Auth, optional
        Who is asking; default: from ``service.settings`` (``REVIEW_AUTH``), the public
        address ``REVIEW_PUBLIC_URL`` or ``http://REVIEW_HOST:REVIEW_PORT``.

    Raises
    ------
    ConfigError
        Sign-in settings a console cannot run safely with
        (:func:`app.cases.auth.check_auth_settings`).
    """
    s = service.settings
    if auth is None:
        auth = Auth(s, s.review_public_url or f"http://{s.review_host}:{s.review_port}", service.metrics)
    app = web.Application(client_max_size=MAX_FORM_BYTES, middlewares=[_headers, auth.middleware])
    app[_SERVICE] = service
    app[_AUTH] = auth

    async def lifecycle(app: web.Application):
        await service.start()
        tasks = []
        if follow:
            tasks = [
                asyncio.create_task(_supervise("alerts follower", service.follow_alerts)),
                asyncio.create_task(_supervise("cases follower", service.follow_cases)),
                asyncio.create_task(_supervise("scored follower", service.follow_scored)),
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
    app.router.add_get("/login", auth.login)
    app.router.add_get("/auth/callback", auth.callback)
    app.router.add_post("/logout", auth.logout)
    app.router.add_get("/signed-out", _signed_out)
    app.router.add_get("/review.js", _script)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app

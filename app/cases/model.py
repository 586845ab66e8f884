"""Cases, pure: fold case events into case state, decide what a request becomes.

A case is the review of one card (case id = account id). Its state is never stored: it
is the fold (:func:`apply_one`, :func:`fold`) of its :class:`~app.events.CaseEvent`
records in topic order, so it can be rebuilt from the ``fraud-cases`` topic at any time.

Two verbs turn inputs into events, and both are idempotent:

- :func:`events_for_alert`: an alert opens the case of its card, or joins it (reopening
  a closed case, since a new alert is new activity); an alert the case already holds
  gives nothing.
- :func:`decide`: an analyst's request (confirm, dismiss, reopen, assign, comment) is
  checked against the case and becomes one event, or raises :class:`CaseError`. A
  request whose idempotency key the case already holds returns the recorded event
  (``replayed=True``), so a replayed form post changes nothing.

:func:`verdict_labels` gives the labels a verdict writes to ``transaction-labels``.

Examples
--------
>>> from app.events import Alert, Transaction
>>> tx = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
...     amount_minor=500, event_time_ms=1_522_540_800_000)
>>> alert = Alert(alert_id="t1", transaction=tx, score=0.9, threshold=0.5,
...     model_version="v1", features={}, reasons=[], event_time_ms=tx.event_time_ms,
...     alert_time_ms=1_522_540_801_000)
>>> cases = fold(events_for_alert(None, alert, now_ms=1_522_540_802_000))
>>> case = cases["a1"]
>>> case.status, case.max_score, [e.type for e in case.history]
('open', 0.9, ['opened'])
>>> d = decide(case, Request("confirm", "ann", "stolen card", "k1"), now_ms=1_522_541_000_000)
>>> d.event.type, d.replayed
('confirmed_fraud', False)
>>> case = apply_one(case, d.event)
>>> [(l.transaction_id, l.is_fraud, l.source) for l in verdict_labels(case, d.event)]
[('t1', True, 'investigation')]
>>> decide(case, Request("confirm", "ann", "again", "k1"), now_ms=0).replayed
True
>>> decide(case, Request("dismiss", "bob", "", "k2"), now_ms=0)
Traceback (most recent call last):
...
app.exceptions.CaseError: conflict: case a1 is closed as confirmed_fraud; reopen it first
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Literal

from ..events import MAX_ACTOR_CHARS, MAX_COMMENT_CHARS, AccessList, Alert, CaseEvent, Label, RuleSet
from ..exceptions import CaseError

__all__ = [
    "ACTIONS",
    "STATUSES",
    "SYSTEM_ACTOR",
    "CaseError",
    "Case",
    "Request",
    "Decision",
    "apply_one",
    "fold",
    "events_for_alert",
    "decide",
    "verdict_labels",
    "queue",
    "BLOCK_RULE_SET_ID",
    "with_blocked_card",
]

#: Id of the rule set a confirmed card's block creates when none is in force.
BLOCK_RULE_SET_ID = "case-review"

#: What an analyst can ask for -> the event type it records.
ACTIONS: dict[str, str] = {
    "confirm": "confirmed_fraud",
    "dismiss": "dismissed_genuine",
    "reopen": "reopened",
    "assign": "assigned",
    "comment": "commented",
    "block": "commented",  # the card is blocked, then the comment records who and why
}
#: A case is open, or closed by a verdict.
STATUSES: tuple[str, ...] = ("open", "confirmed_fraud", "dismissed_genuine")
#: The actor of the events that alerts cause.
SYSTEM_ACTOR = "system"
_VERDICTS = ("confirmed_fraud", "dismissed_genuine")


@dataclass(frozen=True)
class Case:
    """The state of one case: the fold of its events.

    Attributes
    ----------
    case_id : str
        The card (account id).
    status : str
        One of :data:`STATUSES`.
    alerts : tuple of Alert
        Every alert of the card, in the order they joined.
    history : tuple of CaseEvent
        Every event applied, in topic order (the audit trail).
    assignee : str or None
    verdict_time_ms : int or None
        Time of the verdict that closed it (None while open).
    event_ids : frozenset of str
        Idempotency keys of the events applied.
    """

    case_id: str
    status: str = "open"
    alerts: tuple[Alert, ...] = ()
    history: tuple[CaseEvent, ...] = ()
    assignee: str | None = None
    verdict_time_ms: int | None = None
    event_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def max_score(self) -> float:
        """Highest score among its alerts, in [0, 1] (the queue's order)."""
        return max((a.score for a in self.alerts), default=0.0)

    @property
    def first_alert_time_ms(self) -> int | None:
        """``alert_time_ms`` of its earliest alert (UTC epoch ms)."""
        return min((a.alert_time_ms for a in self.alerts), default=None)

    @property
    def transaction_ids(self) -> tuple[str, ...]:
        """Ids of its alerted transactions."""
        return tuple(a.transaction.transaction_id for a in self.alerts)

    def event(self, event_id: str) -> CaseEvent | None:
        """The applied event with that idempotency key, if any."""
        if event_id not in self.event_ids:
            return None
        return next(e for e in self.history if e.event_id == event_id)


@dataclass(frozen=True)
class Request:
    """An analyst's request on a case.

    Parameters
    ----------
    action : str
        A key of :data:`ACTIONS`.
    actor : str
        The analyst's name, 1..100 characters, not blank.
    comment : str
        Why; at most :data:`app.events.MAX_COMMENT_CHARS` characters.
    key : str
        Idempotency key (a form token, a script's key): the same key twice records once.
    assignee : str, optional
        For ``assign``; default: the actor.
    """

    action: str
    actor: str
    comment: str
    key: str
    assignee: str | None = None


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` made of a request: the event, and whether it was already
    recorded (a replay: nothing is to be written)."""

    event: CaseEvent
    replayed: bool


def apply_one(case: Case | None, event: CaseEvent) -> Case:
    """The case after ``event``.

    Events come from the topic, so none is refused: an event whose idempotency key the
    case holds changes nothing, and a verdict on a closed case (two writers raced) is
    kept in the history but changes neither status nor verdict time.

    Parameters
    ----------
    case : Case or None
        The case before (None: no event yet).
    event : CaseEvent
        The next event of the case, in topic order.

    Returns
    -------
    Case
    """
    if case is None:
        case = Case(event.case_id)
    if event.event_id in case.event_ids:
        return case
    changes: dict = {
        "history": case.history + (event,),
        "event_ids": case.event_ids | {event.event_id},
    }
    if event.alert is not None and event.alert.alert_id not in {a.alert_id for a in case.alerts}:
        changes["alerts"] = case.alerts + (event.alert,)
    if event.type == "assigned":
        changes["assignee"] = event.assignee or event.actor
    elif event.type in _VERDICTS and case.status == "open":
        changes.update(status=event.type, verdict_time_ms=event.time_ms)
    elif event.type == "reopened":
        changes.update(status="open", verdict_time_ms=None)
    return replace(case, **changes)


def fold(events: Iterable[CaseEvent], cases: dict[str, Case] | None = None) -> dict[str, Case]:
    """Apply ``events`` (topic order within each case) to ``cases`` (default: none).

    Returns
    -------
    dict of str to Case
        Case id -> state; the same dict as ``cases`` when given.
    """
    out = {} if cases is None else cases
    for event in events:
        out[event.case_id] = apply_one(out.get(event.case_id), event)
    return out


def events_for_alert(case: Case | None, alert: Alert, now_ms: int) -> list[CaseEvent]:
    """The events an alert causes on the case of its card.

    Parameters
    ----------
    case : Case or None
        The card's case now (None: the card has none yet).
    alert : Alert
    now_ms : int
        Wall-clock time, UTC epoch ms.

    Returns
    -------
    list of CaseEvent
        ``[opened]`` for a new case; ``[alert_added]`` for an open one;
        ``[reopened, alert_added]`` for a closed one; ``[]`` if the case holds the
        alert already (a redelivered alert). Event ids derive from the alert id, so
        two followers writing the same alert record it once.
    """
    if case is not None and alert.alert_id in {a.alert_id for a in case.alerts}:
        return []
    case_id = alert.transaction.account_id
    base = dict(case_id=case_id, time_ms=now_ms, actor=SYSTEM_ACTOR, alert=alert)
    if case is None:
        return [CaseEvent(event_id=f"alert:{alert.alert_id}", type="opened", **base)]
    out = []
    if case.status != "open":
        out.append(CaseEvent(
            event_id=f"reopen:{alert.alert_id}", type="reopened", case_id=case_id,
            time_ms=now_ms, actor=SYSTEM_ACTOR, comment=f"new alert {alert.alert_id}",
        ))
    out.append(CaseEvent(event_id=f"alert:{alert.alert_id}", type="alert_added", **base))
    return out


def _check_request(request: Request) -> None:
    if request.action not in ACTIONS:
        raise CaseError("invalid", f"unknown action {request.action!r}; one of {sorted(ACTIONS)}")
    if not request.actor.strip():
        raise CaseError("invalid", "the analyst's name is empty")
    if len(request.actor) > MAX_ACTOR_CHARS:
        raise CaseError("invalid", f"the analyst's name is longer than {MAX_ACTOR_CHARS} characters")
    if len(request.comment) > MAX_COMMENT_CHARS:
        raise CaseError(
            "invalid",
            f"comment of {len(request.comment)} characters; at most {MAX_COMMENT_CHARS}",
        )
    if request.action == "comment" and not request.comment.strip():
        raise CaseError("invalid", "the comment is empty")


def decide(case: Case | None, request: Request, now_ms: int, case_id: str = "") -> Decision:
    """Check a request against a case and make its event.

    Parameters
    ----------
    case : Case or None
        The case now (None: unknown case).
    request : Request
    now_ms : int
        Time of the event (wall clock), UTC epoch ms: a verdict's labels carry it.
    case_id : str, optional
        Id asked for, for the message when ``case`` is None.

    Returns
    -------
    Decision
        ``replayed=True`` with the recorded event when ``request.key`` was recorded
        before (for the same action), else a new event to write.

    Raises
    ------
    CaseError
        ``unknown_case``; ``invalid`` (empty name, too long a comment, unknown action,
        a key recorded for another action, a malformed key); ``conflict`` (a verdict on
        a closed case, a reopen of an open one).
    """
    _check_request(request)
    if case is None:
        raise CaseError("unknown_case", f"no case {case_id!r}")
    event_type = ACTIONS[request.action]
    recorded = case.event(request.key)
    if recorded is not None:
        if recorded.type != event_type:
            raise CaseError(
                "invalid", f"key {request.key!r} was used for {recorded.type}, not {event_type}"
            )
        return Decision(recorded, replayed=True)
    if event_type in _VERDICTS and case.status != "open":
        raise CaseError(
            "conflict", f"case {case.case_id} is closed as {case.status}; reopen it first"
        )
    if event_type == "reopened" and case.status == "open":
        raise CaseError("conflict", f"case {case.case_id} is open already")
    try:
        event = CaseEvent(
            event_id=request.key,
            case_id=case.case_id,
            type=event_type,
            time_ms=now_ms,
            actor=request.actor.strip(),
            comment=request.comment,
            assignee=(request.assignee or request.actor.strip()) if event_type == "assigned" else None,
        )
    except ValueError as exc:  # pydantic: a malformed key
        raise CaseError("invalid", f"bad request: {str(exc).splitlines()[-1].strip()}"[:200]) from None
    return Decision(event, replayed=False)


def verdict_labels(case: Case, event: CaseEvent) -> list[Label]:
    """The labels of a verdict: one per alerted transaction of the case.

    Parameters
    ----------
    case : Case
    event : CaseEvent
        A ``confirmed_fraud`` or ``dismissed_genuine`` event of ``case``.

    Returns
    -------
    list of Label
        ``is_fraud`` from the verdict, ``label_time_ms`` = the verdict's time,
        ``source="investigation"``; [] for any other event type.
    """
    if event.type not in _VERDICTS:
        return []
    return [
        Label(
            transaction_id=a.transaction.transaction_id,
            account_id=a.transaction.account_id,
            terminal_id=a.transaction.terminal_id,
            is_fraud=event.type == "confirmed_fraud",
            transaction_time_ms=a.transaction.event_time_ms,
            label_time_ms=event.time_ms,
            source="investigation",
            labelled_by=event.actor,
        )
        for a in case.alerts
    ]


def queue(cases: Iterable[Case], status: Literal["open", "closed", "all"] = "open") -> list[Case]:
    """Cases by risk: highest ``max_score`` first, then oldest first alert.

    Parameters
    ----------
    cases : iterable of Case
    status : {"open", "closed", "all"}, default="open"
    """
    keep = [
        c for c in cases
        if status == "all" or (c.status == "open") == (status == "open")
    ]
    return sorted(keep, key=lambda c: (-c.max_score, c.first_alert_time_ms or 0, c.case_id))


def with_blocked_card(current: RuleSet | None, account_id: str) -> RuleSet | None:
    """The rule set in force with ``account_id`` added to its block list.

    Parameters
    ----------
    current : RuleSet or None
        The rule set in force (None: none; a new one, id :data:`BLOCK_RULE_SET_ID`, is
        made that only blocks the card).
    account_id : str

    Returns
    -------
    RuleSet or None
        The next version (rules, thresholds and allow list unchanged); None when the
        card is blocked already.

    Examples
    --------
    >>> rs = with_blocked_card(None, "a1")
    >>> rs.label, rs.block.accounts
    ('case-review@1', ['a1'])
    >>> with_blocked_card(rs, "a1") is None, with_blocked_card(rs, "a2").block.accounts
    (True, ['a1', 'a2'])
    """
    if current is None:
        return RuleSet(
            id=BLOCK_RULE_SET_ID, version=1,
            description="Cards confirmed as fraud in case review.",
            block=AccessList(accounts=[account_id]),
        )
    if account_id in current.block.accounts:
        return None
    block = current.block.model_copy(update={"accounts": [*current.block.accounts, account_id]})
    return current.model_copy(update={"version": current.version + 1, "block": block})

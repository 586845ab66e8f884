"""Cases, pure: fold, rebuild from the topic's bytes, requests and their bad input, verdict
labels, and how the scoring stage takes a verdict label followed by the delayed feed's."""

from __future__ import annotations

import orjson
import pytest

from app.cases.model import (
    Case,
    Request,
    apply_one,
    decide,
    events_for_alert,
    fold,
    queue,
    verdict_labels,
)
from app.events import MAX_COMMENT_CHARS, Alert, CaseEvent, Label, Reason, Transaction, decode_label, encode
from app.exceptions import CaseError
from app.features.state import DAY_MS
from app.features.terminal import TerminalState
from app.pipeline import RawRecord, receive_terminal_records

T0 = 1_530_403_200_000  # 2018-07-01T00:00:00Z
NOW = 1_530_500_000_000
LABELS = "transaction-labels"


def make_alert(i: int, account: str = "card-1", score: float = 0.7, terminal: str | None = None) -> Alert:
    tx = Transaction(
        transaction_id=f"tx-{i}", account_id=account, terminal_id=terminal or f"term-{i % 3}",
        amount_minor=1_000 + i, currency="EUR", event_time_ms=T0 + i * 60_000,
    )
    return Alert(
        alert_id=tx.transaction_id, transaction=tx, score=score, threshold=0.5,
        model_version="v1", features={"amount": tx.amount},
        reasons=[Reason(feature="amount", value=tx.amount, contribution=0.2)],
        event_time_ms=tx.event_time_ms, alert_time_ms=tx.event_time_ms + 50,
        rules_fired=["big-amount"],
    )


def open_case(*alerts: Alert) -> Case:
    cases: dict[str, Case] = {}
    for a in alerts:
        fold(events_for_alert(cases.get(a.transaction.account_id), a, NOW), cases)
    return cases[alerts[0].transaction.account_id]


def req(action: str, actor: str = "ann", comment: str = "", key: str = "k1") -> Request:
    return Request(action, actor, comment, key)


# --- alerts open and join cases -------------------------------------------------------


def test_first_alert_opens_the_case_later_ones_join_a_redelivered_one_adds_nothing():
    a1, a2 = make_alert(1), make_alert(2, score=0.9)
    case = open_case(a1)
    assert (case.status, case.transaction_ids, [e.type for e in case.history]) == (
        "open", ("tx-1",), ["opened"])
    [joined] = events_for_alert(case, a2, NOW + 1)
    case = apply_one(case, joined)
    assert joined.type == "alert_added" and case.transaction_ids == ("tx-1", "tx-2")
    assert case.max_score == 0.9
    assert events_for_alert(case, a1, NOW + 2) == []  # redelivered alert


def test_an_alert_on_a_closed_case_reopens_it():
    case = open_case(make_alert(1))
    case = apply_one(case, decide(case, req("dismiss"), NOW + 10).event)
    events = events_for_alert(case, make_alert(2), NOW + 20)
    assert [e.type for e in events] == ["reopened", "alert_added"]
    case = fold(events, {case.case_id: case})[case.case_id]
    assert case.status == "open" and case.verdict_time_ms is None and len(case.alerts) == 2


# --- event sourcing: the state is the fold of the topic --------------------------------


def _history() -> list[CaseEvent]:
    cases: dict[str, Case] = {}
    events: list[CaseEvent] = []

    def write(new: list[CaseEvent]) -> None:
        events.extend(new)
        fold(new, cases)

    for i, account in enumerate(["card-1", "card-2", "card-1", "card-3", "card-2"]):
        a = make_alert(i, account, score=0.5 + i / 10)
        write(events_for_alert(cases.get(account), a, NOW + i))
    write([decide(cases["card-1"], req("assign", key="a1"), NOW + 10).event])
    write([decide(cases["card-1"], req("confirm", comment="stolen", key="c1"), NOW + 11).event])
    write([decide(cases["card-2"], req("dismiss", actor="bob", key="d1"), NOW + 12).event])
    write([decide(cases["card-2"], req("reopen", actor="bob", key="r1"), NOW + 13).event])
    write([decide(cases["card-2"], req("comment", comment="<b>x</b>", key="m1"), NOW + 14).event])
    return events


def test_rebuilt_from_the_bytes_on_the_topic_the_cases_are_the_same():
    events = _history()
    live = fold(events)
    on_topic = [encode(e) for e in events]
    rebuilt = fold(CaseEvent.model_validate_json(raw) for raw in on_topic)
    assert rebuilt == live
    assert live["card-1"].status == "confirmed_fraud" and live["card-1"].assignee == "ann"
    assert live["card-2"].status == "open"
    assert [e.type for e in live["card-2"].history] == [
        "opened", "alert_added", "dismissed_genuine", "reopened", "commented"]


def test_events_applied_twice_change_nothing():
    events = _history()
    assert fold(events + events) == fold(events)


def test_a_verdict_that_lost_a_race_is_kept_in_history_but_changes_nothing():
    case = open_case(make_alert(1))
    first = decide(case, req("confirm", key="a"), NOW + 1).event
    second = decide(case, req("dismiss", actor="bob", key="b"), NOW + 2).event  # same state seen
    case = fold([first, second], {case.case_id: case})[case.case_id]
    assert case.status == "confirmed_fraud" and case.verdict_time_ms == NOW + 1
    assert [e.type for e in case.history][-2:] == ["confirmed_fraud", "dismissed_genuine"]


def test_queue_orders_open_cases_by_risk():
    cases = fold(_history())
    assert [c.case_id for c in queue(cases.values())] == ["card-2", "card-3"]
    assert [c.case_id for c in queue(cases.values(), "closed")] == ["card-1"]


# --- requests: idempotency and bad input -----------------------------------------------


def test_a_replayed_request_returns_the_recorded_event():
    case = open_case(make_alert(1))
    d = decide(case, req("confirm", key="form-1"), NOW)
    case = apply_one(case, d.event)
    again = decide(case, req("confirm", key="form-1"), NOW + 999)
    assert again.replayed and again.event == d.event
    assert apply_one(case, again.event) is case


@pytest.mark.parametrize(
    ("case_given", "request_", "reason", "words"),
    [
        pytest.param(False, req("confirm"), "unknown_case", "no case", id="unknown-case"),
        pytest.param(True, req("confirm", actor=""), "invalid", "name is empty", id="empty-analyst"),
        pytest.param(True, req("confirm", actor="  \t"), "invalid", "name is empty", id="blank-analyst"),
        pytest.param(True, req("confirm", actor="x" * 101), "invalid", "longer than", id="long-analyst"),
        pytest.param(True, req("confirm", comment="x" * 2**20), "invalid",
                     f"at most {MAX_COMMENT_CHARS}", id="1MB-comment"),
        pytest.param(True, req("delete"), "invalid", "unknown action", id="unknown-action"),
        pytest.param(True, req("comment", comment="  "), "invalid", "comment is empty", id="empty-comment"),
        pytest.param(True, req("reopen"), "conflict", "open already", id="reopen-an-open-case"),
        pytest.param(True, req("confirm", key="bad key!"), "invalid", "bad request", id="malformed-key"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(case_given, request_, reason, words):
    case = open_case(make_alert(1)) if case_given else None
    with pytest.raises(CaseError) as info:
        decide(case, request_, NOW, case_id="card-9")
    assert info.value.reason == reason and words in info.value.detail


@pytest.mark.parametrize("second", ["confirm", "dismiss"], ids=["second-verdict", "contradicting-verdict"])
def test_a_second_verdict_on_a_closed_case_is_a_conflict(second):
    case = open_case(make_alert(1))
    case = apply_one(case, decide(case, req("confirm", key="k1"), NOW).event)
    with pytest.raises(CaseError, match="closed as confirmed_fraud; reopen it first") as info:
        decide(case, req(second, key="k2"), NOW + 1)
    assert info.value.reason == "conflict"


def test_a_key_reused_for_another_action_is_refused():
    case = open_case(make_alert(1))
    case = apply_one(case, decide(case, req("comment", comment="look", key="k1"), NOW).event)
    with pytest.raises(CaseError, match="was used for commented"):
        decide(case, req("confirm", key="k1"), NOW + 1)


def test_html_in_a_comment_is_recorded_as_text():
    case = open_case(make_alert(1))
    text = "<script>alert(1)</script> & <b>bold</b>"
    event = decide(case, req("comment", comment=text), NOW).event
    assert CaseEvent.model_validate_json(encode(event)).comment == text


# --- verdict labels ----------------------------------------------------------------------


def test_a_verdict_labels_every_transaction_of_the_case_at_the_verdict_time():
    case = open_case(make_alert(1), make_alert(2), make_alert(3))
    d = decide(case, req("dismiss"), NOW + 5)
    labels = verdict_labels(apply_one(case, d.event), d.event)
    assert [(l.transaction_id, l.terminal_id, l.is_fraud, l.label_time_ms, l.source) for l in labels] == [
        (f"tx-{i}", f"term-{i % 3}", False, NOW + 5, "investigation") for i in (1, 2, 3)]
    assert all(l.transaction_time_ms == T0 + i * 60_000 for i, l in zip((1, 2, 3), labels))
    assert verdict_labels(case, decide(case, req("assign"), NOW).event) == []


def test_a_label_without_source_is_a_chargeback():
    raw = b'{"transaction_id":"t","account_id":"a","terminal_id":"m","is_fraud":true,' \
          b'"transaction_time_ms":1530403200000,"label_time_ms":1531008000000}'
    assert decode_label(raw).source == "chargeback"


# --- the scoring stage: duplicates and contradictions ------------------------------------


def _label(is_fraud: bool, source: str, label_time_ms: int, tid: str = "tx-1") -> Label:
    return Label(transaction_id=tid, account_id="card-1", terminal_id="term-1", is_fraud=is_fraud,
                 transaction_time_ms=T0, label_time_ms=label_time_ms, source=source)


def _intake(labels: list[Label], states: dict[str, TerminalState]):
    records = [RawRecord(encode(l), b"term-1", LABELS, 0, i, 0) for i, l in enumerate(labels)]
    intake = receive_terminal_records(records, states.get, LABELS)
    states.update(intake.states)
    return intake


@pytest.mark.parametrize(
    ("first", "then", "duplicates", "contradictions", "fraud_held"),
    [
        pytest.param((True, "investigation"), (True, "chargeback"), 1, 0, True, id="feed-confirms-fraud"),
        pytest.param((True, "investigation"), (False, "chargeback"), 0, 1, True, id="feed-says-genuine"),
        pytest.param((False, "investigation"), (False, "chargeback"), 1, 0, False, id="feed-confirms-genuine"),
        pytest.param((False, "investigation"), (True, "chargeback"), 0, 1, True, id="feed-says-fraud"),
    ],
)
def test_the_feed_label_after_a_verdict_is_a_duplicate_or_a_counted_contradiction(
    first, then, duplicates, contradictions, fraud_held
):
    states: dict[str, TerminalState] = {}
    one = _intake([_label(first[0], first[1], T0 + DAY_MS)], states)
    assert (one.label_duplicates, one.label_contradictions) == (0, 0)
    two = _intake([_label(then[0], then[1], T0 + 7 * DAY_MS)], states)
    assert (two.label_duplicates, two.label_contradictions) == (duplicates, contradictions)
    assert two.label_sources == {("chargeback", "fraud" if then[0] else "genuine"): 1}
    state = states["term-1"]
    assert (state.fraud_ids == ["tx-1"]) == fraud_held
    if fraud_held:  # the earliest fraud label's time is the one that counts
        expected = T0 + DAY_MS if first[0] else T0 + 7 * DAY_MS
        assert state.fraud_label_times_ms == [expected]
    assert TerminalState.from_bytes(state.to_bytes()) == state


def test_an_old_terminal_state_reads_as_before():
    old = orjson.dumps([[T0], ["tx-1"], [], [], []])
    state = TerminalState.from_bytes(old)
    assert state.genuine_ids == [] and state.to_bytes() == old

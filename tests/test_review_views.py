"""The console's pure parts: the queue's filters, search, sort and pages; reasons in words;
roles; the sign-in settings a console refuses to run with."""

from __future__ import annotations

import pytest

from app.cases.auth import check_auth_settings
from app.cases.model import fold, events_for_alert, apply_one, decide, Request
from app.cases.roles import Analyst, role_of
from app.cases.views import QueueQuery, reason_in_words, select
from app.config import Settings
from app.exceptions import ConfigError
from tests.test_review_console import T0, make_alert

NOW = T0 + 10 * 3_600_000  # 10 h after the first alert


def _cases():
    alerts = [make_alert(f"tx-{i}", f"card-{i}", 0.5 + i / 20, f"term-{i % 3}", minute=60 * i)
              for i in range(8)]
    cases = {}
    for a in alerts:
        for e in events_for_alert(cases.get(a.transaction.account_id), a, NOW):
            fold([e], cases)
    me = Analyst("u-1", "Ann", "analyst")
    d = decide(cases["card-2"], Request("assign", me.actor, "", "k-1"), NOW)
    cases["card-2"] = apply_one(cases["card-2"], d.event)
    d = decide(cases["card-7"], Request("confirm", me.actor, "", "k-2"), NOW)
    cases["card-7"] = apply_one(cases["card-7"], d.event)
    return list(cases.values()), me


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param({}, ["card-6", "card-5", "card-4"], id="open-by-score-first-page"),
    pytest.param({"page": "3"}, ["card-0"], id="last-page"),
    pytest.param({"page": "99"}, ["card-0"], id="past-the-end-shows-the-last-page"),
    pytest.param({"sort": "age"}, ["card-0", "card-1", "card-2"], id="oldest-first"),
    pytest.param({"q": "TERM-1"}, ["card-4", "card-1"], id="search-terminal-any-case"),
    pytest.param({"q": "tx-3"}, ["card-3"], id="search-transaction"),
    pytest.param({"assignee": "me"}, ["card-2"], id="my-cases"),
    pytest.param({"assignee": "none", "min_score": "0.7"}, ["card-6", "card-5", "card-4"], id="unassigned-high"),
    pytest.param({"min_age_hours": "7.5"}, ["card-2", "card-1", "card-0"], id="older-than"),
    pytest.param({"status": "closed"}, ["card-7"], id="closed"),
])
def test_the_queue_filters_searches_sorts_and_pages(query, expected):
    cases, me = _cases()
    page = select(cases, QueueQuery.parse(query), NOW, me.actor, page_size=3)
    assert [c.case_id for c in page.cases] == expected


def test_bad_queue_parameters_name_what_is_allowed():
    for query, words in (({"status": "x"}, "status must be one of"), ({"min_score": "2"}, "[0, 1]"),
                         ({"page": "0"}, "page >= 1"), ({"min_age_hours": "abc"}, "numbers")):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            QueueQuery.parse(query)


@pytest.mark.parametrize(("feature", "value", "words"), [
    ("amount_to_account_mean_30d", 5.63, "amount 5.6x this card's 30-day mean"),
    ("amount_to_account_max_30d", 1.2, "amount 1.2x this card's 30-day largest"),
    ("terminal_known_frauds_7d", 2, "terminal: 2 confirmed frauds in the last 7 days"),
    ("seconds_since_previous_tx", 180, "3 min since this card's previous transaction"),
    ("is_night", 1, "at night (00:00-06:59)"),
    ("something_new", 0.5, "something_new = 0.5"),
])
def test_reasons_read_in_words(feature, value, words):
    assert reason_in_words(feature, value, {}) == words


def test_an_actor_keeps_the_whole_subject_when_the_name_is_long():
    actor = Analyst("u-" + "9" * 40, "N" * 200, "lead").actor
    assert len(actor) == 100 and actor.endswith(" <u-" + "9" * 40 + ">")
    with pytest.raises(ValueError, match="role 'admin'"):
        role_of("u", [], {"u": "admin"}, [], [])


@pytest.mark.parametrize(("settings", "public_url", "words"), [
    pytest.param(dict(review_auth="oidc"), "https://r.example", "needs REVIEW_OIDC_ISSUER", id="oidc-unset"),
    pytest.param(dict(review_auth="oidc", review_oidc_issuer="https://idp", review_oidc_client_id="c",
                      review_session_key="short"), "https://r.example", "REVIEW_SESSION_KEY is no key",
                 id="bad-session-key"),
    pytest.param(dict(review_auth="oidc", review_oidc_issuer="https://idp", review_oidc_client_id="c",
                      review_session_key="q5w4QkYwmdx1Xh2P7g3Jb3sYtq2Jw0eX8s9Q3K1d6Zk=",
                      review_cookie_secure=False), "http://review.example", "only for plain http on loopback",
                 id="insecure-cookie-off-loopback"),
    pytest.param(dict(review_auth="proxy"), "https://r.example", "needs REVIEW_TRUSTED_PROXIES", id="proxy-unset"),
    pytest.param(dict(review_auth="proxy", review_trusted_proxies=["10.0.0.300"]), "https://r.example",
                 "is no address", id="proxy-bad-address"),
])
def test_a_console_refuses_unsafe_sign_in_settings(settings, public_url, words):
    with pytest.raises(ConfigError, match=words):
        check_auth_settings(Settings(**settings), public_url)

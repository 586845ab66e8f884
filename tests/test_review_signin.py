"""Who did it: the review console signs analysts in through a real OpenID Connect provider
process (navikt's mock-oauth2-server, fetched by ops/oidc/fetch.sh) in a real headless
Chromium, and records the signed-in subject on case events and labels; roles refuse what
they do not allow; a proxy's identity header counts only from the proxy.

The console runs with REVIEW_COOKIE_SECURE=false: the test serves plain http on loopback,
the one case that setting is accepted for.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import urllib.parse

import pytest
from cryptography.fernet import Fernet

from app.events import CaseEvent, Label, ScoredTransaction, Transaction, encode
from tests.conftest import TEST_REDIS_URL, _create_topics
from tests.oidc_utils import OidcProvider, java_available
from tests.review_utils import Console
from tests.test_review_console import ALERTS, T0, _produce, browser  # noqa: F401 (fixture)
from tests.worker_utils import free_port, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CLIENT_SECRET = "oidc-client-secret-7c1f0e"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    if not java_available():
        pytest.skip("needs java and mvn for the OpenID Connect provider (.ci/run installs them)")
    p = OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log").start()
    try:
        yield p
    finally:
        p.stop()


def _secret_file(path, value: str) -> str:
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


def _console_env(broker, tmp, **extra: str) -> dict[str, str]:
    port = free_port()
    env = worker_env(broker.url, TEST_REDIS_URL, tmp, TOPIC_PARTITIONS="2", REVIEW_PORT=str(port),
                     REVIEW_TARGET_SECONDS="3600", **extra)
    env["CASES_TOPIC"] = f"cases-{tmp.name[-30:].replace('_', '-')}"
    asyncio.run(_create_topics(broker.bootstrap, [env["ALERTS_TOPIC"]], 2))
    records = [(a.transaction.account_id.encode(), encode(a)) for a in ALERTS]
    asyncio.run(_produce(broker.bootstrap, env["ALERTS_TOPIC"], records))
    # the card's normal spending: scored transactions that did not alert
    asyncio.run(_create_topics(broker.bootstrap, [env["SCORED_TOPIC"]], 2))
    normal = [ScoredTransaction(
        transaction=Transaction(transaction_id=f"tx-a0{i}", account_id="card-A", terminal_id="term-9",
                                amount_minor=800 + i, currency="EUR", event_time_ms=T0 - 3_600_000 * (i + 1)),
        score=0.02, decision="pass", model_version="v1", features={}, scored_time_ms=T0,
    ) for i in range(2)]
    asyncio.run(_produce(broker.bootstrap, env["SCORED_TOPIC"], [(b"card-A", encode(s)) for s in normal]))
    return env


@pytest.fixture(scope="module")
def console(broker, provider, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signin")
    env = _console_env(broker, tmp)
    env.update(
        REVIEW_AUTH="oidc", REVIEW_OIDC_ISSUER=provider.issuer, REVIEW_OIDC_CLIENT_ID="fraud-console",
        REVIEW_OIDC_CLIENT_SECRET_FILE=_secret_file(tmp / "client-secret", CLIENT_SECRET),
        REVIEW_SESSION_KEY_FILE=_secret_file(tmp / "session-key", Fernet.generate_key().decode()),
        REVIEW_PUBLIC_URL=f"http://127.0.0.1:{env['REVIEW_PORT']}", REVIEW_COOKIE_SECURE="false",
    )
    c = Console(env, tmp / "review.log").start()
    try:
        c.wait_cases(5)
        yield c
    finally:
        c.stop()


def _metric(console: Console, name: str, labels: str = "") -> float:
    _, text = console.get("/metrics")
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def _sign_in(browser, console: Console, provider: OidcProvider, path: str, subject: str,
             name: str, groups: list[str]) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(console.url + path)
    assert browser.current_url.startswith(provider.issuer + "/authorize?"), browser.current_url
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    browser.find_element(By.NAME, "username").send_keys(subject)
    browser.find_element(By.NAME, "claims").send_keys(json.dumps({"name": name, "groups": groups}))
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait(browser, lambda b: b.current_url == console.url + path and b.find_elements(By.ID, "who"))


def _wait(browser, ready, timeout: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(ready)


def _badge(browser, text: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def shown(b):
        try:
            return [e.text for e in b.find_elements(By.CSS_SELECTOR, "h2 .badge")] == [text]
        except StaleElementReferenceException:
            return False
    _wait(browser, shown)


def console_page(browser, url: str) -> str:
    browser.get(url)
    return browser.page_source


def _post(console: Console, case_id: str, cookie: str | None, headers: dict | None = None,
          source: str = "127.0.0.1", **form: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10, source_address=(source, 0))
    try:
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if cookie:
            hdrs["Cookie"] = cookie
        conn.request("POST", f"/cases/{case_id}/actions", urllib.parse.urlencode(form), hdrs)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_an_analyst_signs_in_confirms_and_the_event_and_labels_name_them(console, provider, browser, broker):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _sign_in(browser, console, provider, "/cases/card-A", "u-ann-17", "Ann Analyst", ["fraud-analysts"])
    assert browser.find_element(By.TAG_NAME, "h2").text.startswith("Card card-A")
    assert "Ann Analyst" in browser.find_element(By.ID, "who").text
    # only the analyst's actions are offered, and no name field to type
    offered = [b.get_attribute("value") for b in browser.find_elements(By.CSS_SELECTOR, "#case-form button")]
    assert offered == ["confirm", "dismiss", "assign", "comment"]
    assert browser.find_elements(By.ID, "actor") == []
    cookie = {c["name"]: c for c in browser.get_cookies()}["review_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "u-ann-17" not in cookie["value"] and "Ann" not in cookie["value"]  # sealed
    # reasons in words, none without a contribution
    assert "amount 42.17" in browser.find_element(By.ID, "alerts").text
    # the card's recent transactions, those that did not alert too
    console.wait(lambda: "tx-a00" in console_page(browser, console.url + "/cases/card-A"), "card activity")
    activity = browser.find_element(By.ID, "activity").text
    assert "tx-a01" in activity and "term-9" in activity and "pass" in activity

    browser.find_element(By.ID, "comment").send_keys("customer denies both")
    browser.find_element(By.TAG_NAME, "h2").click()  # out of the text box: keys are shortcuts
    ActionChains(browser).send_keys("c").perform()  # c: confirm
    _badge(browser, "confirmed fraud")

    actor = "Ann Analyst <u-ann-17>"
    verdicts = [e for e in console.case_history("card-A") if e["type"] == "confirmed_fraud"]
    assert [(e["actor"], e["comment"]) for e in verdicts] == [(actor, "customer denies both")]
    labels = [Label.model_validate_json(r.value)
              for r in read_topic(broker.bootstrap, console.env["LABELS_TOPIC"], idle_seconds=1.5)]
    assert sorted(l.transaction_id for l in labels) == ["tx-a1", "tx-a2", "tx-a3"]
    assert {l.labelled_by for l in labels} == {actor}

    # the analyst may not reopen: 403, nothing written, counted
    session = f"review_session={cookie['value']}"
    csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
    before = console.case_history("card-A")
    status, body = _post(console, "card-A", session, action="reopen", key="k-reopen", csrf=csrf, comment="")
    assert status == 403 and "does not allow reopen" in body
    # no CSRF token, or another's: 403; a typed name is ignored
    status, _ = _post(console, "card-A", session, action="comment", comment="x", key="k-c1", csrf="")
    assert status == 403
    assert console.case_history("card-A") == before
    status, _ = _post(console, "card-A", session, action="comment", comment="noted", key="k-c2",
                      csrf=csrf, actor="Mallory")
    assert status == 303 and console.case_history("card-A")[-1]["actor"] == actor
    assert _metric(console, "fraud_review_requests_forbidden_total", 'reason="role"') == 1
    assert _metric(console, "fraud_review_requests_forbidden_total", 'reason="csrf"') == 1
    assert _metric(console, "fraud_review_sign_ins_total", 'result="ok"') == 1
    assert _metric(console, "fraud_cases_past_target") == 4  # every other open case is older

    # signed out, at the provider too: the cookie is gone and the console asks for a
    # sign-in again
    browser.find_element(By.ID, "sign-out").click()
    _wait(browser, lambda b: b.current_url == console.url + "/signed-out" and b.find_elements(By.ID, "signed-out"))
    assert "review_session" not in {c["name"] for c in browser.get_cookies()}
    browser.get(console.url + "/")
    _wait(browser, lambda b: b.current_url.startswith(provider.issuer + "/authorize?"))


def test_a_lead_may_reopen_and_a_request_without_a_session_is_refused(console, provider, browser):
    from selenium.webdriver.common.by import By

    status, _ = _post(console, "card-B", None, action="confirm", key="k-anon", comment="")
    assert status == 401
    _sign_in(browser, console, provider, "/cases/card-A", "u-lea-3", "Lee Lead", ["fraud-leads"])
    offered = [b.get_attribute("value") for b in browser.find_elements(By.CSS_SELECTOR, "#case-form button")]
    assert offered == ["reopen", "block", "comment"]
    browser.find_element(By.CSS_SELECTOR, "button[value=reopen]").click()
    _badge(browser, "open")
    assert console.case_history("card-A")[-1]["actor"] == "Lee Lead <u-lea-3>"
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys("n").perform()  # n: the next open case by risk
    _wait(browser, lambda b: b.current_url == console.url + "/cases/card-B")


def test_after_sign_in_the_browser_stays_on_the_console(console, provider, browser):
    """A link to /login naming another site as the page to return to (a tab Chromium drops
    from the URL, a backslash it reads as a slash) brings the analyst back to the queue."""
    from selenium.webdriver.common.by import By

    for nxt in ("/%09/example.invalid/x", "/%5Cexample.invalid/x", "//example.invalid/x"):
        browser.delete_all_cookies()
        browser.get(console.url + "/login?next=" + nxt)
        browser.find_element(By.NAME, "username").send_keys("u-ann-1")
        browser.find_element(By.NAME, "claims").send_keys(json.dumps({"name": "Ann", "groups": []}))
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        _wait(browser, lambda b: b.find_elements(By.ID, "who") or "example.invalid" in b.current_url)
        assert browser.current_url == console.url + "/", (nxt, browser.current_url)


def test_the_console_keeps_its_secrets_out_of_logs_and_answers(console):
    key = open(console.env["REVIEW_SESSION_KEY_FILE"]).read().strip()
    answers = []
    for path in ("/", "/metrics", "/healthz", "/login", "/cases/card-A", "/auth/callback?code=x&state=y"):
        conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        answers.append(f"{r.status} {r.getheaders()} {r.read().decode(errors='replace')}")
        conn.close()
    log = console.log_path.read_text(errors="replace")
    for secret in (CLIENT_SECRET, key):
        assert secret not in log and not any(secret in a for a in answers)
    assert "Traceback" not in log


def test_the_proxy_header_counts_only_from_the_proxy(broker, tmp_path):
    env = _console_env(broker, tmp_path, REVIEW_AUTH="proxy", REVIEW_TRUSTED_PROXIES='["127.0.0.2/32"]')
    console = Console(env, tmp_path / "review.log").start()
    try:
        console.wait_cases(5)
        ident = {"X-Forwarded-User": "u-pia-5", "X-Forwarded-Preferred-Username": "Pia",
                 "X-Forwarded-Groups": "staff,fraud-analysts"}
        # from 127.0.0.1, which is no trusted proxy: refused and counted
        status, body = _post(console, "card-B", None, ident, action="confirm", key="k-p1", comment="")
        assert status == 403 and "no trusted proxy" in body
        # from the proxy: the case page carries the person's CSRF token
        conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10, source_address=("127.0.0.2", 0))
        conn.request("GET", "/cases/card-B", headers=ident)
        page = conn.getresponse().read().decode()
        conn.close()
        csrf = page.split("name=csrf value='", 1)[1].split("'", 1)[0]
        status, _ = _post(console, "card-B", None, ident, "127.0.0.2", action="dismiss", key="k-p2",
                          comment="", csrf=csrf)
        assert status == 303
        status, _ = _post(console, "card-B", None, ident, "127.0.0.2", action="reopen", key="k-p3",
                          comment="", csrf=csrf)
        assert status == 403
        events = [CaseEvent.model_validate(e) for e in console.case_history("card-B")]
        assert [(e.type, e.actor) for e in events][-1] == ("dismissed_genuine", "Pia <u-pia-5>")
        assert _metric(console, "fraud_review_requests_forbidden_total", 'reason="untrusted_proxy"') == 1
        assert _metric(console, "fraud_review_requests_forbidden_total", 'reason="role"') == 1
    finally:
        console.stop()

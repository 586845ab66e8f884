"""The review console as analysts use it: a real ``fraudctl review serve`` process on the
real broker, driven by a real headless Chromium (Debian's chromium and chromium-driver,
through Selenium), by plain HTTP posts (bad input) and by ``fraudctl review`` commands.

Set ``REVIEW_SCREENSHOTS_DIR=docs/img`` to refresh the screenshots of the docs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from app.cli.base import cli
from app.events import Alert, CaseEvent, Label, Reason, Transaction, encode
from tests.conftest import _create_topics
from tests.review_utils import Console, run_cli
from tests.worker_utils import ROOT, free_port, read_topic, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T0 = 1_530_403_200_000  # 2018-07-01T00:00:00Z


def make_alert(tid: str, card: str, score: float, terminal: str, minute: int) -> Alert:
    tx = Transaction(
        transaction_id=tid, account_id=card, terminal_id=terminal,
        amount_minor=4_200 + minute * 17, currency="EUR", event_time_ms=T0 + minute * 60_000,
    )
    return Alert(
        alert_id=tid, transaction=tx, score=score, threshold=0.5, model_version="v20180710-rf",
        features={"amount": tx.amount, "customer_tx_count_1d": 4.0, "terminal_risk_7d_delay_7d": 0.25},
        reasons=[
            Reason(feature="amount", value=tx.amount, contribution=0.21),
            Reason(feature="terminal_risk_7d_delay_7d", value=0.25, contribution=0.12),
        ],
        event_time_ms=tx.event_time_ms, alert_time_ms=tx.event_time_ms + 80,
        outcome="review", rules_fired=["big-amount"] if score > 0.9 else [],
    )


ALERTS = [
    make_alert("tx-a1", "card-A", 0.97, "term-1", 1),
    make_alert("tx-a2", "card-A", 0.62, "term-2", 5),
    make_alert("tx-a3", "card-A", 0.71, "term-1", 9),
    make_alert("tx-b1", "card-B", 0.83, "term-3", 2),
    make_alert("tx-c1", "card-C", 0.55, "term-4", 3),
    make_alert("tx-d1", "card-D", 0.66, "term-5", 4),
    make_alert("tx-e1", "card-E", 0.58, "term-6", 6),
]


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def console(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    env = worker_env(broker.url, "redis://127.0.0.1:6379/0", tmp, TOPIC_PARTITIONS="2",
                     REVIEW_PORT=str(free_port()))
    env["CASES_TOPIC"] = f"cases-{tmp.name[-30:].replace('_', '-')}"
    asyncio.run(_create_topics(broker.bootstrap, [env["ALERTS_TOPIC"]], 2))
    records = [(a.transaction.account_id.encode(), encode(a)) for a in ALERTS]
    records.insert(3, (b"card-X", b"{not an alert"))  # logged, counted, skipped
    asyncio.run(_produce(broker.bootstrap, env["ALERTS_TOPIC"], records))
    c = Console(env, tmp / "review.log").start()
    try:
        c.wait_cases(5)
        yield c
    finally:
        c.stop()


def _labels(console: Console, broker) -> list[tuple[bytes, Label]]:
    records = read_topic(broker.bootstrap, console.env["LABELS_TOPIC"], idle_seconds=1.5)
    return [(r.key, Label.model_validate_json(r.value)) for r in records]


def _metric(console: Console, name: str) -> float:
    _, text = console.get("/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver, tmp: Path, name: str) -> None:
    """The whole page (the window grows to its height), to tmp and REVIEW_SCREENSHOTS_DIR."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(600, min(int(height) + 140, 2000)))
    driver.save_screenshot(str(tmp / name))
    target = os.environ.get("REVIEW_SCREENSHOTS_DIR")
    if target:
        Path(ROOT / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / name, ROOT / target / name)


def test_an_analyst_confirms_a_case_in_chromium_and_its_labels_reach_the_stream(
    console, browser, broker, tmp_path
):
    from selenium.webdriver.common.by import By

    browser.get(console.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
    cards = [r.find_element(By.TAG_NAME, "a").text for r in rows]
    assert cards[:5] == ["card-A", "card-B", "card-D", "card-E", "card-C"]  # by max score
    _screenshot(browser, tmp_path, "review-queue.png")

    rows[0].find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.TAG_NAME, "h2").text.startswith("Card card-A")
    shown = [r.find_element(By.TAG_NAME, "td").text
             for r in browser.find_elements(By.CSS_SELECTOR, "#alerts > tbody > tr")]
    assert shown == ["tx-a1", "tx-a3", "tx-a2"]  # highest score first
    assert "big-amount" in browser.find_element(By.ID, "alerts").text

    browser.find_element(By.ID, "actor").send_keys("Ann Analyst")
    comment = "Card used at term-1 twice in 8 min; customer denies. <b>not bold</b>"
    browser.find_element(By.ID, "comment").send_keys(comment)
    browser.find_element(By.CSS_SELECTOR, "button[value=confirm]").click()

    # the form posts, then the browser follows the redirect to the case page: wait for it
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def confirmed(b) -> bool:
        return b.find_element(By.CSS_SELECTOR, "h2 .badge").text == "confirmed fraud"

    try:
        WebDriverWait(
            browser, 30, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        ).until(confirmed)
    except Exception:  # noqa: BLE001 - say what the page shows instead
        raise AssertionError(f"case page not confirmed: {browser.page_source[:1500]}") from None
    history = browser.find_element(By.ID, "history")
    last = history.find_elements(By.CSS_SELECTOR, "tbody tr")[-1].text
    assert "confirmed fraud" in last and "Ann Analyst" in last and comment in last
    assert history.find_elements(By.TAG_NAME, "b") == []  # the HTML was shown as text
    # the analyst's name is remembered for the next form
    assert browser.find_element(By.ID, "actor").get_attribute("value") == "Ann Analyst"
    _screenshot(browser, tmp_path, "review-case.png")

    labels = _labels(console, broker)
    verdict = [e for e in console.case_history("card-A") if e["type"] == "confirmed_fraud"]
    assert len(verdict) == 1 and verdict[0]["comment"] == comment
    assert sorted((k, l.transaction_id) for k, l in labels) == [
        (b"term-1", "tx-a1"), (b"term-1", "tx-a3"), (b"term-2", "tx-a2")]
    assert all(l.is_fraud and l.source == "investigation" for _, l in labels)
    assert {l.label_time_ms for _, l in labels} == {verdict[0]["time_ms"]}
    assert _metric(console, "fraud_case_verdicts_total") == 1
    assert _metric(console, "fraud_case_verdict_delay_seconds_count") == 1
    assert _metric(console, "fraud_case_verdict_precision") == 1.0
    assert _metric(console, "fraud_case_verdict_labels_total") == 3
    assert _metric(console, "fraud_case_alerts_rejected_total") == 1


# --- bad input over HTTP -------------------------------------------------------------------


def _history_len(console: Console, case_id: str) -> int:
    return len(console.case_history(case_id))


def test_bad_posts_are_refused_with_a_reason_and_change_nothing(console):
    before = _history_len(console, "card-B")
    form = dict(action="confirm", actor="Bob", comment="ok", key="form-bad-1")
    cases = [
        ("card-Z", {}, {}, 404, "no case"),
        ("card-B", {"actor": ""}, {}, 400, "name is empty"),
        ("card-B", {"actor": "   "}, {}, 400, "name is empty"),
        ("card-B", {"comment": "x" * 2**20}, {}, 413, "a comment holds at most 4000"),
        ("card-B", {"comment": "x" * 5000}, {}, 400, "at most 4000"),
        ("card-B", {"action": "delete"}, {}, 400, "unknown action"),
        ("card-B", {"key": ""}, {}, 400, "no idempotency key"),
        ("card-B", {}, {"Origin": "http://evil.example"}, 403, "another site"),
    ]
    for case_id, change, headers, status, words in cases:
        got, body = console.post(case_id, headers, **{**form, **change})
        assert (got, words in body) == (status, True), (change, headers, got, body[-300:])
    assert _history_len(console, "card-B") == before
    console.alive()


def test_a_replayed_post_records_once_and_a_second_verdict_is_a_conflict(console, broker):
    form = dict(action="dismiss", actor="Bob", comment="<script>alert('x')</script>", key="form-d-1")
    assert console.post("card-D", **form)[0] == 303
    assert console.post("card-D", **form)[0] == 303  # the same form again: idempotent
    history = console.case_history("card-D")
    assert [e["type"] for e in history] == ["opened", "dismissed_genuine"]
    status, page = console.get("/cases/card-D")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "<script>" not in page

    for action in ("dismiss", "confirm"):  # second verdict, contradicting verdict
        status, body = console.post("card-D", **{**form, "action": action, "key": f"k-{action}"})
        assert status == 409 and "closed as dismissed_genuine; reopen it first" in body
    labels = [l for _, l in _labels(console, broker) if l.account_id == "card-D"]
    assert [(l.transaction_id, l.is_fraud) for l in labels] == [("tx-d1", False)]

    # reopened, the contradicting verdict is recorded; the stream counts the contradiction
    assert console.post("card-D", **{**form, "action": "reopen", "key": "k-r"})[0] == 303
    assert console.post("card-D", **{**form, "action": "confirm", "key": "k-c"})[0] == 303
    labels = [l for _, l in _labels(console, broker) if l.account_id == "card-D"]
    assert [(l.transaction_id, l.is_fraud) for l in labels] == [("tx-d1", False), ("tx-d1", True)]


# --- commands for scripts ------------------------------------------------------------------


def test_review_commands_rebuild_the_cases_and_act_like_the_console(console):
    env = console.env
    out = run_cli(env, "review", "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    listed = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [c["case_id"] for c in listed] == sorted(
        [c["case_id"] for c in listed], key=lambda c: -next(x["max_score"] for x in listed if x["case_id"] == c))
    assert {"card-C", "card-E"} <= {c["case_id"] for c in listed}
    assert all(c["status"] == "open" for c in listed)

    out = run_cli(env, "review", "confirm", "card-Q", "--analyst", "Cli")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no case 'card-Q'" in out.stderr
    out = run_cli(env, "review", "dismiss", "card-C", "--analyst", "", "--key", "s-1")
    assert out.returncode == 2 and "name is empty" in out.stderr

    args = ("review", "dismiss", "card-C", "--analyst", "Script", "--comment", "known [/] customer",
            "--key", "script-1")
    first, second = run_cli(env, *args), run_cli(env, *args)
    assert first.returncode == 0 and "1 label(s) written" in first.stdout
    assert second.returncode == 0 and "already recorded" in second.stdout
    # the console follows events other writers add to the topic
    console.wait(lambda: "dismissed genuine" in console.get("/cases/card-C")[1], "card-C dismissed")
    out = run_cli(env, "review", "show", "card-C")
    assert out.returncode == 0, out.stderr
    assert "known [/] customer" in out.stdout and "dismissed_genuine" in out.stdout  # no markup


def test_a_restarted_console_rebuilds_the_same_cases_and_adds_no_alert_twice(console):
    before = {c: console.case_history(c) for c in ("card-A", "card-B", "card-E")}
    console.stop()
    console.start()
    console.wait_cases(5)
    status, page = console.get("/?status=all")
    assert status == 200
    for case_id, history in before.items():
        assert console.case_history(case_id) == history
    assert (console.get_json("/healthz") or {})["cases"] == 5
    assert _metric(console, "fraud_open_cases") == 2  # card-B, card-E


def test_a_non_loopback_address_needs_allow_remote():
    result = CliRunner().invoke(cli, ["review", "serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output and "proxy" in result.output


def test_case_events_on_the_topic_are_valid_records(console, broker):
    records = read_topic(broker.bootstrap, console.env["CASES_TOPIC"], idle_seconds=1.5)
    events = [CaseEvent.model_validate_json(r.value) for r in records]
    assert all(r.key == e.case_id.encode() for r, e in zip(records, events))
    assert {e.type for e in events} >= {"opened", "alert_added", "confirmed_fraud",
                                         "dismissed_genuine", "reopened"}

"""Answer time of the review console's pages with a few thousand cases.

A Tansu broker of its own gets ``--cases`` alerts (one card each, scores spread over
[0.5, 1], 1..3 alerts per card) and ``--normal`` scored transactions per card that did
not alert; a real ``fraudctl review serve`` process (``REVIEW_AUTH=proxy``, this process
as the trusted proxy, so the identity check runs on every request) turns them into
cases. Then, one request at a time over loopback, each page is asked ``--repeat`` times
and its answer time (request sent to body read) reported at p50/p95/max with its size:
the queue (default sort, by age, a search by terminal, "my cases", a score filter, the
last page) and a case page.

Usage::

    .venv/bin/python bench/review_pages.py --cases 3000 --out bench/results/review-pages.json

Not a test: nothing asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from app.config import Settings  # noqa: E402
from app.events import Alert, Reason, ScoredTransaction, Transaction, encode  # noqa: E402
from app.stream.stack import resolve_tansu_bin, stop_process  # noqa: E402
from tests.conftest import _create_topics, start_tansu  # noqa: E402
from tests.worker_utils import free_port, worker_env  # noqa: E402

T0 = 1_530_403_200_000  # 2018-07-01T00:00:00Z
USER = {"X-Forwarded-User": "u-bench", "X-Forwarded-Preferred-Username": "Bench Analyst",
        "X-Forwarded-Groups": "fraud-analysts"}


def _alerts(n_cases: int) -> list[Alert]:
    out = []
    for c in range(n_cases):
        for k in range(1 + c % 3):
            minute = c * 7 + k * 3
            tx = Transaction(transaction_id=f"tx-{c}-{k}", account_id=f"card-{c:05d}",
                             terminal_id=f"term-{(c * 13 + k) % 900:04d}", amount_minor=2_000 + (c * 37) % 50_000,
                             currency="EUR", event_time_ms=T0 + minute * 60_000)
            score = 0.5 + ((c * 7919 + k) % 1000) / 2000
            out.append(Alert(
                alert_id=tx.transaction_id, transaction=tx, score=score, threshold=0.5,
                model_version="bench", features={"amount": tx.amount, "amount_to_account_mean_30d": 4.2},
                reasons=[Reason(feature="amount_to_account_mean_30d", value=4.2, contribution=0.3),
                         Reason(feature="hour_of_day", value=3.0, contribution=0.0)],
                event_time_ms=tx.event_time_ms, alert_time_ms=tx.event_time_ms + 50, outcome="review",
            ))
    return out


def _normal(n_cases: int, per_card: int) -> list[ScoredTransaction]:
    return [ScoredTransaction(
        transaction=Transaction(transaction_id=f"n-{c}-{i}", account_id=f"card-{c:05d}",
                                terminal_id=f"term-{(c + i) % 900:04d}", amount_minor=900 + i * 50,
                                currency="EUR", event_time_ms=T0 - (i + 1) * 3_600_000),
        score=0.05, decision="pass", model_version="bench", features={}, scored_time_ms=T0,
    ) for c in range(n_cases) for i in range(per_card)]


async def _produce(bootstrap: str, topic: str, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, encode(r), key=key) for key, r in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _get(url: str) -> tuple[float, int]:
    req = urllib.request.Request(url, headers=USER)
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        size = len(r.read())
    return (time.perf_counter() - t0) * 1000, size


def _stats(times: list[float], size: int) -> dict:
    times = sorted(times)
    at = lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 1)  # noqa: E731
    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": round(times[-1], 1), "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--normal", type=int, default=10, help="scored transactions per card that did not alert")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    broker = start_tansu(resolve_tansu_bin(Settings()), tmp)
    port = free_port()
    env = worker_env(f"kafka://{broker.bootstrap}", "redis://127.0.0.1:6379/0", tmp, TOPIC_PARTITIONS="4",
                     REVIEW_PORT=str(port), REVIEW_AUTH="proxy", REVIEW_TRUSTED_PROXIES='["127.0.0.1/32"]')
    env["CASES_TOPIC"] = f"cases-{tmp.name[-20:].replace('_', '-')}"
    alerts = _alerts(args.cases)
    asyncio.run(_create_topics(broker.bootstrap, [env["ALERTS_TOPIC"], env["SCORED_TOPIC"]], 4))
    asyncio.run(_produce(broker.bootstrap, env["ALERTS_TOPIC"],
                         [(a.transaction.account_id.encode(), a) for a in alerts]))
    normal = _normal(args.cases, args.normal)
    asyncio.run(_produce(broker.bootstrap, env["SCORED_TOPIC"],
                         [(s.transaction.account_id.encode(), s) for s in normal]))
    log = open(tmp / "review.log", "ab")
    proc = subprocess.Popen([sys.executable, "-c", "from app.cli import main; main()", "review", "serve"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, (tmp / "review.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if json.loads(r.read())["cases"] >= args.cases:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        cases_seconds = round(time.monotonic() - t0, 1)
        time.sleep(2.0)  # the scored follower reads its topic
        pages = {
            "queue": "/",
            "queue-by-age": "/?sort=age",
            "queue-search-terminal": "/?q=term-0042",
            "queue-my-cases": "/?assignee=me",
            "queue-min-score-0.9": "/?min_score=0.9",
            "queue-last-page": f"/?page={args.cases // 50}",
            "case": "/cases/card-00042",
        }
        results = {}
        for name, path in pages.items():
            _get(base + path)  # warm
            runs = [_get(base + path) for _ in range(args.repeat)]
            results[name] = _stats([t for t, _ in runs], runs[-1][1])
            print(f"{name:24s} {results[name]}", flush=True)
    finally:
        proc.terminate()
        proc.wait(20)
        stop_process(broker.pid)
    doc = {
        "bench": "review_pages", "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cases": args.cases, "alerts": len(alerts), "normal_per_card": args.normal,
        "repeat": args.repeat, "console_cases_ready_seconds": cases_seconds, "pages": results,
    }
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()

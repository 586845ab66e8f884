"""Black-box helpers of the fault tests: replay a slice, collect what the workers wrote,
compare it with an uninterrupted run.

Everything is read from the broker, never from a worker's insides:

* scored transaction ids from ``SCORED_TOPIC`` (at least once: a set),
* alert ids from ``ALERTS_TOPIC`` (exactly once: a multiset, duplicates counted),
* the final table state from every ``<APP_ID>-*-changelog`` topic: the last value of
  each key (a ``None`` value deletes it), batch records unpacked.

Every topic is read until nothing new arrives for a while, never "up to the end
offset": Tansu reports too low an end offset for partitions whose last batch holds
several records (docs/operations.md, "The Tansu broker and its end-offset defect").
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.config import Settings
from app.replay import ReplayStats, replay_frame

from .datasets import handbook_days

#: Default slice of the fault tests: days from this date...
SLICE_START = "2018-04-01"
#: ... this many of them ...
SLICE_DAYS = 2
#: ... and the accounts whose id modulo this is 0. FAULT_SLICE="START,DAYS,MOD"
#: overrides the three (e.g. ``2018-04-01,14,1`` for the full-size run, see docs/guarantees.md).
SLICE_ACCOUNT_MODULO = 4


def fault_slice() -> pd.DataFrame:
    """The transactions the fault tests replay (``FAULT_SLICE`` overrides the default)."""
    import os

    start, days, mod = SLICE_START, SLICE_DAYS, SLICE_ACCOUNT_MODULO
    if os.environ.get("FAULT_SLICE"):
        start, d, m = os.environ["FAULT_SLICE"].split(",")
        days, mod = int(d), int(m)
    df = handbook_days(start, days)
    return df[df["CUSTOMER_ID"] % mod == 0].reset_index(drop=True)


def run_settings(broker_url: str, env: dict[str, str]) -> Settings:
    """Settings of a replay into the topics of the worker environment ``env``."""
    return Settings(
        kafka_broker_url=broker_url,
        transactions_topic=env["TRANSACTIONS_TOPIC"],
        labels_topic=env["LABELS_TOPIC"],
    )


def replay(df: pd.DataFrame, broker_url: str, env: dict[str, str], **kw) -> ReplayStats:
    """Replay ``df``'s transactions (no labels: their interleaving with transactions is
    not part of what the fault tests compare) into ``env``'s topics."""
    return asyncio.run(replay_frame(df, run_settings(broker_url, env), labels=False, **kw))


class BackgroundReplay:
    """A replay at ``rate`` transactions/s in a thread, so faults can hit it midway."""

    def __init__(self, df: pd.DataFrame, broker_url: str, env: dict[str, str], rate: float):
        self.stats: ReplayStats | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.stats = replay(df, broker_url, env, rate=rate)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join()
                self.error = exc

        self._thread = threading.Thread(target=run, name="replay", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 300.0) -> ReplayStats:
        """Wait for the replay to end; its stats (re-raises its error)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"replay still running after {timeout}s")
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


# --- reading topics --------------------------------------------------------------


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts or time.monotonic() > deadline:
            return [TopicPartition(topic, p) for p in sorted(parts or ())]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)


async def _read(
    bootstrap: str,
    topics: list[str],
    idle_seconds: float,
    timeout: float,
    until=None,
) -> list:
    """Records of ``topics`` from the beginning until ``idle_seconds`` without a new one
    (and, with ``until``, not before ``until(records)`` is true or ``timeout`` passed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            tps += await _partitions(consumer, topic, min(timeout, 10.0))
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        done = until is None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                out.extend(batch[tp])
                last = time.monotonic()
            if not done and until(out):
                done = True
                last = time.monotonic()
            if done and time.monotonic() - last >= idle_seconds:
                return out
        return out  # condition not met: the caller compares and reports what is missing
    finally:
        await consumer.stop()


async def _changelog_topics(bootstrap: str, app_id: str) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        topics = await consumer.topics()
    finally:
        await consumer.stop()
    return sorted(t for t in topics if t.startswith(f"{app_id}-") and t.endswith("-changelog"))


@dataclass
class RunOutput:
    """What one run wrote, read back from the broker."""

    #: transaction id -> times it is on SCORED_TOPIC
    scored: Counter = field(default_factory=Counter)
    #: alert id -> times it is on ALERTS_TOPIC
    alerts: Counter = field(default_factory=Counter)
    #: changelog topic without the app id prefix -> {key: last value}
    tables: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    #: partition -> scored records on it (for diagnosing losses)
    scored_partitions: Counter = field(default_factory=Counter)

    @property
    def duplicate_alerts(self) -> int:
        """Alerts published more than once (extra copies)."""
        return sum(c - 1 for c in self.alerts.values() if c > 1)

    def summary(self, replayed_ids: set[str], expected: "RunOutput | None" = None) -> dict:
        """Counts for the note: replayed, scored, losses, alerts expected/seen, duplicates."""
        out = {
            "transactions_replayed": len(replayed_ids),
            "scored_distinct": len(set(self.scored) & replayed_ids),
            "scored_records": sum(self.scored.values()),
            "losses": len(replayed_ids - set(self.scored)),
            "alerts_seen": sum(self.alerts.values()),
            "alerts_distinct": len(self.alerts),
            "duplicate_alerts": self.duplicate_alerts,
            "table_keys": {name: len(t) for name, t in self.tables.items()},
        }
        if expected is not None:
            out["alerts_expected"] = len(expected.alerts)
            out["alerts_missing"] = len(set(expected.alerts) - set(self.alerts))
            out["alerts_unexpected"] = len(set(self.alerts) - set(expected.alerts))
            out["table_keys_differing"] = {
                name: _differing(t, self.tables.get(name, {}))
                for name, t in expected.tables.items()
            }
        return out


def _differing(a: dict, b: dict) -> int:
    return sum(1 for k in set(a) | set(b) if a.get(k) != b.get(k))


def collect(
    bootstrap: str,
    env: dict[str, str],
    replayed_ids: set[str],
    timeout: float = 120.0,
    idle_seconds: float = 3.0,
) -> RunOutput:
    """Wait until every replayed id is on the scored topic (at most ``timeout`` s), then
    read a run's outputs.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    env : dict
        The workers' environment (topic names, ``APP_ID``).
    replayed_ids : set of str
        Transaction ids replayed; the scored topic is read until it holds them all.
    """
    from app.events import Alert, ScoredTransaction

    def all_scored(records) -> bool:
        seen = {ScoredTransaction.model_validate_json(r.value).transaction.transaction_id for r in records}
        return replayed_ids <= seen

    out = RunOutput()
    scored = asyncio.run(_read(bootstrap, [env["SCORED_TOPIC"]], idle_seconds, timeout, all_scored))
    out.scored = Counter(
        ScoredTransaction.model_validate_json(r.value).transaction.transaction_id for r in scored
    )
    out.scored_partitions = Counter(r.partition for r in scored)
    alerts = asyncio.run(_read(bootstrap, [env["ALERTS_TOPIC"]], idle_seconds, timeout))
    out.alerts = Counter(Alert.model_validate_json(r.value).alert_id for r in alerts)
    out.tables = read_tables(bootstrap, env["APP_ID"], idle_seconds, timeout)
    return out


def changelog_changes(key: bytes | None, value: bytes | None) -> list[tuple[bytes, bytes | None]]:
    """The single-key changes a changelog record stands for: itself, or the changes a
    batch record packs (:mod:`app.changelog`)."""
    from app.changelog import is_batch_key, unpack_changes

    if key is not None and key.startswith(b'"\\u0000') and is_batch_key(json.loads(key)):
        return [] if value is None else list(unpack_changes(value))
    return [(key, value)]


def read_tables(
    bootstrap: str, app_id: str, idle_seconds: float = 3.0, timeout: float = 300.0
) -> dict[str, dict[bytes, bytes]]:
    """Final state of every table of ``app_id``, from its changelog topics."""
    topics = asyncio.run(_changelog_topics(bootstrap, app_id))
    tables: dict[str, dict[bytes, bytes]] = {}
    for topic in topics:
        state: dict[bytes, bytes] = {}
        for r in asyncio.run(_read(bootstrap, [topic], idle_seconds, timeout)):
            for key, value in changelog_changes(r.key, r.value):
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        tables[topic[len(app_id) + 1 :]] = state
    return tables


def report(name: str, summary: dict, path: Path | None = None) -> None:
    """Print a fault test's counts (``pytest -s`` shows them) and append them as one JSON
    line to ``FAULT_REPORT`` (a file path) when that is set."""
    import os

    line = json.dumps({"test": name, **summary}, sort_keys=True)
    print(f"\nFAULT-REPORT {line}")
    target = path or (Path(os.environ["FAULT_REPORT"]) if os.environ.get("FAULT_REPORT") else None)
    if target is not None:
        with open(target, "a") as f:
            f.write(line + "\n")


def assert_same_as(run: RunOutput, baseline: RunOutput, replayed_ids: set[str]) -> None:
    """Same scored set, same alerts each exactly once, same final table state."""
    lost = replayed_ids - set(run.scored)
    assert set(run.scored) == replayed_ids, (
        f"lost {len(lost)} (e.g. {sorted(lost)[:5]}), "
        f"unexpected {len(set(run.scored) - replayed_ids)}; scored per partition "
        f"{dict(run.scored_partitions)}"
    )
    assert run.duplicate_alerts == 0, {k: c for k, c in run.alerts.items() if c > 1}
    assert set(run.alerts) == set(baseline.alerts), (
        f"missing {sorted(set(baseline.alerts) - set(run.alerts))[:10]}, "
        f"unexpected {sorted(set(run.alerts) - set(baseline.alerts))[:10]}"
    )
    assert set(run.tables) == set(baseline.tables)
    for name, expected in baseline.tables.items():
        got = run.tables[name]
        diff = [k for k in set(expected) | set(got) if expected.get(k) != got.get(k)]
        first = diff[0] if diff else None
        assert not diff, (
            f"{name}: {len(diff)} keys differ, e.g. {diff[:5]}; {first!r}: expected "
            f"{(expected.get(first) or b'')[:300]!r}, got {(got.get(first) or b'')[:300]!r}"
            + _account_differences(name, diff, expected, got)
        )


def _account_differences(name: str, keys: list, expected: dict, got: dict) -> str:
    """For account states: per differing account, the transaction ids each side holds
    only, and the ids each side marks revised (what tells a lost update from one
    featurized out of order)."""
    if not name.startswith("account_states"):
        return ""
    from app.features import AccountState

    lines = []
    for key in keys[:10]:
        try:
            e = AccountState.from_bytes(expected[key]) if expected.get(key) else None
            g = AccountState.from_bytes(got[key]) if got.get(key) else None
        except Exception as exc:  # noqa: BLE001 - a report, not the assertion
            lines.append(f"{key!r}: undecodable ({exc})")
            continue
        e_ids, g_ids = set(e.ids if e else ()), set(g.ids if g else ())
        lines.append(
            f"{key!r}: ids only expected {sorted(e_ids - g_ids)}, only got "
            f"{sorted(g_ids - e_ids)}; revised expected {e.revised if e else None}, "
            f"got {g.revised if g else None}; ids {g.ids if g else None}"
        )
    return "\n" + "\n".join(lines)


"""What the harness produces: transactions from the handbook file, simulated or
synthetic, probes that tell when workers consume, and the bulk producer.

Every value is the wire contract of :class:`app.events.Transaction` (encoded by
:func:`app.replay.plan_records`, keyed by account id), so the project's worker and the
reference apps read exactly what a card processor would send.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaProducer

from app.config import PROJECT_ROOT, Settings
from app.replay import client_options, ensure_topics, replay_frame

__all__ = [
    "SHARED_DATA",
    "load_frame",
    "synthetic_accounts_frame",
    "produce_frame",
    "send_probes",
    "probe_value",
]

#: The public handbook file, where the checkout sits beside ``shared/``.
SHARED_DATA = (
    PROJECT_ROOT.parent / "shared" / "data" / "handbook-transactions-2018-04-01_2018-07-31.csv.gz"
)
_HANDBOOK_FIRST_DAY = pd.Timestamp("2018-04-01")
_HANDBOOK_DAYS = 122
_TX_PER_DAY = 9_000  # a little under the handbook's ~9,700, so the days read suffice
_DAY_S = 86_400


def load_frame(n: int, data: Path | None = None, seed: int = 7) -> tuple[pd.DataFrame, str]:
    """The first ``n`` transactions of the handbook file, else of the simulator.

    Parameters
    ----------
    n : int
        Transactions wanted, >= 1.
    data : Path, optional
        A handbook-format file; default: :data:`SHARED_DATA` when present, else the
        handbook's simulator (:func:`app.data.simulate.simulate`, ``seed``).
    seed : int, default=7

    Returns
    -------
    (pandas.DataFrame, str)
        A :func:`~app.data.handbook.read_handbook` frame of ``min(n, available)`` rows in
        event-time order, and where it came from.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    days = math.ceil(n / _TX_PER_DAY) + 1
    if data is None and SHARED_DATA.exists():
        data = SHARED_DATA
    if data is not None:
        from app.data.handbook import read_handbook

        end = _HANDBOOK_FIRST_DAY + pd.Timedelta(days=min(days, _HANDBOOK_DAYS) - 1)
        df = read_handbook(data, _HANDBOOK_FIRST_DAY.date(), end.date())
        source = f"{data} ({len(df.head(n)):,} rows from 2018-04-01)"
    else:
        from app.data.simulate import simulate

        df = simulate(n_days=days, start_date="2018-04-01", seed=seed)
        source = f"simulated (handbook generator, {days} days, seed {seed})"
    return df.head(n).reset_index(drop=True), source


def synthetic_accounts_frame(
    accounts: int, tx_per_account: int, *, days: int = 30, terminals: int = 10_000, seed: int = 7
) -> pd.DataFrame:
    """``accounts`` accounts with ``tx_per_account`` transactions each, in time order.

    Times are uniform over ``days`` days from 2018-04-01, terminals uniform over
    ``terminals`` ids, amounts log-normal around 50 (handbook-like); built with numpy so
    a million accounts take seconds.

    Returns
    -------
    pandas.DataFrame of shape (accounts * tx_per_account, 9)
        Handbook columns (:data:`app.data.handbook.HANDBOOK_COLUMNS`), no frauds.

    Examples
    --------
    >>> df = synthetic_accounts_frame(3, 2)
    >>> len(df), df["CUSTOMER_ID"].nunique(), bool(df["TX_DATETIME"].is_monotonic_increasing)
    (6, 3, True)
    """
    if accounts < 1 or tx_per_account < 1:
        raise ValueError(
            f"accounts and tx_per_account must be >= 1, got {accounts}, {tx_per_account}"
        )
    rng = np.random.default_rng(seed)
    n = accounts * tx_per_account
    seconds = np.sort(rng.integers(0, days * _DAY_S, n))
    customers = rng.permutation(np.repeat(np.arange(accounts, dtype=np.int64), tx_per_account))
    amounts = np.round(np.clip(rng.lognormal(np.log(50.0), 0.6, n), 0.01, 10_000.0), 2)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": _HANDBOOK_FIRST_DAY + pd.to_timedelta(seconds, unit="s"),
            "CUSTOMER_ID": customers,
            "TERMINAL_ID": rng.integers(0, terminals, n),
            "TX_AMOUNT": amounts,
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // _DAY_S,
            "TX_FRAUD": np.zeros(n, dtype=np.int64),
            "TX_FRAUD_SCENARIO": np.zeros(n, dtype=np.int64),
        }
    )


async def produce_frame(df: pd.DataFrame, settings: Settings, on_progress=None) -> float:
    """Produce ``df``'s transactions to ``settings.transactions_topic`` as fast as
    possible (:func:`app.replay.replay_frame`, no labels); the seconds it took."""
    stats = await replay_frame(
        df,
        settings,
        labels=False,
        on_progress=(lambda tx, _labels: on_progress(tx)) if on_progress else None,
        progress_every=10_000,
    )
    if stats.transactions != len(df):
        raise RuntimeError(f"produced {stats.transactions} of {len(df)} transactions")
    return stats.elapsed_seconds


def probe_value(tag: str, index: int, partition: int, event_time_ms: int) -> tuple[bytes, bytes]:
    """Key and value of probe transaction ``index`` of a run (account ``<tag>-probe-<p>``).

    >>> key, value = probe_value("t", 0, 2, 1522540800000)
    >>> key, orjson.loads(value)["transaction_id"]
    (b't-probe-2', 't-probe-0')
    """
    account = f"{tag}-probe-{partition}"
    value = {
        "transaction_id": f"{tag}-probe-{index}",
        "account_id": account,
        "terminal_id": f"{tag}-probe",
        "amount_minor": 100,
        "currency": "EUR",
        "event_time_ms": event_time_ms,
    }
    return account.encode(), orjson.dumps(value)


async def send_probes(settings: Settings, tag: str, first_index: int, event_time_ms: int) -> int:
    """One probe transaction to each partition of the transactions topic; how many."""
    await ensure_topics(settings, [settings.transactions_topic])
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(settings.transactions_topic))
        futures = []
        for i, p in enumerate(partitions):
            key, value = probe_value(tag, first_index + i, p, event_time_ms)
            futures.append(
                await producer.send(settings.transactions_topic, value, key=key, partition=p)
            )
        for f in futures:
            await f
        return len(partitions)
    finally:
        await producer.stop()

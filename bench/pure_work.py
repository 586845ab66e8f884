"""The work every transaction needs whatever carries it: the worker's own pipeline
functions in one process, with no Kafka, no Faust and no Redis.

:func:`pure_work` runs the transactions of a frame through exactly what the two stages
of the worker compute (:func:`app.pipeline.featurize_accounts`, the account states'
changelog values, :func:`app.pipeline.forward_records` (with the worker's murmur2
partitioner),
:func:`app.pipeline.receive_terminal_records`, the terminal states' changelog values,
:func:`app.pipeline.score_enriched` with the active model and its threshold, and the
``scored-transactions`` values), in batches of a given size, with the states in
dictionaries. Its CPU time per transaction is a floor of the worker's: together with
the per-event cost of a bare Faust agent (b) it bounds what any Faust worker doing this
work can reach, ``c_max = 1 / (1/b + pure)``, so ``c/b <= (1/b) / (1/b + pure)``.
Event-time alignment is left out (every transaction is released at once), and so are
metrics, tracing and dead letters: the floor is lower than the worker's real work.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pandas as pd

from app.config import Settings
from app.events import encode
from app.features import AccountState, TerminalState
from app.partitioning import key_partition
from app.pipeline import (
    RawRecord,
    featurize_accounts,
    forward_records,
    receive_terminal_records,
    score_enriched,
)
from app.replay import plan_records

__all__ = ["pure_work", "held_value_bytes"]


def held_value_bytes(df: pd.DataFrame, rows: int = 5_000) -> int:
    """Mean size in bytes of one transaction as the scoring stage holds it for
    event-time alignment: a by-terminal record of one item
    (:func:`app.pipeline.forward_records`) of the first ``rows`` rows of ``df`` (a
    :func:`app.data.handbook.read_handbook` frame), starting from empty account state.

    Raises
    ------
    RuntimeError
        No transaction of those rows passed validation.
    """
    planned = [r for r in plan_records(df.head(rows), labels=False) if not r.is_label]
    records = [RawRecord(r.value, r.key, "transactions", 0, i, received_ms=r.timestamp_ms,
                         timestamp_ms=r.timestamp_ms) for i, r in enumerate(planned)]
    enriched = featurize_accounts(records, lambda _a: None).enriched
    values = [v for _, v in forward_records(enriched, lambda _t: 0, max_items=1)]
    if not values:
        raise RuntimeError("no transaction of the frame passed validation")
    return round(sum(len(v) for v in values) / len(values))


def pure_work(
    df: pd.DataFrame,
    settings: Settings,
    batch_sizes: tuple[int, ...] = (500, 50),
    gc_freeze: bool = True,
) -> dict:
    """CPU seconds per transaction of the worker's pure work, per batch size.

    Parameters
    ----------
    df : pandas.DataFrame of shape (n, 9)
        A :func:`app.data.handbook.read_handbook` frame (event-time order).
    settings : Settings
        ``MODELS_DIR`` (the active model is loaded), ``TOPIC_PARTITIONS``.
    batch_sizes : tuple of int, default=(500, 50)
        Transactions per batch at each stage: 500 is a catch-up's batch
        (``BATCH_MAX_EVENTS``), 50 about what live traffic of a few hundred per second
        gives.
    gc_freeze : bool, default=True
        Move what exists before the runs (the model, the planned records) out of the
        cyclic garbage collector's reach (``gc.freeze``), as the worker does with what
        it has built once its models are loaded; False: the collector traverses the
        harness's own objects at every full collection.

    Returns
    -------
    dict
        ``{"n": n, "model_version": str, "gc_frozen": bool, "runs": [{"batch": B,
        "cpu_seconds": s, "us_per_transaction": u, "scored": n}, ...]}``; ``cpu_seconds`` is the process
        CPU time (``time.process_time``) of the run.

    Raises
    ------
    RuntimeError
        A transaction was rejected or not scored (the floor would not be of the same work).
    """
    from app.decisions.controller import Snapshot
    from app.scoring.model import Scorer

    scorer = Scorer.from_registry(settings.models_dir)
    snapshot = Snapshot.of(scorer, scorer.alert_threshold)
    planned = [r for r in plan_records(df, labels=False) if not r.is_label]
    n_part = settings.topic_partitions
    out: dict[str, Any] = {"n": len(planned), "model_version": scorer.version, "runs": [],
                           "gc_frozen": gc_freeze}
    if gc_freeze:  # as the worker does once its models are loaded (app.stream.runtime)
        gc.collect()
        gc.freeze()
    try:
        _runs(planned, n_part, snapshot, batch_sizes, out)
    finally:
        if gc_freeze:
            gc.unfreeze()
    return out


def _runs(planned: list, n_part: int, snapshot: Any, batch_sizes: tuple[int, ...],
          out: dict[str, Any]) -> None:
    for size in batch_sizes:
        accounts: dict[str, bytes] = {}
        terminals: dict[str, bytes] = {}

        def account(a: str) -> AccountState | None:
            raw = accounts.get(a)
            return AccountState.from_bytes(raw) if raw else None

        def terminal(t: str) -> TerminalState | None:
            raw = terminals.get(t)
            return TerminalState.from_bytes(raw) if raw else None

        scored = 0
        offsets = [0] * n_part
        cpu0 = time.process_time()
        for start in range(0, len(planned), size):
            records = []
            for r in planned[start : start + size]:
                p = hash(r.key) % n_part
                records.append(RawRecord(r.value, r.key, "transactions", p, offsets[p],
                                         received_ms=r.timestamp_ms, timestamp_ms=r.timestamp_ms))
                offsets[p] += 1
            stage1 = featurize_accounts(records, account)
            if stage1.dead_letters:
                raise RuntimeError(f"{len(stage1.dead_letters)} transactions rejected")
            accounts.update({a: st.to_bytes() for a, st in stage1.states.items()})
            forwarded = [
                RawRecord(raw, None, "by-terminal", q, i, received_ms=0)
                for i, (q, raw) in enumerate(
                    forward_records(stage1.enriched, lambda t: key_partition(t, n_part))
                )
            ]
            intake = receive_terminal_records(forwarded, terminal, "labels")
            terminals.update({t: st.to_bytes() for t, st in intake.states.items()})
            items = [item for _, item, _ in intake.arrived]
            batch = score_enriched(items, terminal, snapshot)
            for st in batch.scored:
                encode(st)
            scored += len(batch.scored)
        cpu = time.process_time() - cpu0
        if scored != len(planned):
            raise RuntimeError(f"scored {scored} of {len(planned)} transactions")
        out["runs"].append({
            "batch": size, "cpu_seconds": round(cpu, 3), "scored": scored,
            "us_per_transaction": round(cpu / scored * 1e6, 1),
        })


def main() -> None:
    """``python bench/pure_work.py``: the pure work at batches of 100 over the first days
    of the handbook file, and at batches of 1 and 100 over a smaller prefix (the fixed cost
    per batch, ``F = (u1 - u100) * 100 / 99`` with ``u`` the CPU µs per transaction), as
    JSON on stdout and in ``--out``."""
    import argparse
    import json
    import os
    import platform
    from datetime import datetime, timezone
    from pathlib import Path

    from app.data.handbook import read_handbook

    from .data import SHARED_DATA

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--days", type=int, default=5, help="days read from 2018-04-01")
    parser.add_argument("--fixed-n", type=int, default=5000,
                        help="transactions of the batch-1 / batch-100 pair")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    df = read_handbook(args.data, pd.Timestamp("2018-04-01").date(),
                       (pd.Timestamp("2018-04-01") + pd.Timedelta(days=args.days - 1)).date())
    settings = Settings()
    load0 = os.getloadavg()
    main_run = pure_work(df, settings, (100,))
    pair = pure_work(df.iloc[: args.fixed_n], settings, (1, 100))
    u1, u100 = (r["us_per_transaction"] for r in pair["runs"])
    out = {
        "kind": "pure_work",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "loadavg_before": [round(x, 2) for x in load0],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "days": args.days,
        "batches_of_100": main_run,
        "fixed_cost_pair": pair,
        "fixed_cost_per_batch_us": round((u1 - u100) * 100 / 99, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

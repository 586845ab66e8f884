"""Alerts and their precision in the first days of a deployment: from empty state or warm.

Reproduce with::

    python bench/cold_start.py [--seeds 1 2] [--days 3] [--min-account-tx 10] [--cold-threshold 0.8]

For each seed the simulator (the handbook's generator, 5,000 cards, 10,000 terminals)
writes 50 days from 2018-04-01; the deployment starts on day 38 (2018-05-08):

* ``warm``: the state holds every earlier transaction and the labels known by then (a
  deployment after a backfill of the history, or one that has run for weeks);
* ``cold``: empty state at the deployment (what a first replay from that day, or a new
  deployment without history, sees): features from the deployment's transactions only,
  labels 7 days late as always.

Each case is decided by the stream's own decision code (:class:`app.decisions.controller.
Snapshot` with the active model of ``models/``, its card's threshold), without and with
the cold-start rule (:class:`app.decisions.cold_start.ColdStartRule`), and the alerts of
each of the first ``--days`` days are counted with the frauds among them. The features
are the stream's (:func:`app.features.offline.features_frame`, the code the parity tests
hold equal to the stream's). Results: ``bench/results/cold-start-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.handbook import to_transactions
from app.data.simulate import simulate
from app.decisions.cold_start import ColdStartRule
from app.decisions.controller import Snapshot
from app.features import FEATURE_NAMES
from app.features.offline import features_frame
from app.scoring.model import Scorer

ROOT = Path(__file__).resolve().parent.parent
START, N_DAYS, DEPLOY = "2018-04-01", 50, pd.Timestamp("2018-05-08")


def _alerts(frame: pd.DataFrame, snapshot: Snapshot, days: int) -> list[dict]:
    """Alerts and frauds among them per day from the deployment."""
    rows = []
    for d in range(days):
        lo, hi = DEPLOY + pd.Timedelta(days=d), DEPLOY + pd.Timedelta(days=d + 1)
        day = frame[(frame["TX_DATETIME"] >= lo) & (frame["TX_DATETIME"] < hi)]
        X = day[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
        decided = snapshot.decide(list(to_transactions(day)), X, top_reasons=0)
        alerted = np.zeros(len(day), dtype=bool)
        alerted[decided.alert_rows] = True
        y = day["TX_FRAUD"].to_numpy() == 1
        rows.append({"day": lo.date().isoformat(), "transactions": int(len(day)),
                     "frauds": int(y.sum()), "alerts": int(alerted.sum()),
                     "alert_frauds": int((alerted & y).sum())})
    return rows


def _precision(rows: list[dict]) -> float | None:
    alerts = sum(r["alerts"] for r in rows)
    return sum(r["alert_frauds"] for r in rows) / alerts if alerts else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--min-account-tx", type=int, default=10)
    ap.add_argument("--cold-threshold", type=float, default=0.8)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    scorer = Scorer.from_registry(args.models_dir, None, n_threads=None)
    rule = ColdStartRule(args.min_account_tx, args.cold_threshold)
    result = {"model": scorer.version, "threshold": scorer.alert_threshold,
              "cold_start": {"min_account_tx": rule.min_account_tx, "threshold": rule.threshold},
              "deployment": DEPLOY.date().isoformat(), "days": args.days, "runs": []}
    for seed in args.seeds:
        t0 = time.perf_counter()
        df = simulate(n_customers=5000, n_terminals=10000, start_date=START, n_days=N_DAYS,
                      seed=seed)
        df = df.assign(TX_DATETIME=pd.to_datetime(df["TX_DATETIME"]))
        warm = features_frame(df)
        cold = features_frame(df[df["TX_DATETIME"] >= DEPLOY].reset_index(drop=True))
        for state, frame in (("warm", warm), ("cold", cold)):
            for name, cs in (("off", ColdStartRule()), ("on", rule)):
                snap = Snapshot(scorer, (), Snapshot.of(scorer, 0).rules,
                                scorer.alert_threshold, cs)
                rows = _alerts(frame, snap, args.days)
                result["runs"].append({"seed": seed, "state": state, "cold_start_rule": name,
                                       "precision": _precision(rows), "per_day": rows})
                p = _precision(rows)
                print(f"seed {seed} {state:4s} rule {name:3s}: alerts/day "
                      f"{[r['alerts'] for r in rows]}, frauds among them "
                      f"{[r['alert_frauds'] for r in rows]}, precision "
                      f"{'n/a' if p is None else f'{p:.3f}'}", flush=True)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results" / f"cold-start-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

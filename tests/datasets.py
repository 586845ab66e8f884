"""Test data: the shared handbook file when present, else the project's simulator."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from app.data.handbook import read_handbook

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "handbook-transactions-2018-04-01_2018-07-31.csv.gz"


@lru_cache(maxsize=8)
def handbook_days(start: str, days: int) -> pd.DataFrame:
    """``days`` days of handbook transactions from ``start`` (shared file or simulated)."""
    end = (pd.Timestamp(start) + pd.Timedelta(days=days - 1)).date().isoformat()
    if SHARED.exists():
        return read_handbook(SHARED, start, end)
    from app.data.simulate import simulate

    # simulate from 2018-04-01 so frauds and histories have built up, then slice
    n_days = (pd.Timestamp(end) - pd.Timestamp("2018-04-01")).days + 1
    df = simulate(start_date="2018-04-01", n_days=n_days, seed=7)
    df = df.assign(TX_DATETIME=pd.to_datetime(df["TX_DATETIME"]))
    keep = (df["TX_DATETIME"] >= pd.Timestamp(start)) & (
        df["TX_DATETIME"] < pd.Timestamp(end) + pd.Timedelta(days=1)
    )
    return df[keep].reset_index(drop=True)

"""Read transactions in the Fraud Detection Handbook's format.

Source: Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (ULB), chapter 3 ("simulated-data-raw"
daily files). Columns: :data:`HANDBOOK_COLUMNS`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..events import Label, Transaction
from .contract import DataMapping, apply_mapping, check_frame, read_mapping
from ..exceptions import DataError

__all__ = [
    "HANDBOOK_COLUMNS",
    "read_handbook",
    "parse_date",
    "to_transactions",
    "to_labels",
    "DEFAULT_CURRENCY",
]

HANDBOOK_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
DEFAULT_CURRENCY = "EUR"
_DAILY = re.compile(r"^\d{4}-\d{2}-\d{2}\.(pkl|csv|csv\.gz)$")


def parse_date(text: str | date | None, name: str = "date") -> date | None:
    """Parse ``YYYY-MM-DD``; raise :class:`DataError` naming ``name`` otherwise."""
    if text is None or isinstance(text, date):
        return text
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError:
        raise DataError(f"{name}: expected a date as YYYY-MM-DD, got {text!r}") from None


def _read_one(path: Path) -> pd.DataFrame:
    name = path.name
    try:
        if name.endswith(".pkl"):
            return pd.read_pickle(path)
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"{path}: Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a handbook file ({exc})") from None
    raise DataError(f"{path}: expected a .csv, .csv.gz, .parquet or .pkl file or a folder of them")


def read_handbook(
    path: str | Path, start: date | str | None = None, end: date | str | None = None,
    mapping: str | Path | DataMapping | None = None,
) -> pd.DataFrame:
    """Load handbook transactions, optionally for the days ``start..end`` inclusive.

    Parameters
    ----------
    path : str or Path
        One ``.csv``/``.csv.gz``/``.pkl`` file, or a folder of daily files named
        ``YYYY-MM-DD.pkl`` (the handbook's ``simulated-data-raw/data``) or ``.csv[.gz]``.
    start, end : date or str ``YYYY-MM-DD``, optional
        First and last day (UTC) to keep, both inclusive.
    mapping : str, Path or DataMapping, optional
        A mapping file (:mod:`app.data.contract`) from the file's own column names and
        forms to the contract's; default: the file uses the contract's.

    Returns
    -------
    pandas.DataFrame of shape (n_transactions, 9)
        :data:`HANDBOOK_COLUMNS`, ``TX_DATETIME`` as ``datetime64``, sorted by event
        time then ``TRANSACTION_ID``.

    Raises
    ------
    DataError
        Missing path, unreadable file, missing columns, a bad value (row, column and
        value named: :func:`app.data.contract.check_frame`) or ``start > end``.
    """
    path = Path(path)
    start, end = parse_date(start, "start"), parse_date(end, "end")
    if start and end and start > end:
        raise DataError(f"start {start} is after end {end}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _DAILY.match(p.name))
        if not files:
            raise DataError(f"{path}: folder holds no daily files named YYYY-MM-DD.pkl/.csv")
        if start or end:
            files = [
                p for p in files
                if (not start or p.name[:10] >= start.isoformat())
                and (not end or p.name[:10] <= end.isoformat())
            ]
        frames = [_read_one(p) for p in files]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=list(HANDBOOK_COLUMNS)
        )
    else:
        df = _read_one(path)
    source = str(path)
    m = read_mapping(mapping)
    df = check_frame(apply_mapping(df, m, source), source, m.columns if m else None)
    if start:
        df = df[df["TX_DATETIME"] >= pd.Timestamp(start)]
    if end:
        df = df[df["TX_DATETIME"] < pd.Timestamp(end + timedelta(days=1))]
    return df.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable").reset_index(
        drop=True
    )


def _event_ms(df: pd.DataFrame) -> np.ndarray:
    return (df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64))


def to_transactions(df: pd.DataFrame, currency: str = DEFAULT_CURRENCY) -> Iterator[Transaction]:
    """The rows of a :func:`read_handbook` frame as :class:`Transaction` events.

    Ids become strings; ``TX_AMOUNT`` becomes ``amount_minor = round(100 * amount)``;
    ``TX_DATETIME`` (no zone in the file) is taken as UTC.
    """
    ms = _event_ms(df)
    amounts = np.rint(df["TX_AMOUNT"].to_numpy(dtype=float) * 100).astype(np.int64)
    tids, cids, mids = (
        df["TRANSACTION_ID"].to_numpy(),
        df["CUSTOMER_ID"].to_numpy(),
        df["TERMINAL_ID"].to_numpy(),
    )
    for i in range(len(df)):
        yield Transaction.model_construct(
            transaction_id=str(tids[i]),
            account_id=str(cids[i]),
            terminal_id=str(mids[i]),
            amount_minor=int(amounts[i]),
            currency=currency,
            event_time_ms=int(ms[i]),
        )


def to_labels(
    df: pd.DataFrame,
    delay_ms: int,
    label_times_ms: np.ndarray | None = None,
    investigated: np.ndarray | None = None,
) -> Iterator[Label]:
    """One :class:`Label` per row, known ``delay_ms`` after the transaction's event time.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`read_handbook` frame.
    delay_ms : int
        Delay of every label when ``label_times_ms`` is not given.
    label_times_ms : ndarray of int of shape (len(df),), optional
        Each row's label time instead (e.g. from
        :func:`app.features.labels.label_arrivals`); the labels are then yielded in
        label-time order (rows in their order at equal times).
    investigated : ndarray of bool of shape (len(df),), optional
        Rows whose label is an investigator's verdict (``source="investigation"``);
        default: none (``source="chargeback"``).
    """
    ms = _event_ms(df)
    when = ms + delay_ms if label_times_ms is None else np.asarray(label_times_ms, np.int64)
    order = (np.arange(len(df)) if label_times_ms is None
             else np.argsort(when, kind="stable"))
    fraud = df["TX_FRAUD"].to_numpy()
    tids, cids, mids = (
        df["TRANSACTION_ID"].to_numpy(),
        df["CUSTOMER_ID"].to_numpy(),
        df["TERMINAL_ID"].to_numpy(),
    )
    for i in order.tolist():
        yield Label.model_construct(
            transaction_id=str(tids[i]),
            account_id=str(cids[i]),
            terminal_id=str(mids[i]),
            is_fraud=bool(fraud[i]),
            transaction_time_ms=int(ms[i]),
            label_time_ms=int(when[i]),
            source="investigation" if investigated is not None and investigated[i]
            else "chargeback",
        )


def utc_datetime(ms: int) -> datetime:
    """UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

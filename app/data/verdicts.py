"""Analysts' verdicts as training labels: when each label became known.

A verdict is a :class:`~app.events.Label` with ``source="investigation"``, as
``fraudctl review confirm|dismiss`` writes it to ``transaction-labels`` (one JSON value
a line in a file, as a consumer of the topic prints them). In training data a verdict
changes *when* a transaction's label is known, not what it is: the features of later
transactions (terminal risk from known labels) see a confirmed fraud hours after the
alert instead of after the chargeback delay (7 days). The label value stays the data's
``TX_FRAUD`` (the truth as known at export); verdicts that disagree with it are counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ..events import Label
from ..exceptions import DataError
from ..features import DEFAULT_DELAY_DAYS

__all__ = ["read_verdicts", "verdict_arrivals"]

_DAY_MS = 86_400_000


def read_verdicts(path: str | Path) -> pd.DataFrame:
    """The investigation verdicts of a JSON-lines file of ``transaction-labels`` values.

    Returns
    -------
    pandas.DataFrame
        Columns ``transaction_id`` (str), ``is_fraud`` (bool), ``label_time_ms`` (int,
        UTC epoch ms); one row per transaction (its latest verdict); chargeback records
        of the file are left out.

    Raises
    ------
    DataError
        Unreadable file, or a line that is no Label (line number and field named).
    """
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            label = Label.model_validate_json(line)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(x) for x in err["loc"]) or "value"
            raise DataError(f"{path}: line {n}: {where}: {err['msg']}") from None
        if label.source == "investigation":
            rows.append((label.transaction_id, label.is_fraud, label.label_time_ms))
    df = pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "label_time_ms"])
    return (df.sort_values("label_time_ms", kind="stable")
              .drop_duplicates("transaction_id", keep="last").reset_index(drop=True))


def verdict_arrivals(
    df: pd.DataFrame, verdicts: pd.DataFrame, chargeback_delay_days: float = DEFAULT_DELAY_DAYS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Label time and source of every row when the verdicts are known.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`app.data.handbook.read_handbook` frame.
    verdicts : pandas.DataFrame
        :func:`read_verdicts`.
    chargeback_delay_days : float, default=DEFAULT_DELAY_DAYS
        Delay of every label without a verdict.

    Returns
    -------
    label_time_ms : ndarray of int64 of shape (len(df),)
        A verdict's time when earlier than the chargeback's, else the chargeback's;
        never before the transaction.
    investigated : ndarray of bool of shape (len(df),)
        Rows whose label is a verdict; as ``arrivals`` of
        :func:`app.features.offline.features_frame`.
    disagreements : int
        Verdicts whose value differs from the row's ``TX_FRAUD``.
    """
    tx_ms = df["TX_DATETIME"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    when = tx_ms + int(round(chargeback_delay_days * _DAY_MS))
    by_id = verdicts.set_index("transaction_id")
    ids = df["TRANSACTION_ID"].astype(str)
    matched = ids.isin(by_id.index).to_numpy()
    verdict_ms = np.full(len(df), np.iinfo(np.int64).max, dtype=np.int64)
    verdict_ms[matched] = by_id.loc[ids[matched], "label_time_ms"].to_numpy(dtype=np.int64)
    investigated = matched & (verdict_ms < when)
    when = np.where(investigated, np.maximum(verdict_ms, tx_ms), when)
    fraud = by_id.loc[ids[matched], "is_fraud"].to_numpy(dtype=bool)
    disagreements = int((fraud != (df["TX_FRAUD"].to_numpy()[matched] == 1)).sum())
    return when.astype(np.int64), investigated, disagreements

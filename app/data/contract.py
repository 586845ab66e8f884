"""The input contract of training data, and the mapping that adapts other files to it.

A training file (CSV, CSV.gz, Parquet or a handbook pickle) holds one row per card
transaction with these columns (:data:`CONTRACT`):

============== ========================= =============================================
column         type, unit                meaning
============== ========================= =============================================
TRANSACTION_ID integer >= 0, unique      the transaction
TX_DATETIME    date-time, UTC, no zone   event time (when the card was used)
CUSTOMER_ID    integer >= 0              the card (account) that paid
TERMINAL_ID    integer >= 0              the terminal (merchant) that was paid
TX_AMOUNT      decimal >= 0, currency    amount in currency units (EUR by default)
TX_FRAUD       0 or 1                    1: the transaction is fraud, as known today
TX_FRAUD_SCENARIO integer, optional      how the fraud was made (0 genuine); default 0
============== ========================= =============================================

Ids are below 2**63 (int64) and amounts at most 10 billion (the stream's
``MAX_AMOUNT_MINOR``).

``TX_TIME_SECONDS`` and ``TX_TIME_DAYS`` of the handbook's files are optional: they are
derived from ``TX_DATETIME`` when missing. ``TX_FRAUD`` is the label as known when the
file was exported; training assumes it became known ``DEFAULT_DELAY_DAYS`` (7) days after
the transaction (chargebacks), the gap between the train and test windows.

A :class:`DataMapping` (a YAML or JSON file) adapts a file with other names and forms
without code: which column holds each contract column, the time format and zone (or
numeric time offsets from an origin, as PaySim's ``step`` in hours), an amount scale
(cents to units), text ids reduced to their digits (``C1231006815``), generated
transaction ids, and the values of the label. Example (``docs/data.md``)::

    columns: {TRANSACTION_ID: ref, TX_DATETIME: booked_at, CUSTOMER_ID: card,
              TERMINAL_ID: merchant, TX_AMOUNT: amount_cents, TX_FRAUD: chargeback}
    time: {format: "%d/%m/%Y %H:%M", timezone: Europe/Brussels}
    amount: {scale: 0.01}
    labels: {fraud: ["Y"], genuine: ["N"]}

:func:`check_frame` validates a frame against the contract and raises
:class:`~app.exceptions.DataError` naming the first bad row (1-based, header not
counted), its column and its value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..events import MAX_AMOUNT_MINOR
from ..exceptions import DataError

__all__ = [
    "CONTRACT",
    "REQUIRED_COLUMNS",
    "ColumnSpec",
    "DataMapping",
    "read_mapping",
    "apply_mapping",
    "check_frame",
]


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the contract: name, type, unit and meaning."""

    name: str
    type: str
    unit: str
    required: bool
    meaning: str


CONTRACT: tuple[ColumnSpec, ...] = (
    ColumnSpec("TRANSACTION_ID", "integer 0 <= id < 2**63, unique", "-", True, "the transaction"),
    ColumnSpec("TX_DATETIME", "date-time", "UTC, no zone in the file", True,
               "event time: when the card was used"),
    ColumnSpec("CUSTOMER_ID", "integer 0 <= id < 2**63", "-", True, "the card (account) that paid"),
    ColumnSpec("TERMINAL_ID", "integer 0 <= id < 2**63", "-", True, "the terminal that was paid"),
    ColumnSpec("TX_AMOUNT", "decimal 0..10,000,000,000", "currency units (EUR)", True, "amount"),
    ColumnSpec("TX_FRAUD", "0 or 1", "-", True,
               "1: fraud, as known at export; assumed known 7 days after the transaction"),
    ColumnSpec("TX_FRAUD_SCENARIO", "integer >= 0", "-", False,
               "how the fraud was made (0: genuine); default 0"),
    ColumnSpec("TX_TIME_SECONDS", "integer >= 0", "seconds", False,
               "seconds since the first day's midnight; derived when missing"),
    ColumnSpec("TX_TIME_DAYS", "integer >= 0", "days", False,
               "days since the first day; derived when missing"),
)
REQUIRED_COLUMNS = tuple(c.name for c in CONTRACT if c.required)
_ID_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID")
#: Ids are int64: 2**63 and above would wrap around silently.
_ID_LIMIT = 2.0**63
#: Largest amount in currency units: the stream's ``amount_minor`` limit, in cents.
_MAX_AMOUNT = MAX_AMOUNT_MINOR / 100
_TOO_LARGE = f"an amount <= {_MAX_AMOUNT:,.0f} (the stream's largest, amount_minor)"
#: Column order of a checked frame (the handbook files' order).
_ORDER = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
          "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeMapping(_Strict):
    """How ``TX_DATETIME`` is written in the file."""

    format: str | None = Field(None, description="strptime format; None: ISO 8601 or pandas' guess.")
    timezone: str = Field("UTC", description="IANA zone of the file's times; converted to UTC.")
    unit: Literal["seconds", "minutes", "hours", "days"] | None = Field(
        None, description="The column holds numbers: offsets in this unit from `origin`.")
    origin: str | None = Field(None, description="UTC date-time of offset 0 (with `unit`).")
    ambiguous: Literal["refuse", "summer", "winter"] = Field(
        "refuse", description="A local time the autumn DST change repeats (02:00-02:59 in "
        "Europe/Brussels): refuse it, or read it as the first (summer time) or the second "
        "(winter time) pass.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Brussels)")
        return value


class AmountMapping(_Strict):
    """How ``TX_AMOUNT`` is written: file value * scale = currency units."""

    scale: float = Field(1.0, gt=0, description="0.01 when the file holds cents.")


class LabelMapping(_Strict):
    """Values of the label column meaning fraud and genuine (compared as text)."""

    fraud: list[str] = Field(default_factory=lambda: ["1"])
    genuine: list[str] = Field(default_factory=lambda: ["0"])

    @field_validator("fraud", "genuine", mode="before")
    @classmethod
    def _text(cls, value: Any) -> list[str]:
        return [str(v) for v in (value if isinstance(value, list) else [value])]


class DataMapping(_Strict):
    """How a file with its own column names and forms maps onto the contract.

    ``columns`` maps a contract column to the file's column (contract names absent
    from it are expected under their own name). ``ids: digits`` keeps only the digits
    of text ids; ``generate_transaction_id`` numbers the rows when the file has no id.
    """

    columns: dict[str, str] = Field(default_factory=dict)
    time: TimeMapping = TimeMapping()
    amount: AmountMapping = AmountMapping()
    labels: LabelMapping = LabelMapping()
    ids: Literal["integer", "digits"] = "integer"
    generate_transaction_id: bool = False

    @field_validator("columns")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        known = {c.name for c in CONTRACT}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{unknown} are no contract columns (one of {sorted(known)})")
        seen: dict[str, str] = {}
        for ours, theirs in value.items():
            if theirs in seen:
                raise ValueError(f"{seen[theirs]} and {ours} both read column {theirs!r}")
            seen[theirs] = ours
        return value


def read_mapping(path: str | Path | None) -> DataMapping | None:
    """A mapping file (``.yaml``/``.yml``/``.json``); None for None.

    Raises
    ------
    DataError
        The file is missing, not YAML/JSON, or not a valid mapping (the first field named).
    """
    if path is None or isinstance(path, DataMapping):
        return path
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"mapping {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise DataError(f"mapping {path}: not valid {path.suffix[1:] or 'YAML'} "
                        f"({' '.join(str(exc).split())})") from None
    try:
        return DataMapping.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"]) or "mapping"
        raise DataError(f"mapping {path}: {where}: {err['msg']}") from None


def _named(column: str, names: dict[str, str]) -> str:
    """``theirs (CONTRACT)`` when the file names the column otherwise, else ``CONTRACT``."""
    theirs = names.get(column, column)
    return column if theirs == column else f"{theirs} ({column})"


def _error(source: str, index: int, column: str, value: Any, expected: str) -> DataError:
    if isinstance(value, np.generic):
        value = value.item()
    return DataError(f"{source}: row {index + 1}, column {column}: {value!r} is not "
                     f"{expected}")


def apply_mapping(df: pd.DataFrame, mapping: DataMapping | None, source: str = "data") -> pd.DataFrame:
    """The frame with the contract's names and forms (times UTC without zone).

    Parameters
    ----------
    df : pandas.DataFrame
        Rows as read from the file, in file order.
    mapping : DataMapping or None
        None: the contract's names; times as written (UTC).
    source : str
        Name in error messages.

    Returns
    -------
    pandas.DataFrame
        The contract's columns present in the file (others dropped), values converted;
        :func:`check_frame` validates them.

    Raises
    ------
    DataError
        A column named by the mapping is missing, or a value cannot be converted
        (row, column and value named).
    """
    m = mapping or DataMapping()
    names = m.columns

    def _fail(source: str, index: int, column: str, value: Any, expected: str) -> DataError:
        return _error(source, index, _named(column, names), value, expected)

    out = pd.DataFrame(index=df.index)
    for spec in CONTRACT:
        theirs = m.columns.get(spec.name, spec.name)
        if theirs in df.columns:
            out[spec.name] = df[theirs]
        elif spec.name in m.columns:
            raise DataError(f"{source}: the mapping names column {theirs!r} for {spec.name}, "
                            f"the file has {list(df.columns)}")
    if m.generate_transaction_id:
        out["TRANSACTION_ID"] = np.arange(len(df), dtype=np.int64)
    missing = [c for c in REQUIRED_COLUMNS if c not in out.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (the file has "
                        f"{list(df.columns)}; a mapping file can name yours: --mapping)")
    if m.ids == "digits":
        for col in _ID_COLUMNS:
            if col in out.columns and not pd.api.types.is_numeric_dtype(out[col]):
                digits = out[col].astype(str).str.replace(r"\D", "", regex=True)
                bad = (digits == "").to_numpy()
                if bad.any():  # named as written in the file, not as the empty digits
                    i = int(np.argmax(bad))
                    raise _fail(source, i, col, out[col].iloc[i], "an id with digits")
                out[col] = digits
    if mapping is not None:
        out["TX_DATETIME"] = _times(out["TX_DATETIME"], m.time, source,
                                    _named("TX_DATETIME", names))
        text = out["TX_FRAUD"].astype(str).str.strip()
        fraud, genuine = text.isin(m.labels.fraud), text.isin(m.labels.genuine)
        bad = ~(fraud | genuine)
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise _fail(source, i, "TX_FRAUD", out["TX_FRAUD"].iloc[i],
                        f"a label value (fraud: {m.labels.fraud}, genuine: {m.labels.genuine})")
        out["TX_FRAUD"] = fraud.astype("int64")
        if m.amount.scale != 1.0:
            amounts = pd.to_numeric(out["TX_AMOUNT"], errors="coerce")
            bad = ~np.isfinite(amounts.to_numpy(dtype=float)) | (amounts < 0).to_numpy()
            if bad.any():  # named as written in the file, before the scale
                i = int(np.argmax(bad))
                raise _fail(source, i, "TX_AMOUNT", out["TX_AMOUNT"].iloc[i],
                            "a finite amount >= 0")
            big = (amounts * m.amount.scale > _MAX_AMOUNT).to_numpy()
            if big.any():
                i = int(np.argmax(big))
                raise _fail(source, i, "TX_AMOUNT", out["TX_AMOUNT"].iloc[i], _TOO_LARGE)
            out["TX_AMOUNT"] = amounts * m.amount.scale
    return out


def _times(values: pd.Series, t: TimeMapping, source: str, column: str) -> pd.Series:
    if t.unit:
        offsets = pd.to_numeric(values, errors="coerce")
        bad = offsets.isna()
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise _error(source, i, column, values.iloc[i], f"a number of {t.unit}")
        origin = pd.Timestamp(t.origin or "1970-01-01")
        return origin + pd.to_timedelta(offsets, unit={"seconds": "s", "minutes": "min",
                                                       "hours": "h", "days": "D"}[t.unit])
    parsed, aware = _parse_times(values, t.format)
    bad = parsed.isna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise _error(source, i, column, values.iloc[i],
                    f"a date-time{' as ' + t.format if t.format else ''}")
    if t.timezone != "UTC" and not aware:  # times with their own offset need no zone
        ambiguous = ("NaT" if t.ambiguous == "refuse"
                     else np.full(len(parsed), t.ambiguous == "summer"))
        parsed = parsed.dt.tz_localize(t.timezone, ambiguous=ambiguous, nonexistent="NaT")
        bad = parsed.isna()
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise _error(source, i, column, values.iloc[i],
                        f"a time that exists once in {t.timezone} (DST change; a repeated "
                        "hour: time.ambiguous summer|winter)")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


def _parse_times(values: pd.Series, fmt: str | None) -> tuple[pd.Series, bool]:
    """Naive times, unparseable ones NaT; True when the values carried their own UTC
    offset (ISO ``+02:00``, a tz-aware Parquet column), then converted to UTC."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None), True
    try:
        parsed = pd.to_datetime(values, format=fmt or "mixed", errors="coerce")
    except ValueError:  # offsets that differ, e.g. across a DST change
        parsed = pd.to_datetime(values, format=fmt or "mixed", errors="coerce", utc=True)
    if getattr(parsed.dt, "tz", None) is not None:
        return parsed.dt.tz_convert("UTC").dt.tz_localize(None), True
    return parsed, False


def check_frame(df: pd.DataFrame, source: str = "data",
                columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Validate a contract frame; the typed frame with every contract column.

    Parameters
    ----------
    df : pandas.DataFrame
        The contract's columns (:func:`apply_mapping`), rows in file order.
    source : str
        Name in error messages.
    columns : dict, optional
        The file's name of each contract column (a mapping's ``columns``), for messages.

    Returns
    -------
    pandas.DataFrame of shape (n_rows, 9)
        ids and ``TX_FRAUD`` as int64, ``TX_AMOUNT`` float, ``TX_DATETIME`` datetime64,
        the optional columns filled; file order kept.

    Raises
    ------
    DataError
        The first bad value, as ``<source>: row R, column C: <value> is not <what>``
        (R counts data rows from 1, the header not counted), or a duplicate id.

    Examples
    --------
    >>> bad = pd.DataFrame({"TRANSACTION_ID": ["1"], "TX_DATETIME": ["2018-04-01 00:00:31"],
    ...     "CUSTOMER_ID": ["7"], "TERMINAL_ID": ["3"], "TX_AMOUNT": ["-5"], "TX_FRAUD": ["0"]})
    >>> check_frame(bad, "x.csv")
    Traceback (most recent call last):
    ...
    app.exceptions.DataError: x.csv: row 1, column TX_AMOUNT: '-5' is not a finite amount >= 0
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (the file has {list(df.columns)}"
                        "; a mapping file can name yours: --mapping)")
    names = columns or {}

    def _fail(source: str, index: int, column: str, value: Any, expected: str) -> DataError:
        return _error(source, index, _named(column, names), value, expected)

    out = df.copy()
    times, _ = _parse_times(out["TX_DATETIME"], None)
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(source, i, "TX_DATETIME", out["TX_DATETIME"].iloc[i],
                    "a date-time (YYYY-MM-DD HH:MM:SS, UTC)")
    out["TX_DATETIME"] = times.astype("datetime64[ns]")
    for col in (*_ID_COLUMNS, "TX_FRAUD", "TX_FRAUD_SCENARIO"):
        if col not in out.columns:
            continue
        values = pd.to_numeric(out[col], errors="coerce")
        bad = (values.isna() | (values != values.round()) | (values < 0)
               | (values >= _ID_LIMIT)).to_numpy()
        if col == "TX_FRAUD":
            bad = bad | ~values.isin([0, 1]).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(source, i, col, out[col].iloc[i],
                        "0 or 1" if col == "TX_FRAUD" else "an integer >= 0 and < 2**63")
        out[col] = values.astype("int64")
    amounts = pd.to_numeric(out["TX_AMOUNT"], errors="coerce")
    bad = ~np.isfinite(amounts.to_numpy(dtype=float)) | (amounts < 0).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(source, i, "TX_AMOUNT", out["TX_AMOUNT"].iloc[i], "a finite amount >= 0")
    big = (amounts > _MAX_AMOUNT).to_numpy()
    if big.any():
        i = int(np.argmax(big))
        raise _fail(source, i, "TX_AMOUNT", out["TX_AMOUNT"].iloc[i], _TOO_LARGE)
    out["TX_AMOUNT"] = amounts.astype(float)
    dup = out["TRANSACTION_ID"].duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        first = int(np.argmax((out["TRANSACTION_ID"] == out["TRANSACTION_ID"].iloc[i]).to_numpy()))
        raise DataError(f"{source}: row {i + 1}, column "
                        f"{_named('TRANSACTION_ID', names)}: "
                        f"{out['TRANSACTION_ID'].iloc[i]} appears twice (first at row "
                        f"{first + 1})")
    if "TX_FRAUD_SCENARIO" not in out.columns:
        out["TX_FRAUD_SCENARIO"] = 0
    if len(out):
        day0 = out["TX_DATETIME"].min().normalize()
        seconds = ((out["TX_DATETIME"] - day0).dt.total_seconds()).astype("int64")
    else:
        seconds = pd.Series([], dtype="int64")
    if "TX_TIME_SECONDS" not in out.columns:
        out["TX_TIME_SECONDS"] = seconds
    if "TX_TIME_DAYS" not in out.columns:
        out["TX_TIME_DAYS"] = seconds // 86_400
    return out[list(_ORDER)]

"""Simulate card transactions with the Fraud Detection Handbook's generator.

Source: Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (ULB), chapter 3.2 "Transaction data
simulator". The process is the handbook's, step by step; only the code differs (numpy
arrays instead of per-customer pandas loops; :class:`numpy.random.Generator` streams
spawned from one seed instead of ``np.random.seed(customer_id)`` and
``sample(random_state=day)``), so the figures match the handbook's in distribution,
not row by row. The handbook's default size (5,000 customers, 10,000 terminals,
183 days, about 1.78 million transactions) takes about 2.5 s and 0.4 GB.

1. Customers: a location ``(x, y)`` uniform on a 100 x 100 grid, a mean amount
   ``U(5, 100)``, an amount standard deviation of half the mean, and a mean number of
   transactions per day ``U(0, 4)``.
2. Terminals: a location ``(x, y)`` uniform on the same grid.
3. Each customer uses only the terminals at a distance strictly below ``radius``.
4. Transactions: each day, a customer makes ``Poisson(mean_nb_tx_per_day)`` attempts;
   an attempt's time of day is ``int(Normal(43200, 20000))`` seconds and is kept only
   if strictly inside ``(0, 86400)``; its amount is ``Normal(mean, std)``, redrawn as
   ``U(0, 2 * mean)`` when negative, rounded to cents; its terminal is drawn uniformly
   from the customer's terminals (a customer without terminals makes no transaction).
5. Frauds, applied in this order (a later scenario overrides an earlier label):

   1. every transaction with an amount above 220 is fraud;
   2. on each day ``d`` before the last day with transactions, 2 random terminals are
      compromised: their transactions on days ``d .. d + 27`` are fraud;
   3. on each such day, 3 random customers are compromised: among their transactions
      on days ``d .. d + 13``, ``int(n / 3)`` chosen at random have their amount
      multiplied by 5 and are fraud (a transaction chosen twice is multiplied twice).

Examples
--------
>>> df = simulate(n_customers=50, n_terminals=100, n_days=3, seed=7)
>>> list(df.columns) == list(HANDBOOK_COLUMNS)
True
>>> bool(df["TRANSACTION_ID"].is_monotonic_increasing)
True
>>> simulate(n_customers=0)
Traceback (most recent call last):
...
ValueError: n_customers must be >= 1, got 0
"""

from __future__ import annotations

import gzip
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ..events import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS
from .handbook import HANDBOOK_COLUMNS

__all__ = [
    "simulate",
    "run_simulation",
    "check_parameters",
    "Simulation",
    "CustomerProfiles",
    "TerminalProfiles",
    "AvailableTerminals",
    "generate_customer_profiles",
    "generate_terminal_profiles",
    "terminals_within_radius",
    "generate_transactions",
    "add_frauds",
    "summarize",
    "write_handbook_csv",
    "write_handbook_daily",
    "SIMULATION_STEPS",
]

GRID_SIZE = 100.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MEAN_NB_TX_PER_DAY_RANGE = (0.0, 4.0)
SECONDS_PER_DAY = 86_400
TX_TIME_MEAN_SECONDS = 43_200.0
TX_TIME_STD_SECONDS = 20_000.0
SCENARIO_1_MIN_AMOUNT = 220.0
COMPROMISED_TERMINALS_PER_DAY = 2
TERMINAL_COMPROMISE_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_SHARE_DIVISOR = 3
CUSTOMER_FRAUD_AMOUNT_FACTOR = 5.0
#: Refuse parameters expected to give more rows than this (memory guard).
MAX_EXPECTED_TRANSACTIONS = 50_000_000
#: Names of the steps reported to ``progress``, in order.
SIMULATION_STEPS = (
    "customer profiles",
    "terminal profiles",
    "terminals within radius",
    "transactions",
    "fraud scenario 1",
    "fraud scenario 2",
    "fraud scenario 3",
    "table",
)
_FIRST_DAY = date(1970, 1, 1) + timedelta(milliseconds=MIN_EVENT_TIME_MS)
_END_DAY = date(1970, 1, 1) + timedelta(milliseconds=MAX_EVENT_TIME_MS)
_BLOCK_CELLS = 4_000_000  # customer x terminal distances computed at once

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CustomerProfiles:
    """Customer properties, one entry per ``CUSTOMER_ID`` ``0 .. n - 1``.

    Attributes
    ----------
    x, y : ndarray of shape (n_customers,)
        Location on the grid, in ``[0, 100)``.
    mean_amount, std_amount : ndarray of shape (n_customers,)
        Mean and standard deviation of a transaction's amount, in currency units.
    mean_nb_tx_per_day : ndarray of shape (n_customers,)
        Mean number of transaction attempts per day.
    """

    x: np.ndarray
    y: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray


@dataclass(frozen=True)
class TerminalProfiles:
    """Terminal locations, one entry per ``TERMINAL_ID`` ``0 .. n - 1``.

    Attributes
    ----------
    x, y : ndarray of shape (n_terminals,)
        Location on the grid, in ``[0, 100)``.
    """

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class AvailableTerminals:
    """The terminals each customer may use, in compressed sparse row form.

    Attributes
    ----------
    indptr : ndarray of shape (n_customers + 1,)
        Customer ``c`` uses ``indices[indptr[c]:indptr[c + 1]]``.
    indices : ndarray of shape (n_links,)
        Terminal ids, increasing within each customer.
    """

    indptr: np.ndarray
    indices: np.ndarray

    def counts(self) -> np.ndarray:
        """Number of terminals of each customer, shape (n_customers,)."""
        return np.diff(self.indptr)


@dataclass(frozen=True)
class Simulation:
    """Everything one run produced.

    Attributes
    ----------
    transactions : pandas.DataFrame of shape (n_transactions, 9)
        :data:`~app.data.handbook.HANDBOOK_COLUMNS`, in time order.
    customers : CustomerProfiles
    terminals : TerminalProfiles
    available_terminals : AvailableTerminals
    compromised_terminals : ndarray of shape (n_compromise_days, 2)
        Row ``d``: the terminals compromised on day ``d`` (scenario 2).
    compromised_customers : ndarray of shape (n_compromise_days, 3)
        Row ``d``: the customers compromised on day ``d`` (scenario 3).
    """

    transactions: pd.DataFrame
    customers: CustomerProfiles
    terminals: TerminalProfiles
    available_terminals: AvailableTerminals
    compromised_terminals: np.ndarray
    compromised_customers: np.ndarray


def check_parameters(
    n_customers: int,
    n_terminals: int,
    start_date: str | date,
    n_days: int,
    radius: float,
    seed: int,
) -> date:
    """Check the ranges of :func:`simulate`'s parameters.

    Returns
    -------
    date
        ``start_date`` parsed.

    Raises
    ------
    ValueError
        Naming the first parameter out of range and the value received.
    """
    for name, value in (("n_customers", n_customers), ("n_terminals", n_terminals),
                        ("n_days", n_days)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(radius, (int, float, np.number)) or not (
        math.isfinite(radius) and radius > 0
    ):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    if isinstance(start_date, datetime):
        start = start_date.date()
    elif isinstance(start_date, date):
        start = start_date
    else:
        try:
            start = date.fromisoformat(str(start_date).strip())
        except ValueError:
            raise ValueError(
                f"start_date must be a date as YYYY-MM-DD, got {start_date!r}"
            ) from None
    if start < _FIRST_DAY:
        raise ValueError(f"start_date must be >= {_FIRST_DAY}, got {start}")
    if n_days > (_END_DAY - start).days:
        raise ValueError(
            f"n_days must be <= {(_END_DAY - start).days} so that the last day is before "
            f"{_END_DAY}, got {n_days}"
        )
    tx_per_customer = n_days * sum(MEAN_NB_TX_PER_DAY_RANGE) / 2
    if n_customers * tx_per_customer > MAX_EXPECTED_TRANSACTIONS:
        raise ValueError(
            f"n_customers must be <= {int(MAX_EXPECTED_TRANSACTIONS // tx_per_customer):,} "
            f"with n_days={n_days} (at most {MAX_EXPECTED_TRANSACTIONS:,} expected "
            f"transactions), got {n_customers}"
        )
    return start


def generate_customer_profiles(rng: np.random.Generator, n_customers: int) -> CustomerProfiles:
    """Draw ``n_customers`` customer profiles (handbook step 1)."""
    x = rng.uniform(0, GRID_SIZE, n_customers)
    y = rng.uniform(0, GRID_SIZE, n_customers)
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, n_customers)
    mean_nb_tx_per_day = rng.uniform(*MEAN_NB_TX_PER_DAY_RANGE, n_customers)
    return CustomerProfiles(x, y, mean_amount, mean_amount / 2, mean_nb_tx_per_day)


def generate_terminal_profiles(rng: np.random.Generator, n_terminals: int) -> TerminalProfiles:
    """Draw ``n_terminals`` terminal locations (handbook step 2)."""
    return TerminalProfiles(rng.uniform(0, GRID_SIZE, n_terminals),
                            rng.uniform(0, GRID_SIZE, n_terminals))


def terminals_within_radius(
    customers: CustomerProfiles, terminals: TerminalProfiles, radius: float
) -> AvailableTerminals:
    """The terminals at Euclidean distance strictly below ``radius`` of each customer.

    Computed in blocks of customers, so memory stays near ``_BLOCK_CELLS`` booleans.
    """
    n_customers, n_terminals = len(customers.x), len(terminals.x)
    block = max(1, _BLOCK_CELLS // max(1, n_terminals))
    counts = np.zeros(n_customers, dtype=np.int64)
    parts: list[np.ndarray] = []
    for lo in range(0, n_customers, block):
        hi = min(n_customers, lo + block)
        dx = customers.x[lo:hi, None] - terminals.x[None, :]
        dy = customers.y[lo:hi, None] - terminals.y[None, :]
        rows, cols = np.nonzero(np.sqrt(dx * dx + dy * dy) < radius)
        counts[lo:hi] = np.bincount(rows, minlength=hi - lo)
        parts.append(cols.astype(np.int64))
    indptr = np.concatenate(([0], np.cumsum(counts)))
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return AvailableTerminals(indptr, indices)


def generate_transactions(
    rng: np.random.Generator,
    customers: CustomerProfiles,
    available: AvailableTerminals,
    n_days: int,
) -> dict[str, np.ndarray]:
    """Draw every customer's transactions over ``n_days`` days (handbook step 4).

    Returns
    -------
    dict of str to ndarray of shape (n_transactions,)
        ``customer_id``, ``terminal_id``, ``day`` (days since the start),
        ``seconds`` (seconds since the start) and ``amount`` (currency units, rounded
        to cents), sorted by ``seconds`` then ``customer_id`` (ties keep draw order).
    """
    n_customers = len(customers.x)
    attempts = rng.poisson(customers.mean_nb_tx_per_day, size=(n_days, n_customers)).ravel()
    customer = np.repeat(np.tile(np.arange(n_customers, dtype=np.int64), n_days), attempts)
    day = np.repeat(np.repeat(np.arange(n_days, dtype=np.int64), n_customers), attempts)
    time_of_day = np.trunc(
        rng.normal(TX_TIME_MEAN_SECONDS, TX_TIME_STD_SECONDS, len(customer))
    ).astype(np.int64)
    n_terminals = available.counts()
    keep = (time_of_day > 0) & (time_of_day < SECONDS_PER_DAY) & (n_terminals[customer] > 0)
    customer, day, time_of_day = customer[keep], day[keep], time_of_day[keep]

    mean = customers.mean_amount[customer]
    amount = rng.normal(mean, customers.std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    amount = np.round(amount, 2)
    pick = rng.integers(0, n_terminals[customer])
    terminal = available.indices[available.indptr[customer] + pick]

    seconds = day * SECONDS_PER_DAY + time_of_day
    order = np.lexsort((customer, seconds))
    return {
        "customer_id": customer[order],
        "terminal_id": terminal[order],
        "day": day[order],
        "seconds": seconds[order],
        "amount": amount[order],
    }


def _scenario_2(
    rng: np.random.Generator, tx: dict[str, np.ndarray], n_terminals: int, n_compromise_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Compromised terminals per day and the mask of their transactions in the window."""
    k = min(COMPROMISED_TERMINALS_PER_DAY, n_terminals)
    chosen = np.array(
        [rng.choice(n_terminals, size=k, replace=False) for _ in range(n_compromise_days)],
        dtype=np.int64,
    ).reshape(n_compromise_days, k)
    # compromised[i, d]: terminal targets[i] is compromised on day d
    targets = np.unique(chosen)
    compromised = np.zeros(
        (len(targets), n_compromise_days + TERMINAL_COMPROMISE_DAYS), dtype=bool
    )
    for start, terminals in enumerate(chosen):
        rows = np.searchsorted(targets, terminals)
        compromised[rows, start:start + TERMINAL_COMPROMISE_DAYS] = True
    mask = np.zeros(len(tx["terminal_id"]), dtype=bool)
    if len(targets):
        row = np.minimum(np.searchsorted(targets, tx["terminal_id"]), len(targets) - 1)
        hit = np.flatnonzero(targets[row] == tx["terminal_id"])
        mask[hit] = compromised[row[hit], tx["day"][hit]]
    return chosen, mask


def _scenario_3(
    rng: np.random.Generator, tx: dict[str, np.ndarray], n_customers: int, n_compromise_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Compromised customers per day and how many times each transaction was picked."""
    k = min(COMPROMISED_CUSTOMERS_PER_DAY, n_customers)
    chosen = np.zeros((n_compromise_days, k), dtype=np.int64)
    by_customer = np.argsort(tx["customer_id"], kind="stable")  # time order kept inside
    customer_sorted = tx["customer_id"][by_customer]
    day_sorted = tx["day"][by_customer]
    bounds = np.searchsorted(customer_sorted, np.arange(n_customers + 1))
    picked = np.zeros(len(by_customer), dtype=np.int64)
    for start in range(n_compromise_days):
        chosen[start] = rng.choice(n_customers, size=k, replace=False)
        windows = []
        for c in chosen[start]:
            lo, hi = bounds[c], bounds[c + 1]
            days = day_sorted[lo:hi]
            a = lo + np.searchsorted(days, start, side="left")
            b = lo + np.searchsorted(days, start + CUSTOMER_COMPROMISE_DAYS, side="left")
            windows.append(by_customer[a:b])
        window = np.sort(np.concatenate(windows))
        n_frauds = len(window) // CUSTOMER_FRAUD_SHARE_DIVISOR
        if n_frauds:
            picked[rng.choice(window, size=n_frauds, replace=False)] += 1
    return chosen, picked


def add_frauds(
    tx: dict[str, np.ndarray],
    n_customers: int,
    n_terminals: int,
    terminal_rng: np.random.Generator,
    customer_rng: np.random.Generator,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply the three fraud scenarios (handbook step 5).

    Parameters
    ----------
    tx : dict of str to ndarray
        Output of :func:`generate_transactions`.
    n_customers, n_terminals : int
        Population sizes the compromised customers and terminals are drawn from.
    terminal_rng, customer_rng : numpy.random.Generator
        Draw the compromised terminals (scenario 2) and customers (scenario 3).
    progress : callable, optional
        Called with each scenario's step name once it is done.

    Returns
    -------
    amount : ndarray of shape (n_transactions,)
        Amounts after scenario 3, in currency units rounded to cents.
    fraud : ndarray of shape (n_transactions,)
        1 for fraud, else 0.
    scenario : ndarray of shape (n_transactions,)
        0 genuine, else the scenario (1, 2 or 3) that labelled it last.
    compromised_terminals : ndarray of shape (n_compromise_days, 2)
    compromised_customers : ndarray of shape (n_compromise_days, 3)
    """
    done = progress or (lambda step: None)
    # The handbook loops over range(TX_TIME_DAYS.max()): every day but the last.
    n_compromise_days = int(tx["day"].max()) if len(tx["day"]) else 0
    scenario = np.zeros(len(tx["day"]), dtype=np.int64)
    scenario[tx["amount"] > SCENARIO_1_MIN_AMOUNT] = 1
    done(SIMULATION_STEPS[4])
    compromised_terminals, on_terminal = _scenario_2(
        terminal_rng, tx, n_terminals, n_compromise_days
    )
    scenario[on_terminal] = 2
    done(SIMULATION_STEPS[5])
    compromised_customers, picked = _scenario_3(
        customer_rng, tx, n_customers, n_compromise_days
    )
    scenario[picked > 0] = 3
    amount = np.round(tx["amount"] * CUSTOMER_FRAUD_AMOUNT_FACTOR ** picked, 2)
    done(SIMULATION_STEPS[6])
    fraud = (scenario > 0).astype(np.int64)
    return amount, fraud, scenario, compromised_terminals, compromised_customers


def run_simulation(
    n_customers: int = 5000,
    n_terminals: int = 10000,
    start_date: str | date = "2018-04-01",
    n_days: int = 183,
    radius: float = 5.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> Simulation:
    """Run the handbook's generator and keep the profiles and compromise logs too.

    Parameters and errors are those of :func:`simulate`.

    Returns
    -------
    Simulation
    """
    start = check_parameters(n_customers, n_terminals, start_date, n_days, radius, seed)
    total = len(SIMULATION_STEPS)
    step_of = {name: i + 1 for i, name in enumerate(SIMULATION_STEPS)}

    def done(step: str) -> None:
        if progress is not None:
            progress(step, step_of[step], total)

    # Independent streams: changing n_days leaves the profiles unchanged, and so on.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    customers = generate_customer_profiles(streams[0], n_customers)
    done(SIMULATION_STEPS[0])
    terminals = generate_terminal_profiles(streams[1], n_terminals)
    done(SIMULATION_STEPS[1])
    available = terminals_within_radius(customers, terminals, float(radius))
    done(SIMULATION_STEPS[2])
    tx = generate_transactions(streams[2], customers, available, n_days)
    done(SIMULATION_STEPS[3])
    amount, fraud, scenario, bad_terminals, bad_customers = add_frauds(
        tx, n_customers, n_terminals, streams[3], streams[4], progress=done
    )
    origin = np.datetime64(start.isoformat(), "s")
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(amount), dtype=np.int64),
            "TX_DATETIME": origin + tx["seconds"].astype("timedelta64[s]"),
            "CUSTOMER_ID": tx["customer_id"],
            "TERMINAL_ID": tx["terminal_id"],
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": tx["seconds"],
            "TX_TIME_DAYS": tx["day"],
            "TX_FRAUD": fraud,
            "TX_FRAUD_SCENARIO": scenario,
        },
        columns=list(HANDBOOK_COLUMNS),
    )
    done(SIMULATION_STEPS[7])
    return Simulation(df, customers, terminals, available, bad_terminals, bad_customers)


def simulate(
    n_customers: int = 5000,
    n_terminals: int = 10000,
    start_date: str | date = "2018-04-01",
    n_days: int = 183,
    radius: float = 5.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Simulate labelled card transactions with the Fraud Detection Handbook's process.

    The defaults are the handbook's: about 1.75 million transactions, 0.8 % fraud.
    The same arguments give the same frame, byte for byte, on any machine with the
    same numpy bit generator (PCG64).

    Parameters
    ----------
    n_customers : int, default=5000
        Number of customers (cards), ``>= 1``; ``CUSTOMER_ID`` is ``0 .. n - 1``.
    n_terminals : int, default=10000
        Number of terminals, ``>= 1``; ``TERMINAL_ID`` is ``0 .. n - 1``.
    start_date : str ``YYYY-MM-DD`` or date, default="2018-04-01"
        First simulated day (midnight, UTC, no zone in the output), from 2000-01-01.
    n_days : int, default=183
        Number of simulated days, ``>= 1``; the last day must be before 2100-01-01.
    radius : float, default=5.0
        A customer uses the terminals at a distance below this, in grid units
        (the grid is 100 x 100); ``> 0``.
    seed : int, default=0
        Seed of every random draw, ``>= 0``.
    progress : callable, optional
        Called as ``progress(step, done, total)`` after each of the
        :data:`SIMULATION_STEPS` (``done`` counts from 1 to ``total``).

    Returns
    -------
    pandas.DataFrame of shape (n_transactions, 9)
        :data:`~app.data.handbook.HANDBOOK_COLUMNS`, sorted by time:
        ``TRANSACTION_ID`` (int64, ``0 .. n - 1``, increasing with time),
        ``TX_DATETIME`` (datetime64[s]), ``CUSTOMER_ID`` and ``TERMINAL_ID`` (int64),
        ``TX_AMOUNT`` (float64, currency units, rounded to cents),
        ``TX_TIME_SECONDS`` and ``TX_TIME_DAYS`` (int64, since ``start_date``),
        ``TX_FRAUD`` (0 or 1) and ``TX_FRAUD_SCENARIO`` (0 genuine, else 1, 2 or 3).

    Raises
    ------
    ValueError
        A parameter out of range, naming it and the value received.

    See Also
    --------
    run_simulation : the same, also returning profiles and compromise logs.
    write_handbook_csv, write_handbook_daily : write the frame for
        :func:`~app.data.handbook.read_handbook`.
    """
    return run_simulation(
        n_customers, n_terminals, start_date, n_days, radius, seed, progress
    ).transactions


def summarize(df: pd.DataFrame) -> dict[str, float | int]:
    """Summary figures of a handbook-format frame.

    Returns
    -------
    dict
        ``n_transactions``, ``n_days`` (distinct days), ``tx_per_day``, ``n_frauds``,
        ``fraud_rate`` (in [0, 1]), ``scenario_1`` .. ``scenario_3`` (counts),
        ``mean_amount`` and ``mean_genuine_amount`` (currency units).

    Examples
    --------
    >>> s = summarize(simulate(n_customers=20, n_terminals=50, n_days=2, seed=1))
    >>> sorted(s)[:3]
    ['fraud_rate', 'mean_amount', 'mean_genuine_amount']
    """
    n = len(df)
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    fraud = df["TX_FRAUD"].to_numpy()
    amount = df["TX_AMOUNT"].to_numpy(dtype=float)
    n_days = int(df["TX_TIME_DAYS"].nunique()) if n else 0
    return {
        "n_transactions": n,
        "n_days": n_days,
        "tx_per_day": n / n_days if n_days else 0.0,
        "n_frauds": int(fraud.sum()),
        "fraud_rate": float(fraud.mean()) if n else 0.0,
        "scenario_1": int((scenario == 1).sum()),
        "scenario_2": int((scenario == 2).sum()),
        "scenario_3": int((scenario == 3).sum()),
        "mean_amount": float(amount.mean()) if n else 0.0,
        "mean_genuine_amount": float(amount[fraud == 0].mean()) if (fraud == 0).any() else 0.0,
    }


_CHUNK_ROWS = 100_000


def _write_csv(
    df: pd.DataFrame, path: Path, progress: Callable[[int, int], None] | None = None
) -> None:
    """Write ``df`` as CSV (gzip if the name ends ``.gz``), atomically and reproducibly.

    Rows are formatted in chunks of ``_CHUNK_ROWS`` (``progress(rows_written, rows)``
    after each); the gzip header holds no file name and a zero time stamp, so equal
    frames give equal bytes.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as raw:
            sink = (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
                if path.name.endswith(".gz") else raw
            )
            with sink, io.TextIOWrapper(sink, encoding="utf-8", newline="") as text:
                for lo in range(0, max(len(df), 1), _CHUNK_ROWS):
                    df.iloc[lo:lo + _CHUNK_ROWS].to_csv(
                        text, index=False, header=lo == 0, lineterminator="\n"
                    )
                    if progress is not None:
                        progress(min(lo + _CHUNK_ROWS, len(df)), len(df))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_handbook_csv(
    df: pd.DataFrame, path: str | Path, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Write transactions as one handbook-format ``.csv.gz`` (or plain ``.csv``) file.

    Parameters
    ----------
    df : pandas.DataFrame
        Holds :data:`~app.data.handbook.HANDBOOK_COLUMNS` (other columns are dropped).
    path : str or Path
        Ends with ``.csv.gz`` or ``.csv``; its folder is created; an existing file is
        replaced (atomically).
    progress : callable, optional
        Called as ``progress(rows_written, rows_total)`` as rows are written.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        ``path`` ends neither with ``.csv.gz`` nor ``.csv``.
    """
    path = Path(path)
    if not path.name.endswith((".csv.gz", ".csv")):
        raise ValueError(f"path must end with .csv.gz or .csv, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(df[list(HANDBOOK_COLUMNS)], path, progress)
    return path


def write_handbook_daily(
    df: pd.DataFrame,
    folder: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write transactions as one ``YYYY-MM-DD.csv.gz`` file per day with transactions.

    The handbook's ``simulated-data-raw`` layout, read back by
    :func:`~app.data.handbook.read_handbook`. Days without transactions get no file.

    Parameters
    ----------
    df : pandas.DataFrame
        Holds :data:`~app.data.handbook.HANDBOOK_COLUMNS`, sorted by ``TX_DATETIME``.
    folder : str or Path
        Created if missing; files of the same names are replaced.
    progress : callable, optional
        Called as ``progress(files_written, files_total)`` after each file.

    Returns
    -------
    list of Path
        The files written, in date order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = df[list(HANDBOOK_COLUMNS)]
    days = frame["TX_DATETIME"].to_numpy().astype("datetime64[D]")
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if len(days) else []
    bounds = list(starts) + [len(days)]
    written: list[Path] = []
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        path = folder / f"{days[lo]}.csv.gz"
        _write_csv(frame.iloc[lo:hi], path)
        written.append(path)
        if progress is not None:
            progress(i + 1, len(bounds) - 1)
    return written

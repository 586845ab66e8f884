"""Memory of the feature state per account and per terminal, at the handbook's activity.

Runs the stream's own state code (``update_one`` / ``label_one``) over a slice of
handbook data (the shared file, or simulated data), then measures for every account and
terminal: the bytes of its table value (``to_bytes``, what the changelog and a RocksDB
store hold) and its deep in-memory size in this Python process (``sys.getsizeof`` of the
state object and everything it holds; shared small ints and interned strings counted as
if they were not shared, i.e. an upper bound).

Usage::

    python bench/state_memory.py [PATH] [--start 2018-05-01 --days 44]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.data.handbook import read_handbook, to_labels, to_transactions  # noqa: E402
from app.features import AccountState, TerminalState  # noqa: E402
from app.features.offline import event_order  # noqa: E402
from app.features.state import DAY_MS  # noqa: E402
from app.features.terminal import terminal_horizon_ms  # noqa: E402

SHARED = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/data/handbook-transactions-2018-04-01_2018-07-31.csv.gz"
)


def deep_size(obj) -> int:
    """Bytes of ``obj`` and of the lists and values it holds (upper bound)."""
    size = sys.getsizeof(obj)
    for name in getattr(obj, "__slots__", ()):
        value = getattr(obj, name)
        size += sys.getsizeof(value)
        if isinstance(value, list):
            size += sum(sys.getsizeof(v) for v in value)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(SHARED))
    parser.add_argument("--start", default="2018-05-01")
    parser.add_argument("--days", type=int, default=44, help="37 days fill every window")
    args = parser.parse_args()
    if Path(args.path).exists():
        end = (np.datetime64(args.start) + np.timedelta64(args.days - 1, "D")).astype(str)
        df = read_handbook(args.path, args.start, end)
        source = args.path
    else:
        from app.data.simulate import simulate

        df = simulate(start_date=args.start, n_days=args.days, seed=1)
        source = "simulated"
    accounts: dict[str, AccountState] = {}
    terminals: dict[str, TerminalState] = {}
    horizon = terminal_horizon_ms()
    for kind, item in event_order(to_transactions(df), to_labels(df, 7 * DAY_MS)):
        if kind == 1:
            terminals.setdefault(item.terminal_id, TerminalState()).label_one(item, horizon)
        else:
            accounts.setdefault(item.account_id, AccountState()).update_one(item)
            terminals.setdefault(item.terminal_id, TerminalState()).update_one(item, horizon)
    print(f"data: {source}, {args.start} + {args.days} days, {len(df):,} transactions")
    for name, states in (("account", accounts), ("terminal", terminals)):
        n = np.array([len(s) for s in states.values()])
        wire = np.array([len(s.to_bytes()) for s in states.values()])
        mem = np.array([deep_size(s) for s in states.values()])
        print(
            f"{name:8s}: {len(states):6,} keys, {n.mean():6.1f} transactions held (max {n.max()}), "
            f"table value {wire.mean():7.0f} B mean / {np.percentile(wire, 99):7.0f} B p99, "
            f"in memory {mem.mean():7.0f} B mean / {np.percentile(mem, 99):7.0f} B p99"
        )


if __name__ == "__main__":
    main()

"""Bytes and CPU per transaction: JSON against Avro (the ``fraud-encoding`` header).

Takes real transactions (a slice of the shared handbook file, or simulated data when
it is absent), and for each encoding measures the payload size and the CPU time
(``time.process_time``) to encode (what a producer pays) and to decode and validate
(what the worker's stage 1 pays: :func:`app.events.decode_transaction`, the same
validation for both). Best of ``--repeat`` runs.

Usage::

    python bench/encoding.py [PATH] [--days 7] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.data.handbook import read_handbook, to_transactions  # noqa: E402
from app.encoding import encode_avro  # noqa: E402
from app.events import CONTRACTS, Transaction, decode_transaction, encode  # noqa: E402

SHARED = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/data/handbook-transactions-2018-04-01_2018-07-31.csv.gz"
)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=str(SHARED))
    parser.add_argument("--start", default="2018-05-01")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if Path(args.path).exists():
        from datetime import date, timedelta

        start = date.fromisoformat(args.start)
        df = read_handbook(args.path, start, start + timedelta(days=args.days - 1))
        source = f"{Path(args.path).name}, {args.days} days from {args.start}"
    else:
        from app.data.simulate import simulate

        df = simulate(start_date=args.start, n_days=args.days, seed=1)
        source = "simulated"
    txs: list[Transaction] = list(to_transactions(df))
    dicts = [tx.model_dump() for tx in txs]
    n = len(txs)
    avro_header = f"avro/{CONTRACTS['transactions'].version}".encode()

    json_raw = [encode(tx) for tx in txs]
    avro_raw = [encode_avro(Transaction, d) for d in dicts]
    assert [decode_transaction(r, encoding=avro_header) for r in avro_raw[:1000]] == txs[:1000]

    rows = []
    for name, raws, enc, dec in (
        ("json", json_raw, lambda: [orjson.dumps(d) for d in dicts],
         lambda: [decode_transaction(r) for r in json_raw]),
        ("avro", avro_raw, lambda: [encode_avro(Transaction, d) for d in dicts],
         lambda: [decode_transaction(r, encoding=avro_header) for r in avro_raw]),
    ):
        sizes = [len(r) for r in raws]
        rows.append((
            name, statistics.fmean(sizes), max(sizes),
            _best(enc, args.repeat) / n * 1e6, _best(dec, args.repeat) / n * 1e6,
        ))
    print(f"{n:,} transactions ({source}); CPU per transaction, best of {args.repeat}")
    print(f"{'encoding':<9}{'bytes mean':>11}{'bytes max':>10}{'encode µs':>11}{'decode+validate µs':>20}")
    for name, mean, mx, enc_us, dec_us in rows:
        print(f"{name:<9}{mean:>11.1f}{mx:>10d}{enc_us:>11.2f}{dec_us:>20.2f}")
    (j, a) = rows
    print(f"avro/json: bytes {a[1] / j[1]:.2f}, encode CPU {a[3] / j[3]:.2f}, "
          f"decode+validate CPU {a[4] / j[4]:.2f}")


if __name__ == "__main__":
    main()

"""The pure work of two checkouts of the project, measured in turns on the same machine.

``python bench/pure_work_compare.py BASELINE_DIR [--rounds 3]`` runs
:func:`bench.pure_work.pure_work` of this checkout and of ``BASELINE_DIR`` (another
revision, e.g. ``git archive REV | tar -x -C DIR``), each in its own process with its
own ``app`` package and ``models/``, alternately ``--rounds`` times: batches of 100 over
the first ``--days`` days of the handbook file, then batches of 1 and 100 over the
first ``--fixed-n`` transactions. On a shared machine the absolute figures move with the
load; the ratio of two neighbouring runs does not move much. Prints and writes
(``--out``) CPU µs per transaction, the fixed cost per batch ``(u1 - u100) * 100 / 99``,
and the load average before and after each run. ``--unfrozen`` adds a run of this
checkout with ``gc_freeze=False`` (:func:`bench.pure_work.pure_work`), where the cyclic
collector still traverses the harness's objects.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

_RUNNER = r"""
import inspect, json, os, sys
import pandas as pd
from app.config import Settings
from app.data.handbook import read_handbook
from bench.pure_work import pure_work
data, days, fixed_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
first = pd.Timestamp("2018-04-01")
df = read_handbook(data, first.date(), (first + pd.Timedelta(days=days - 1)).date())
load0 = os.getloadavg()[0]
kw = {}
if "gc_freeze" in inspect.signature(pure_work).parameters:
    kw["gc_freeze"] = os.environ.get("PURE_WORK_GC_FREEZE", "1") == "1"
main = pure_work(df, Settings(), (100,), **kw)
pair = pure_work(df.iloc[:fixed_n], Settings(), (1, 100), **kw)
print(json.dumps({"main": main, "pair": pair, "load": [load0, os.getloadavg()[0]]}))
"""


def _run(tree: Path, data: Path, days: int, fixed_n: int, gc_freeze: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PURE_WORK_GC_FREEZE": "1" if gc_freeze else "0"}
    env.pop("MODELS_DIR", None)
    env.pop("MODEL_VERSION", None)
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(data), str(days), str(fixed_n)],
                         cwd=tree, env=env, check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    u1, u100 = (x["us_per_transaction"] for x in r["pair"]["runs"])
    return {
        "us_per_transaction_batch_100": r["main"]["runs"][0]["us_per_transaction"],
        "n": r["main"]["n"],
        "fixed_n": r["pair"]["n"],
        "us_per_transaction_batch_1": u1,
        "us_per_transaction_batch_100_fixed_n": u100,
        "fixed_cost_per_batch_us": round((u1 - u100) * 100 / 99, 1),
        "model_version": r["main"]["model_version"],
        "gc_frozen": r["main"].get("gc_frozen", False),
        "loadavg_1m": [round(x, 2) for x in r["load"]],
    }


def main() -> None:
    from bench.data import SHARED_DATA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout of the project")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--fixed-n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--unfrozen", action="store_true",
                        help="also run this checkout without gc.freeze (tree 'this-unfrozen')")
    args = parser.parse_args()
    trees = [("baseline", args.baseline.resolve(), True), ("this", HERE, True)]
    if args.unfrozen:
        trees.append(("this-unfrozen", HERE, False))
    runs: list[dict] = []
    for r in range(args.rounds):
        for name, tree, freeze in trees:
            res = _run(tree, args.data, args.days, args.fixed_n, freeze)
            runs.append({"round": r, "tree": name, **res})
            print(json.dumps(runs[-1]), flush=True)
    ratios: dict[str, list[float]] = {}
    for r in range(args.rounds):
        of_round = {x["tree"]: x for x in runs if x["round"] == r}
        base = of_round["baseline"]["us_per_transaction_batch_100"]
        for name, _, _ in trees[1:]:
            ratios.setdefault(name, []).append(
                round(of_round[name]["us_per_transaction_batch_100"] / base, 3))
    out = {
        "kind": "pure_work_compare",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "baseline": str(args.baseline), "days": args.days, "runs": runs,
        "ratio_this_to_baseline_batch_100": ratios["this"],
        "ratio_to_baseline_batch_100": ratios,
    }
    print(json.dumps({"ratio_to_baseline_batch_100": ratios}))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Start time of ``fraudctl``: ``--help`` and a usage error, as a user runs them.

Each is run ``--runs`` times as a process of its own (the console script of this
virtualenv); the median wall-clock and CPU seconds are reported, with the modules the
import of :mod:`app.cli` loads from the heavy libraries (there should be none: Faust,
aiokafka, pandas and scikit-learn are imported inside the commands that need them).
The figures go to ``bench/results/cli_start.json``. A figure, never an assertion: the
machine's load moves the wall-clock time (CPU time moves less).

Run: ``python bench/cli_start.py [--runs 7] [--out PATH]``. For the modules and their
import time: ``python -X importtime -c 'import app.cli' 2>&1 | sort -t'|' -k2 -n | tail``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["HEAVY_MODULES", "CASES", "fraudctl_path", "heavy_modules_loaded", "measure"]

ROOT = Path(__file__).resolve().parent.parent
#: Libraries a CLI start must not load: they cost seconds and only some commands use them.
HEAVY_MODULES = ("faust", "aiokafka", "pandas", "sklearn", "scipy", "numpy", "mode")
#: What is timed: the name of each case and the arguments of ``fraudctl``.
CASES = {
    "help": ["--help"],
    "usage_error": ["replay", "--rate", "-5", "x.csv.gz"],
}


def fraudctl_path() -> Path:
    """The ``fraudctl`` console script of the running interpreter's environment."""
    return Path(sys.executable).parent / "fraudctl"


def heavy_modules_loaded() -> list[str]:
    """The :data:`HEAVY_MODULES` that ``import app.cli`` loads, in a fresh interpreter."""
    code = (
        "import sys, app.cli; "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    return [m for m in out.split(",") if m]


def _one_run(args: list[str]) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds (user + system) and exit code of one start."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(
        [str(fraudctl_path()), *args], capture_output=True, cwd=ROOT,
        env={**os.environ, "COLUMNS": "100"},
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def measure(runs: int = 7) -> dict:
    """Median wall-clock and CPU seconds of each of :data:`CASES` over ``runs`` starts.

    Returns
    -------
    dict
        ``{"cases": {name: {"args", "exit_code", "wall_seconds_median",
        "wall_seconds_min", "cpu_seconds_median"}}, "heavy_modules_loaded": [...],
        "runs", "python", "load_average"}``.
    """
    cases = {}
    for name, args in CASES.items():
        _one_run(args)  # warm the file cache; not counted
        results = [_one_run(args) for _ in range(runs)]
        walls = [w for w, _, _ in results]
        cases[name] = {
            "args": args,
            "exit_code": results[-1][2],
            "wall_seconds_median": round(statistics.median(walls), 4),
            "wall_seconds_min": round(min(walls), 4),
            "cpu_seconds_median": round(statistics.median(c for _, c, _ in results), 4),
        }
    return {
        "cases": cases,
        "heavy_modules_loaded": heavy_modules_loaded(),
        "runs": runs,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="starts per case (default 7)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "cli_start.json",
        help="JSON file to write (default bench/results/cli_start.json)",
    )
    ns = parser.parse_args()
    if ns.runs < 1:
        parser.error(f"--runs must be >= 1, got {ns.runs}")
    result = measure(ns.runs)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, c in result["cases"].items():
        print(
            f"fraudctl {' '.join(c['args'])}: median {c['wall_seconds_median']:.3f} s wall "
            f"(min {c['wall_seconds_min']:.3f} s), {c['cpu_seconds_median']:.3f} s CPU, "
            f"exit {c['exit_code']}"
        )
    print(f"heavy modules loaded by `import app.cli`: {result['heavy_modules_loaded'] or 'none'}")
    print(f"load average {result['load_average']}; written to {ns.out}")


if __name__ == "__main__":
    main()

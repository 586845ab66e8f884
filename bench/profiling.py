"""A py-spy profile of a running worker and its top entries.

``py-spy record --format raw --nolineno`` writes collapsed stacks (``frame;frame;...
count`` per line, outermost frame first), which :func:`top_entries` sums by function:
*self* samples (the function was the innermost frame, i.e. on the CPU) and *total*
samples (it was anywhere on the stack). Idle samples (a thread waiting in ``select``)
are left out by py-spy, so the shares are of the samples that did work. The raw file
also loads in speedscope or ``flamegraph.pl`` for a picture.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["py_spy_bin", "record", "top_entries"]


def py_spy_bin() -> str | None:
    """The ``py-spy`` executable (beside this Python, else on ``PATH``), or None."""
    import sys

    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(pid: int, seconds: float, out_path: Path, rate_hz: int = 100) -> Path:
    """Sample process ``pid`` for ``seconds`` into ``out_path`` (raw collapsed stacks).

    Raises
    ------
    RuntimeError
        If py-spy is missing or fails (it needs ptrace rights over ``pid``).
    """
    binary = py_spy_bin()
    if binary is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    argv = [
        binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate_hz), "--format", "raw", "--nolineno", "--nonblocking",
        "--output", str(out_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return out_path


def _package(frame: str) -> str:
    """The top-level package or module of a frame ``"function (path/file.py)"``.

    >>> _package("score (app/scoring/model.py)"), _package("loads (json/decoder.py)")
    ('app', 'json')
    >>> _package("select (selectors.py)"), _package("<module> (<frozen runpy>)")
    ('selectors', '<frozen runpy>')
    """
    _, _, where = frame.rpartition(" (")
    where = where.rstrip(")")
    head = where.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def top_entries(raw_text: str, limit: int = 15, own_package: str = "app") -> dict:
    """The functions with the most self and total samples in collapsed stacks.

    Parameters
    ----------
    raw_text : str
        py-spy ``--format raw`` output: one ``frame;frame;... count`` per line.
    limit : int, default=15
    own_package : str, default="app"
        The project's package: ``total`` lists only its functions (the frames that
        every sample shares, the event loop and Faust's worker, would fill it
        otherwise).

    Returns
    -------
    dict
        ``samples`` (all counted); ``self`` (functions on the CPU), ``self_by_package``
        (the same summed by top-level package: where the time goes, by library) and
        ``total`` (the project's functions, inclusive): lists of ``{"function" or
        "package", "samples", "share"}``, most samples first.

    Examples
    --------
    >>> raw = "main (a.py);work (b.py);loads (c.py) 3\\nmain (a.py);work (b.py) 1\\n"
    >>> top = top_entries(raw, limit=2)
    >>> top["samples"], top["self"][0]["function"], top["self_by_package"][0]["package"]
    (4, 'loads (c.py)', 'c')
    >>> top_entries(raw, own_package="b")["total"]
    [{'function': 'work (b.py)', 'samples': 4, 'share': 1.0}]
    """
    self_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in raw_text.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        package_counts[_package(frames[-1])] += count
        for frame in set(frames):
            if _package(frame) == own_package:
                total_counts[frame] += count

    def rows(counter: Counter[str], what: str = "function") -> list[dict]:
        return [
            {what: f, "samples": c, "share": round(c / samples, 4) if samples else 0.0}
            for f, c in counter.most_common(limit)
        ]

    return {
        "samples": samples,
        "self": rows(self_counts),
        "self_by_package": rows(package_counts, "package"),
        "total": rows(total_counts),
    }

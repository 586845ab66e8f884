"""ONNX Runtime or a forest compiled to C (Treelite/TL2cgen)? Measured on the active model.

For the model ``models/ACTIVE`` names, in one process and interleaved, this measures
three ways to score the same fitted forest:

* ``sklearn``: the pickle's ``predict_proba`` (``n_jobs=1``, one OpenMP thread), the
  reference every compiled form is checked against;
* ``onnxruntime``: the served runtime, the version's own ``model.onnx`` (sha256 checked
  against the card) loaded by :class:`app.scoring.compiled.CompiledModel` (one thread)
  and called as the service scores (``score_many``);
* ``tl2cgen``: the same forest imported by ``treelite.sklearn.import_model``, compiled
  to C and built with gcc by ``tl2cgen.export_lib`` into a shared library, loaded by
  ``tl2cgen.Predictor`` (one thread). The input is rounded to float32 and back before
  the call, as scikit-learn and the ONNX graph do, so each tree takes scikit-learn's
  path; the rounding and the ``DMatrix`` are inside the timed call.

For each: CPU time (``time.process_time``) and wall time (``time.perf_counter``) per call
at batches of 1, 100 and 500 rows drawn in turn from the validation rows, the median of
``--repeats`` rounds (each round runs every runtime and batch size once, in a rotating
order, after a warm-up); the largest |score - scikit-learn| on the version's validation
rows (``validation_rows.npy``) and whether the decisions at the card's alert threshold
are identical; the time to convert or compile and the size of the artefact. The load
average, the library versions and gcc's version are recorded. On a shared machine the
absolute figures move with the load: compare the ratios of one run.

treelite and tl2cgen are not dependencies of the project. Run it in a separate
virtualenv with the project's versions (requirements.lock) of scikit-learn (the pickle
needs the version that wrote it), numpy, onnx, skl2onnx and onnxruntime, plus treelite
and tl2cgen, and gcc on the PATH::

    python3 -m venv /tmp/rc-venv
    /tmp/rc-venv/bin/pip install treelite tl2cgen scikit-learn==1.9.1 numpy==2.4.6 \\
        onnx==1.23.2 onnxruntime==1.32.0 skl2onnx==1.20.0 joblib threadpoolctl
    PYTHONPATH=. /tmp/rc-venv/bin/python bench/runtime_choice.py [--repeats 9] \\
        [--block-seconds 0.2] [--parallel-comp 4] [--models-dir models] [--out PATH]

Only :mod:`app.scoring.compiled` is imported from the project (it needs numpy, onnx,
skl2onnx and onnxruntime). Writes ``bench/results/runtime-choice-<UTC time>.json``
(``--out``) and prints a table. If treelite or tl2cgen cannot be imported, cannot load
this forest or cannot compile it, the error is recorded in the JSON (``tl2cgen.error``)
and the other two runtimes are still measured. tl2cgen 1.0.0 reads the model through the
treelite it bundles (4.1.2) and warns that a newer treelite wrote it; the warning is kept
in ``tl2cgen.compile_log`` and the scores are checked all the same.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent.parent
BATCHES = (1, 100, 500)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _captured_fd2(sink: list[str]):
    """What C libraries write to file descriptor 2 meanwhile, appended to ``sink``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))


def _timed(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """``fn()`` and its wall time, this process's CPU time and its children's CPU time."""
    t0, c0, k0 = time.perf_counter(), time.process_time(), os.times()
    out = fn()
    t1, c1, k1 = time.perf_counter(), time.process_time(), os.times()
    children = (k1.children_user - k0.children_user) + (k1.children_system - k0.children_system)
    return out, {"wall_s": round(t1 - t0, 4), "cpu_s": round(c1 - c0, 4),
                 "children_cpu_s": round(children, 4)}


def _gcc() -> str | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else gcc


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _batches(X: np.ndarray, size: int, count: int = 64) -> list[np.ndarray]:
    """``count`` contiguous batches of ``size`` rows taken in turn through ``X``."""
    out, i = [], 0
    for _ in range(count):
        idx = np.arange(i, i + size) % len(X)
        out.append(np.ascontiguousarray(X[idx]))
        i = (i + size) % len(X)
    return out


def _block(fn: Callable[[np.ndarray], Any], batches: list[np.ndarray],
           calls: int) -> tuple[float, float]:
    """CPU and wall seconds per call over ``calls`` calls."""
    n = len(batches)
    c0, t0 = time.process_time(), time.perf_counter()
    for k in range(calls):
        fn(batches[k % n])
    c1, t1 = time.process_time(), time.perf_counter()
    return (c1 - c0) / calls, (t1 - t0) / calls


def measure(scorers: dict[str, Callable[[np.ndarray], Any]], X: np.ndarray, repeats: int,
            block_seconds: float) -> dict:
    """Per-call CPU and wall time of each scorer at each batch size, interleaved."""
    batches = {b: _batches(X, b) for b in BATCHES}
    calls: dict[tuple[str, int], int] = {}
    for name, fn in scorers.items():  # warm-up, and calls per block of ~block_seconds
        for b in BATCHES:
            _block(fn, batches[b], 3)
            cpu, _ = _block(fn, batches[b], 5)
            calls[name, b] = max(3, int(block_seconds / max(cpu, 1e-7)))
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {k: [] for k in calls}
    order = [(name, b) for b in BATCHES for name in scorers]
    for r in range(repeats):
        shift = r % len(order)
        for name, b in order[shift:] + order[:shift]:
            samples[name, b].append(_block(scorers[name], batches[b], calls[name, b]))
    result: dict[str, dict] = {}
    for (name, b), s in samples.items():
        cpu = [c for c, _ in s]
        wall = [w for _, w in s]
        result.setdefault(name, {})[str(b)] = {
            "calls_per_block": calls[name, b],
            "cpu_us_per_call": round(statistics.median(cpu) * 1e6, 2),
            "cpu_us_per_call_min_max": [round(min(cpu) * 1e6, 2), round(max(cpu) * 1e6, 2)],
            "cpu_us_per_row": round(statistics.median(cpu) * 1e6 / b, 3),
            "wall_us_per_call": round(statistics.median(wall) * 1e6, 2),
        }
    return result


def _agreement(scores: np.ndarray, ref: np.ndarray, threshold: float) -> dict:
    diff = np.abs(scores - ref)
    flipped = int(np.count_nonzero((scores >= threshold) != (ref >= threshold)))
    return {"max_abs_score_difference": float(diff.max()),
            "rows_with_a_difference": int(np.count_nonzero(diff)),
            "decisions_differing": flipped, "decisions_identical": flipped == 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=str(HERE / "models"))
    ap.add_argument("--version", default=None, help="default: the one models/ACTIVE names")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--block-seconds", type=float, default=0.2)
    ap.add_argument("--parallel-comp", type=int, default=4,
                    help="tl2cgen: translation units the trees are split into")
    ap.add_argument("--nthread", type=int, default=1, help="gcc processes at once")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    import joblib
    import onnxruntime
    import sklearn
    from threadpoolctl import threadpool_limits

    from app.scoring.compiled import CompiledModel, compile_estimator, converter_version

    models = Path(args.models_dir)
    ver = args.version or (models / "ACTIVE").read_text().strip()
    folder = models / ver
    card = json.loads((folder / "card.json").read_text())
    if card["sklearn_version"] != sklearn.__version__:
        sys.exit(f"the pickle was written by scikit-learn {card['sklearn_version']}; "
                 f"this interpreter has {sklearn.__version__}")
    pickle_path = folder / card["artifact"]
    if _sha256(pickle_path) != card["artifact_sha256"]:
        sys.exit(f"{pickle_path}: sha256 differs from the card's")
    rt = card.get("runtime") or {}
    onnx_path = folder / (rt.get("artifact") or "model.onnx")
    if _sha256(onnx_path) != rt.get("artifact_sha256"):
        sys.exit(f"{onnx_path}: sha256 differs from the card's")
    estimator = joblib.load(pickle_path)
    estimator.n_jobs = 1
    X = np.ascontiguousarray(np.load(folder / (rt.get("check_rows") or "validation_rows.npy")),
                             dtype=np.float64)
    threshold = float(card["alert_threshold"])
    baseline = [card["baseline"][n] for n in card["feature_names"]]
    fraud = list(int(c) for c in estimator.classes_).index(1)
    n_features = X.shape[1]

    def sk_score(batch: np.ndarray) -> np.ndarray:
        return estimator.predict_proba(batch)[:, fraud]

    with threadpool_limits(1, user_api="openmp"):
        ref = sk_score(X).astype(np.float64)

    # ONNX Runtime: the served artefact, through the project's own session.
    onnx_bytes = onnx_path.read_bytes()
    served, load_onnx = _timed(lambda: CompiledModel(onnx_bytes, n_features))
    recompiled, convert_onnx = _timed(lambda: compile_estimator(estimator, baseline))
    ort_scores = served.score_many(X)
    runtimes: dict[str, dict] = {
        "sklearn": {"engine": f"scikit-learn {sklearn.__version__}", "artifact": card["artifact"],
                    "artifact_bytes": pickle_path.stat().st_size,
                    **_agreement(ref, ref, threshold)},
        "onnxruntime": {
            "engine": f"onnxruntime {onnxruntime.__version__}", "converter": converter_version(),
            "artifact": onnx_path.name, "artifact_bytes": len(onnx_bytes),
            "convert": convert_onnx, "recompiled_bytes_identical": recompiled == onnx_bytes,
            "load": load_onnx, **_agreement(ort_scores, ref, threshold),
            "note": "served graph; score_many (no alerting row explained in the call)",
        },
    }
    scorers: dict[str, Callable[[np.ndarray], Any]] = {"sklearn": sk_score,
                                                      "onnxruntime": served.score_many}

    # Treelite + TL2cgen: the forest compiled to C, built with gcc.
    tl: dict[str, Any] = {"gcc": _gcc(), "toolchain": "gcc", "parallel_comp": args.parallel_comp,
                          "nthread": args.nthread,
                          "gcc_flags": "tl2cgen default: -O3 -fPIC -std=c99"}
    runtimes["tl2cgen"] = tl
    workdir = Path(tempfile.mkdtemp(prefix="runtime-choice-"))
    try:
        step = "import treelite/tl2cgen"
        import tl2cgen
        import treelite

        tl["engine"] = f"tl2cgen {tl2cgen.__version__} (treelite {treelite.__version__})"
        step = "treelite.sklearn.import_model"
        model, tl["convert"] = _timed(lambda: treelite.sklearn.import_model(estimator))
        step = "tl2cgen.export_lib"
        libpath = workdir / "forest.so"
        logs: list[str] = []
        with _captured_fd2(logs):
            _, tl["compile"] = _timed(lambda: tl2cgen.export_lib(
                model, toolchain="gcc", libpath=str(libpath),
                params={"parallel_comp": args.parallel_comp}, nthread=args.nthread))
        tl["compile_log"] = [ln for ln in "".join(logs).splitlines() if ln.strip()][:20]
        tl["artifact"] = "forest.so (shared library, this platform only)"
        tl["artifact_bytes"] = libpath.stat().st_size
        step = "tl2cgen.Predictor"
        predictor, tl["load"] = _timed(lambda: tl2cgen.Predictor(str(libpath), nthread=1))

        def tl_score(batch: np.ndarray) -> np.ndarray:
            dm = tl2cgen.DMatrix(batch.astype(np.float32).astype(np.float64), dtype="float64")
            return predictor.predict(dm).reshape(len(batch), -1)[:, fraud]

        step = "tl2cgen predict"
        tl.update(_agreement(tl_score(X).astype(np.float64), ref, threshold))
        scorers["tl2cgen"] = tl_score
    except Exception as exc:  # noqa: BLE001  (record why, measure the others)
        tl["error"] = f"{step}: {type(exc).__name__}: {exc}"[:2000]

    with threadpool_limits(1, user_api="openmp"):
        timings = measure(scorers, X, args.repeats, args.block_seconds)
    shutil.rmtree(workdir, ignore_errors=True)
    for name, t in timings.items():
        runtimes[name]["timing"] = t
    ratios = {}
    for b in map(str, BATCHES):
        base = timings["onnxruntime"][b]["cpu_us_per_call"]
        ratios[b] = {name: round(t[b]["cpu_us_per_call"] / base, 3) for name, t in timings.items()}

    finished = datetime.now(timezone.utc)
    result = {
        "tag": "runtime-choice",
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_utc": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "PYTHONPATH=. python bench/runtime_choice.py " + " ".join(argv or sys.argv[1:]),
        "model": {"version": ver, "family": card.get("model_family"),
                  "n_estimators": card.get("hyperparameters", {}).get("n_estimators"),
                  "max_depth": card.get("hyperparameters", {}).get("max_depth"),
                  "alert_threshold": threshold, "validation_rows": int(len(X)),
                  "n_features": n_features},
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                    "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")},
        "versions": {p: _version(p) for p in ("numpy", "scikit-learn", "onnx", "onnxruntime",
                                             "skl2onnx", "treelite", "tl2cgen", "joblib")},
        "method": {"batches": list(BATCHES), "repeats": args.repeats,
                   "block_seconds": args.block_seconds,
                   "statistic": "median over repeats of CPU (process_time) per call; "
                                "one thread each"},
        "runtimes": runtimes,
        "cpu_per_call_relative_to_onnxruntime": ratios,
    }
    out = Path(args.out) if args.out else (
        HERE / "bench" / "results" / f"runtime-choice-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    buf = io.StringIO()
    head = f"{'runtime':<12}" + "".join(f"{'cpu µs/call b=' + b:>18}" for b in map(str, BATCHES))
    print(head + f"{'max |Δp|':>11}{'same dec.':>10}{'build s':>9}{'bytes':>10}", file=buf)
    for name, r in runtimes.items():
        t = r.get("timing")
        if t is None:
            print(f"{name:<12} error: {r.get('error')}", file=buf)
            continue
        cells = "".join(f"{t[b]['cpu_us_per_call']:>10.1f} (x{ratios[b][name]:<5.2f})"
                        for b in map(str, BATCHES))
        build_s = sum(r[k]["cpu_s"] + r[k]["children_cpu_s"]
                      for k in ("convert", "compile") if k in r)
        print(f"{name:<12}{cells}{r['max_abs_score_difference']:>11.2g}"
              f"{str(r['decisions_identical']):>10}{build_s:>9.1f}{r['artifact_bytes']:>10}",
              file=buf)
    shown = out.relative_to(HERE) if out.is_relative_to(HERE) else out
    print(buf.getvalue() + f"(x: CPU per call relative to onnxruntime; build s: CPU seconds "
          f"to convert/compile; load {result['machine']['load_before'][0]:.2f} -> "
          f"{result['machine']['load_after'][0]:.2f})\nwrote {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

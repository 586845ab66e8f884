"""Per-transaction comparison of the scores a stream wrote with the offline ones.

Reads ``SCORED_TOPIC`` (settings from the environment, as the worker had them) and
computes the offline features and scores of the default test window (2018-07-18..24)
with the same model, then prints how many test transactions differ by more than 1e-9,
the largest difference and a few examples. ``bench/stream_evaluate.sh`` runs it before
it stops the stack.

Usage: ``python bench/stream_vs_offline.py DATA``
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

from app.cli.evaluate import read_scored
from app.config import get_settings
from app.features import FEATURE_NAMES
from app.scoring.evaluate import scores_by_transaction
from app.scoring.model import Scorer
from app.scoring.train import HISTORY_DAYS, read_features, split_windows


def main(path: Path) -> int:
    s = get_settings()
    _, _, test_start, test_end = split_windows("2018-07-04", "2018-07-10", 7, 7)
    frame, _ = read_features(path, test_start, test_end, history_days=HISTORY_DAYS)
    frame = frame[frame["TX_DATETIME"].dt.date >= test_start]
    scorer = Scorer.from_registry(s.models_dir, s.model_version, n_threads=None)
    offline = scorer.score_many(frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
    records, _ = asyncio.run(read_scored(s, s.scored_topic))
    ids = frame["TRANSACTION_ID"].astype(str).tolist()
    stream, found, duplicates = scores_by_transaction(ids, ((t, x) for t, x, _ in records))
    diff = np.abs(stream - offline)
    bad = found & (diff > 1e-9)
    print(f"test window {test_start}..{test_end}: {len(ids):,} transactions, "
          f"{int(found.sum()):,} scored by the stream, {duplicates:,} re-scored")
    print(f"differ by more than 1e-9: {int(bad.sum()):,}; largest difference "
          f"{float(diff[found].max()) if found.any() else float('nan'):.3g}")
    for i in np.flatnonzero(bad)[:10]:
        print(f"  {ids[i]}: stream {stream[i]:.6f} offline {offline[i]:.6f}")
    return 0 if found.all() and not bad.any() else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

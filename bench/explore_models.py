"""Model variants tried beyond ``fraudctl train --compare``'s candidates.

Reproduce with::

    python bench/explore_models.py [PATH] [--folds 4]

Each variant is fitted and evaluated by prequential validation exactly as ``fraudctl
train --compare`` does it on the handbook's default split (train 2018-07-04..10, gap 7,
test 7; folds moved back by gap + test days, then by 7 days each; rule before-test):
the validation windows end before the test window, which this script never looks at.
It prints mean +- std of ROC AUC, average precision and card precision@100 per variant.
The variants that were not better than the candidates by more than about one standard
deviation were left out of :data:`app.scoring.candidates.CANDIDATES`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sklearn.ensemble import (  # noqa: E402
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    VotingClassifier,
)

from app.scoring.evaluate import prequential_folds, summarize_folds  # noqa: E402
from app.scoring.train import (  # noqa: E402
    DEFAULT_TRAIN_END,
    DEFAULT_TRAIN_START,
    prequential,
    read_features,
)

SHARED = ROOT.parent / "shared" / "data" / "handbook-transactions-2018-04-01_2018-07-31.csv.gz"
GAP_DAYS = TEST_DAYS = 7


def _rf(**kw):
    params = dict(n_estimators=100, max_depth=20, min_samples_leaf=5, n_jobs=-1,
                  random_state=0)
    params.update(kw)
    return lambda: RandomForestClassifier(**params)


def _rf_plus_hgb():
    hgb = HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=300, max_leaf_nodes=15, min_samples_leaf=50,
        l2_regularization=1.0, max_features=0.5, early_stopping=True,
        validation_fraction=0.1, n_iter_no_change=20, scoring="loss", random_state=0)
    return VotingClassifier([("rf", _rf()()), ("hgb", hgb)], voting="soft")


#: name -> (factory, fit days)
VARIANTS = {
    "rf 300 trees": (_rf(n_estimators=300), 7),
    "rf 300 trees, 21 d": (_rf(n_estimators=300), 21),
    "rf 300 trees, max_features 0.5": (_rf(n_estimators=300, max_features=0.5), 7),
    "rf unlimited depth, leaf 1": (_rf(max_depth=None, min_samples_leaf=1), 7),
    "rf unlimited depth, leaf 10": (_rf(max_depth=None, min_samples_leaf=10), 7),
    "rf max_features 0.3": (_rf(max_features=0.3), 7),
    "rf max_features 0.3, 14 d": (_rf(max_features=0.3), 14),
    "rf max_features 0.3, 28 d": (_rf(max_features=0.3), 28),
    "rf max_features 0.3, 35 d": (_rf(max_features=0.3), 35),
    "rf max_features 0.3, leaf 10, 21 d": (_rf(max_features=0.3, min_samples_leaf=10), 21),
    "rf max_features 0.3, depth 30, 21 d": (_rf(max_features=0.3, max_depth=30), 21),
    "rf + boosting (soft vote)": (_rf_plus_hgb, 7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(SHARED))
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    folds = prequential_folds(DEFAULT_TRAIN_START, DEFAULT_TRAIN_END, TEST_DAYS, args.folds,
                              shift_days=GAP_DAYS + TEST_DAYS)
    longest = max(days for _, days in VARIANTS.values())
    first_fit = folds[-1][1] - timedelta(days=longest - 1)
    frame, _ = read_features(args.path, first_fit, DEFAULT_TRAIN_END)
    print(f"{args.folds} folds, train windows {folds[-1][0]}..{folds[0][1]}, rule before-test")
    for name, (make, fit_days) in VARIANTS.items():
        t0 = time.perf_counter()
        results = prequential(frame, make, DEFAULT_TRAIN_START, DEFAULT_TRAIN_END, GAP_DAYS,
                              TEST_DAYS, args.folds, shift_days=GAP_DAYS + TEST_DAYS,
                              fit_days=fit_days)
        s = summarize_folds(results)
        print(f"  {name:<38} AUC {s['roc_auc'][0]:.3f}+-{s['roc_auc'][1]:.3f}  "
              f"AP {s['average_precision'][0]:.3f}+-{s['average_precision'][1]:.3f}  "
              f"CP@100 {s['card_precision_at_k'][0]:.3f}+-{s['card_precision_at_k'][1]:.3f}"
              f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

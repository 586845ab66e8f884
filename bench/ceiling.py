"""How good can any model of these features be on the evaluation split?

Reproduce with::

    python bench/ceiling.py [PATH] [--model VERSION] [--seeds 20] [--investigators 100]

PATH defaults to the shared handbook file. For each known-compromised rule (see
``app.scoring.evaluate.KnownCompromised``) on the split train 2018-07-04..10, gap 7,
test 2018-07-18..24 it prints:

* ``perfect``: scores = the labels;
* ``oracle``: scores 1 for the frauds the features can see
  (``app.scoring.evaluate.detectable_frauds``: scenarios 1 and 3, and scenario-2 frauds
  whose terminal already has a labelled fraud in its windows), 0 for every other row;
  ties broken by card id (deterministic) and, as ``oracle~``, at random (mean and max
  over ``--seeds`` draws). With labels delayed 7 days nothing in the data distinguishes
  the other frauds (on terminals compromised less than 7 days before, or on terminals
  whose frauds are not yet labelled) from genuine transactions, so the oracle bounds
  what a model can reach, up to chance;
* ``oracle+model``: the oracle's detectable frauds first, then every other row in the
  order of the model's scores: what the model would get if it were perfect on the
  detectable frauds (an estimate of the ceiling of AUC and AP, which count the
  undetectable frauds too);
* ``model``: the model (default: the active one in models/).

The figures use the same code as ``fraudctl evaluate`` (features from the stream's code,
labels arriving 7 days after each transaction, the rows read from the test start minus
37 days).

With ``--investigators K`` (``--verdict-delay-hours``, ``--policy-model``) the labels
arrive as ``fraudctl evaluate --investigators K`` simulates them
(:mod:`app.features.labels`): a scenario-2 fraud is visible once a fraud of its
terminal is labelled before it, in the delayed windows or in the known-fraud counts
(``terminal_known_frauds_30d``). The verdicts reveal no other structure the simulator
has: its compromised terminals and cards are drawn independently, so cards sharing a
terminal with a confirmed fraud are not more likely to be defrauded elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.features import DEFAULT_DELAY_DAYS, FEATURE_NAMES, TERMINAL_WINDOWS_DAYS  # noqa: E402
from app.features.labels import InvestigationPolicy  # noqa: E402
from app.features.terminal import KNOWN_FRAUD_WINDOWS_DAYS  # noqa: E402
from app.scoring import Scorer  # noqa: E402
from app.scoring.investigators import policy_scorer  # noqa: E402
from app.scoring.evaluate import (  # noqa: E402
    KnownCompromised,
    detectable_frauds,
    evaluate_scores,
    handbook_split,
)
from app.scoring.train import HISTORY_DAYS, read_features, split_windows  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "handbook-transactions-2018-04-01_2018-07-31.csv.gz"
TRAIN_START, TRAIN_END, GAP_DAYS, TEST_DAYS = date(2018, 7, 4), date(2018, 7, 10), 7, 7


def _row(name: str, m: dict) -> str:
    def f(x: float | None) -> str:
        return "  n/a" if x is None else f"{x:.3f}"

    return (f"  {name:<14} AUC {f(m['roc_auc'])}  AP {f(m['average_precision'])}  "
            f"CP@100 {f(m['card_precision_at_k'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(SHARED))
    parser.add_argument("--model", default=None, help="model version (default: active)")
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--investigators", type=int, default=0, metavar="K",
                        help="simulated investigators checking K cards a day (0: off)")
    parser.add_argument("--verdict-delay-hours", type=float, default=2.0)
    parser.add_argument("--policy-model", default=None,
                        help="the investigators' queue (default: the registry's default)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    start, end, test_start, test_end = split_windows(TRAIN_START, TRAIN_END, GAP_DAYS,
                                                     TEST_DAYS)
    policy = InvestigationPolicy(k=args.investigators,
                                 verdict_delay_ms=round(args.verdict_delay_hours * 3_600_000))
    queue = policy_scorer(args.models_dir, args.policy_model) if policy.active else None
    frame, _ = read_features(args.path, start, test_end,
                             history_days=max(0, HISTORY_DAYS - (test_start - start).days),
                             investigators=policy, policy_model=queue)
    scorer = Scorer.from_registry(args.models_dir, args.model)
    risk = [f"terminal_risk_{max(TERMINAL_WINDOWS_DAYS)}d_delay_{DEFAULT_DELAY_DAYS}d"]
    if policy.active:
        risk.append(f"terminal_known_frauds_{max(KNOWN_FRAUD_WINDOWS_DAYS)}d")
        inv = frame["LABEL_INVESTIGATED"].to_numpy()
        print(f"investigators: {policy.k} cards a day, verdicts {args.verdict_delay_hours:g} h "
              f"after the alert, queue of model {queue.version}: {int(inv.sum()):,} labels "
              f"by investigation ({int((inv & (frame['TX_FRAUD'].to_numpy() == 1)).sum()):,} "
              "fraud)")
    print(f"split: train {start}..{end}, gap {GAP_DAYS} d, test {test_start}..{test_end}; "
          f"model {scorer.version}; features + data {time.perf_counter() - t0:.0f} s")
    for rule in KnownCompromised:
        _, mask = handbook_split(frame, start, end, GAP_DAYS, TEST_DAYS, rule)
        test = frame.loc[mask]
        y = test["TX_FRAUD"].to_numpy().astype(float)
        seen = detectable_frauds(test, risk)
        scenario = test.loc[y == 1, "TX_FRAUD_SCENARIO"].value_counts().sort_index()
        model = scorer.score_many(test[list(FEATURE_NAMES)].to_numpy())
        print(f"\nrule {rule.value}: {len(test):,} transactions, {int(y.sum())} frauds "
              f"(by scenario {dict(scenario.items())}), {int(seen.sum())} visible to the "
              f"features ({seen.sum() / max(y.sum(), 1):.1%})")
        print(_row("perfect", evaluate_scores(test, y)))
        print(_row("oracle", evaluate_scores(test, seen.astype(float))))
        rng = np.random.default_rng(0)
        draws = [evaluate_scores(test, seen + 0.5 * rng.random(len(test)))
                 for _ in range(args.seeds)]
        mean = {k: float(np.mean([d[k] for d in draws]))
                for k in ("roc_auc", "average_precision", "card_precision_at_k")}
        print(_row(f"oracle~ mean", mean)
              + f"   (max CP@100 {max(d['card_precision_at_k'] for d in draws):.3f},"
              f" {args.seeds} random tie orders)")
        print(_row("oracle+model", evaluate_scores(test, seen + 0.5 * model)))
        print(_row("model", evaluate_scores(test, model)))


if __name__ == "__main__":
    main()

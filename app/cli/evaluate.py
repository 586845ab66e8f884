"""``fraudctl evaluate``: a model's figures on a handbook-style split.

Three ways to get scores for the test window, all evaluated by the same code
(:func:`app.scoring.evaluate.evaluate_scores`, the handbook's chapter 4):

* offline (default): the features of the stream's code over the data, scored by a model
  of the registry;
* ``--from-topic TOPIC``: the scores the stream wrote to ``scored-transactions``
  (``ScoredTransaction`` records; a transaction scored twice keeps its first score),
  joined by transaction id to the labels and cards of the data file;
* ``--prequential N``: the model's family and hyper-parameters refitted on N folds,
  each moving the split back by the test length (handbook chapter 5), fitted on as many
  days as the model was (its card's fit window); mean +- std.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from ..config import Settings, get_settings
from ..exceptions import BrokerUnavailableError, ConfigError, DataError, FraudError
from ..features.labels import InvestigationPolicy
from ..scoring.protocol import (
    DEFAULT_KNOWN_COMPROMISED,
    DEFAULT_TRAIN_END,
    DEFAULT_TRAIN_START,
    TOP_K,
    KnownCompromised,
)
from .data import mapping_option
from .base import (
    KAFKA_CLIENT_SETTINGS,
    cli,
    console,
    err_console,
    fail,
    investigation_policy,
    investigators_option,
    policy_model_option,
    settings_epilog,
    verdict_delay_option,
)

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import pandas as pd

    from ..scoring.model import Scorer

__all__ = ["evaluate_command", "read_scored"]

logging.getLogger("aiokafka").addHandler(logging.NullHandler())

_POLL_MS = 200
#: Longest wait for the next record before the end of a partition is reached.
_STALL_SECONDS = 30.0
_LABELS = {
    "roc_auc": "ROC AUC",
    "average_precision": "average precision",
    "card_precision_at_k": f"card precision@{TOP_K}",
}


# --- reading scored-transactions -----------------------------------------------------------


def _decode_scored(raw: bytes | None) -> tuple[str, float, str]:
    """``(transaction_id, score, model_version)`` of a ScoredTransaction value.

    Raises
    ------
    ValueError
        Not a ScoredTransaction (empty, not JSON, a field missing, a score outside [0, 1]).
    """
    if not raw:
        raise ValueError("empty value")
    try:
        d = orjson.loads(raw)
        tid = d["transaction"]["transaction_id"]
        score = d["score"]
        version = d.get("model_version", "")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a ScoredTransaction ({type(exc).__name__}: {exc})"[:200]) from None
    if not isinstance(tid, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
        raise ValueError("transaction.transaction_id or score has the wrong type")
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"score {score!r} is not in [0, 1]")
    return tid, float(score), str(version)


async def read_scored(settings: Settings, topic: str,
                      decode: Callable[[bytes | None], Any] | None = None) -> tuple[list, int]:
    """Every record of ``topic`` from its beginning to its end as of the start.

    ``decode(value)`` turns a record's value into an item (raising ``ValueError`` to
    skip it); default: ``(transaction_id, score, model_version)`` of a ScoredTransaction.

    The consumer has no group (it assigns itself every partition), so it commits no
    offsets and joins no group.

    Returns
    -------
    records : list of (transaction_id, score, model_version)
        In partition, then offset order.
    skipped : int
        Records that are no ScoredTransaction.

    Raises
    ------
    BrokerUnavailableError
        The broker cannot be reached or reading fails.
    ConfigError
        The topic does not exist.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError
    from ..replay import client_options
    from ..stream.offsets import start_on_topic, true_end_offsets

    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    out: list[tuple[str, float, str]] = []
    skipped = 0
    try:
        tps = await start_on_topic(consumer, settings, topic)
        consumer.assign(tps)
        ends = await true_end_offsets(consumer, tps)
        starts = await consumer.beginning_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        by_partition: dict[int, list[tuple[str, float, str]]] = {tp.partition: [] for tp in tps}
        last_record = time.monotonic()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
            if any(batch.values()):
                last_record = time.monotonic()
            elif time.monotonic() - last_record > _STALL_SECONDS:
                raise BrokerUnavailableError(
                    f"reading {topic!r} stalled: no record for {_STALL_SECONDS:g} s before "
                    "the end of partitions "
                    f"{sorted(tp.partition for tp in pending)}"
                )
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    try:
                        by_partition[tp.partition].append((decode or _decode_scored)(record.value))
                    except ValueError:
                        skipped += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        for p in sorted(by_partition):
            out.extend(by_partition[p])
    except KafkaError as exc:
        raise BrokerUnavailableError(f"reading {topic!r} failed ({exc})") from None
    finally:
        await consumer.stop()
    return out, skipped


# --- the three ways ------------------------------------------------------------------------


def _investigation_summary(frame: pd.DataFrame, policy: InvestigationPolicy,
                           scorer: Scorer | None) -> dict[str, Any]:
    if not policy.active or scorer is None:
        return {"investigators": 0}
    inv = frame["LABEL_INVESTIGATED"].to_numpy()
    return {
        "investigators": policy.k,
        "verdict_delay_hours": policy.verdict_delay_ms / 3_600_000,
        "policy_model": scorer.version,
        "simulation_start": frame["TX_DATETIME"].iloc[0].date().isoformat(),
        "investigation_labels": int(inv.sum()),
        "investigation_fraud_labels": int((inv & (frame["TX_FRAUD"].to_numpy() == 1)).sum()),
    }


def _offline(
    path: Path, split: tuple[date, date, date, date], rule: KnownCompromised, scorer: Scorer,
    policy: InvestigationPolicy = InvestigationPolicy(), policy_model: Scorer | None = None,
    mapping: Path | None = None,
) -> dict[str, Any]:
    import numpy as np
    from ..features import FEATURE_NAMES
    from ..scoring.evaluate import evaluate_scores, handbook_split
    from ..scoring.train import HISTORY_DAYS, read_features

    start, end, test_start, test_end = split
    history = max(0, HISTORY_DAYS - (test_start - start).days)
    frame, _ = read_features(path, start, test_end, history_days=history,
                             investigators=policy, policy_model=policy_model, mapping=mapping)
    _, mask = handbook_split(frame, start, end, (test_start - end).days - 1,
                             (test_end - test_start).days + 1, rule)
    test = frame.loc[mask]
    scores = scorer.score_many(test[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
    result = evaluate_scores(test, scores, k=TOP_K)
    result.update(source="offline", model_versions=[scorer.version],
                  **_investigation_summary(frame, policy, policy_model))
    return result


def _from_topic(
    path: Path, split: tuple[date, date, date, date], rule: KnownCompromised,
    settings: Settings, topic: str, mapping: Path | None = None,
) -> dict[str, Any]:
    from ..data.handbook import read_handbook
    from ..scoring.evaluate import evaluate_scores, handbook_split, scores_by_transaction

    start, end, test_start, test_end = split
    df = read_handbook(path, start, test_end, mapping=mapping)
    if df.empty or df["TX_DATETIME"].iloc[0].date() > start:
        raise DataError(f"{path}: the data does not reach back to the train start {start}")
    if df["TX_DATETIME"].iloc[-1].date() < test_end:
        raise DataError(f"{path}: the data ends before the test window's last day {test_end}")
    _, mask = handbook_split(df, start, end, (test_start - end).days - 1,
                             (test_end - test_start).days + 1, rule)
    test = df.loc[mask]
    records, skipped = asyncio.run(read_scored(settings, topic))
    ids = test["TRANSACTION_ID"].astype(str).tolist()
    scores, found, duplicates = scores_by_transaction(ids, ((t, s) for t, s, _ in records))
    if not found.any():
        raise DataError(
            f"none of the {len(test):,} test-window transactions ({test_start}..{test_end}) "
            f"has a score on {topic!r} ({len(records):,} records read)"
        )
    wanted = set(ids)
    versions = sorted({v for t, _, v in records if t in wanted})
    result = evaluate_scores(test.loc[found], scores[found], k=TOP_K)
    result.update(
        source=f"topic {topic}", model_versions=versions, records_read=len(records),
        records_skipped=skipped, duplicates=duplicates, missing=int((~found).sum()),
    )
    return result


def _prequential(
    path: Path, split: tuple[date, date, date, date], rule: KnownCompromised,
    estimator: Any, n_folds: int, fit_days: int | None = None,
    policy: InvestigationPolicy = InvestigationPolicy(), policy_model: Scorer | None = None,
    mapping: Path | None = None,
) -> dict[str, Any]:
    from sklearn.base import clone
    from ..scoring.evaluate import METRICS, prequential_folds, summarize_folds
    from ..scoring.train import prequential, read_features

    start, end, test_start, test_end = split
    gap, test_days = (test_start - end).days - 1, (test_end - test_start).days + 1
    first = prequential_folds(start, end, test_days, n_folds)[-1]
    fit_start = first[1] - timedelta(days=fit_days - 1) if fit_days else first[0]
    frame, _ = read_features(path, min(first[0], fit_start), test_end,
                             investigators=policy, policy_model=policy_model, mapping=mapping)

    def make() -> Any:
        est = clone(estimator)
        if "n_jobs" in est.get_params():
            est.set_params(n_jobs=-1)
        return est

    folds = prequential(frame, make, start, end, gap, test_days, n_folds, 0, rule,
                        fit_days=fit_days)
    summary = summarize_folds(folds)
    return {
        "source": "prequential",
        **_investigation_summary(frame, policy, policy_model),
        "fit_days": fit_days,
        "folds": [
            {k: (v.isoformat() if isinstance(v, date) else v) for k, v in f.items()
             if k in ("train_start", "train_end", "test_start", "test_end", *METRICS,
                      "n_transactions", "n_frauds", "fit_seconds")}
            for f in folds
        ],
        **{f"{m}_mean": (None if summary[m] is None else summary[m][0]) for m in METRICS},
        **{f"{m}_std": (None if summary[m] is None else summary[m][1]) for m in METRICS},
    }


# --- output ----------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _print(result: dict[str, Any], header: str) -> None:
    from ..scoring.evaluate import METRICS

    console.print(header, highlight=False, soft_wrap=True)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if result["source"] == "prequential":
        for m in METRICS:
            table.add_row(_LABELS[m], f"{_fmt(result[f'{m}_mean'])} +- {_fmt(result[f'{m}_std'])}")
        console.print(table)
        for f in result["folds"]:
            console.print(
                f"  train {f['train_start']}..{f['train_end']}, test {f['test_start']}.."
                f"{f['test_end']}: AUC {_fmt(f['roc_auc'])}, AP {_fmt(f['average_precision'])}"
                f", CP@{TOP_K} {_fmt(f['card_precision_at_k'])}",
                highlight=False,
            )
        return
    for m in METRICS:
        table.add_row(_LABELS[m], _fmt(result[m]))
    table.add_row(f"daily CP@{TOP_K}", " ".join(f"{x:.2f}" for x in result["card_precision_daily"]))
    table.add_row("perfect ranking", f"CP@{TOP_K} {_fmt(result['perfect_card_precision_at_k'])}")
    table.add_row(
        "test rows",
        f"{result['n_transactions']:,} transactions, {result['n_frauds']:,} frauds",
    )
    table.add_row("model", ", ".join(result["model_versions"]) or "?")
    if "records_read" in result:
        table.add_row(
            "topic",
            f"{result['records_read']:,} records, {result['duplicates']:,} duplicates, "
            f"{result['records_skipped']:,} not a ScoredTransaction; {result['missing']:,} "
            "test transactions without a score (left out)",
        )
    console.print(table)


@cli.command(
    "evaluate",
    epilog=settings_epilog(
        "MODELS_DIR", "MODEL_VERSION", *KAFKA_CLIENT_SETTINGS, "SCORED_TOPIC"
    ),
)
def evaluate_command(
    path: Path = typer.Argument(..., help="Handbook data: a .csv/.csv.gz/.pkl file or a folder."),
    train_start: str = typer.Option(
        DEFAULT_TRAIN_START.isoformat(), "--train-start", help="First training day, YYYY-MM-DD."
    ),
    train_end: str = typer.Option(
        DEFAULT_TRAIN_END.isoformat(), "--train-end", help="Last training day, YYYY-MM-DD."
    ),
    gap_days: int = typer.Option(7, "--gap-days", help="Days between train and test."),
    test_days: int = typer.Option(7, "--test-days", help="Days in the test window."),
    model: Optional[str] = typer.Option(
        None, "--model", metavar="VERSION",
        help="Model to score with (offline, --prequential); default: MODEL_VERSION, else "
        "models/ACTIVE.", show_default=False,
    ),
    models_dir: Optional[Path] = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    known_compromised: KnownCompromised = typer.Option(
        DEFAULT_KNOWN_COMPROMISED.value, "--known-compromised",
        help="Cards dropped from the test window: every card with a fraud from the train "
        "start to the day before the test (before-test), or the handbook code's daily "
        "rule (handbook-daily).",
    ),
    from_topic: Optional[str] = typer.Option(
        None, "--from-topic", metavar="TOPIC",
        help="Read the scores the stream wrote to TOPIC (e.g. scored-transactions) "
        "instead of scoring offline.", show_default=False,
    ),
    broker: Optional[str] = typer.Option(
        None, "--broker", metavar="HOST:PORT",
        help="Broker of --from-topic (default: KAFKA_BROKER_URL).", show_default=False,
    ),
    n_prequential: int = typer.Option(
        0, "--prequential", metavar="N", min=0,
        help="Refit the model's family on N folds, each moving the split back by the "
        "test length, and report mean +- std (0: off).",
    ),
    investigators: int = investigators_option(),
    verdict_delay_hours: float = verdict_delay_option(),
    policy_model: Optional[str] = policy_model_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    mapping: Optional[Path] = mapping_option(),
) -> None:
    """ROC AUC, average precision and daily card precision@100 of a model on a split.

    Default split (the handbook's): train 2018-07-04..10, gap 7 days, test 2018-07-18..24.
    With --investigators K the features are computed with labels as `fraudctl replay
    --investigators K` of the rows read emits them (from the test start minus 37 days).
    Reads MODELS_DIR, MODEL_VERSION, KAFKA_BROKER_URL (--from-topic).
    """
    from ..scoring.investigators import policy_scorer
    from ..scoring.model import Scorer
    from ..scoring.registry import load_model
    from ..scoring.train import split_windows
    from .replay import with_broker

    settings = get_settings()
    models_dir = models_dir or settings.models_dir
    try:
        if from_topic and n_prequential:
            raise ConfigError("--from-topic and --prequential exclude each other")
        split = split_windows(train_start, train_end, gap_days, test_days)
        version = model or settings.model_version
        policy = investigation_policy(investigators, verdict_delay_hours)
        if policy.active and from_topic:
            raise ConfigError("--investigators applies to offline scoring: with --from-topic "
                              "the replay (fraudctl replay --investigators) decided the labels")
        queue = policy_scorer(models_dir, policy_model) if policy.active else None
        if from_topic:
            result = _from_topic(path, split, known_compromised, with_broker(broker), from_topic,
                                 mapping)
        elif n_prequential:
            loaded = load_model(version, models_dir)
            fit = loaded.card.data.fit
            result = _prequential(path, split, known_compromised, loaded.estimator,
                                  n_prequential,
                                  fit_days=(fit.end - fit.start).days + 1 if fit else None,
                                  policy=policy, policy_model=queue, mapping=mapping)
            result["model_versions"] = [loaded.version]
        else:
            result = _offline(path, split, known_compromised,
                              Scorer.from_registry(models_dir, version, n_threads=None),
                              policy, queue, mapping)
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    start, end, test_start, test_end = split
    result.update(
        train_start=start.isoformat(), train_end=end.isoformat(), gap_days=gap_days,
        test_start=test_start.isoformat(), test_end=test_end.isoformat(),
        known_compromised=known_compromised.value,
    )
    if as_json:
        typer.echo(json.dumps(result, default=_jsonable))
        return
    _print(result, (
        f"{'prequential validation of' if n_prequential else 'evaluation of'} "
        f"{', '.join(result.get('model_versions', [])) or 'scores'}: train {start}..{end}, "
        f"gap {gap_days} d, test {test_start}..{test_end}, known-compromised rule "
        f"{known_compromised.value}, scores {result['source']}"
        + (f", {n_prequential} folds" if n_prequential else "")
        + (f"; investigators: {result['investigators']} cards a day, verdicts "
           f"{result['verdict_delay_hours']:g} h after the alert, queue of model "
           f"{result['policy_model']} from {result['simulation_start']} "
           f"({result['investigation_labels']:,} labels by investigation, "
           f"{result['investigation_fraud_labels']:,} of them fraud)"
           if result.get("investigators") else "")
    ))
    if result.get("missing"):
        err_console.print(
            f"warning: {result['missing']:,} test-window transactions have no score on "
            f"{from_topic!r}: evaluated without them", style="yellow", highlight=False,
        )


def _jsonable(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (date, pd.Timestamp)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""One batch of the scoring pipeline, as plain Python (no Faust, Redis or Kafka).

:func:`process_batch` turns raw ``transactions`` records into dead letters, scored
transactions and alert candidates, updating per-account state. The
``score_transactions`` agent only feeds it records and sends what it returns; tests and
benchmarks call it directly.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from .events import (
    DEAD_LETTER_RAW_MAX_BYTES,
    Alert,
    DeadLetter,
    Reason,
    ScoredTransaction,
    Transaction,
    decode_transaction,
)
from .exceptions import InvalidEventError
from .features import FEATURE_NAMES, AccountState, extract_one

__all__ = ["RawRecord", "BatchResult", "ScorerLike", "process_batch", "features_of"]


class ScorerLike(Protocol):
    """What :func:`process_batch` needs of a model (see :class:`app.scoring.model.Scorer`)."""

    version: str

    def score_many(self, X: np.ndarray) -> np.ndarray: ...

    def explain_many(self, X: np.ndarray, top_k: int = 3) -> list[list[Reason]]: ...


@dataclass(slots=True)
class RawRecord:
    """A record as read from the topic.

    Attributes
    ----------
    value, key : bytes or None
    topic : str
    partition, offset : int
    arrival_s : float
        ``time.monotonic()`` when the worker received it, seconds.
    """

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    arrival_s: float


@dataclass
class BatchResult:
    """What one batch produced."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: valid transactions whose key was not their account id: (account id, raw value)
    rekeyed: list[tuple[str, bytes]] = field(default_factory=list)
    scored: list[ScoredTransaction] = field(default_factory=list)
    #: alert candidates (score >= threshold), before the Redis idempotency check
    alerts: list[Alert] = field(default_factory=list)
    #: arrival time (s) of each alert candidate, aligned with ``alerts``
    alert_arrivals_s: list[float] = field(default_factory=list)
    arrivals_s: list[float] = field(default_factory=list)
    #: account id -> state after the batch, for every account the batch touched
    states: dict[str, AccountState] = field(default_factory=dict)
    #: account id -> partition its transactions came from (its changelog partition)
    partitions: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    #: alert candidates dropped because the same transaction already alerts in this
    #: batch (a duplicate delivered close to the original); never sent twice
    alerts_deduplicated: int = 0


def features_of(state: AccountState, tx: Transaction) -> list[float]:
    """Features of ``tx`` as of just before it, even when it is already in ``state``.

    A redelivered transaction gets the features it had the first time (up to other
    transactions with exactly the same event time), so its score is the same.
    """
    if not state.contains(tx):
        return extract_one(state, tx)
    keep = [i for i, t in enumerate(state.ids) if t != tx.transaction_id]
    before = AccountState(
        times_ms=[state.times_ms[i] for i in keep],
        amounts_minor=[state.amounts_minor[i] for i in keep],
        ids=[state.ids[i] for i in keep],
    )
    return extract_one(before, tx)


def _dead_letter(rec: RawRecord, err: InvalidEventError, now_ms: int) -> DeadLetter:
    raw = rec.value or b""
    kept = raw[:DEAD_LETTER_RAW_MAX_BYTES]
    key = rec.key[:DEAD_LETTER_RAW_MAX_BYTES] if rec.key is not None else None
    return DeadLetter(
        source_topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        reason=err.reason,
        detail=err.detail,
        raw_value_b64=base64.b64encode(kept).decode(),
        raw_key_b64=base64.b64encode(key).decode() if key is not None else None,
        raw_size_bytes=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        raw_truncated=len(kept) < len(raw),
        rejected_time_ms=now_ms,
    )


def process_batch(
    records: Sequence[RawRecord],
    get_state: Callable[[str], AccountState | None],
    scorer: ScorerLike,
    threshold: float,
    top_reasons: int = 3,
    max_event_bytes: int = 65_536,
    now_ms: int | None = None,
) -> BatchResult:
    """Decode, featurise, score and decide one batch of ``transactions`` records.

    Parameters
    ----------
    records : sequence of RawRecord
        In partition order; records of one account must come in the order consumed.
    get_state : callable
        ``account_id -> AccountState or None``: the state before this batch. Called
        at most once per account; the state is copied before it is changed.
    scorer : ScorerLike
        One ``score_many`` call per batch; ``explain_many`` only on alert rows.
    threshold : float
        An alert is raised when ``score >= threshold``; in [0, 1].
    top_reasons : int, default=3
        Reasons per alert.
    max_event_bytes : int, default=65536
        Larger payloads are dead-lettered (reason ``too_large``).
    now_ms : int, optional
        Wall-clock time to stamp records with, UTC epoch ms; default: now.

    Returns
    -------
    BatchResult
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    result = BatchResult()
    txs: list[Transaction] = []
    rows: list[list[float]] = []
    arrivals: list[float] = []
    for rec in records:
        try:
            tx = decode_transaction(rec.value, max_event_bytes)
        except InvalidEventError as err:
            result.dead_letters.append(_dead_letter(rec, err, now_ms))
            continue
        if rec.key is None or rec.key != tx.account_id.encode():
            result.rekeyed.append((tx.account_id, rec.value))  # type: ignore[arg-type]
            continue
        state = result.states.get(tx.account_id)
        if state is None:
            before = get_state(tx.account_id)
            state = AccountState(
                times_ms=list(before.times_ms),
                amounts_minor=list(before.amounts_minor),
                ids=list(before.ids),
            ) if before is not None else AccountState()
            result.states[tx.account_id] = state
            result.partitions[tx.account_id] = rec.partition
        rows.append(features_of(state, tx))
        if not state.update_one(tx):
            result.duplicates += 1
        txs.append(tx)
        arrivals.append(rec.arrival_s)
    result.arrivals_s = arrivals
    if not txs:
        return result
    X = np.asarray(rows, dtype=np.float64)
    scores = scorer.score_many(X)
    hits = np.flatnonzero(scores >= threshold)
    reasons = scorer.explain_many(X[hits], top_reasons) if len(hits) and top_reasons else []
    version = scorer.version
    names = FEATURE_NAMES
    hit_set = set(hits.tolist())
    for i, tx in enumerate(txs):
        feats = dict(zip(names, X[i].tolist()))
        score = float(scores[i])
        result.scored.append(
            ScoredTransaction.model_construct(
                transaction=tx,
                score=score,
                decision="alert" if i in hit_set else "pass",
                model_version=version,
                features=feats,
                scored_time_ms=now_ms,
            )
        )
    alerted: set[str] = set()
    for j, i in enumerate(hits.tolist()):
        tx = txs[i]
        if tx.transaction_id in alerted:  # the same transaction twice in one batch
            result.alerts_deduplicated += 1
            continue
        alerted.add(tx.transaction_id)
        result.alerts.append(
            Alert.model_construct(
                alert_id=tx.transaction_id,
                transaction=tx,
                score=float(scores[i]),
                threshold=threshold,
                decision="alert",
                model_version=version,
                features=result.scored[i].features,
                reasons=reasons[j] if reasons else [],
                event_time_ms=tx.event_time_ms,
                alert_time_ms=now_ms,
            )
        )
        result.alert_arrivals_s.append(arrivals[i])
    return result

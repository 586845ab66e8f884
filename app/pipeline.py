"""The scoring pipeline's two stages, as plain Python (no Faust, Redis or Kafka).

Stage 1, per account (:func:`featurize_accounts`): decode and validate ``transactions``
records, update each account's state and compute its account features.
Stage 2, per terminal (:func:`score_enriched`): update each terminal's state, compute
the terminal features, score the whole batch with one model call and decide.
Labels update terminal states in between (:func:`apply_labels`). The agents only feed
these functions records and send what they return; tests and benchmarks call them
directly.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import orjson

from .events import (
    DEAD_LETTER_RAW_MAX_BYTES,
    Alert,
    DeadLetter,
    Reason,
    ScoredTransaction,
    Transaction,
    decode_label,
    decode_transaction,
)
from .exceptions import InvalidEventError
from .features import (
    DEFAULT_DELAY_DAYS,
    AccountState,
    TerminalState,
    extract_account,
    extract_terminal,
    feature_names,
)
from .features.terminal import terminal_horizon_ms

__all__ = [
    "RawRecord",
    "Enriched",
    "AccountBatch",
    "LabelBatch",
    "ScoreBatch",
    "ScorerLike",
    "featurize_accounts",
    "score_enriched",
    "apply_labels",
    "dead_letter",
]


class ScorerLike(Protocol):
    """What :func:`score_enriched` needs of a model (see :class:`app.scoring.model.Scorer`)."""

    version: str

    def score_many(self, X: np.ndarray) -> np.ndarray: ...

    def explain_many(self, X: np.ndarray, top_k: int = 3) -> list[list[Reason]]: ...


@dataclass(slots=True)
class RawRecord:
    """A record as read from a topic.

    Attributes
    ----------
    value, key : bytes or None
    topic : str
    partition, offset : int
    received_ms : int
        Wall-clock time when the worker received it, UTC epoch ms.
    """

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    received_ms: int


@dataclass(slots=True)
class Enriched:
    """A valid transaction with its account features, on its way to stage 2.

    On the wire (the internal ``<app id>-transactions-by-terminal`` topic, key: terminal
    id) it is the JSON of :meth:`to_bytes`.
    """

    transaction: Transaction
    account_features: list[float]
    received_ms: int

    def to_bytes(self) -> bytes:
        """Compact JSON: ``{"tx": {...}, "f": [...], "r": received_ms}``."""
        return orjson.dumps(
            {"tx": self.transaction.model_dump(), "f": self.account_features, "r": self.received_ms}
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Enriched":
        """Inverse of :meth:`to_bytes` (internal records: not validated again)."""
        d = orjson.loads(raw)
        return cls(Transaction.model_construct(**d["tx"]), d["f"], d["r"])


@dataclass
class AccountBatch:
    """What stage 1 produced from one batch."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: valid transactions whose key was not their account id: (account id, raw value)
    rekeyed: list[tuple[str, bytes]] = field(default_factory=list)
    enriched: list[Enriched] = field(default_factory=list)
    #: account id -> state after the batch, for every account the batch touched
    states: dict[str, AccountState] = field(default_factory=dict)
    #: account id -> partition its transactions came from (its changelog partition)
    partitions: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


@dataclass
class LabelBatch:
    """What :func:`apply_labels` did with one batch."""

    #: terminal id -> state after the batch, for every terminal whose state changed
    states: dict[str, TerminalState] = field(default_factory=dict)
    #: terminal id -> partition its labels came from (its changelog partition)
    partitions: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: valid labels in the batch
    labels: int = 0
    #: partition -> latest ``label_time_ms`` among its valid labels in the batch
    latest_label_ms: dict[int, int] = field(default_factory=dict)
    #: partition -> offset after the batch's last record of that partition
    next_offsets: dict[int, int] = field(default_factory=dict)


@dataclass
class ScoreBatch:
    """What stage 2 produced from one batch."""

    scored: list[ScoredTransaction] = field(default_factory=list)
    #: alert candidates (score >= threshold), before the Redis idempotency check
    alerts: list[Alert] = field(default_factory=list)
    #: wall-clock receipt time (ms) of each scored transaction, aligned with ``scored``
    received_ms: list[int] = field(default_factory=list)
    #: wall-clock receipt time (ms) of each alert candidate, aligned with ``alerts``
    alert_received_ms: list[int] = field(default_factory=list)
    #: terminal id -> state after the batch, for every terminal the batch touched
    states: dict[str, TerminalState] = field(default_factory=dict)


def dead_letter(rec: RawRecord, err: InvalidEventError, now_ms: int) -> DeadLetter:
    """The dead-letter record of a rejected raw record (raw bytes kept up to
    :data:`app.events.DEAD_LETTER_RAW_MAX_BYTES`, with the full size and sha256)."""
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


def _copy_account(state: AccountState | None) -> AccountState:
    if state is None:
        return AccountState()
    return AccountState(list(state.times_ms), list(state.amounts_minor), list(state.ids))


def _copy_terminal(state: TerminalState | None) -> TerminalState:
    if state is None:
        return TerminalState()
    return TerminalState(
        list(state.times_ms),
        list(state.ids),
        list(state.fraud_times_ms),
        list(state.fraud_label_times_ms),
        list(state.fraud_ids),
    )


def featurize_accounts(
    records: Sequence[RawRecord],
    get_state: Callable[[str], AccountState | None],
    max_event_bytes: int = 65_536,
    now_ms: int | None = None,
) -> AccountBatch:
    """Stage 1: decode, validate and add account features to one batch.

    Parameters
    ----------
    records : sequence of RawRecord
        ``transactions`` records in partition order.
    get_state : callable
        ``account_id -> AccountState or None``: the state before this batch, called at
        most once per account; it is copied before it is changed.
    max_event_bytes : int, default=65536
        Larger payloads are dead-lettered (reason ``too_large``).
    now_ms : int, optional
        Time to stamp dead letters with, UTC epoch ms; default: now.

    Returns
    -------
    AccountBatch
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = AccountBatch()
    for rec in records:
        try:
            tx = decode_transaction(rec.value, max_event_bytes)
        except InvalidEventError as err:
            out.dead_letters.append(dead_letter(rec, err, now_ms))
            continue
        if rec.key is None or rec.key != tx.account_id.encode():
            out.rekeyed.append((tx.account_id, rec.value))  # type: ignore[arg-type]
            continue
        state = out.states.get(tx.account_id)
        if state is None:
            state = out.states[tx.account_id] = _copy_account(get_state(tx.account_id))
            out.partitions[tx.account_id] = rec.partition
        feats = extract_account(state, tx)
        if not state.update_one(tx):
            out.duplicates += 1
        out.enriched.append(Enriched(tx, feats, rec.received_ms))
    return out


def apply_labels(
    records: Sequence[RawRecord],
    get_state: Callable[[str], TerminalState | None],
    delay_days: int = DEFAULT_DELAY_DAYS,
    max_event_bytes: int = 65_536,
    now_ms: int | None = None,
) -> LabelBatch:
    """Apply a batch of ``transaction-labels`` records to terminal states.

    Parameters
    ----------
    records : sequence of RawRecord
        In partition order (labels of a partition come in ``label_time_ms`` order).
    get_state : callable
        ``terminal_id -> TerminalState or None``: the state before this batch.

    Returns
    -------
    LabelBatch
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    horizon = terminal_horizon_ms(delay_days)
    out = LabelBatch()
    touched: dict[str, TerminalState] = {}
    for rec in records:
        out.next_offsets[rec.partition] = rec.offset + 1
        try:
            label = decode_label(rec.value, max_event_bytes)
        except InvalidEventError as err:
            out.dead_letters.append(dead_letter(rec, err, now_ms))
            continue
        out.labels += 1
        p = rec.partition
        out.latest_label_ms[p] = max(out.latest_label_ms.get(p, 0), label.label_time_ms)
        state = touched.get(label.terminal_id)
        if state is None:
            state = touched[label.terminal_id] = _copy_terminal(get_state(label.terminal_id))
        if state.label_one(label, horizon):
            out.states[label.terminal_id] = state
            out.partitions[label.terminal_id] = p
    return out


def score_enriched(
    items: Sequence[Enriched],
    get_state: Callable[[str], TerminalState | None],
    scorer: ScorerLike,
    threshold: float,
    top_reasons: int = 3,
    delay_days: int = DEFAULT_DELAY_DAYS,
    now_ms: int | None = None,
) -> ScoreBatch:
    """Stage 2: terminal features, one model call for the batch, and the decisions.

    Parameters
    ----------
    items : sequence of Enriched
        Stage 1's output, in the order consumed.
    get_state : callable
        ``terminal_id -> TerminalState or None``: the state before this batch.
    scorer : ScorerLike
        One ``score_many`` call per batch; ``explain_many`` only on alert rows.
    threshold : float
        An alert is raised when ``score >= threshold``; in [0, 1].
    top_reasons : int, default=3
        Reasons per alert.
    delay_days : int, default=7
        Label delay of the terminal features.
    now_ms : int, optional
        Wall-clock time to stamp records with, UTC epoch ms; default: now.

    Returns
    -------
    ScoreBatch
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = ScoreBatch()
    if not items:
        return out
    horizon = terminal_horizon_ms(delay_days)
    rows: list[list[float]] = []
    for item in items:
        tx = item.transaction
        state = out.states.get(tx.terminal_id)
        if state is None:
            state = out.states[tx.terminal_id] = _copy_terminal(get_state(tx.terminal_id))
        rows.append(item.account_features + extract_terminal(state, tx, delay_days))
        state.update_one(tx, horizon)
    X = np.asarray(rows, dtype=np.float64)
    scores = scorer.score_many(X)
    hits = np.flatnonzero(scores >= threshold)
    reasons = scorer.explain_many(X[hits], top_reasons) if len(hits) and top_reasons else []
    names = feature_names(delay_days)
    version = scorer.version
    hit_set = set(hits.tolist())
    for i, item in enumerate(items):
        out.scored.append(
            ScoredTransaction.model_construct(
                transaction=item.transaction,
                score=float(scores[i]),
                decision="alert" if i in hit_set else "pass",
                model_version=version,
                features=dict(zip(names, X[i].tolist())),
                scored_time_ms=now_ms,
            )
        )
        out.received_ms.append(item.received_ms)
    for j, i in enumerate(hits.tolist()):
        tx = items[i].transaction
        out.alerts.append(
            Alert.model_construct(
                alert_id=tx.transaction_id,
                transaction=tx,
                score=float(scores[i]),
                threshold=threshold,
                decision="alert",
                model_version=version,
                features=out.scored[i].features,
                reasons=reasons[j] if reasons else [],
                event_time_ms=tx.event_time_ms,
                alert_time_ms=now_ms,
            )
        )
        out.alert_received_ms.append(items[i].received_ms)
    return out

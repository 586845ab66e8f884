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
    Label,
    Reason,
    ScoredTransaction,
    Transaction,
    construct,
    decode_label,
    decode_transaction,
)
from .decisions import BatchDecisions, Snapshot
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
from .tracing import new as new_traceparent

__all__ = [
    "RawRecord",
    "Enriched",
    "FORWARD_MAX_ITEMS",
    "forward_records",
    "AccountBatch",
    "Watermark",
    "TerminalIntake",
    "ScoreBatch",
    "ScorerLike",
    "featurize_accounts",
    "score_enriched",
    "receive_terminal_records",
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
    timestamp_ms : int or None
        The record's Kafka timestamp (producer's create time or the broker's log
        append time), UTC epoch ms; None when it has none.
    encoding : bytes or None
        Its :data:`app.encoding.ENCODING_HEADER` value (None: JSON).
    traceparent : str or None
        Its valid W3C ``traceparent`` header (:mod:`app.tracing`), if any.
    """

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    received_ms: int
    timestamp_ms: int | None = None
    encoding: bytes | None = None
    traceparent: str | None = None

    def latest_plausible_ms(self, max_clock_skew_ms: int) -> int:
        """Latest event time this record may carry: its Kafka timestamp or its arrival,
        whichever is earlier, plus ``max_clock_skew_ms``.

        Examples
        --------
        >>> RawRecord(b"", None, "t", 0, 0, received_ms=10_000, timestamp_ms=4_000).latest_plausible_ms(500)
        4500
        >>> RawRecord(b"", None, "t", 0, 0, received_ms=10_000).latest_plausible_ms(500)
        10500
        """
        ts = self.timestamp_ms
        base = self.received_ms if ts is None or ts <= 0 else min(ts, self.received_ms)
        return base + max_clock_skew_ms


@dataclass(slots=True)
class Enriched:
    """A valid transaction with its account features, on its way to stage 2.

    On the wire (the internal ``<app id>-transactions-by-terminal`` topic, key: terminal
    id) it is the JSON of :meth:`to_bytes`. ``traceparent`` is the W3C trace context
    of the record that brought the transaction in (or one started by stage 1): the
    scored record and the alert continue it.
    """

    transaction: Transaction
    account_features: list[float]
    received_ms: int
    traceparent: str | None = None

    def to_dict(self) -> dict:
        """``{"tx": {...}, "f": [...], "r": received_ms}`` (and ``"tp": traceparent``
        when set)."""
        # a Transaction's fields are str and int: its model_dump() is its __dict__
        d = {"tx": dict(self.transaction.__dict__), "f": self.account_features, "r": self.received_ms}
        if self.traceparent is not None:
            d["tp"] = self.traceparent
        return d

    def to_bytes(self) -> bytes:
        """Compact JSON of :meth:`to_dict` (one transaction per record)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Enriched":
        """Inverse of :meth:`to_dict` (internal records: not validated again).

        Raises
        ------
        KeyError, TypeError, ValueError
            ``d`` is not such a dict.
        """
        item = cls(construct(Transaction, dict(d["tx"])), d["f"], d["r"], d.get("tp"))
        int(item.transaction.event_time_ms)  # noqa: B018 - present and a number
        return item

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Enriched":
        """Inverse of :meth:`to_bytes`."""
        return cls.from_dict(orjson.loads(raw))


#: Most transactions in one record of the by-terminal topic (≈ 0.4 KB each).
FORWARD_MAX_ITEMS = 250


def forward_records(
    items: Sequence[Enriched],
    partition_of: Callable[[str], int],
    max_items: int = FORWARD_MAX_ITEMS,
) -> list[tuple[int, bytes]]:
    """Stage 1's output as micro-batches: one record per scoring-stage partition.

    Each transaction goes to the partition of its terminal id (``partition_of``: the
    partitioner that places the labels of that terminal, so a terminal's transactions
    and labels meet in one partition); within a partition the batch's order is kept.
    One record per partition and batch, instead of one per transaction, is what keeps
    the scoring stage's per-record cost (Faust's event machinery, a produce) off each
    transaction.

    Parameters
    ----------
    items : sequence of Enriched
        In stage 1's order.
    partition_of : callable
        ``terminal_id -> partition`` of the by-terminal topic.
    max_items : int, default=FORWARD_MAX_ITEMS
        Larger groups are split into several records, in order.

    Returns
    -------
    list of (partition, value)
        Value: ``{"b": [Enriched.to_dict(), ...]}`` as JSON (read by
        :func:`receive_terminal_records`).

    Raises
    ------
    ValueError
        ``max_items`` < 1.

    Examples
    --------
    >>> from app.events import Transaction
    >>> tx = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
    ...                  amount_minor=1250, currency="EUR", event_time_ms=1_530_000_000_000)
    >>> [(p, len(orjson.loads(v)["b"])) for p, v in
    ...  forward_records([Enriched(tx, [1.0], 0)] * 3, lambda terminal: 2, max_items=2)]
    [(2, 2), (2, 1)]
    """
    if max_items < 1:
        raise ValueError(f"max_items: expected >= 1; got {max_items}")
    groups: dict[int, list[dict]] = {}
    for item in items:
        groups.setdefault(partition_of(item.transaction.terminal_id), []).append(item.to_dict())
    return [
        (p, orjson.dumps({"b": group[i : i + max_items]}))
        for p, group in sorted(groups.items())
        for i in range(0, len(group), max_items)
    ]


@dataclass
class AccountBatch:
    """What stage 1 produced from one batch."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: valid transactions whose key was not their account id: (account id, raw value,
    #: its encoding header or None, its traceparent or None), re-produced whole
    rekeyed: list[tuple[str, bytes, bytes | None, str | None]] = field(default_factory=list)
    enriched: list[Enriched] = field(default_factory=list)
    #: account id -> state after the batch, for every account the batch touched
    states: dict[str, AccountState] = field(default_factory=dict)
    #: account id -> partition its transactions came from (its changelog partition)
    partitions: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    #: transactions older than their account's newest by more than the allowed lateness
    late: int = 0
    #: transactions that arrived after a later one of the same account (redeliveries
    #: excluded); their own features are exact (history before them in event time)
    out_of_order: int = 0
    #: transactions already featurized whose account history missed an earlier one
    #: that arrived after them (each counted once: see AccountState.revised)
    revised: int = 0
    #: partition -> latest event time among its valid transactions in the batch
    event_times: dict[int, int] = field(default_factory=dict)
    #: partition -> offset after the batch's last record of that partition
    next_offsets: dict[int, int] = field(default_factory=dict)
    #: names of the fields valid transactions carried that the contract does not list
    #: (one per occurrence; accepted and left out of the features)
    unknown_fields: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Watermark:
    """A first-stage partition's progress, sent to every scoring-stage partition.

    On the wire (the internal by-terminal topic, no key): ``{"wm": source, "t":
    event_time_ms, "c": caught_up}``. See :mod:`app.alignment`.
    """

    source: int
    event_time_ms: int
    caught_up: bool

    def to_bytes(self) -> bytes:
        return orjson.dumps({"wm": self.source, "t": self.event_time_ms, "c": self.caught_up})


@dataclass
class TerminalIntake:
    """What the scoring stage took in from one batch, before anything is scored."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: (partition, transaction with account features, index of its record in the batch;
    #: the transactions of one micro-batch record share it)
    arrived: list[tuple[int, Enriched, int]] = field(default_factory=list)
    #: (partition, watermark)
    watermarks: list[tuple[int, Watermark]] = field(default_factory=list)
    #: partition -> latest ``label_time_ms`` among its valid labels in the batch
    label_times: dict[int, int] = field(default_factory=dict)
    #: terminal id -> state after the batch, for every terminal whose state changed
    #: (genuine labels change none; a redelivery writes its unchanged state again)
    states: dict[str, TerminalState] = field(default_factory=dict)
    #: terminal id -> partition of its records (its changelog partition)
    partitions: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    duplicates: int = 0
    #: (source, verdict) -> valid labels of the batch (verdict: fraud or genuine)
    label_sources: dict[tuple[str, str], int] = field(default_factory=dict)
    #: labels repeating the verdict held for their transaction (they change nothing)
    label_duplicates: int = 0
    #: labels contradicting the verdict held for their transaction
    label_contradictions: int = 0
    #: names of the fields labels carried that the contract does not list
    unknown_fields: list[str] = field(default_factory=list)


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
    #: scores, shadow scores and decisions of the batch (for metrics)
    decisions: BatchDecisions | None = None
    #: alert candidates dropped because the same transaction already alerts in this
    #: batch (a duplicate delivered close to the original); never sent twice
    alerts_deduplicated: int = 0


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


def _future_time(
    rec: RawRecord, field_name: str, t_ms: int, max_clock_skew_ms: int | None
) -> InvalidEventError | None:
    """The ``future_timestamp`` error of a record whose time ``t_ms`` is later than its
    Kafka timestamp or arrival by more than ``max_clock_skew_ms`` (None: no bound)."""
    if max_clock_skew_ms is None or t_ms <= rec.latest_plausible_ms(max_clock_skew_ms):
        return None
    return InvalidEventError(
        "future_timestamp",
        f"{field_name} {t_ms} is more than {max_clock_skew_ms} ms after the record's "
        f"timestamp/arrival {rec.latest_plausible_ms(0)}",
    )


def _copy_account(state: AccountState | None) -> AccountState:
    if state is None:
        return AccountState()
    return AccountState(
        list(state.times_ms), list(state.amounts_minor), list(state.ids), list(state.revised)
    )


def _copy_terminal(state: TerminalState | None) -> TerminalState:
    if state is None:
        return TerminalState()
    return TerminalState(
        list(state.times_ms),
        list(state.ids),
        list(state.fraud_times_ms),
        list(state.fraud_label_times_ms),
        list(state.fraud_ids),
        list(state.genuine_times_ms),
        list(state.genuine_ids),
    )


def featurize_accounts(
    records: Sequence[RawRecord],
    get_state: Callable[[str], AccountState | None],
    max_event_bytes: int = 65_536,
    now_ms: int | None = None,
    allowed_lateness_ms: int | None = None,
    max_clock_skew_ms: int | None = None,
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
    allowed_lateness_ms : int, optional
        A transaction older than its account's newest one by more than this is *late*:
        it is still processed (inserted in event-time order, scored with the history
        known now) and counted in ``AccountBatch.late``; the account's transactions
        scored before it did not see it. None: nothing is counted late.
    max_clock_skew_ms : int, optional
        A transaction whose event time is later than its record's Kafka timestamp or
        its arrival (the earlier of the two) by more than this is dead-lettered with
        reason ``future_timestamp`` and never reaches account state (a producer's bad
        clock or a forged time would otherwise expire the account's real history).
        None: no bound.

    Notes
    -----
    Arrival order within a partition: a transaction's account features are those of
    the account's history before it in event time, among the transactions that
    arrived before it. One that arrives after a later transaction of its account is
    counted in ``AccountBatch.out_of_order``; its own features are exact, and each
    later transaction already featurized without it is counted once in
    ``AccountBatch.revised`` (their scores stand). A redelivery (same id, same time)
    is a duplicate, never late or out of order.

    Returns
    -------
    AccountBatch
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = AccountBatch()
    for rec in records:
        out.next_offsets[rec.partition] = rec.offset + 1
        try:
            tx = decode_transaction(rec.value, max_event_bytes, out.unknown_fields, rec.encoding)
        except InvalidEventError as err:
            out.dead_letters.append(dead_letter(rec, err, now_ms))
            continue
        if rec.key is None or rec.key != tx.account_id.encode():
            out.rekeyed.append((tx.account_id, rec.value, rec.encoding, rec.traceparent))  # type: ignore[arg-type]
            continue
        t = tx.event_time_ms
        future = _future_time(rec, "event_time_ms", t, max_clock_skew_ms)
        if future is not None:
            out.dead_letters.append(dead_letter(rec, future, now_ms))
            continue
        state = out.states.get(tx.account_id)
        if state is None:
            state = out.states[tx.account_id] = _copy_account(get_state(tx.account_id))
            out.partitions[tx.account_id] = rec.partition
        out.event_times[rec.partition] = max(out.event_times.get(rec.partition, t), t)
        feats = extract_account(state, tx)
        newest = state.times_ms[-1] if state.times_ms else None
        if state.contains(tx):
            out.duplicates += 1
        else:
            if newest is not None and t < newest:
                out.out_of_order += 1
                out.revised += state.revise_after(t)
                if allowed_lateness_ms is not None and t < newest - allowed_lateness_ms:
                    out.late += 1
            state.update_one(tx)
        # the trace of the transaction: its record's, else one started here
        out.enriched.append(
            Enriched(tx, feats, rec.received_ms, rec.traceparent or new_traceparent())
        )
    return out


def receive_terminal_records(
    records: Sequence[RawRecord],
    get_state: Callable[[str], TerminalState | None],
    labels_topic: str,
    keep_from_ms: Callable[[int], int | None] = lambda partition: None,
    delay_days: int = DEFAULT_DELAY_DAYS,
    max_event_bytes: int = 65_536,
    now_ms: int | None = None,
    max_clock_skew_ms: int | None = None,
) -> TerminalIntake:
    """Scoring stage, intake: apply labels and transactions to terminal states.

    Features are computed later, when :class:`app.alignment.EventTimeAligner`
    releases each transaction; they read only state older than the transaction, so
    updating state as records arrive changes none of them.

    Parameters
    ----------
    records : sequence of RawRecord
        Records of ``labels_topic`` (labels, keyed by terminal) and of the internal
        by-terminal topic (micro-batches of :func:`forward_records`, single
        :class:`Enriched` transactions and :class:`Watermark` records), in the order
        consumed. A record that is none of these is dead-lettered whole.
    get_state : callable
        ``terminal_id -> TerminalState or None``: the state before this batch.
    labels_topic : str
        Name of the labels topic (its records are labels).
    keep_from_ms : callable, default=no constraint
        ``partition -> oldest event time a transaction of it may still be featurized
        at, or None`` (:meth:`app.alignment.EventTimeAligner.keep_from_ms`): state
        such a transaction needs is kept (see :meth:`TerminalState.update_one`).
    delay_days : int, default=7
    max_event_bytes : int, default=65536
        Larger labels are dead-lettered (reason ``too_large``).
    now_ms : int, optional
        Time to stamp dead letters with, UTC epoch ms; default: now.
    max_clock_skew_ms : int, optional
        A label timed later than its record's Kafka timestamp or arrival (the earlier)
        by more than this is dead-lettered (``future_timestamp``): it would otherwise
        tell the alignment that every label up to that time has come. None: no bound.

    Returns
    -------
    TerminalIntake
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    horizon = terminal_horizon_ms(delay_days)
    out = TerminalIntake()
    decoded: list[tuple[int, int, Label | Enriched]] = []
    ref: dict[int, int] = {}
    for i, rec in enumerate(records):
        p = rec.partition
        if rec.topic == labels_topic:
            try:
                label = decode_label(rec.value, max_event_bytes, out.unknown_fields, rec.encoding)
            except InvalidEventError as err:
                out.dead_letters.append(dead_letter(rec, err, now_ms))
                continue
            future = _future_time(rec, "label_time_ms", label.label_time_ms, max_clock_skew_ms)
            if future is not None:
                out.dead_letters.append(dead_letter(rec, future, now_ms))
                continue
            out.labels += 1
            out.label_times[p] = max(out.label_times.get(p, label.label_time_ms), label.label_time_ms)
            decoded.append((p, i, label))
            continue
        try:  # internal records, written by this service; anything else is dead-lettered
            body = orjson.loads(rec.value)
            if "wm" in body:
                wm = Watermark(int(body["wm"]), int(body["t"]), bool(body["c"]))
                out.watermarks.append((p, wm))
                continue
            if "b" in body:  # a micro-batch (forward_records)
                items = [Enriched.from_dict(d) for d in body["b"]]
            else:  # one transaction (Enriched.to_bytes)
                items = [Enriched.from_dict(body)]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            err = InvalidEventError("invalid", f"not an internal record of the service: {exc!r}")
            out.dead_letters.append(dead_letter(rec, err, now_ms))
            continue
        for item in items:
            t = int(item.transaction.event_time_ms)
            ref[p] = min(ref.get(p, t), t)
            decoded.append((p, i, item))
    for p in {p for p, _, _ in decoded}:
        keep = keep_from_ms(p)
        if keep is not None:
            ref[p] = min(ref.get(p, keep), keep)
    copies: dict[str, TerminalState] = {}
    for p, i, obj in decoded:
        is_label = isinstance(obj, Label)
        terminal_id = obj.terminal_id if is_label else obj.transaction.terminal_id
        if is_label:
            held = copies.get(terminal_id) or get_state(terminal_id)
            _count_label(out, obj, held.check_label(obj) if held is not None else "new")
            if not obj.is_fraud and obj.source != "investigation":
                continue  # a genuine label of the feed changes no state (the default)
        state = copies.get(terminal_id)
        if state is None:
            state = copies[terminal_id] = _copy_terminal(get_state(terminal_id))
        if is_label:
            state.label_one(obj, horizon, ref.get(p))
        else:
            if not state.update_one(obj.transaction, horizon, ref.get(p)):
                out.duplicates += 1
            out.arrived.append((p, obj, i))
        # written even when a redelivery changed nothing: a local store (RocksDB) can
        # hold a write whose changelog record a killed worker never sent; writing the
        # state again puts it on the changelog (redeliveries are rare: after faults)
        out.states[terminal_id] = state
        out.partitions[terminal_id] = p
    return out


def _count_label(out: TerminalIntake, label: Label, check: str) -> None:
    key = (label.source, "fraud" if label.is_fraud else "genuine")
    out.label_sources[key] = out.label_sources.get(key, 0) + 1
    if check == "duplicate":
        out.label_duplicates += 1
    elif check == "contradiction":
        out.label_contradictions += 1


def score_enriched(
    items: Sequence[Enriched],
    get_state: Callable[[str], TerminalState | None],
    snapshot: Snapshot,
    top_reasons: int = 3,
    delay_days: int = DEFAULT_DELAY_DAYS,
    now_ms: int | None = None,
    alert_outcomes: Sequence[str] = ("review", "block"),
) -> ScoreBatch:
    """Stage 2: terminal features, one model call for the batch, and the decisions.

    Parameters
    ----------
    items : sequence of Enriched
        Transactions whose terminal state is complete (released by
        :class:`app.alignment.EventTimeAligner`), in any order.
    get_state : callable
        ``terminal_id -> TerminalState or None``: the terminal's current state (it
        already holds these transactions; features read only what is older).
    snapshot : app.decisions.Snapshot
        The active model (one ``score_many`` call per batch; ``explain_many`` only on
        alert rows), the shadow models and the rule set of this batch
        (``Snapshot.of(scorer, threshold)`` for a model and a threshold alone).
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
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = ScoreBatch()
    if not items:
        return out
    rows: list[list[float]] = []
    states: dict[str, TerminalState | None] = {}
    for item in items:
        tx = item.transaction
        if tx.terminal_id not in states:
            states[tx.terminal_id] = get_state(tx.terminal_id)
        state = states[tx.terminal_id] or TerminalState()
        rows.append(item.account_features + extract_terminal(state, tx, delay_days))
    X = np.asarray(rows, dtype=np.float64)
    names = feature_names(delay_days)
    d = snapshot.decide([i.transaction for i in items], X, names, top_reasons, alert_outcomes)
    out.decisions = d
    scores, hits, reasons, version = d.scores, d.alert_rows, d.reasons, d.model_version
    hit_set = set(hits)
    rule_set_version = d.rule_set_version
    shadows = [(v, np.asarray(sc, dtype=np.float64).tolist()) for v, sc in d.shadow_scores.items()]
    scored, received = out.scored, out.received_ms
    for i, (item, row, score, decision) in enumerate(zip(items, X.tolist(), scores.tolist(), d.decisions)):
        scored.append(
            construct(ScoredTransaction, {
                "transaction": item.transaction,
                "score": score,
                "decision": "alert" if i in hit_set else "pass",
                "model_version": version,
                "features": dict(zip(names, row)),
                "scored_time_ms": now_ms,
                "outcome": decision.outcome,
                "rules_fired": list(decision.rules_fired),
                "rule_set_version": rule_set_version,
                "shadow_scores": {v: sc[i] for v, sc in shadows},
            })
        )
        received.append(item.received_ms)
    alerted: set[str] = set()
    for j, i in enumerate(hits):
        tx = items[i].transaction
        if tx.transaction_id in alerted:  # the same transaction twice in one batch
            out.alerts_deduplicated += 1
            continue
        alerted.add(tx.transaction_id)
        out.alerts.append(
            Alert.model_construct(
                alert_id=tx.transaction_id,
                transaction=tx,
                score=float(scores[i]),
                threshold=d.threshold,
                outcome=d.decisions[i].outcome,
                rules_fired=list(d.decisions[i].rules_fired),
                rule_set_version=d.rule_set_version,
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

"""The story of one transaction, from the records the service left on its topics (pure).

:func:`story_of` turns the records found for one transaction id (its record on
``transactions``, a dead letter, the internal by-terminal micro-batch that carried it
to the scoring stage, its scored record, its alert, its labels) into one ordered list of
steps, each with where it is (topic, partition, offset, key), its Kafka timestamp, its
``traceparent`` and what it says. ``fraudctl trace`` (:mod:`app.cli.trace`) reads the
records and prints the story.

Examples
--------
>>> bool(transaction_pattern("t1").search(b'{"transaction_id": "t1", "x": 1}'))
True
>>> bool(transaction_pattern("t1").search(b'{"transaction_id":"t12"}'))
False
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson
from .features import ACCOUNT_FEATURE_NAMES

__all__ = [
    "KINDS", "FoundRecord", "Step", "Story", "transaction_pattern", "story_of",
    "dead_letter_mentions",
]

#: Order of the kinds of steps (the order a transaction goes through the service).
KINDS = ("entered", "dead-lettered", "forwarded", "scored", "alert", "label")


def transaction_pattern(transaction_id: str) -> re.Pattern[bytes]:
    """A regex that finds ``"transaction_id": "<id>"`` (quoted or not) in a raw JSON
    payload, also a malformed one."""
    tid = re.escape(transaction_id.encode())
    return re.compile(rb'"transaction_id"\s*:\s*"?' + tid + rb'(?:"|[\s,}])')


@dataclass(frozen=True)
class FoundRecord:
    """A record read from a topic that mentions the transaction.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS` but ``"entered"`` stands for any ``transactions`` record.
    topic : str
    partition, offset : int
    key : bytes or None
    timestamp_ms : int
        The record's Kafka timestamp, UTC epoch ms.
    value : bytes or None
    traceparent : str or None
        Its W3C ``traceparent`` header, if valid.
    """

    kind: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    value: bytes | None
    traceparent: str | None = None


@dataclass
class Step:
    """One step of the story: where the record is and what it says."""

    kind: str
    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    traceparent: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "topic": self.topic, "partition": self.partition,
            "offset": self.offset, "key": self.key, "timestamp_ms": self.timestamp_ms,
            "traceparent": self.traceparent, **self.details,
        }


@dataclass
class Story:
    """Everything found about one transaction."""

    transaction_id: str
    account_id: str | None = None
    terminal_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    #: account features (stage 1) and terminal features (stage 2), name -> value
    account_features: dict[str, float] = field(default_factory=dict)
    terminal_features: dict[str, float] = field(default_factory=dict)

    @property
    def dead_lettered(self) -> bool:
        return any(s.kind == "dead-lettered" for s in self.steps)

    @property
    def alerted(self) -> bool:
        return any(s.kind == "alert" for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "terminal_id": self.terminal_id,
            "dead_lettered": self.dead_lettered,
            "alerted": self.alerted,
            "account_features": self.account_features,
            "terminal_features": self.terminal_features,
            "steps": [s.to_dict() for s in self.steps],
        }


def _key(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def _json(value: bytes | None) -> Any:
    try:
        return orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None


def _entered(rec: FoundRecord, story: Story) -> dict[str, Any]:
    body = _json(rec.value)
    if not isinstance(body, dict):
        return {"valid_json": False, "raw": (rec.value or b"")[:200].decode(errors="replace")}
    out = {k: body.get(k) for k in (
        "account_id", "terminal_id", "amount_minor", "currency", "event_time_ms"
    ) if k in body}
    account = body.get("account_id")
    if isinstance(account, str):
        story.account_id = story.account_id or account
        out["key_is_account_id"] = rec.key == account.encode()
    if isinstance(body.get("terminal_id"), str):
        story.terminal_id = story.terminal_id or body["terminal_id"]
    return out


def _dead_lettered(rec: FoundRecord) -> dict[str, Any]:
    body = _json(rec.value) or {}
    return {
        "reason": body.get("reason"), "detail": body.get("detail"),
        "source_topic": body.get("source_topic"), "source_partition": body.get("partition"),
        "source_offset": body.get("offset"), "rejected_time_ms": body.get("rejected_time_ms"),
    }


def _forwarded(rec: FoundRecord, tid: str, story: Story) -> dict[str, Any] | None:
    body = _json(rec.value)
    if not isinstance(body, dict):
        return None
    items = body.get("b", [body])
    for item in items:
        tx = item.get("tx", {}) if isinstance(item, dict) else {}
        if str(tx.get("transaction_id")) == tid:
            feats = item.get("f") or []
            story.account_features = dict(zip(ACCOUNT_FEATURE_NAMES, feats))
            return {"received_ms": item.get("r"), "batch_size": len(items)}
    return None


def _scored(rec: FoundRecord, story: Story) -> dict[str, Any]:
    body = _json(rec.value) or {}
    feats = body.get("features") or {}
    story.account_features = {k: v for k, v in feats.items() if k in ACCOUNT_FEATURE_NAMES}
    story.terminal_features = {k: v for k, v in feats.items() if k not in ACCOUNT_FEATURE_NAMES}
    tx = body.get("transaction") or {}
    story.account_id = story.account_id or tx.get("account_id")
    story.terminal_id = story.terminal_id or tx.get("terminal_id")
    return {k: body.get(k) for k in (
        "score", "decision", "outcome", "model_version", "rule_set_version", "rules_fired",
        "shadow_scores", "scored_time_ms",
    )}


def _alert(rec: FoundRecord) -> dict[str, Any]:
    body = _json(rec.value) or {}
    return {k: body.get(k) for k in (
        "alert_id", "score", "threshold", "outcome", "model_version", "rule_set_version",
        "rules_fired", "reasons", "alert_time_ms",
    )}


def _label(rec: FoundRecord) -> dict[str, Any]:
    body = _json(rec.value) or {}
    return {k: body.get(k) for k in ("is_fraud", "transaction_time_ms", "label_time_ms")}


def story_of(transaction_id: str, records: Iterable[FoundRecord]) -> Story:
    """The story of ``transaction_id`` from the records found for it.

    Steps come in the order a transaction goes through the service (entered,
    dead-lettered, forwarded to the scoring stage, scored, alert, label), and by Kafka
    timestamp within a kind: for live traffic that is time order.

    Parameters
    ----------
    transaction_id : str
    records : iterable of FoundRecord
        Records that mention it (:func:`transaction_pattern`); a by-terminal
        micro-batch is reduced to its item of this transaction, records of another
        transaction are dropped.

    Returns
    -------
    Story
    """
    story = Story(transaction_id)
    steps: list[Step] = []
    ordered = sorted(records, key=lambda r: (KINDS.index(r.kind), r.timestamp_ms, r.offset))
    for rec in ordered:
        if rec.kind == "entered":
            details = _entered(rec, story)
        elif rec.kind == "dead-lettered":
            details = _dead_lettered(rec)
        elif rec.kind == "forwarded":
            details = _forwarded(rec, transaction_id, story)
            if details is None:
                continue
        elif rec.kind == "scored":
            details = _scored(rec, story)
        elif rec.kind == "alert":
            details = _alert(rec)
        else:
            details = _label(rec)
        steps.append(Step(
            rec.kind, rec.topic, rec.partition, rec.offset, _key(rec.key), rec.timestamp_ms,
            rec.traceparent, details,
        ))
    story.steps = steps
    return story


def dead_letter_mentions(value: bytes | None, pattern: re.Pattern[bytes]) -> bool:
    """Whether a ``transactions-dead-letter`` record's raw payload matches ``pattern``."""
    body = _json(value)
    if not isinstance(body, dict) or not isinstance(body.get("raw_value_b64"), str):
        return False
    try:
        raw = base64.b64decode(body["raw_value_b64"])
    except ValueError:
        return False
    return bool(pattern.search(raw))

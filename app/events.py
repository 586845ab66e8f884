"""Records on the wire: one source of truth for every topic's value.

Each model here is exported as a JSON Schema file under ``schemas/`` by
``fraudctl schemas export`` (a test checks the files against the code). Money is in
integer minor units with an ISO 4217 currency; times are UTC epoch milliseconds.

Examples
--------
>>> tx = decode_transaction(b'{"transaction_id": "t1", "account_id": "a1", '
...     b'"terminal_id": "m1", "amount_minor": 1250, "currency": "EUR", '
...     b'"event_time_ms": 1522540800000}')
>>> tx.amount
12.5
>>> decode_transaction(b"not json")
Traceback (most recent call last):
...
app.exceptions.InvalidEventError: not_json: payload is not valid JSON ...
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .encoding import decode_avro, parse_encoding
from .exceptions import InvalidEventError

__all__ = [
    "Transaction",
    "Label",
    "LABEL_SOURCES",
    "Reason",
    "Alert",
    "ScoredTransaction",
    "DeadLetter",
    "ModelControl",
    "Rule",
    "AccessList",
    "RuleSet",
    "CaseEvent",
    "CASE_EVENT_TYPES",
    "MAX_COMMENT_CHARS",
    "MAX_ACTOR_CHARS",
    "OUTCOMES",
    "REJECT_REASONS",
    "WIRE_MODELS",
    "Compatibility",
    "Contract",
    "CONTRACTS",
    "REDRIVE_HEADER",
    "decode_transaction",
    "decode_label",
    "encode",
    "construct",
    "MIN_EVENT_TIME_MS",
    "MAX_EVENT_TIME_MS",
    "MAX_AMOUNT_MINOR",
    "DEAD_LETTER_RAW_MAX_BYTES",
]

#: Earliest accepted event time: 2000-01-01T00:00:00Z, in ms.
MIN_EVENT_TIME_MS = 946_684_800_000
#: Latest accepted event time: 2100-01-01T00:00:00Z, in ms.
MAX_EVENT_TIME_MS = 4_102_444_800_000
#: Largest accepted amount in minor units (10 billion in major units).
MAX_AMOUNT_MINOR = 1_000_000_000_000

#: Longest payload a dead letter carries whole, in bytes (2 MiB; base64 makes it 2.7 MiB).
DEAD_LETTER_RAW_MAX_BYTES = 2 * 2**20

#: Every reason code a rejected event can carry (metric label and dead-letter field).
REJECT_REASONS = (
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_amount",
    "bad_currency",
    "bad_timestamp",
    "future_timestamp",
    "bad_id",
    "invalid",
    "bad_encoding",
)

#: Longest analyst name, in characters.
MAX_ACTOR_CHARS = 100
#: An analyst as recorded on case events and investigation labels.
Actor = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACTOR_CHARS)]

Id = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
EventTimeMs = Annotated[int, Field(ge=MIN_EVENT_TIME_MS, lt=MAX_EVENT_TIME_MS)]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Transaction(_Wire):
    """A card transaction, the value on the ``transactions`` topic (key: account id)."""

    transaction_id: Id = Field(description="Unique id of the transaction.")
    account_id: Id = Field(description="The card / customer account.")
    terminal_id: Id = Field(description="The merchant terminal.")
    amount_minor: int = Field(
        ge=0, le=MAX_AMOUNT_MINOR, description="Amount in minor units (cents)."
    )
    currency: Currency = Field("EUR", description="ISO 4217 code of the amount.")
    event_time_ms: EventTimeMs = Field(description="When it happened, UTC epoch ms.")

    @property
    def amount(self) -> float:
        """Amount in major units (``amount_minor / 100``)."""
        return self.amount_minor / 100.0


#: Where a label comes from: an analyst's verdict on a case, or the delayed feed
#: (chargebacks, customer claims).
LABEL_SOURCES: tuple[str, ...] = ("investigation", "chargeback")


class Label(_Wire):
    """A later verdict on a transaction, the value on ``transaction-labels`` (key:
    terminal id)."""

    transaction_id: Id
    account_id: Id
    terminal_id: Id
    is_fraud: bool = Field(description="True: fraud; False: genuine.")
    transaction_time_ms: EventTimeMs = Field(description="Event time of the transaction.")
    label_time_ms: EventTimeMs = Field(description="When the verdict became known.")
    source: Literal["investigation", "chargeback"] = Field(
        "chargeback",
        description="investigation: an analyst's verdict on a case (fraudctl review); "
        "chargeback: the delayed feed. Absent in older records, which came from the feed.",
    )
    labelled_by: Actor | None = Field(
        None,
        description="For investigation labels: the analyst who gave the verdict, as on "
        "the case event (``name <subject>`` of the signed-in analyst). Absent otherwise.",
    )


class Reason(_Wire):
    """One feature's contribution to a score."""

    feature: str
    value: float
    contribution: float = Field(
        description="Score with the feature at its value minus score with it at its "
        "training median; positive pushes towards fraud."
    )


class ScoredTransaction(_Wire):
    """A transaction with its score, on ``scored-transactions``."""

    transaction: Transaction
    score: float = Field(ge=0.0, le=1.0, description="Higher is more likely fraud.")
    decision: Literal["alert", "pass"] = Field(
        description="alert: an alert was raised (its outcome is in ALERT_OUTCOMES)."
    )
    model_version: str = Field(description="The active model that gave ``score``.")
    features: dict[str, float]
    scored_time_ms: int
    outcome: Literal["approve", "review", "block"] = Field(
        "approve", description="Decision of the score and the rules (block > review > approve)."
    )
    rules_fired: list[str] = Field(
        default_factory=list, description="Ids of the rules (and allow:/block: lists) that fired."
    )
    rule_set_version: str = Field("none@0", description="``<rule-set id>@<version>`` applied.")
    shadow_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Shadow model version -> its score of the same features; never alerts.",
    )


class Alert(_Wire):
    """A fraud alert, on ``fraud-alerts``: all a consumer needs to act."""

    alert_id: str = Field(description="Equal to the transaction id: one alert per transaction.")
    transaction: Transaction
    score: float = Field(ge=0.0, le=1.0, description="Higher is more likely fraud.")
    threshold: float = Field(ge=0.0, le=1.0)
    decision: Literal["alert"] = "alert"
    model_version: str
    features: dict[str, float]
    reasons: list[Reason]
    event_time_ms: int = Field(description="Event time of the transaction, UTC epoch ms.")
    alert_time_ms: int = Field(description="When the alert was raised, UTC epoch ms.")
    outcome: Literal["review", "block"] = Field(
        "review", description="Decision of the score and the rules (block > review)."
    )
    rules_fired: list[str] = Field(
        default_factory=list, description="Ids of the rules (and allow:/block: lists) that fired."
    )
    rule_set_version: str = Field("none@0", description="``<rule-set id>@<version>`` applied.")


class DeadLetter(_Wire):
    """A rejected payload, on the dead-letter topic: nothing is lost.

    A payload of more than :data:`DEAD_LETTER_RAW_MAX_BYTES` (which a default Kafka
    broker would not even accept) keeps only its first that many bytes, with
    ``raw_truncated`` set; its size and sha256 are always those of the whole payload.
    """

    source_topic: str
    partition: int
    offset: int
    reason: Literal[REJECT_REASONS] = Field(  # type: ignore[valid-type]
        json_schema_extra={"x-extensible-enum": True},
        description="Why it was rejected. New reasons are added over time: a reader "
        "must accept a value it does not know.",
    )
    detail: str
    raw_value_b64: str = Field(description="The payload's bytes, base64.")
    raw_key_b64: str | None = None
    raw_size_bytes: int = Field(ge=0, description="Size of the whole payload.")
    raw_sha256: str = Field(description="sha256 of the whole payload, hex.")
    raw_truncated: bool = Field(False, description="raw_value_b64 holds a prefix only.")
    rejected_time_ms: int

    @property
    def raw_value(self) -> bytes:
        """The original payload."""
        return base64.b64decode(self.raw_value_b64)


# --- control plane: model lifecycle and decision rules ----------------------------------

#: Decision outcomes, weakest first: precedence is position (block > review > approve).
OUTCOMES: tuple[str, ...] = ("approve", "review", "block")
Outcome = Literal["approve", "review", "block"]
Comparison = Literal["<", "<=", ">", ">=", "==", "!=", "in", "not_in"]
Scalar = Union[bool, int, float, str]
ModelVersion = Annotated[str, StringConstraints(pattern=r"^v[0-9A-Za-z][0-9A-Za-z._-]{0,79}$")]


class _Control(_Wire):
    """Written by people (JSON or YAML files): ints where floats go are fine."""

    model_config = ConfigDict(strict=False, extra="forbid", frozen=True)


class Rule(_Control):
    """One comparison and the outcome it proposes when it holds."""

    id: Id = Field(description="Unique within the rule set; listed in alerts when it fires.")
    attribute: str = Field(description="score, transaction.<field> or features.<name>.")
    op: Comparison
    value: Union[Scalar, list[Scalar]] = Field(description="A list for in / not_in.")
    outcome: Outcome
    description: str = ""
    enabled: bool = True


class AccessList(_Control):
    """Account and terminal ids."""

    accounts: list[Id] = Field(default_factory=list)
    terminals: list[Id] = Field(default_factory=list)


class RuleSet(_Control):
    """A versioned set of rules and allow / block lists (the ``fraud-rules`` value).

    ``review_threshold`` and ``block_threshold`` let analysts move the score cut-offs
    without a new model: None keeps the model's threshold for review and no block by
    score.
    """

    id: Id = Field(description="Rule-set id, the record key on the rules topic.")
    version: int = Field(ge=0, description="Increases with every change of this id.")
    description: str = ""
    rules: list[Rule] = Field(default_factory=list)
    allow: AccessList = AccessList()
    block: AccessList = AccessList()
    review_threshold: float | None = Field(None, ge=0.0, le=1.0)
    block_threshold: float | None = Field(None, ge=0.0, le=1.0)

    @property
    def label(self) -> str:
        """``<id>@<version>``, as alerts carry it in ``rule_set_version``."""
        return f"{self.id}@{self.version}"


class ModelControl(_Wire):
    """The models every worker must serve, on the ``fraud-control`` topic (one partition).

    Each message carries the whole desired state, not a delta: applying the last one
    gives the right models whatever was missed before, and applying one twice changes
    nothing.
    """

    action: Literal["promote", "rollback", "shadow"] = Field(
        description="What the operator did (for logs); the state below is what counts."
    )
    active_version: ModelVersion = Field(description="The version that scores and alerts.")
    shadow_versions: list[ModelVersion] = Field(
        default_factory=list, description="Versions that also score; never alert."
    )
    issued_time_ms: int = Field(description="When the operator issued it, UTC epoch ms.")
    issued_by: str = Field("", description="Operator or tool, free text.")


# --- case review ---------------------------------------------------------------------

#: Every kind of change of a case, as recorded on the ``fraud-cases`` topic.
CASE_EVENT_TYPES: tuple[str, ...] = (
    "opened",
    "alert_added",
    "assigned",
    "commented",
    "confirmed_fraud",
    "dismissed_genuine",
    "reopened",
)
#: Longest comment an analyst may write on a case, in characters.
MAX_COMMENT_CHARS = 4000
class CaseEvent(_Wire):
    """One immutable change of a case, on ``fraud-cases`` (key: account id = case id).

    The case state is the fold of its events in topic order
    (:func:`app.cases.model.fold`): the topic is the audit trail (who, when, why).
    """

    event_id: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ] = Field(
        description="Idempotency key: an event whose id the case already holds changes "
        "nothing (alert events use ``alert:<alert id>``, console forms a token per form)."
    )
    case_id: Id = Field(description="The case: one per card, equal to its account id.")
    type: Literal[CASE_EVENT_TYPES]  # type: ignore[valid-type]
    time_ms: int = Field(ge=0, description="When it happened (wall clock), UTC epoch ms.")
    actor: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACTOR_CHARS)] = Field(
        description="The analyst's name, or ``system`` for events from alerts."
    )
    comment: Annotated[str, StringConstraints(max_length=MAX_COMMENT_CHARS)] = Field(
        "", description="Why (free text; shown escaped, never rendered as HTML)."
    )
    alert: Alert | None = Field(None, description="The alert of opened / alert_added.")
    assignee: Annotated[str, StringConstraints(max_length=MAX_ACTOR_CHARS)] | None = Field(
        None, description="Who works the case, for assigned."
    )


#: How a topic's contract may change between two versions (a schema registry's modes):
#: ``backward``: a reader of the new version reads records of the previous one (inputs:
#: upgrade the readers first); ``forward``: a reader of the previous version reads
#: records of the new one (outputs: upgrade the writer first, its readers later);
#: ``full``: both.
Compatibility = Literal["backward", "forward", "full"]


@dataclass(frozen=True)
class Contract:
    """One topic's contract: its record model, version and compatibility rule.

    Attributes
    ----------
    model : type of pydantic.BaseModel
        The record (the JSON Schema is generated from it).
    version : int
        Increases with every released change; the released schemas are
        ``schemas/released/<topic>.v<version>.schema.json``.
    compatibility : {"backward", "forward", "full"}
        The rule every new version must keep against the previous one.
    accepts_unknown_fields : bool
        Readers accept fields the model does not list (kept out of the record and
        counted in ``fraud_unknown_fields_total``); the schema is then open
        (``additionalProperties: true``).
    """

    model: type[BaseModel]
    version: int
    compatibility: Compatibility
    accepts_unknown_fields: bool = False


#: topic (the setting's default name) -> its contract. The one place that names each
#: topic's version and compatibility rule.
CONTRACTS: dict[str, Contract] = {
    # inputs, written by card processors and the labelling system: readers first
    "transactions": Contract(Transaction, 2, "backward", accepts_unknown_fields=True),
    "transaction-labels": Contract(Label, 3, "backward", accepts_unknown_fields=True),
    # outputs, read by analysts' tools, case systems and sinks: the writer first
    "fraud-alerts": Contract(Alert, 1, "forward"),
    "scored-transactions": Contract(ScoredTransaction, 1, "forward"),
    "dead-letter": Contract(DeadLetter, 2, "forward"),
    # control topics: fraudctl writes, every worker reads; either may be upgraded first
    "fraud-control": Contract(ModelControl, 1, "full"),
    "fraud-rules": Contract(RuleSet, 1, "full"),
    # case events: the console writes, every console and the label feed fold them
    # from the beginning; either may be upgraded first
    "fraud-cases": Contract(CaseEvent, 1, "full"),
}

#: topic -> model, for schema export
WIRE_MODELS: dict[str, type[BaseModel]] = {name: c.model for name, c in CONTRACTS.items()}

#: Record header of a record that ``fraudctl dead-letters redrive`` sent back to its
#: source topic: ``<dead-letter topic>/<partition>/<offset>`` of the dead letter. A
#: worker that rejects such a record again keeps the header on the new dead letter, so
#: it is never re-driven twice.
REDRIVE_HEADER = "fraud-redriven-from"

_OPEN_MODELS = frozenset(c.model for c in CONTRACTS.values() if c.accepts_unknown_fields)
_FIELD_NAMES: dict[type, frozenset[str]] = {}

_FIELD_REASONS = {
    "account_id": "bad_id",
    "transaction_id": "bad_id",
    "terminal_id": "bad_id",
    "amount_minor": "bad_amount",
    "currency": "bad_currency",
    "event_time_ms": "bad_timestamp",
    "transaction_time_ms": "bad_timestamp",
    "label_time_ms": "bad_timestamp",
}


def _from_binary(model: type[_Wire], raw: bytes, encoding: bytes) -> dict:
    """The record of a payload in a binary encoding (see :mod:`app.encoding`)."""
    name, version = parse_encoding(encoding)
    contract = next(c for c in CONTRACTS.values() if c.model is model)
    if name != "avro" or version != contract.version:
        raise InvalidEventError(
            "bad_encoding",
            f"encoding {encoding[:40]!r}: this reader reads json and avro/{contract.version}",
        )
    try:
        return decode_avro(model, raw)
    except ValueError as exc:
        raise InvalidEventError("bad_encoding", str(exc)[:300]) from None


def _decode(
    model: type[_Wire],
    raw: bytes | None,
    max_bytes: int,
    unknown_fields: list[str] | None,
    encoding: bytes | None = None,
) -> _Wire:
    if raw is None:
        raise InvalidEventError("not_json", "empty payload (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEventError("too_large", f"payload of {len(raw)} bytes > {max_bytes}")
    if encoding is not None and encoding != b"json":
        obj = _from_binary(model, raw, encoding)
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEventError("not_json", f"payload is not valid JSON ({exc})"[:300]) from None
    if not isinstance(obj, dict):
        raise InvalidEventError("not_object", f"expected a JSON object, got {type(obj).__name__}")
    unknown: list[str] = []
    if model in _OPEN_MODELS:
        fields = _FIELD_NAMES.get(model)
        if fields is None:  # pydantic's model_fields is a slow class property: read once
            fields = _FIELD_NAMES[model] = frozenset(model.model_fields)
        unknown = [name for name in obj if name not in fields]
        if unknown:
            obj = {name: value for name, value in obj.items() if name in fields}
    try:
        record = model.model_validate(obj)
        if unknown and unknown_fields is not None:
            unknown_fields.extend(unknown)
        return record
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        etype = err["type"]
        if etype == "missing":
            reason = "missing_field"
        elif etype.endswith("_type") or etype in ("extra_forbidden",):
            reason = "wrong_type" if etype != "extra_forbidden" else "invalid"
        else:
            reason = _FIELD_REASONS.get(str(err["loc"][0]) if err["loc"] else "", "invalid")
        raise InvalidEventError(reason, f"{loc}: {err['msg']}"[:300]) from None


def decode_transaction(
    raw: bytes | None,
    max_bytes: int = 65_536,
    unknown_fields: list[str] | None = None,
    encoding: bytes | None = None,
) -> Transaction:
    """Parse and validate one ``transactions`` payload.

    Fields the contract does not list are accepted and left out of the record (the
    contract is backward compatible: see :data:`CONTRACTS`).

    Parameters
    ----------
    raw : bytes or None
        The Kafka record value.
    max_bytes : int, default=65536
        Larger payloads are rejected without parsing.
    unknown_fields : list of str, optional
        The names of the fields the contract does not list are appended to it.
    encoding : bytes, optional
        The record's :data:`app.encoding.ENCODING_HEADER` value: None or ``b"json"``
        for JSON, ``b"avro/<version>"`` for Avro of this contract version (anything
        else is rejected as ``bad_encoding``).

    Returns
    -------
    Transaction

    Raises
    ------
    InvalidEventError
        With ``reason`` one of :data:`REJECT_REASONS`.

    Examples
    --------
    >>> seen = []
    >>> decode_transaction(b'{"transaction_id": "t1", "account_id": "a1", '
    ...     b'"terminal_id": "m1", "amount_minor": 1250, "event_time_ms": 1522540800000, '
    ...     b'"mcc": "5411"}', unknown_fields=seen).transaction_id, seen
    ('t1', ['mcc'])
    """
    return _decode(Transaction, raw, max_bytes, unknown_fields, encoding)  # type: ignore[return-value]


def decode_label(
    raw: bytes | None,
    max_bytes: int = 65_536,
    unknown_fields: list[str] | None = None,
    encoding: bytes | None = None,
) -> Label:
    """Parse and validate one ``transaction-labels`` payload (see :func:`decode_transaction`)."""
    return _decode(Label, raw, max_bytes, unknown_fields, encoding)  # type: ignore[return-value]


def construct(model: type[_M], values: dict[str, Any]) -> _M:
    """A record of ``model`` from trusted values, as ``model.model_construct(**values)``.

    The hot path builds records of values it computed itself (scored transactions,
    the transactions of its internal topic); pydantic's ``model_construct`` walks every
    field's aliases and defaults on each call, which costs more than the record's
    values do. When ``values`` holds exactly the model's fields, in the model's order,
    the record is made directly (the same ``__dict__`` and fields set as
    ``model_construct`` gives); otherwise this is ``model_construct``.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        A wire model of this module (no aliases, no private attributes, no
        ``model_post_init``).
    values : dict
        Field name -> value; not validated. The dict becomes the record's ``__dict__``:
        the caller does not use it afterwards.

    Returns
    -------
    pydantic.BaseModel
        An instance of ``model``.
    """
    fields = _CONSTRUCT_FIELDS.get(model)
    if fields is None:
        simple = (
            not model.__pydantic_post_init__
            and not model.__private_attributes__
            and all(f.alias is None and f.validation_alias is None
                    for f in model.__pydantic_fields__.values())
        )
        fields = _CONSTRUCT_FIELDS[model] = tuple(model.__pydantic_fields__) if simple else ()
    if not fields or len(values) != len(fields) or tuple(values) != fields:
        return model.model_construct(**values)
    record = model.__new__(model)
    _set = object.__setattr__
    _set(record, "__dict__", values)
    _set(record, "__pydantic_fields_set__", set(fields))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


_M = TypeVar("_M", bound=BaseModel)
#: model -> its field names in order, () when :func:`construct` must not bypass pydantic
_CONSTRUCT_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(record: BaseModel) -> bytes:
    """Serialise a wire record to compact JSON bytes.

    A :class:`ScoredTransaction` (one per transaction) is written from its values
    directly: its fields are JSON types already (str, int, float, lists and dicts of
    them, and a :class:`Transaction` of str and int), so the bytes are those of
    ``orjson.dumps(record.model_dump(mode="json"))``, without pydantic's serializer.

    Parameters
    ----------
    record : pydantic.BaseModel
        A wire record of this module.

    Returns
    -------
    bytes
        Compact JSON, fields in the model's order.
    """
    if type(record) is ScoredTransaction:
        d = record.__dict__
        tx = d.get("transaction")
        if type(tx) is Transaction and len(d) == _SCORED_FIELDS and len(tx.__dict__) == _TX_FIELDS:
            return orjson.dumps({**d, "transaction": tx.__dict__})
    return orjson.dumps(record.model_dump(mode="json"))


_SCORED_FIELDS = len(ScoredTransaction.model_fields)
_TX_FIELDS = len(Transaction.model_fields)


def utc_ms(dt: datetime) -> int:
    """Epoch milliseconds of a datetime; a naive one is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)

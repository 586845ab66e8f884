"""Binary encoding of the wire records: Avro generated from the pydantic models (pure).

A record's encoding is named by its header :data:`ENCODING_HEADER`: absent or
``json`` is JSON (the default); ``avro/<version>`` is Avro binary (no container, no
schema id) of the topic's contract at that version, written with the schema
:func:`avro_schema` generates from the same pydantic model the JSON Schema comes from.
A reader decodes Avro of its own contract version; the decoded record then goes
through the same validation as JSON (:func:`app.events.decode_transaction`), so an
Avro record is accepted or dead-lettered exactly as its JSON would be.

Examples
--------
>>> from app.events import Transaction
>>> tx = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
...                  amount_minor=1250, currency="EUR", event_time_ms=1_522_540_800_000)
>>> raw = encode_avro(Transaction, tx.model_dump())
>>> len(raw), decode_avro(Transaction, raw) == tx.model_dump()
(21, True)
>>> header_value("avro", 2), parse_encoding(b"avro/2"), parse_encoding(None)
(b'avro/2', ('avro', 2), ('json', None))
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

__all__ = [
    "ENCODING_HEADER",
    "Encoding",
    "avro_schema",
    "encode_avro",
    "decode_avro",
    "header_value",
    "parse_encoding",
    "encoding_of",
]

#: Record header naming a record's encoding: ``json`` (also when absent) or
#: ``avro/<contract version>``.
ENCODING_HEADER = "fraud-encoding"
Encoding = Literal["json", "avro"]


def header_value(encoding: Encoding, version: int) -> bytes:
    """The header value of ``encoding`` for contract ``version`` (``json``: no version)."""
    return b"json" if encoding == "json" else f"avro/{version}".encode()


def parse_encoding(value: bytes | None) -> tuple[str, int | None]:
    """(encoding, contract version) of a header value; unknown values are returned as
    they are (the decoder refuses them).

    >>> parse_encoding(b"protobuf")
    ('protobuf', None)
    """
    if value is None or value == b"json":
        return ("json", None)
    text = value.decode("utf-8", "replace")
    name, _, version = text.partition("/")
    return (name, int(version)) if version.isdigit() else (text, None)


def encoding_of(headers) -> bytes | None:
    """The :data:`ENCODING_HEADER` value among Kafka record headers, or None."""
    for key, value in headers or ():
        if key == ENCODING_HEADER:
            return value
    return None


# --- Avro schema from the pydantic model ------------------------------------------------


def _avro_type(node: dict, root: dict, named: dict[str, Any]) -> Any:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in named:
            return name  # defined once, referred to by name after
        return _avro_record(name, root["$defs"][name], root, named)
    if "anyOf" in node:
        branches = [_avro_type(b, root, named) for b in node["anyOf"]]
        nulls = [b for b in branches if b == "null"]
        return nulls + [b for b in branches if b != "null"]  # null first: default null
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        kinds = {type(v) for v in values}
        if kinds == {str}:
            return "string"  # kept a string: enums may grow (see x-extensible-enum)
        if kinds == {bool}:
            return "boolean"
    t = node.get("type")
    if t == "string":
        return "string"
    if t == "integer":
        return "long"
    if t == "number":
        return "double"
    if t == "boolean":
        return "boolean"
    if t == "null":
        return "null"
    if t == "array":
        return {"type": "array", "items": _avro_type(node.get("items", {}), root, named)}
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return {"type": "map", "values": _avro_type(node["additionalProperties"], root, named)}
    raise ValueError(f"no Avro type for JSON Schema {node!r}")


def _avro_record(name: str, node: dict, root: dict, named: dict[str, Any]) -> dict:
    record: dict[str, Any] = {"type": "record", "name": name, "fields": []}
    named[name] = record
    required = set(node.get("required", []))
    for field, prop in node.get("properties", {}).items():
        entry: dict[str, Any] = {"name": field, "type": _avro_type(prop, root, named)}
        if field not in required and "default" in prop:
            entry["default"] = prop["default"]
        record["fields"].append(entry)
    return record


@lru_cache(maxsize=None)
def avro_schema(model: type[BaseModel]) -> dict:
    """The Avro record schema of a wire model, from its JSON Schema.

    Strings, integers (``long``), numbers (``double``), booleans, nested models
    (records), ``list`` (array), ``dict[str, X]`` (map), optional fields (a union with
    ``null`` first) and string enums (``string``: their values are checked by the
    model, as for JSON). Field defaults are kept.

    Raises
    ------
    ValueError
        If a field has a type this mapping does not cover.
    """
    doc = model.model_json_schema(mode="validation")
    return _avro_record(doc.get("title", model.__name__), doc, doc, {})


@lru_cache(maxsize=None)
def _parsed(model: type[BaseModel]):
    import fastavro  # imported where used: importing the events loads no codec

    return fastavro.parse_schema(avro_schema(model))


def encode_avro(model: type[BaseModel], value: dict) -> bytes:
    """Avro binary of ``value`` (a ``model_dump()`` of ``model``).

    Raises
    ------
    ValueError
        If ``value`` does not fit the schema.
    """
    import fastavro

    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, _parsed(model), value)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a {model.__name__}: {exc}") from None
    return out.getvalue()


def decode_avro(model: type[BaseModel], raw: bytes) -> dict:
    """The record an Avro binary payload holds, as a dict (validated by the caller).

    Raises
    ------
    ValueError
        If ``raw`` is not exactly one record of the schema (too short, bad values,
        bytes left over).
    """
    import fastavro

    buf = io.BytesIO(raw)
    try:
        value = fastavro.schemaless_reader(buf, _parsed(model), None)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on bad bytes
        raise ValueError(f"not Avro of {model.__name__} ({type(exc).__name__}: {exc})"[:250]) from None
    if buf.tell() != len(raw):
        raise ValueError(f"{len(raw) - buf.tell()} bytes after the Avro record")
    if not isinstance(value, dict):
        raise ValueError(f"not Avro of {model.__name__}")
    return value

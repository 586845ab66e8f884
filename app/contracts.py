"""Compatibility of contract versions, and bounded labels for unknown field names (pure).

A topic's contract (:data:`app.events.CONTRACTS`) names its rule; this module decides
whether a new JSON Schema keeps it against the previous released one:

- ``backward`` (inputs): every record valid under the *old* schema is accepted by a
  reader of the *new* one, i.e. ``breaking_changes(reader=new, writer=old)`` is empty.
- ``forward`` (outputs): every record a writer of the *new* schema produces is accepted
  by a reader of the *old* one: ``breaking_changes(reader=old, writer=new)``.
- ``full``: both.

The check is structural and conservative on what pydantic generates (``$ref`` /
``$defs``, ``type``, ``anyOf``, ``enum`` / ``const``, numeric and length bounds,
``pattern``, ``required``, ``properties``, ``additionalProperties``, ``items``): a
change it cannot prove compatible is reported. Two deliberate allowances: an enum
marked ``"x-extensible-enum": true`` in the reader may gain values (its readers must
accept unknown values), and a property added to an *open* reader (one that already
accepted unknown fields) is compatible (the unknown-fields metric shows whether
producers already send that name).

Examples
--------
>>> old = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
>>> new = {"type": "object", "properties": {"a": {"type": "integer"},
...        "b": {"type": "string"}}, "required": ["a", "b"]}
>>> check_compatibility(new, old, "backward")
['$.b: required by the reader, optional or absent for the writer']
>>> check_compatibility(new, old, "forward")
[]
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "breaking_changes",
    "check_compatibility",
    "release_problems",
    "METADATA_KEYS",
    "FieldLabels",
    "OTHER_FIELD",
]

_NUMBER_TYPES = {"integer": {"integer"}, "number": {"integer", "number"}}


def _resolve(schema: Any, root: dict) -> Any:
    """Follow ``$ref`` (``#/$defs/Name``) within ``root``."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return schema
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**node, **extra}
        seen += 1
    return schema


def _types(schema: dict) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            return {_json_type(v) for v in values}
        return None
    return {t} if isinstance(t, str) else set(t)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _accepts_type(reader: set[str], writer_type: str) -> bool:
    if writer_type in reader:
        return True
    return writer_type == "integer" and "number" in reader


def _branches(schema: Any, root: dict) -> list[Any]:
    schema = _resolve(schema, root)
    if isinstance(schema, dict) and "anyOf" in schema and len(schema) <= 4:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default", "description", "title")}
        if not rest:
            return [b for branch in schema["anyOf"] for b in _branches(branch, root)]
    return [schema]


def breaking_changes(reader: dict, writer: dict) -> list[str]:
    """What a writer of schema ``writer`` may produce that a reader of ``reader`` refuses.

    Parameters
    ----------
    reader, writer : dict
        JSON Schema documents (draft 2020-12, as pydantic generates them), each with
        its own ``$defs``.

    Returns
    -------
    list of str
        One line per problem, ``<JSON path>: <what>``; empty when every record valid
        under ``writer`` is accepted by ``reader`` (as far as the check can prove).
    """
    out: list[str] = []
    _compare(reader, writer, reader, writer, "$", out)
    return out


def _compare(r: Any, w: Any, rroot: dict, wroot: dict, path: str, out: list[str]) -> None:
    r_branches, w_branches = _branches(r, rroot), _branches(w, wroot)
    if len(r_branches) > 1 or len(w_branches) > 1:
        for wb in w_branches:
            trials = []
            for rb in r_branches:
                problems: list[str] = []
                _compare_one(rb, wb, rroot, wroot, path, problems)
                if not problems:
                    break
                trials.append(problems)
            else:
                out.extend(min(trials, key=len) if trials else [f"{path}: no reader branch"])
        return
    _compare_one(r_branches[0], w_branches[0], rroot, wroot, path, out)


def _compare_one(r: Any, w: Any, rroot: dict, wroot: dict, path: str, out: list[str]) -> None:
    if r is True or r == {} or (isinstance(r, dict) and not (set(r) - {"title", "description", "default", "examples"})):
        return  # the reader accepts anything
    if w is True or w == {}:
        out.append(f"{path}: the writer may send anything, the reader constrains it")
        return
    if r is False:
        out.append(f"{path}: the reader accepts nothing")
        return
    if w is False:
        return
    _compare_types(r, w, path, out)
    _compare_values(r, w, path, out)
    _compare_bounds(r, w, path, out)
    if "properties" in r or "properties" in w or r.get("type") == "object":
        _compare_objects(r, w, rroot, wroot, path, out)
    if "items" in r:
        _compare(r["items"], w.get("items", True), rroot, wroot, f"{path}[]", out)


def _compare_types(r: dict, w: dict, path: str, out: list[str]) -> None:
    rt, wt = _types(r), _types(w)
    if rt is None:
        return
    if wt is None:
        out.append(f"{path}: the reader requires type {sorted(rt)}, the writer any type")
        return
    bad = sorted(t for t in wt if not _accepts_type(rt, t))
    if bad:
        out.append(f"{path}: the writer may send type {bad}, the reader accepts {sorted(rt)}")


def _compare_values(r: dict, w: dict, path: str, out: list[str]) -> None:
    r_values = [r["const"]] if "const" in r else r.get("enum")
    if r_values is None or r.get("x-extensible-enum"):
        return
    w_values = [w["const"]] if "const" in w else w.get("enum")
    if w_values is None:
        out.append(f"{path}: the reader accepts only {r_values}, the writer any value")
        return
    extra = [v for v in w_values if v not in r_values]
    if extra:
        out.append(f"{path}: the writer may send {extra}, unknown to the reader's enum")


_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


def _lower(schema: dict, kind: str) -> tuple[float, bool] | None:
    """(bound, exclusive) of the lowest accepted value, or None."""
    if kind == "number":
        bounds = []
        if "minimum" in schema:
            bounds.append((schema["minimum"], False))
        if "exclusiveMinimum" in schema:
            bounds.append((schema["exclusiveMinimum"], True))
        return max(bounds) if bounds else None
    return (schema[kind], False) if kind in schema else None


def _upper(schema: dict, kind: str) -> tuple[float, bool] | None:
    if kind == "number":
        bounds = []
        if "maximum" in schema:
            bounds.append((schema["maximum"], False))
        if "exclusiveMaximum" in schema:
            bounds.append((schema["exclusiveMaximum"], True))
        return min(bounds, key=lambda b: (b[0], not b[1])) if bounds else None
    return (schema[kind], False) if kind in schema else None


def _compare_bounds(r: dict, w: dict, path: str, out: list[str]) -> None:
    for lo_kind, hi_kind in (
        ("number", "number"),
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minProperties", "maxProperties"),
    ):
        rl, wl = _lower(r, lo_kind), _lower(w, lo_kind)
        if rl is not None and (wl is None or wl[0] < rl[0] or (wl[0] == rl[0] and rl[1] and not wl[1])):
            out.append(f"{path}: the reader's lower bound {rl[0]} is above the writer's {wl and wl[0]}")
        ru, wu = _upper(r, hi_kind), _upper(w, hi_kind)
        if ru is not None and (wu is None or wu[0] > ru[0] or (wu[0] == ru[0] and ru[1] and not wu[1])):
            out.append(f"{path}: the reader's upper bound {ru[0]} is below the writer's {wu and wu[0]}")
    if "pattern" in r and r["pattern"] != w.get("pattern"):
        out.append(f"{path}: the reader's pattern {r['pattern']!r} differs from the writer's {w.get('pattern')!r}")


def _open(schema: dict) -> bool:
    return schema.get("additionalProperties", True) is not False


def _compare_objects(r: dict, w: dict, rroot: dict, wroot: dict, path: str, out: list[str]) -> None:
    rprops, wprops = r.get("properties", {}), w.get("properties", {})
    rreq, wreq = set(r.get("required", [])), set(w.get("required", []))
    for name in sorted(rreq - wreq):
        out.append(f"{path}.{name}: required by the reader, optional or absent for the writer")
    for name, wschema in sorted(wprops.items()):
        if name in rprops:
            _compare(rprops[name], wschema, rroot, wroot, f"{path}.{name}", out)
        elif not _open(r):
            out.append(f"{path}.{name}: the writer may send it, the reader refuses unknown fields")
        elif isinstance(r.get("additionalProperties"), dict):
            _compare(r["additionalProperties"], wschema, rroot, wroot, f"{path}.{name}", out)
    # properties the reader defines and the writer does not: an open writer may send
    # them with any value; allowed on purpose (see the module docstring)
    r_add, w_add = r.get("additionalProperties", True), w.get("additionalProperties", True)
    if r_add is False and w_add is not False:
        out.append(f"{path}: the writer may send fields it does not list, the reader refuses unknown fields")
    elif isinstance(r_add, dict) and w_add is not False:
        _compare(r_add, w_add, rroot, wroot, f"{path}.*", out)


def check_compatibility(new: dict, old: dict, rule: str) -> list[str]:
    """Problems that make schema ``new`` break ``rule`` against ``old``.

    Parameters
    ----------
    new, old : dict
        JSON Schema documents of two versions of one contract.
    rule : {"backward", "forward", "full"}

    Returns
    -------
    list of str
        Empty when compatible; else one line per problem, prefixed by the direction
        (``backward:`` or ``forward:``) when ``rule`` is ``full``.

    Raises
    ------
    ValueError
        If ``rule`` is not one of the three.
    """
    if rule == "backward":
        return breaking_changes(reader=new, writer=old)
    if rule == "forward":
        return breaking_changes(reader=old, writer=new)
    if rule == "full":
        return [f"backward: {p}" for p in breaking_changes(reader=new, writer=old)] + [
            f"forward: {p}" for p in breaking_changes(reader=old, writer=new)
        ]
    raise ValueError(f"rule: expected backward, forward or full; got {rule!r}")


#: Top-level schema keys that describe the contract and do not validate records.
METADATA_KEYS = ("x-contract-version", "x-compatibility")


def _without_metadata(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in METADATA_KEYS}


def _without_open_values(node: Any) -> Any:
    """``node`` without the value lists of extensible enums (their readers accept any
    value, so the list names the known ones and may grow within a version)."""
    if isinstance(node, dict):
        drop = "enum" if node.get("x-extensible-enum") else None
        return {k: _without_open_values(v) for k, v in node.items() if k != drop}
    if isinstance(node, list):
        return [_without_open_values(v) for v in node]
    return node


def release_problems(
    current: dict, version: int, rule: str, released: dict[int, dict]
) -> list[str]:
    """Whether one topic's schema in the code keeps its rule against its released ones.

    Rules: released versions are 1..N without a gap, each compatible with the one
    before; the code's ``version`` is N (then its schema is the released one, apart
    from :data:`METADATA_KEYS` and values added to an extensible enum: a released
    version never changes) or N + 1 (a new, not yet released version, compatible
    with N).

    Parameters
    ----------
    current : dict
        The schema the code generates.
    version : int
        The contract's version in the code.
    rule : {"backward", "forward", "full"}
    released : dict of int to dict
        Released version -> its schema (``schemas/released/<topic>.v<N>.schema.json``).

    Returns
    -------
    list of str
        Empty when all holds.

    Examples
    --------
    >>> v1 = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}}
    >>> v2 = {"type": "object", "properties": {"a": {"enum": ["x"]}}}
    >>> release_problems(v2, 2, "backward", {1: v1})
    ["v2 against released v1 (backward): $.a: the writer may send ['y'], unknown to the reader's enum"]
    >>> release_problems(v2, 2, "forward", {1: v1})
    []
    """
    problems: list[str] = []
    versions = sorted(released)
    if versions != list(range(1, len(versions) + 1)):
        problems.append(f"released versions {versions}: expected 1..N without a gap")
    for v in versions[1:]:
        for p in check_compatibility(released[v], released[v - 1], rule):
            problems.append(f"released v{v} against v{v - 1} ({rule}): {p}")
    latest = versions[-1] if versions else 0
    if version == latest:
        same = _without_open_values(_without_metadata(current)) == _without_open_values(
            _without_metadata(released[latest])
        )
        if not same:
            problems.append(
                f"v{version} is released and its schema changed: raise the contract's "
                f"version to {version + 1} for a new one"
            )
        else:  # values of an extensible enum added within the version: still the rule
            for p in check_compatibility(current, released[latest], rule):
                problems.append(f"v{version} against released v{latest} ({rule}): {p}")
    elif version == latest + 1:
        if latest:
            for p in check_compatibility(current, released[latest], rule):
                problems.append(f"v{version} against released v{latest} ({rule}): {p}")
    else:
        problems.append(f"version {version} in the code, latest released is {latest}")
    return problems


#: Label value of an unknown field whose name is not safe or not among the first ones.
OTHER_FIELD = "other"
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FieldLabels:
    """Bounded label values for the names of unknown fields.

    Field names come from producers, so they are unbounded: a name becomes a label
    only if it looks like an identifier (letters, digits, ``_``; at most 64) and is
    among the first ``max_names`` distinct names seen; anything else is
    :data:`OTHER_FIELD`.

    Parameters
    ----------
    max_names : int, default=50
        Distinct names kept per topic.

    Raises
    ------
    ValueError
        If ``max_names`` < 0.

    Examples
    --------
    >>> labels = FieldLabels(max_names=1)
    >>> labels.label("transactions", "mcc"), labels.label("transactions", "mcc")
    ('mcc', 'mcc')
    >>> labels.label("transactions", "device_id"), labels.label("transactions", "a b")
    ('other', 'other')
    """

    def __init__(self, max_names: int = 50) -> None:
        if max_names < 0:
            raise ValueError(f"max_names: expected >= 0; got {max_names}")
        self.max_names = max_names
        self._seen: dict[str, set[str]] = {}

    def label(self, topic: str, name: str) -> str:
        """The label value of field ``name`` of ``topic``."""
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            return OTHER_FIELD
        seen = self._seen.setdefault(topic, set())
        if name in seen:
            return name
        if len(seen) >= self.max_names:
            return OTHER_FIELD
        seen.add(name)
        return name

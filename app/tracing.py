"""W3C Trace Context ``traceparent`` values, as plain Python (no Kafka, no OpenTelemetry).

Every record the service produces carries a ``traceparent`` header
(https://www.w3.org/TR/trace-context/#traceparent-header): the trace id of the input
record's header, a new parent (span) id for this hop, the input's flags. An input
record without a valid header starts a new trace. A user's own tracing (OpenTelemetry
or any W3C-compatible tracer) reading the output topics follows a transaction from
the record that brought it in to its scored record and its alert.

Format: ``00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>``, lower case;
a trace id or parent id of all zeros is invalid, version ``ff`` is invalid.

Examples
--------
>>> parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
>>> parse(parent)
TraceParent(trace_id='4bf92f3577b34da6a3ce929d0e0e4736', parent_id='00f067aa0ba902b7', flags='01')
>>> child = continue_from(parent)
>>> child[:36] == parent[:36] and child[-2:] == "01" and child != parent
True
>>> parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
True
>>> len(continue_from(None)), parse(continue_from(b"garbage")) is not None
(55, True)
"""

from __future__ import annotations

import os
import random
import re
from typing import Iterable, Mapping, NamedTuple

__all__ = [
    "HEADER",
    "TraceParent",
    "parse",
    "new",
    "continue_from",
    "from_headers",
    "headers_with",
]

#: The Kafka header name (W3C Trace Context over Kafka: the HTTP header's name).
HEADER = "traceparent"

_PATTERN = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceParent(NamedTuple):
    """One parsed ``traceparent`` value (version 00)."""

    trace_id: str
    parent_id: str
    flags: str

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse(value: str | bytes | None) -> TraceParent | None:
    """The trace context of a ``traceparent`` value, or None if it is absent or invalid.

    Parameters
    ----------
    value : str or bytes or None
        A header value; bytes are decoded as ASCII. A future version (not ``00``, not
        ``ff``) is read by its first four fields, as the specification asks.

    Returns
    -------
    TraceParent or None
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()
    m = _PATTERN.match(value)
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None
    return TraceParent(trace_id, parent_id, flags)


#: Trace and span ids need to be unique, not secret (W3C Trace Context, "Considerations
#: for trace-id field generation"): a generator seeded from the OS, one draw per id,
#: instead of a system call per id.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child draws other ids


def _span_id() -> str:
    while True:
        span = f"{_ids.getrandbits(64):016x}"
        if span != _ZERO_SPAN:
            return span


def new(sampled: bool = True) -> str:
    """A ``traceparent`` that starts a new trace (random trace and parent ids)."""
    trace_id = f"{_ids.getrandbits(128):032x}"
    while trace_id == _ZERO_TRACE:  # pragma: no cover - 2**-128
        trace_id = f"{_ids.getrandbits(128):032x}"
    return f"00-{trace_id}-{_span_id()}-{'01' if sampled else '00'}"


def continue_from(parent: str | bytes | None) -> str:
    """The ``traceparent`` of a record produced from an input carrying ``parent``.

    Same trace id and flags, a new parent id (this hop); a new trace when ``parent``
    is absent or invalid.
    """
    ctx = parse(parent)
    if ctx is None:
        return new()
    return f"00-{ctx.trace_id}-{_span_id()}-{ctx.flags}"


def from_headers(
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> str | None:
    """The valid ``traceparent`` among Kafka record headers, as str, else None."""
    if isinstance(headers, Mapping):
        headers = headers.items()
    for name, value in headers or ():
        if name == HEADER:
            ctx = parse(value)
            return str(ctx) if ctx is not None else None
    return None


def headers_with(traceparent: str) -> list[tuple[str, bytes]]:
    """Kafka record headers carrying ``traceparent``."""
    return [(HEADER, traceparent.encode("ascii"))]

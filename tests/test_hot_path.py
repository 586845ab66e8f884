"""The hot path's shortcuts give exactly what the plain computations give: calendar
features by integer arithmetic, account-state bytes packed by numpy, the cached murmur2
partitioner, the root logger under Faust's spinner."""

from __future__ import annotations

import logging
import random
import struct
from datetime import datetime, timezone

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.events import Transaction
from app.features import AccountState
from app.features.extract import extract_account
from app.partitioning import key_partition


def test_calendar_features_equal_those_of_datetime():
    rng = random.Random(3)
    for _ in range(3000):
        t = rng.randint(946_684_800_000, 4_102_444_800_000)  # 2000..2100, as the contract
        tx = Transaction(transaction_id="t", account_id="a", terminal_id="m",
                         amount_minor=100, event_time_ms=t)
        is_weekend, is_night, hour = extract_account(AccountState(), tx)[1:4]
        dt = datetime.fromtimestamp(t / 1000, tz=timezone.utc)
        assert (is_weekend, is_night, hour) == (
            float(dt.weekday() >= 5), float(dt.hour <= 6), float(dt.hour)), t


def _struct_bytes(s: AccountState) -> bytes:
    """The documented layout, packed field by field with struct."""
    n, base = len(s.times_ms), s.times_ms[0]
    wide = max(s.amounts_minor) > 2**32 - 1
    ids = ",".join(s.ids) + ("|" + ",".join(s.revised) if s.revised else "")
    return b"".join((
        struct.pack("<BBIq", 1, 8 if wide else 4, n, base),
        struct.pack(f"<{n}I", *[t - base for t in s.times_ms]),
        struct.pack(f"<{n}{'Q' if wide else 'I'}", *s.amounts_minor),
        ids.encode("ascii"),
    ))


@pytest.mark.parametrize("wide", [pytest.param(False, id="4-byte-amounts"),
                                  pytest.param(True, id="8-byte-amounts")])
def test_account_state_bytes_keep_their_layout(wide):
    rng = random.Random(5)
    for n in (1, 2, 37, 300):
        times = sorted(1_522_540_800_000 + rng.randint(0, 29 * 86_400_000) for _ in range(n))
        amounts = [rng.randint(0, 2**40 if wide else 10**6) for _ in range(n)]
        s = AccountState(times, amounts, [f"tx{i}" for i in range(n)],
                         ["tx0"] if n > 2 else [])
        raw = s.to_bytes()
        assert raw == _struct_bytes(s)
        assert AccountState.from_bytes(raw) == s
    with pytest.raises(ValueError):
        AccountState.from_bytes(raw[:20])


def test_cached_partitioner_is_kafkas_default():
    kafka = DefaultPartitioner()
    for n in (1, 4, 12):
        parts = list(range(n))
        for i in range(2000):
            key = f"T{i:05d}"
            assert key_partition(key, n) == kafka(key.encode(), parts, parts)


def test_root_logger_keeps_the_workers_level_under_the_spinner():
    from faust.worker import Worker

    import app.stream.main

    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    try:
        if not root.handlers:
            root.addHandler(logging.NullHandler())
        worker = Worker(app.stream.main.app, loglevel="warn")
        assert worker.spinner is not None
        worker.on_setup_root_logger(root, logging.WARNING)
        assert root.level == logging.WARNING
        assert not root.isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]

"""What keeps a live worker's latency visible and its log readable: latency buckets to
minutes, one timer-overlap warning per timer and minute."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from app.metrics import LATENCY_BUCKETS_SECONDS, Metrics
from app.stream.streaming import limit_timer_overlap_warnings


def test_a_backlog_of_minutes_is_a_number_not_inf():
    assert max(LATENCY_BUCKETS_SECONDS) >= 300
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.processing_latency.observe(150.0)
    below = registry.get_sample_value("fraud_processing_latency_seconds_bucket", {"le": "120.0"})
    at = registry.get_sample_value("fraud_processing_latency_seconds_bucket", {"le": "300.0"})
    assert (below, at) == (0.0, 1.0)


def test_timer_overlap_warnings_once_a_minute_per_timer(caplog):
    now = [0.0]
    f = limit_timer_overlap_warnings(60.0, clock=lambda: now[0])
    f._clock = lambda: now[0]  # the filter installed by the app's import keeps its own
    log = logging.getLogger("mode.timers")
    with caplog.at_level(logging.WARNING, logger="mode.timers"):
        for i in range(50):
            now[0] = i * 0.1
            log.warning("Timer %s is overlapping (interval=%r runtime=%r)", "release", 0.1, 0.3)
        log.warning("Timer %s is overlapping (interval=%r runtime=%r)", "other", 0.1, 0.3)
        now[0] = 61.0
        log.warning("Timer %s is overlapping (interval=%r runtime=%r)", "release", 0.1, 0.3)
        log.warning("Timer %s woke up too late", "release")
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 4
    assert texts[0].startswith("Timer release is overlapping")
    assert texts[1].startswith("Timer other is overlapping")
    assert "(49 more since the last such warning)" in texts[2]
    assert texts[3] == "Timer release woke up too late"

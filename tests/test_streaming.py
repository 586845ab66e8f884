"""``ProcessedOnlyEvent``: an event no stream handed on is never acknowledged."""

from __future__ import annotations

import faust
from faust.types import Message

from app.streaming import ProcessedOnlyEvent


def _event() -> ProcessedOnlyEvent:
    app = faust.App("test-streaming", broker="kafka://127.0.0.1:9", autodiscover=False)
    message = Message("tx", 2, 596, 0.0, 0, {}, b"k", b"v", None)
    return ProcessedOnlyEvent(app, b"k", b"v", None, message)


def test_a_skipped_event_is_not_acknowledged():
    event = _event()
    assert event.taken is False
    assert event.ack() is False  # its offset stays uncommitted: fetched again
    assert event.message.acked is False


def test_reading_the_value_marks_the_event_handed_on():
    event = _event()
    assert event.value == b"v"
    assert event.taken is True
    assert event.key == b"k" and event.message.offset == 596


def test_the_worker_app_uses_it():
    from app.main import app

    assert app.conf.Event is ProcessedOnlyEvent

"""A correction to Faust's acknowledgements: an event a stream skipped is not processed.

Faust's stream loop skips an event fetched while flow control is suspended (a
rebalance or a shutdown is under way) or fetched in an older consumer generation, and
then *acknowledges* it, as it does for events a filter dropped. Its offset then counts
as done: the next commit (at the latest when the worker leaves the group) moves past
it, and the worker that takes the partition over starts after it. The event is never
processed anywhere (faust-streaming issues #221, #312; caught here by
``tests/test_faults.py::test_worker_stopped_while_sharing_partitions``: one transaction
in a few runs was lost when a worker stopped).

:class:`ProcessedOnlyEvent` refuses the acknowledgement of an event whose value no
stream ever read: the stream reads ``event.value`` only when it hands the event on, so
an unread value means a skipped event. Its offset stays uncommitted and the partition's
next owner fetches it again (at least once, never lost).
"""

from __future__ import annotations

from typing import Any

import faust

__all__ = ["ProcessedOnlyEvent"]


class ProcessedOnlyEvent(faust.Event):
    """A Faust event that can be acknowledged only once a stream handed its value on.

    Used as the app's ``Event`` class (:func:`app.main.create_app`).
    """

    def __init__(self, app: Any, key: Any, value: Any, headers: Any, message: Any) -> None:
        self.taken = False
        super().__init__(app, key, value, headers, message)
        self.taken = False  # the base class's assignment of value is no hand-over

    @property
    def value(self) -> Any:
        """The event's value; reading it marks the event as handed on."""
        self.taken = True
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def ack(self) -> bool:
        """Acknowledge the event if a stream handed it on; else leave it uncommitted.

        A skipped event is still dropped from the consumer's set of messages in
        progress: Faust waits for that set to empty before a rebalance or a shutdown
        completes, and a skipped event is not in progress (without this a worker
        stopped during a catch-up waited forever on SIGTERM)."""
        if not self.taken:
            unacked = getattr(getattr(self.app, "_consumer", None), "_unacked_messages", None)
            if unacked is not None:
                unacked.discard(self.message)
            return False
        return super().ack()

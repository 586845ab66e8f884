"""Exactly-once alerts on the alert topic: a Redis reservation before the send, the
broker's acknowledgement then the ``alerted`` mark as the commit, and a look at the
topic itself for an id reserved by a worker that died in between.

- :mod:`~app.alerting.plan`: pure; what to do with each alert id given its Redis state.
- :mod:`~app.alerting.lookup`: finds alert ids on their partition of the alert topic
  (an assign-only aiokafka consumer).
- :mod:`~app.alerting.sink`: the scoring stage's alert step (Redis, produce, metrics).
"""

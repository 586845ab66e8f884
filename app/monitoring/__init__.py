"""Monitoring computations, pure (no faust, redis or kafka imports) except
:mod:`app.monitoring.sensor`, the thin adapter that feeds them from a running worker.

- :mod:`~app.monitoring.drift`: training reference bins and population stability index.
- :mod:`~app.monitoring.lag`: consumer lag per partition from end and read offsets.
- :mod:`~app.monitoring.outcomes`: decision outcomes and label verdicts of alerts.
"""

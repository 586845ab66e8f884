"""Grafana dashboards of the service, as code.

- :mod:`~app.dashboards.build`: "Fraud operations" and "Model quality", built with
  grafana-foundation-sdk (a dev dependency: only ``fraudctl dashboards build`` needs it).
- :mod:`~app.dashboards.queries`: every panel query of a dashboard JSON, ready for
  Prometheus' HTTP API (pure).
- :mod:`~app.dashboards.grafana`: upload to a Grafana with grafana-client.

The JSON is kept in ``dashboards/`` and provisioned by ``ops/grafana/provisioning``.
"""

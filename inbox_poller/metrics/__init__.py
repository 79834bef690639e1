"""Prometheus metrics: what the daemon counts, served on ``/metrics`` and/or written to a
textfile for node_exporter (docs/metrics.md).

``PrometheusMetrics`` (``registry``) implements ``ports.Metrics``: the loop and the
service report through that port and never import this room. ``exposition`` adds the
configured labels, ``textfile`` replaces the ``.prom`` file atomically and ``listener``
serves ``/metrics``. prometheus_client is imported here and nowhere else.
"""

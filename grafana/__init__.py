"""Grafana dashboards for gecko-exporter, written as code with grafana-foundation-sdk.

``python -m grafana.generate`` rebuilds ``grafana/dashboards/*.json``; ``grafana/provisioning/``
lets a Grafana server load them (see ``grafana/README.md``).
"""

"""Tests of the Grafana dashboards in grafana/ (generator, lint, PromQL, live data)."""

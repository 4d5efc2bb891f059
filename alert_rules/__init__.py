"""gecko-exporter's Prometheus alerting: rule generator, thresholds, rule tests, runbooks."""

"""gecko-exporter: Prometheus exporter for the Gecko Advisor PostgreSQL database."""

__version__ = "0.1.0"

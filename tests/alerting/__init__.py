"""Tests of the alert rules, the Alertmanager example and the alerting pipeline."""

"""Checks of the container image definition and the Helm chart (issue #6)."""
